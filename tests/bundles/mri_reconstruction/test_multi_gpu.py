"""multi_gpu_train.json of the MRI reconstruction bundle: DDP, DistributedSampler and rank-0 handlers wired."""

from __future__ import annotations

from pathlib import Path

from ..lesion_classification.test_multi_gpu import check_multi_gpu_wiring

BUNDLE = Path(__file__).resolve().parents[3] / "bundles" / "mri_reconstruction"


def test_multi_gpu_train_config():
    train = "train::trainer::train_handlers"
    parser = check_multi_gpu_wiring(BUNDLE, ["train.json", "multi_gpu_train.json"], loaders={"train::dataloader": True},
                                    handlers={train: "train::handlers"},
                                    rank1={train: ["medrobust.reconstruction.evaluation.SetEpoch"]})  # fmt: skip
    assert parser["train::trainer::network"] == "@network"  # the DDP-wrapped network is trained
