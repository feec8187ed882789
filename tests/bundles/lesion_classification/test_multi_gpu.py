"""multi_gpu_train.json / multi_gpu_evaluate.json: wiring checked on the merged configs (MONAI ConfigParser, no
process group; helper shared with the other bundles in ``tests/bundles/multi_gpu.py``), and two gloo processes
(torchrun) train the bundle one tiny epoch with DDP keeping the weights equal, then evaluate it with the metrics
gathered over both ranks equal to a single-process evaluation."""

from __future__ import annotations

import csv

import pytest
import torch

from medrobust.tracking import default_uri, tracking_client

from ..multi_gpu import check_multi_gpu_wiring, rank_parameters, torchrun_bundle
from .conftest import BUNDLE

TRAIN, VAL = "train::trainer::train_handlers", "validate::evaluator::val_handlers"


def test_multi_gpu_config_follows_monai_convention(monkeypatch):
    parser = check_multi_gpu_wiring(
        BUNDLE, ["train.json", "multi_gpu_train.json"], loaders={"train::dataloader": True, "validate::dataloader": False},
        handlers={TRAIN: "train::handlers", VAL: "validate::handlers"},
        rank1={TRAIN: ["LrScheduleHandler", "ValidationHandler"], VAL: []}, monkeypatch=monkeypatch)  # fmt: skip
    assert "require_even_split(len(@validate::datalist)" in " ".join(parser["initialize"])


def test_multi_gpu_evaluate_config(monkeypatch):
    parser = check_multi_gpu_wiring(BUNDLE, ["train.json", "evaluate.json", "multi_gpu_evaluate.json"],
                                    loaders={"validate::dataloader": False}, handlers={}, rank1={}, monkeypatch=monkeypatch)  # fmt: skip
    assert parser["validate::evaluator::network"] == "$@network.module"  # uneven shards: no DDP collectives in eval
    names = [h["_target_"] for h in parser["validate::handlers"]]
    assert names == ["CheckpointLoader", "StatsHandler", "MetricsSaver"]  # MetricsSaver gathers: every rank keeps it
    assert parser.get_parsed_content("validate::handlers::1::_disabled_") is True  # StatsHandler off on rank 1
    assert "require_even_split(len(@validate::datalist)" in " ".join(parser["initialize"])


def _metrics(path):
    return {row[0]: float(row[1]) for row in csv.reader(open(path)) if row}


@pytest.mark.slow
def test_two_gloo_processes_train_and_evaluate(synthetic_npz, tmp_path, run_workflow):
    out = tmp_path / "out"
    common = dict(dataset_dir=str(synthetic_npz), ckpt_dir=str(out), output_dir=str(out), num_threads=1, spatial_size=[16, 16])
    torchrun_bundle(BUNDLE, [("train", ["train.json", "multi_gpu_train.json"], dict(common, epochs=1, batch_size=8)),
                             ("eval", ["train.json", "evaluate.json", "multi_gpu_evaluate.json"], dict(common, eval_steps=2))],
                    tmp_path)  # fmt: skip
    w0, _ = rank_parameters(out, "train")  # gradients all-reduced: identical parameters on both ranks
    saved = torch.load(out / "model.pt", weights_only=True)  # rank 0's CheckpointSaver (DDP unwrapped)
    assert all(torch.equal(saved[k], w0[k]) for k in w0)
    client = tracking_client(default_uri(out))  # tracked by rank 0 only: one run, with its metrics and model
    (run,) = client.search_runs([client.get_experiment_by_name("lesion_classification").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2" and "val_auc" in run.data.metrics
    merged = _metrics(out / "metrics.csv")  # 24 test images: 12 per rank, gathered by the ignite metrics
    single = tmp_path / "single"
    common.pop("num_threads")  # run_workflow sets it
    run_workflow(["train.json", "evaluate.json"], **dict(common, output_dir=str(single), eval_steps=2))
    assert set(merged) == set(_metrics(single / "metrics.csv")) and len(merged) >= 9
    assert merged == pytest.approx(_metrics(single / "metrics.csv"), abs=1e-6)
