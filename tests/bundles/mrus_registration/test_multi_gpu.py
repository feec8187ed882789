"""multi_gpu_train.json / multi_gpu_evaluate.json of the MR-TRUS registration bundle: DDP, DistributedSampler and
rank-0 handlers wired (merged configs); one tiny epoch in 2 gloo processes (torchrun) keeps the weights equal, and the
per-case metrics gathered over both ranks (uneven shards, merged by rank 0) equal a single-process evaluation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medrobust.models import run_bundle_workflow

from ..multi_gpu import check_multi_gpu_wiring, rank_parameters, torchrun_bundle

BUNDLE = Path(__file__).resolve().parents[3] / "bundles" / "mrus_registration"
TRAIN, VAL = "train#trainer#train_handlers", "validate#evaluator#val_handlers"


def test_multi_gpu_train_config(monkeypatch):
    parser = check_multi_gpu_wiring(BUNDLE, ["train.json", "multi_gpu_train.json"], loaders={"train::dataloader": True},
                                    handlers={TRAIN: "train::handlers"}, rank1={TRAIN: ["PreciseBatchNorm"]},
                                    monkeypatch=monkeypatch)  # fmt: skip
    assert parser["train::trainer::network"] == "@network"  # the DDP-wrapped network is trained


def test_multi_gpu_evaluate_config(monkeypatch):
    parser = check_multi_gpu_wiring(BUNDLE, ["train.json", "evaluate.json", "multi_gpu_evaluate.json"],
                                    loaders={"validate::dataloader": False}, handlers={VAL: "validate::handlers"},
                                    rank1={VAL: ["CheckpointLoader", "RegistrationMetricsHandler"]}, monkeypatch=monkeypatch)  # fmt: skip
    # multi_gpu_evaluate.json points handler 1 at a per-rank shard folder and gathers its rows: it must be the metrics handler
    handlers = json.loads((BUNDLE / "configs" / "evaluate.json").read_text())["validate"]["handlers"]
    assert handlers[1]["_target_"].endswith("RegistrationMetricsHandler")
    assert parser["validate::evaluator::network"] == "$@network.module"


def _pairs(root: Path, n: int = 3) -> Path:
    """Tiny MR/TRUS pairs (DeepReg layout): a bright ellipsoid gland (label channel 0) and one landmark blob (channel 1),
    shifted between moving and fixed by a case-dependent offset."""
    rng = np.random.default_rng(5)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in (16, 16, 12)], indexing="ij"), -1).astype(np.float32)
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    for folder in ("moving_images", "fixed_images", "moving_labels", "fixed_labels"):
        (root / folder).mkdir(parents=True)
    for i in range(n):
        for folder, shift in (("moving", 0.0), ("fixed", 1.0 + i)):
            c = np.array([8.0 + shift, 8.0, 6.0])
            gland = (((grid - c) / [5, 4, 3]) ** 2).sum(-1) < 1
            mark = ((grid - (c + [2, 1, 0])) ** 2).sum(-1) < 2
            img = gland * 1.0 + 0.1 * rng.random(gland.shape)
            nib.save(nib.Nifti1Image(img.astype(np.float32), aff), root / f"{folder}_images" / f"case{i:03d}.nii.gz")
            lab = np.stack([gland, mark], -1).astype(np.float32)
            nib.save(nib.Nifti1Image(lab, aff), root / f"{folder}_labels" / f"case{i:03d}.nii.gz")
    return root


def _num(v: str):
    try:
        return float(v)
    except ValueError:
        return v


def _cases(path: Path) -> list[dict]:
    """Rows of cases.csv without the timing, numbers as floats."""
    return [{k: _num(v) for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(path))]


def _close(rows: list[dict]) -> list[dict]:
    return [{k: pytest.approx(v, rel=1e-6, abs=1e-9, nan_ok=True) if isinstance(v, float) else v for k, v in r.items()}
            for r in rows]


@pytest.mark.slow
def test_two_gloo_processes_train_and_evaluate(tmp_path):
    data = _pairs(tmp_path / "data")
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"folds": [{"train": ["case000", "case001"], "test": ["case000", "case001", "case002"]}]}))
    out = tmp_path / "out"
    out.mkdir()
    common = dict(dataset_dir=str(data), folds_file=str(folds), fold=0, ckpt_dir=str(out), output_dir=str(out), num_threads=1,
                  grid_size=[16, 16, 16], num_channel_initial=4, track=False)  # fmt: skip
    torchrun_bundle(BUNDLE, [("train", ["train.json", "multi_gpu_train.json"], dict(common, max_epochs=1, batch_size=1)),
                             ("eval", ["train.json", "evaluate.json", "multi_gpu_evaluate.json"], common)], tmp_path)  # fmt: skip
    w0, _ = rank_parameters(out, "train")
    saved = torch.load(out / "model.pt", weights_only=True)  # rank 0's CheckpointSaver (DDP unwrapped)
    assert all(torch.equal(saved[k], w0[k]) for k in w0)
    assert len(list(csv.DictReader(open(out / "train_losses.csv")))) == 1  # rank 0's loss log only: 1 step
    single = tmp_path / "single"
    run_bundle_workflow(BUNDLE, ["train.json", "evaluate.json"], **dict(common, output_dir=str(single)))
    merged, one = _cases(out / "eval" / "cases.csv"), _cases(single / "eval" / "cases.csv")
    assert [r["case_id"] for r in merged] == ["case000", "case001", "case002"]  # 2 + 1 cases, in single-process order
    assert merged == _close(one)  # the same pairs, same network: equal up to float rounding
    assert sorted((out / "eval" / "shards").iterdir()) == [out / "eval" / "shards" / f"rank-{r}" for r in (0, 1)]
    s_merged, s_one = (json.loads((d / "eval" / "summary.json").read_text()) for d in (out, single))
    s_one = {k: v for k, v in s_one.items() if "second" not in k}
    assert {k: v for k, v in s_merged.items() if "second" not in k} == pytest.approx(s_one, rel=1e-6, nan_ok=True)
