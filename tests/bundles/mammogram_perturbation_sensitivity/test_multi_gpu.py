"""multi_gpu_train.json of the mammogram bundle: DDP, DistributedSampler and rank-0 handlers wired (merged configs)."""

from __future__ import annotations

from pathlib import Path

from ..lesion_classification.test_multi_gpu import check_multi_gpu_wiring

BUNDLE = Path(__file__).resolve().parents[3] / "bundles" / "mammogram_perturbation_sensitivity"


def test_multi_gpu_train_config():
    train, val = "train::trainer::train_handlers", "validate::evaluator::val_handlers"
    parser = check_multi_gpu_wiring(
        BUNDLE, ["train.json", "multi_gpu_train.json"], loaders={"train::dataloader": True, "validate::dataloader": False},
        handlers={train: "train::handlers", val: "validate::handlers"},
        rank1={train: ["CheckpointLoader", "LrScheduleHandler", "ValidationHandler"], val: []})  # fmt: skip
    assert parser["validate::evaluator::network"] == "$@network.module"  # uneven validation shards: no DDP collectives
    assert parser["validate::sampler"]["even_divisible"] is False  # MONAI's ROCAUC / ConfusionMatrix gather uneven shares
