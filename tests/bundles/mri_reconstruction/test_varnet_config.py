"""mri_reconstruction bundle, multi-coil VarNet configs: train_varnet.json builds a VarNet (and
loads the shipped models/varnet_8coil.pt when present); a tiny train -> evaluate run."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from monai.bundle import ConfigParser

from medrobust.reconstruction.networks import VarNet

TINY = {"spatial_size": [32, 32], "num_cascades": 1, "varnet_features": [4, 4, 8, 8, 16, 4],
        "sens_features": [2, 2, 4, 4, 8, 2], "batch_size": 4, "num_coils": 4}


def _parser(bundle_root, *files: str) -> ConfigParser:
    return ConfigParser(ConfigParser.load_config_files([str(bundle_root / "configs" / f) for f in files]))


@pytest.mark.parametrize("files", [("train.json", "train_varnet.json"),
                                   ("train.json", "train_varnet.json", "evaluate.json", "evaluate_varnet.json")])
def test_varnet_config_builds_network(bundle_root, files):
    p = _parser(bundle_root, *files)
    assert p["num_coils"] == 8 and p["train"]["trainer"]["prepare_batch"] == "$reval.prepare_kspace_batch"
    net = p.get_parsed_content("network_def")
    assert isinstance(net, VarNet)
    if "evaluate_varnet.json" in files:
        assert "kspace_model=True" in p["run"][1] and "num_coils=@num_coils" in p["run"][1]


def test_shipped_varnet_weights(bundle_root):
    path = bundle_root / "models" / "varnet_8coil.pt"
    if not path.is_file():
        pytest.skip("models/varnet_8coil.pt not shipped")
    assert path.stat().st_size < 3 * 2**20
    net = _parser(bundle_root, "train.json", "train_varnet.json").get_parsed_content("network_def")
    net.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    net.eval()
    mask = torch.zeros(1, 1, 1, 96, 1)
    mask[..., 44:52, :] = 1
    mask[..., ::4, :] = 1
    with torch.no_grad():
        y = net(torch.randn(2, 8, 96, 96, 2) * mask, mask)
    assert y.shape == (2, 1, 96, 96) and torch.isfinite(y).all()


@pytest.mark.slow
def test_varnet_train_evaluate(run_workflow, promise_dir, tmp_path):
    common = {"dataset_dir": str(promise_dir), "output_dir": str(tmp_path / "eval"), **TINY}
    wf = run_workflow(["train.json", "train_varnet.json"], epochs=1, ckpt_dir=str(tmp_path / "vn"), **common)
    assert isinstance(wf.parser.get_parsed_content("network"), VarNet) and (tmp_path / "vn" / "model.pt").is_file()
    run_workflow(["train.json", "train_varnet.json", "evaluate.json", "evaluate_varnet.json"], check=False,
                 ckpt_dir=str(tmp_path / "vn"), fnaf_eval_restarts=2, pgd_steps=1, **common)
    rows = list(csv.DictReader(open(tmp_path / "eval" / "per_volume.csv", newline="")))
    assert {r["model"] for r in rows} == {"zero_filled", "varnet"} and {r["acceleration"] for r in rows} == {"4"}
    m = json.loads((tmp_path / "eval" / "summary.json").read_text())["varnet_x4"]
    assert 0 < m["ssim"]["mean"] <= 1 and m["fn_rate@0.001"]["mean"] >= m["fn_rate@0.1"]["mean"]
