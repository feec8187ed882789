"""multi_gpu_train.json of the MRI reconstruction bundle: DDP, DistributedSampler and rank-0 handlers wired (merged
configs), and one tiny epoch in 2 gloo processes (torchrun) keeping the weights equal."""

from __future__ import annotations

import pytest
import torch

from ..multi_gpu import check_multi_gpu_wiring, rank_parameters, torchrun_bundle
from .conftest import BUNDLE

TRAIN = "train::trainer::train_handlers"


def test_multi_gpu_train_config(monkeypatch):
    parser = check_multi_gpu_wiring(BUNDLE, ["train.json", "multi_gpu_train.json"], loaders={"train::dataloader": True},
                                    handlers={TRAIN: "train::handlers"}, rank1={TRAIN: ["SetEpoch"]},
                                    monkeypatch=monkeypatch)  # fmt: skip
    assert parser["train::trainer::network"] == "@network"  # the DDP-wrapped network is trained


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
