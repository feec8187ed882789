"""Confidence intervals of the sensitivity summary: case bootstrap (seeded) and Clopper-Pearson.

Every figure of a summary cell is a statistic over *cases*, so its uncertainty comes from which
cases were sampled: a percentile bootstrap that resamples cases with replacement (the same
resampled case sets for every statistic of a cell, so the intervals are coherent), seeded from
the cell's name and the run seed. Proportions (flip rate, accuracy) get the exact
Clopper-Pearson interval instead (:func:`medrobust.core.metrics.probabilistic.clopper_pearson`).

The bootstrap is vectorised over resamples (hand-written because ``scipy.stats.bootstrap`` calls
the statistic per resample, which for AUC and KS over ~100 summary cells x 1000 resamples is
seconds instead of milliseconds): means are row means of an index matrix, AUC is the
Mann-Whitney statistic from tie-averaged ranks per row, KS the largest gap of the two empirical
CDFs per row.

Example:
    >>> import numpy as np
    >>> idx = bootstrap_indices(5, n_boot=200, seed=0)
    >>> idx.shape
    (200, 5)
    >>> lo, hi = percentile_interval(np.arange(5.0)[idx].mean(1))
    >>> bool(0.0 < lo < 2.0 < hi < 4.0)
    True
    >>> float(np.round(auc_rows(np.array([[0.1, 0.4, 0.35, 0.8]]), np.array([[0, 0, 1, 1]]))[0], 2))
    0.75
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from medrobust.core.metrics.probabilistic import clopper_pearson

__all__ = ["LEVEL", "N_BOOT", "bootstrap_indices", "percentile_interval", "auc_rows", "ks_rows", "proportion_interval"]

#: two-sided confidence level of every interval in a summary
LEVEL = 0.95
#: bootstrap resamples per summary cell
N_BOOT = 1000


def bootstrap_indices(n: int, *, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``(n_boot, n)`` case indices drawn with replacement from a local, seeded generator."""
    if n < 1:
        raise ValueError(f"n should be >= 1 case, got {n}.")
    return np.random.default_rng(int(seed)).integers(0, n, size=(int(n_boot), int(n)))


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap ``values`` (NaNs, e.g. one-class resamples, ignored)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    a = (1.0 - level) / 2.0
    return float(np.quantile(v, a)), float(np.quantile(v, 1.0 - a))


def auc_rows(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC per row of ``scores`` / ``positive`` ``(R, n)`` (ties count 1/2; NaN for one-class rows)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(positive).astype(bool)
    ranks = rankdata(s, axis=1)
    n1 = y.sum(1)
    n0 = y.shape[1] - n1
    u = (ranks * y).sum(1) - n1 * (n1 + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n1 > 0) & (n0 > 0), u / (n1 * n0), np.nan)


def ks_rows(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Two-sample Kolmogorov-Smirnov statistic between positives and negatives per row ``(R, n)``.

    Equals ``scipy.stats.ks_2samp(s[y], s[~y]).statistic`` row by row (NaN for one-class rows).
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(positive).astype(bool)
    order = np.argsort(s, axis=1, kind="stable")
    ss = np.take_along_axis(s, order, 1)
    ys = np.take_along_axis(y, order, 1)
    n1 = ys.sum(1, keepdims=True).astype(float)
    n0 = ys.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        step = np.where(ys, 1.0 / n1, -1.0 / n0)
    gap = np.cumsum(step, axis=1)
    # only the last position of a run of tied scores is a valid CDF point
    last = np.ones_like(ys, dtype=bool)
    last[:, :-1] = ss[:, 1:] != ss[:, :-1]
    out = np.where(last, np.abs(gap), 0.0).max(1)
    return np.where((n1[:, 0] > 0) & (n0[:, 0] > 0), out, np.nan)


def proportion_interval(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact Clopper-Pearson interval of ``successes / n``; NaNs when ``n == 0``."""
    if n <= 0:
        return float("nan"), float("nan")
    return clopper_pearson(int(successes), int(n), 1.0 - level)
