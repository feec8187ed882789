"""multi_gpu_train.json / multi_gpu_evaluate.json of the mammogram bundle: DDP, DistributedSampler and rank-0
handlers wired (merged configs); training in 2 gloo processes (torchrun) keeps the weights equal, and the evaluation
gathered over both ranks (uneven shards) equals a single-process evaluation."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import torch

from medrobust.models import run_bundle_workflow

from ..multi_gpu import check_multi_gpu_wiring, one_thread, rank_parameters, torchrun_bundle

BUNDLE = Path(__file__).resolve().parents[3] / "bundles" / "mammogram_perturbation_sensitivity"
TRAIN, VAL = "train#trainer#train_handlers", "validate#evaluator#val_handlers"


def test_multi_gpu_train_config(monkeypatch):
    parser = check_multi_gpu_wiring(
        BUNDLE, ["train.json", "multi_gpu_train.json"], loaders={"train::dataloader": True, "validate::dataloader": False},
        handlers={TRAIN: "train::handlers", VAL: "validate::handlers"},
        rank1={TRAIN: ["LrScheduleHandler", "ValidationHandler"], VAL: []}, monkeypatch=monkeypatch)  # fmt: skip
    assert parser["validate::evaluator::network"] == "$@network.module"  # uneven validation shards: no DDP collectives
    assert parser["validate::sampler"]["even_divisible"] is False  # MONAI's ROCAUC / ConfusionMatrix gather uneven shares


def test_multi_gpu_evaluate_config(monkeypatch):
    parser = check_multi_gpu_wiring(BUNDLE, ["train.json", "evaluate.json", "multi_gpu_evaluate.json"],
                                    loaders={"validate::dataloader": False}, handlers={}, rank1={}, monkeypatch=monkeypatch)  # fmt: skip
    assert [h["_target_"] for h in parser["validate::handlers"]] == ["CheckpointLoader", "StatsHandler", "MetricsSaver",
                                                                     "ClassificationSaver"]  # fmt: skip
    assert parser.get_parsed_content("validate::handlers::1::_disabled_") is True  # StatsHandler off on rank 1
    assert parser["validate::sampler"]["even_divisible"] is False


def _rows(path: Path) -> dict[str, list[float]]:
    return {r[0]: [float(v) for v in r[1:]] for r in csv.reader(open(path)) if r}


@pytest.mark.slow
def test_two_gloo_processes_train_and_evaluate(tmp_path):
    spec = importlib.util.spec_from_file_location("_mps_make_dataset_ddp", BUNDLE / "scripts" / "make_dataset.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    data = make.make_dataset(tmp_path / "data", n=9, seed=11, size=(128, 104))
    out = tmp_path / "out"
    out.mkdir()
    common = dict(dataset_dir=str(data), ckpt_dir=str(out), output_dir=str(out), image_size=[64, 48], track=False)
    # evaluated with the shipped weights: after one tiny epoch the predictions are nearly tied, and a rounding
    # difference (batch of 5 vs 9) could reorder them; the shipped model spreads them
    evaluate = dict(common, ckpt_dir=str(BUNDLE / "models"), eval_split="all")
    torchrun_bundle(BUNDLE, [("train", ["train.json", "multi_gpu_train.json"], dict(common, max_epochs=1, batch_size=4)),
                             ("eval", ["train.json", "evaluate.json", "multi_gpu_evaluate.json"], evaluate)], tmp_path)  # fmt: skip
    w0, _ = rank_parameters(out, "train")
    saved = torch.load(out / "model.pt", weights_only=True)  # rank 0's CheckpointSaver (best validation AUC: epoch 1)
    assert all(torch.equal(saved[k], w0[k]) for k in w0)
    single = tmp_path / "single"
    with one_thread():
        run_bundle_workflow(BUNDLE, ["train.json", "evaluate.json"], **dict(evaluate, output_dir=str(single)))
    merged, one = _rows(out / "metrics.csv"), _rows(single / "metrics.csv")  # 9 cases: 5 + 4 gathered
    assert set(merged) == set(one) == {"val_auc", "val_accuracy"}
    assert all(merged[k] == pytest.approx(one[k], abs=1e-6) for k in one)
    preds, ref = _rows(out / "predictions.csv"), _rows(single / "predictions.csv")  # ClassificationSaver gathers too
    assert len(ref) == 9 and preds.keys() == ref.keys()
    assert all(preds[k] == pytest.approx(ref[k], abs=1e-6) for k in ref)
