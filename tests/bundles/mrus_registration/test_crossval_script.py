"""scripts/crossval.py: per-fold rows of a mask-input network, its image-only cascade, resumable, summary table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medrobust.models import load_bundle_network

BUNDLE = Path(__file__).resolve().parents[3] / "bundles" / "mrus_registration"


def _script():
    spec = importlib.util.spec_from_file_location("mrus_crossval", BUNDLE / "scripts" / "crossval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pairs(root: Path, n: int = 4) -> Path:
    """``n`` tiny labelled pairs (DeepReg layout): a bright gland box and one landmark, shifted between MR and TRUS."""
    rng = np.random.default_rng(0)
    for i in range(n):
        for side, shift in (("moving", 0), ("fixed", 1 + i % 2)):
            lab = np.zeros((24, 32, 24, 2), np.float32)
            lab[6 + shift:16 + shift, 8:22, 6:16, 0] = 1
            lab[10 + shift:12 + shift, 12:14, 9:11, 1] = 1
            img = lab[..., 0] * 0.7 + 0.3 * rng.random((24, 32, 24), dtype=np.float32)
            for kind, arr in (("images", img), ("labels", lab)):
                (root / f"{side}_{kind}").mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(arr, np.diag([3.0, 3.0, 3.0, 1.0])), root / f"{side}_{kind}" / f"case{i}.nii.gz")
    return root


@pytest.mark.slow
def test_cascade_rows_per_fold_resume_and_table(tmp_path):
    data = _pairs(tmp_path / "data")
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"folds": [{"train": ["case0", "case1"], "test": ["case2", "case3"]},
                                           {"train": ["case2", "case3"], "test": ["case0", "case1"]}]}))
    out = tmp_path / "cv"
    torch.manual_seed(0)  # test-side initialisation of the "trained" fold networks (training is skipped when model.pt exists)
    net = load_bundle_network(BUNDLE, config_files=["train.json"], overrides={"moving_mask_input": True}, weights=None)
    for k in (0, 1):
        (out / "mask_input_bending" / f"fold{k}").mkdir(parents=True)
        torch.save(net.state_dict(), out / "mask_input_bending" / f"fold{k}" / "model.pt")
    args = ["--dataset_dir", str(data), "--folds_file", str(folds), "--out", str(out), "--regularisers", "bending",
            "--name", "mask input", "--override", "moving_mask_input=true", "--cascade", "hard", "--segmenter_steps", "2",
            "--recompute_bn", "1", "--num_threads", "1"]
    assert _script().main(args) == 0
    fold0 = out / "mask_input_bending" / "fold0"
    for stage in ("none", "global", "all", "all_bn", "cascade_hard_global", "cascade_hard_all", "cascade_hard_all_bn"):
        assert (fold0 / f"{stage}.json").is_file(), stage
    cascade_net = load_bundle_network(BUNDLE, weights=fold0 / "cascade_hard.pt")
    assert cascade_net.in_channels == 2  # the fold's image-only network, loadable by the bundle's default inference config
    rows = json.loads((fold0 / "cascade_hard_all.json").read_text())["rows"]
    assert [r["case_id"] for r in rows] == ["case2", "case3"]  # the held-out pairs of fold 0 only
    seg = json.loads((out / "segmenter" / "fold0" / "seg.json").read_text())
    assert sorted(seg["dice"]) == ["case2", "case3"] and seg["steps"] == 2
    summary = json.loads((out / "summary.json").read_text())
    cascade = summary["runs"]["mask input, bending -> image-only cascade (hard predicted MR mask)"]
    assert cascade["global + dense"]["n_pairs"] == 4 and cascade["global + dense"]["vs_none"]["n_pairs"] == 4
    assert "vs_global" in cascade["global + dense"] and summary["segmenter"]["n_pairs"] == 4
    assert summary["runs"]["mask input, bending"]["global + dense, BN statistics recomputed"]["n_pairs"] == 4
    table = (out / "table.md").read_text()
    assert "| no registration | identity | 4 |" in table and "held-out Dice" in table
    # a rerun finds everything done: nothing is retrained or rescored
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} | {p: p.stat().st_mtime_ns for p in fold0.glob("*.json")}
    assert _script().main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
