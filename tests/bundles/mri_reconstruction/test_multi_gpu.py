"""multi_gpu_train.json / multi_gpu_evaluate.json of the MRI reconstruction bundle: DDP, DistributedSampler and rank-0
handlers wired (merged configs); one tiny epoch in 2 gloo processes (torchrun) keeps the weights equal, and the
per-volume rows and summary merged by rank 0 (volumes dealt round-robin, uneven shards) equal one process's, byte for
byte (each slice keeps its k-space mask and seeds)."""

from __future__ import annotations

import csv

import pytest
import torch

from medrobust.models import run_bundle_workflow
from medrobust.reconstruction.networks import ReconUNet

from ..multi_gpu import check_multi_gpu_wiring, one_thread, rank_parameters, torchrun_bundle
from .conftest import BUNDLE

TRAIN = "train::trainer::train_handlers"


def test_multi_gpu_train_config(monkeypatch):
    parser = check_multi_gpu_wiring(BUNDLE, ["train.json", "multi_gpu_train.json"], loaders={"train::dataloader": True},
                                    handlers={TRAIN: "train::handlers"}, rank1={TRAIN: ["SetEpoch"]},
                                    monkeypatch=monkeypatch)  # fmt: skip
    assert parser["train::trainer::network"] == "@network"  # the DDP-wrapped network is trained


EVAL = ["train.json", "evaluate.json", "multi_gpu_evaluate.json"]


@pytest.mark.parametrize("files,kspace", [(EVAL, False),
                                           (["train.json", "train_varnet.json", "evaluate.json", "evaluate_varnet.json",
                                             "multi_gpu_evaluate.json"], True)])  # fmt: skip
def test_multi_gpu_evaluate_config(monkeypatch, files, kspace):
    parser = check_multi_gpu_wiring(BUNDLE, files, loaders={}, handlers={}, rank1={}, monkeypatch=monkeypatch)
    assert "evaluate_split_distributed(@eval_nets," in " ".join(parser["run"])  # unwrapped nets: no DDP gradient hooks
    assert parser["eval_nets"].startswith("${k: getattr(v, 'module', v)")
    assert "if dist.get_rank() == 0 else None" in parser["split"]  # split.json written by rank 0 only
    assert parser.get_parsed_content("eval_kspace_model") is kspace  # VarNet (evaluate_varnet.json) reads k-space


@pytest.mark.slow
def test_two_gloo_processes_evaluate_equal_to_one_process(promise_dir, tmp_path):
    ckpt, out, single = tmp_path / "ckpt", tmp_path / "out", tmp_path / "single"
    ckpt.mkdir()
    out.mkdir()
    features = [4, 4, 8, 8, 16, 4]
    torch.save(ReconUNet(spatial_dims=2, features=features).state_dict(), ckpt / "model.pt")
    common = dict(dataset_dir=str(promise_dir), ckpt_dir=str(ckpt), num_threads=1, spatial_size=[32, 32],
                  features=features, limit_volumes=3, eval_split="train+val+test", eval_accelerations=[4],
                  fnaf_eval_restarts=2, fnaf_eval_size=3, pgd_steps=1, fn_thresholds=[0.01], track=False)  # fmt: skip
    torchrun_bundle(BUNDLE, [("eval", EVAL, dict(common, output_dir=str(out)))], tmp_path)
    with one_thread():
        run_bundle_workflow(BUNDLE, ["train.json", "evaluate.json"], **dict(common, output_dir=str(single)))
    rows = list(csv.DictReader(open(out / "per_volume.csv", newline="")))
    assert [r["volume_id"] for r in rows] == [v for v in ("train00", "train01", "train02") for _ in range(2)]
    for name in ("per_volume.csv", "summary.json"):
        assert (out / name).read_bytes() == (single / name).read_bytes(), name
    assert not (out / "mlflow.db").exists()  # track=False
    shards = sorted(p.name for p in (out / "shards").iterdir())
    assert shards == ["rank-000-of-002", "rank-001-of-002"]  # 2 volumes and 1 volume
    assert len(list(csv.DictReader(open(out / "shards" / shards[1] / "per_volume.csv")))) == 2  # 1 volume x 2 models


@pytest.mark.slow
def test_two_gloo_processes_train_with_synchronised_weights(promise_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    torchrun_bundle(BUNDLE, [("train", ["train.json", "multi_gpu_train.json"],
                              dict(dataset_dir=str(promise_dir), ckpt_dir=str(out), output_dir=str(out), num_threads=1,
                                   epochs=1, batch_size=2, spatial_size=[32, 32], features=[4, 8, 16, 32, 64, 4],
                                   track=False))], tmp_path)  # fmt: skip
    w0, _ = rank_parameters(out, "train")
    saved = torch.load(out / "model.pt", weights_only=True)  # rank 0's CheckpointSaver (DDP unwrapped)
    assert all(torch.equal(saved[k], w0[k]) for k in w0)
    assert not (out / "mlflow.db").exists()  # track=False: no store
