"""Segmentation cards: a tiny MONAI UNet on synthetic discs, 2-D (PNG masks) and 3-D (NIfTI masks)."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from medrobust.card import CardBudget, make_card
from medrobust.card.segmentation import dice_per_case, is_segmentation_output, load_masks

from .conftest import SIZE

BUDGET = CardBudget(attack_cases=4, eps=(2 / 255, 32 / 255), pgd_steps=(3, 3), restarts=2,
                    families=("gaussian_noise",), severities=[0.0, 0.3], n_boot=50)  # fmt: skip


def test_segmentation_card(seg_inputs, tmp_path):
    net, root, dims = seg_inputs
    assert is_segmentation_output(net, (1,) + (SIZE,) * dims)
    res = make_card(net, root / "data", tmp_path / "card", masks=root / "masks", budget=BUDGET,
                    input_size=(SIZE,) * dims, progress=False)  # fmt: skip
    card = json.loads(res.json.read_text())
    assert card["task"]["type"] == "segmentation" and card["clean"]["n"] == 6
    d = card["clean"]["dice"]
    assert 0.5 < d["value"] <= 1.0 and d["lo"] <= d["value"] <= d["hi"]
    rows = card["sensitivity"]["families"]["gaussian_noise"]
    assert [r["severity"] for r in rows] == [0.0, 0.3]
    assert rows[0]["dice"]["value"] == pytest.approx(d["value"])  # severity 0 is the clean image
    adv = card["adversarial"]["rows"]
    assert [round(r["eps"] * 255) for r in adv] == [2, 32]
    assert set(adv[0]["attacks"]) == {"PGD-3", "PGD-3 x 2"}
    assert adv[1]["worst_case"]["value"] < card["adversarial"]["clean"]["value"]  # a large eps hurts
    assert all(r["worst_case"]["value"] <= min(e["value"] for e in r["attacks"].values()) + 1e-9 for r in adv)
    assert {"autoattack", "square", "nmutant", "probabilistic"} <= set(card["not_measured"])
    html = res.html.read_text()
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html)
    assert {a for a, _ in imgs} == {"Dice vs severity per family", "robust Dice vs eps"}
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for _, b in imgs)
    assert "Not measured for segmentation" in html


def test_segmentation_card_errors(seg_inputs, tmp_path):
    net, root, dims = seg_inputs
    with pytest.raises(ValueError, match="masks: a segmentation card needs"):
        make_card(net, root / "data", tmp_path / "o", input_size=(SIZE,) * dims, task="segmentation", budget=BUDGET)
    with pytest.raises(FileNotFoundError, match="masks: folder"):
        load_masks(tmp_path / "nope", ["c0"], (SIZE,) * dims)
    (tmp_path / "m").mkdir()
    with pytest.raises(ValueError, match="no file under"):
        load_masks(tmp_path / "m", ["c0"], (SIZE,) * dims)


def test_dice_per_case_batch():
    net = UNet(3, 1, 3, channels=(4, 8), strides=(2,)).eval()
    x = torch.rand(2, 1, 8, 8, 8)
    y = net(x).argmax(1, keepdim=True)
    assert np.allclose(dice_per_case(net, x, y), 1.0)
    with pytest.raises(ValueError, match="label 5 found"):
        dice_per_case(net, x, torch.full_like(y, 5))


@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean")  # MONAI UNet under torch.jit.trace
def test_segmentation_card_cli_auto_detects(seg_inputs, tmp_path):
    from medrobust.cli import main

    net, root, dims = seg_inputs
    ts = tmp_path / "unet.ts"
    torch.jit.trace(net, torch.rand(2, 1, *(SIZE,) * dims)).save(str(ts))
    out = tmp_path / "card"
    argv = ["card", "--model", str(ts), "--input-size", *[str(SIZE)] * dims, "--data", str(root / "data"),
            "--masks", str(root / "masks"), "--out", str(out), "--attack-cases", "2", "--eps", "4",
            "--pgd-steps", "2", "--no-sensitivity", "--n-boot", "20", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["task"]["type"] == "segmentation" and "sensitivity" not in card
    assert card["headline"]["robust_dice_worst_case"].keys() == {"eps_4_255"}


def _seg_bundle(root: Path, net: torch.nn.Module, dims: int, repo_root: Path) -> Path:
    """A minimal segmentation bundle: the UNet as network_def, its weights, metadata from the lesion bundle's."""
    b = root / "seg_bundle"
    (b / "configs").mkdir(parents=True)
    (b / "models").mkdir()
    (b / "configs" / "inference.json").write_text(json.dumps({"network_def": {
        "_target_": "monai.networks.nets.UNet", "spatial_dims": dims, "in_channels": 1, "out_channels": 2,
        "channels": [4, 8], "strides": [2], "num_res_units": 0}}))  # fmt: skip
    meta = json.loads((repo_root / "bundles" / "lesion_classification" / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["inputs"]["image"]["spatial_shape"] = [SIZE] * dims
    meta["network_data_format"]["outputs"]["pred"]["spatial_shape"] = [SIZE] * dims
    (b / "configs" / "metadata.json").write_text(json.dumps(meta))
    torch.save(net.state_dict(), b / "models" / "model.pt")
    return b


def test_segmentation_bundle_writes_metadata_and_resumes(seg_inputs, tmp_path, repo_root, meta_schema, monkeypatch):
    net, root, dims = seg_inputs
    if dims == 2:
        pytest.skip("3-D is enough")
    bundle = _seg_bundle(tmp_path, net, dims, repo_root)
    kw = dict(masks=root / "masks", budget=BUDGET, progress=False, write_metadata=True, meta_schema=meta_schema)
    res = make_card(bundle, root / "data", tmp_path / "card", **kw)
    block = json.loads(res.metadata.read_text())["robustness"]
    assert block["task"] == "segmentation" and block["clean_dice"] == res.card["clean"]["dice"]["value"]
    assert block["robust_dice_worst_case"].keys() == {"eps_2_255", "eps_32_255"}
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(res.metadata), filepath=str(meta_schema))
    import medrobust.card.segmentation as seg

    def boom(*a, **k):
        raise AssertionError("recomputed a stored unit")

    monkeypatch.setattr(seg, "seg_adversarial_dice", boom)
    monkeypatch.setattr(seg, "seg_sensitivity_dice", boom)
    again = make_card(bundle, root / "data", tmp_path / "card", **kw)  # resumed: every unit read back
    assert {k: v for k, v in again.card.items() if k != "timings_s"} == {k: v for k, v in res.card.items() if k != "timings_s"}


def test_segmentation_card_metadata_needs_a_bundle(seg_inputs, tmp_path):
    net, root, dims = seg_inputs
    with pytest.raises(ValueError, match="not a bundle"):
        make_card(net, root / "data", tmp_path, masks=root / "masks", input_size=(SIZE,) * dims, write_metadata=True)


def test_segmentation_card_sharded_over_two_ranks(seg_inputs, tmp_path, ranks):
    """Rank 1 then rank 0 of a 2-process torchrun job: rank 0's card equals a one-process card."""
    net, root, dims = seg_inputs
    if dims == 2:
        pytest.skip("3-D is enough")
    kw = dict(masks=root / "masks", budget=replace(BUDGET, block_cases=2), input_size=(SIZE,) * dims, progress=False)
    single = make_card(net, root / "data", tmp_path / "one", **kw).card
    ranks(1, 2)
    assert not make_card(net, root / "data", tmp_path / "two", **kw).written
    ranks(0, 2)
    merged = json.loads(make_card(net, root / "data", tmp_path / "two", **kw).json.read_text())
    assert {k: v for k, v in merged.items() if k != "timings_s"} == {k: v for k, v in single.items() if k != "timings_s"}
