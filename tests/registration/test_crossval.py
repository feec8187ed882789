"""Grouped folds (a patient's pairs never split), declared-folds checks, per-pair CV summaries with bootstrap CIs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medrobust.registration.crossval import (bootstrap_ci, cv_summary, grouped_folds, paired_difference, read_folds, read_pair_groups,
                                            summary_table, write_folds)


@pytest.mark.parametrize("n_folds", [2, 5])
def test_grouped_folds_keep_groups_together_and_cover_every_pair(n_folds):
    rng = np.random.default_rng(0)
    pairs = [f"p{i:02d}" for i in range(23)]
    groups = [int(g) for g in rng.integers(0, 9, len(pairs))]
    folds = grouped_folds(pairs, groups, n_folds=n_folds, seed=3)
    assert sorted(p for f in folds for p in f["test"]) == pairs
    for f in folds:
        assert not {groups[pairs.index(p)] for p in f["test"]} & {groups[pairs.index(p)] for p in f["train"]}
    assert folds == grouped_folds(pairs, groups, n_folds=n_folds, seed=3)  # seeded


def test_declared_folds_round_trip_and_are_checked(tmp_path):
    (tmp_path / "g.csv").write_text("pair,mr_group\na,0\nb,0\nc,1\nd,2\n")
    groups = read_pair_groups(tmp_path / "g.csv")
    folds = grouped_folds(list(groups), list(groups.values()), n_folds=3)
    path = write_folds(tmp_path / "folds.json", folds, description="test", groups=groups)
    assert read_folds(path) == folds
    bad = {"folds": [{"train": ["a"], "test": ["a", "b"]}]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="trains on its own test pairs"):
        read_folds(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="at least as many groups"):
        grouped_folds(["a", "b"], [0, 0], n_folds=2)
    with pytest.raises(ValueError, match="columns 'pair' and 'mr_group'"):
        (tmp_path / "x.csv").write_text("case,group\na,0\n")
        read_pair_groups(tmp_path / "x.csv")


def test_summary_is_per_pair_with_a_ci_that_covers_the_estimate():
    rows = [{"case_id": str(i), "tre_landmarks_mm": [float(i), float(i) + 2, float("nan")], "dice_gland": 0.5 + i / 40,
             "folding_pct": 0.0} for i in range(12)]
    s = cv_summary(rows, n_boot=500)
    assert s["n_pairs"] == 12 and s["tre_median_mm"] == pytest.approx(6.5)
    lo, hi = s["tre_median_ci"]
    assert lo <= s["tre_median_mm"] <= hi and hi - lo > 0
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    with pytest.raises(ValueError, match="no held-out pairs"):
        cv_summary([])


def test_paired_difference_is_per_pair_and_names_missing_pairs():
    ref = [{"case_id": str(i), "tre_landmarks_mm": [10.0 + i]} for i in range(20)]
    better = [{"case_id": str(i), "tre_landmarks_mm": [8.0 + i + (0.5 if i % 2 else -0.5)]} for i in range(20)]
    d = paired_difference(better, ref, n_boot=500)
    assert d["n_pairs"] == 20 and d["n_improved"] == 20
    assert d["delta_mean_mm"] == pytest.approx(-2.0)
    lo, hi = d["delta_mean_ci"]
    assert lo <= -2.0 <= hi < 0  # the marginal TRE CIs overlap; the paired CI excludes zero
    with pytest.raises(ValueError, match="no rows for pairs"):
        paired_difference([{"case_id": "x", "tre_landmarks_mm": [1.0]}], ref)
    with pytest.raises(ValueError, match="no pairs"):
        paired_difference([], ref)


def test_summary_table_shows_paired_columns_only_where_computed():
    rows = [{"case_id": str(i), "tre_landmarks_mm": [float(i)], "dice_gland": 0.5, "folding_pct": 0.0} for i in range(6)]
    s = cv_summary(rows, n_boot=50)
    table = summary_table({"none": {"identity": s}, "net": {"global only": {**s, "vs_none": paired_difference(rows, rows, n_boot=50)}}},
                          "a note")
    lines = table.splitlines()
    assert len(lines) == 6 and lines[-1] == "a note" and all(line.count("|") == 12 for line in lines[:4])
    assert "| net | global only | 6 |" in lines[3] and "+0.00 [0.00, 0.00]" in lines[3] and "0/6" in lines[3]
