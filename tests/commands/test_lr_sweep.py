"""``medrobust lr-sweep`` on a tiny synthetic MedMNIST-style file (2 epochs, 2 policies)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medrobust.cli import main
from medrobust.commands.lr_sweep import PRESETS, resolve


@pytest.fixture()
def tiny_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("val", 12), ("test", 12)):
        labels = np.arange(n) % 2
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        images[labels == 0, 8:20, 8:20] += 150  # label 0 (stored) = bright square: learnable
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    path = tmp_path / "tiny.npz"
    np.savez(path, **arrays)
    return path


def test_lr_sweep_writes_table_plot_and_resumes(tiny_npz, tmp_path, repo_root):
    out = tmp_path / "sweep"
    argv = ["lr-sweep", "--bundle", str(repo_root / "bundles" / "lesion_classification"), "--out", str(out),
            "--policies", "default", "sin2", "--seeds", "0", "--epochs", "2", "--dataset-dir", str(tiny_npz)]
    assert main(argv) == 0
    with open(out / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["default", "sin2"]
    assert all(0.0 <= float(r["val_auc"]) <= 1.0 and "test_auc" not in r for r in rows)
    assert json.loads(rows[1]["settings"]) == {"k0": 1e-4, "k1": 3e-3, "l": 1}
    assert (out / "sweep.png").stat().st_size > 1000
    assert json.loads((out / "selection.json").read_text())["selected"] in {"default", "sin2"}
    mtime = (out / "sweep.csv").stat().st_mtime_ns
    assert main(argv) == 0  # everything done: nothing retrained, table unchanged
    assert (out / "sweep.csv").stat().st_mtime_ns == mtime


def test_presets_resolve_to_valid_schedulers():
    import torch

    from medrobust.core.schedules import LRBenchScheduler

    for name, preset in PRESETS.items():
        if preset:
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
            LRBenchScheduler(opt, **resolve(preset, epochs=40, lr=1e-3))
    assert resolve(PRESETS["nstep"], epochs=40, lr=1e-3)["milestones"] == [20, 30]


def test_bad_policy_and_bundle_are_user_errors(tmp_path, capsys):
    assert main(["lr-sweep", "--bundle", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no configs/train.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["lr-sweep", "--bundle", str(tmp_path), "--out", str(tmp_path / "o"), "--policies", "warmup"])


def test_lr_sweep_test_split_gets_ci_and_per_case_predictions(tiny_npz, tmp_path, repo_root):
    out = tmp_path / "sweep"
    argv = ["lr-sweep", "--bundle", str(repo_root / "bundles" / "lesion_classification"), "--out", str(out),
            "--policies", "fix", "--seeds", "1", "--epochs", "1", "--dataset-dir", str(tiny_npz), "--test"]
    assert main(argv) == 0
    with open(out / "sweep.csv", newline="") as f:
        row = next(csv.DictReader(f))
    auc, lo, hi = (float(row[k]) for k in ("test_auc", "test_auc_ci_lo", "test_auc_ci_hi"))
    assert 0.0 <= auc <= 1.0 and 0.0 <= lo <= hi <= 1.0
    pred = np.loadtxt(out / "test_predictions" / "fix_1.csv", delimiter=",", skiprows=1)
    assert pred.shape == (12, 3) and set(pred[:, 1]) == {0.0, 1.0} and ((pred[:, 2] >= 0) & (pred[:, 2] <= 1)).all()
