"""Grouped k-fold cross-validation of registration: folds by patient group, per-pair summaries with bootstrap CIs.

Pairs that share a moving (MR) volume are the same patient; a fold must hold all of a patient's
pairs, or the test pair's MR leaks into training. :func:`grouped_folds` assigns whole groups to
folds with scikit-learn's ``GroupKFold`` (shuffled groups, a fixed seed) and :func:`write_folds`
declares them in a JSON file before any training. :func:`cv_summary` pools the held-out rows of
all folds: TRE per pair (mean over the pair's landmarks), its median and mean over pairs with a
95 % percentile-bootstrap CI over pairs, gland Dice and folding %.

Example:
    >>> folds = grouped_folds(["a", "b", "c", "d", "e", "f"], [0, 0, 1, 2, 3, 4], n_folds=3, seed=0)
    >>> sum(len(f["test"]) for f in folds), all(("a" in f["test"]) == ("b" in f["test"]) for f in folds)
    (6, True)
    >>> s = cv_summary([{"case_id": "a", "tre_landmarks_mm": [1.0, 3.0], "dice_gland": 0.8, "folding_pct": 0.0},
    ...                 {"case_id": "b", "tre_landmarks_mm": [4.0], "dice_gland": 0.6, "folding_pct": 1.0}], n_boot=100)
    >>> s["tre_median_mm"], s["n_pairs"], s["dice_gland"]
    (3.0, 2, 0.7)
    >>> ref = [{"case_id": "a", "tre_landmarks_mm": [4.0]}, {"case_id": "b", "tre_landmarks_mm": [3.0]}]
    >>> d = paired_difference([{"case_id": "a", "tre_landmarks_mm": [2.0]}, {"case_id": "b", "tre_landmarks_mm": [4.0]}], ref, n_boot=100)
    >>> d["delta_mean_mm"], d["n_improved"], d["n_pairs"]
    (-0.5, 1, 2)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_pair_groups", "grouped_folds", "write_folds", "read_folds", "pair_tre", "bootstrap_ci", "cv_summary",
           "paired_difference", "summary_table"]


def read_pair_groups(path: str | Path) -> dict[str, str]:
    """``pair -> group`` from a CSV with columns ``pair`` and ``mr_group`` (e.g. mrus_dev's ``pairs_by_mr.csv``).

    Raises:
        ValueError: missing file or columns (named).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pair-group file {path} does not exist (expected a CSV with columns pair, mr_group).")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"pair", "mr_group"} <= set(rows[0]):
        raise ValueError(f"{path}: expected columns 'pair' and 'mr_group', got {list(rows[0]) if rows else 'no rows'}.")
    return {r["pair"]: str(r["mr_group"]) for r in rows}


def grouped_folds(pairs: Sequence[str], groups: Sequence[Any], *, n_folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    """``n_folds`` train/test splits in which every group sits in exactly one test fold.

    Groups are shuffled with ``seed`` and then balanced by size (scikit-learn ``GroupKFold``,
    ``shuffle=True``).

    Raises:
        ValueError: lengths differ, duplicate pairs, or fewer groups than folds.
    """
    from sklearn.model_selection import GroupKFold

    pairs, groups = list(pairs), [str(g) for g in groups]
    if len(pairs) != len(groups):
        raise ValueError(f"pairs ({len(pairs)}) and groups ({len(groups)}) must have the same length.")
    if len(set(pairs)) != len(pairs):
        raise ValueError("pairs: duplicate pair ids.")
    if len(set(groups)) < n_folds:
        raise ValueError(f"n_folds={n_folds} needs at least as many groups, got {len(set(groups))}.")
    splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    out = []
    for train_idx, test_idx in splitter.split(np.zeros(len(pairs)), groups=groups):
        out.append({"train": sorted(pairs[i] for i in train_idx), "test": sorted(pairs[i] for i in test_idx)})
    return out


def write_folds(path: str | Path, folds: Sequence[dict[str, list[str]]], *, description: str, groups: dict[str, str]) -> Path:
    """Write the declared folds (with the rule that made them and the pair groups) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"description": description, "groups": groups, "folds": list(folds)}, indent=1))
    return path


def read_folds(path: str | Path) -> list[dict[str, list[str]]]:
    """The ``folds`` of a JSON written by :func:`write_folds`; checks that test folds are disjoint.

    Raises:
        ValueError: missing file, no ``folds``, a pair in two test folds, or a test pair in its fold's training set.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"folds file {path} does not exist.")
    folds = json.loads(path.read_text()).get("folds")
    if not folds:
        raise ValueError(f"{path}: no 'folds' list.")
    seen: set[str] = set()
    for k, f in enumerate(folds):
        if seen & set(f["test"]):
            raise ValueError(f"{path}: fold {k} repeats test pairs {sorted(seen & set(f['test']))}.")
        if set(f["train"]) & set(f["test"]):
            raise ValueError(f"{path}: fold {k} trains on its own test pairs {sorted(set(f['train']) & set(f['test']))}.")
        seen |= set(f["test"])
    return folds


def pair_tre(row: dict[str, Any]) -> float:
    """A pair's TRE: the mean over its finite landmark TREs (NaN if none)."""
    v = np.asarray(row["tre_landmarks_mm"], dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def bootstrap_ci(values: Sequence[float], stat=np.median, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat`` over ``values`` (resampled with replacement, seeded)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = np.array([stat(v[rng.integers(0, v.size, v.size)]) for _ in range(n_boot)])
    a = (1 - level) / 2
    return float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def cv_summary(rows: Sequence[dict[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Summary over held-out pairs: TRE per pair (median, mean, 95 % bootstrap CIs over pairs), Dice, folding %.

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("rows: no held-out pairs to summarise.")
    tre = np.array([pair_tre(r) for r in rows])
    out: dict[str, Any] = {"n_pairs": len(rows), "tre_median_mm": float(np.nanmedian(tre)), "tre_mean_mm": float(np.nanmean(tre))}
    out["tre_median_ci"] = bootstrap_ci(tre, np.median, n_boot=n_boot, seed=seed)
    out["tre_mean_ci"] = bootstrap_ci(tre, np.mean, n_boot=n_boot, seed=seed)
    for key in ("dice_gland", "folding_pct", "std_log_jacobian", "hd95_gland_mm"):
        vals = np.array([r[key] for r in rows if key in r], dtype=float)
        if vals.size:
            out[key] = float(np.nanmean(vals))
    out["dice_gland_ci"] = bootstrap_ci([r["dice_gland"] for r in rows], np.mean, n_boot=n_boot, seed=seed)
    return out


def paired_difference(rows: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]], *, n_boot: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """Per-pair TRE change of ``rows`` against ``reference`` (the same pairs, e.g. no registration).

    The difference is taken pair by pair (``pair_tre(row) - pair_tre(reference row)``, matched by
    ``case_id``) before the median/mean and their 95 % percentile-bootstrap CIs over pairs, so the
    CI says whether the method moves TRE at all, which two overlapping marginal CIs cannot.

    Returns:
        ``n_pairs``, ``delta_median_mm``, ``delta_median_ci``, ``delta_mean_mm``, ``delta_mean_ci``,
        ``n_improved`` (pairs whose TRE went down).

    Raises:
        ValueError: no rows, or a row whose ``case_id`` is not in ``reference``.
    """
    if not rows:
        raise ValueError("rows: no pairs to compare.")
    ref = {r["case_id"]: pair_tre(r) for r in reference}
    absent = [r["case_id"] for r in rows if r["case_id"] not in ref]
    if absent:
        raise ValueError(f"reference has no rows for pairs {absent[:10]}.")
    d = np.array([pair_tre(r) - ref[r["case_id"]] for r in rows])
    return {"n_pairs": len(rows), "delta_median_mm": float(np.nanmedian(d)), "delta_median_ci": bootstrap_ci(d, np.median, n_boot=n_boot, seed=seed),
            "delta_mean_mm": float(np.nanmean(d)), "delta_mean_ci": bootstrap_ci(d, np.mean, n_boot=n_boot, seed=seed),
            "n_improved": int(np.sum(d < 0))}


def _ci(v: Sequence[float]) -> str:
    return f"[{v[0]:.2f}, {v[1]:.2f}]"


def summary_table(summary: dict[str, dict[str, dict[str, Any]]], note: str = "") -> str:
    """Markdown table of ``{configuration: {stage: cv_summary(...)}}``, one row per stage.

    A stage summary may carry ``vs_none`` and ``vs_global`` (:func:`paired_difference` against no
    registration and against the global stage), shown as the per-pair change columns. ``note``
    is appended as a paragraph under the table.
    """
    lines = ["| configuration | stage | pairs | TRE median (mm) [95 % CI] | TRE mean (mm) [95 % CI] | change vs none, median (mm) "
             "[95 % CI] | change vs none, mean (mm) [95 % CI] | pairs improved | dense vs global only, mean (mm) [95 % CI] | "
             "gland Dice | folding % |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, by_stage in summary.items():
        for stage, s in by_stage.items():
            vn, vg = s.get("vs_none"), s.get("vs_global")
            lines.append(
                f"| {name} | {stage} | {s['n_pairs']} | {s['tre_median_mm']:.2f} {_ci(s['tre_median_ci'])} | {s['tre_mean_mm']:.2f} "
                f"{_ci(s['tre_mean_ci'])} | "
                + (f"{vn['delta_median_mm']:+.2f} {_ci(vn['delta_median_ci'])} | {vn['delta_mean_mm']:+.2f} {_ci(vn['delta_mean_ci'])} | "
                   f"{vn['n_improved']}/{vn['n_pairs']} | " if vn else " | | | ")
                + (f"{vg['delta_mean_mm']:+.2f} {_ci(vg['delta_mean_ci'])} | " if vg else " | ")
                + f"{s['dice_gland']:.3f} | {s.get('folding_pct', 0.0):.3f} |")
    return "\n".join(lines) + ("\n\n" + note if note else "") + "\n"
