"""Per family x severity (x subgroup) metrics of a sensitivity run, with 95 % confidence intervals.

For each family, the severity-0 row of a case is its clean reference. Per (family, severity,
subgroup) with ``subgroup = "all"`` for every case:

- ``flip_rate``: fraction of cases whose predicted class differs from the clean one
  (Clopper-Pearson interval);
- ``mean_abs_delta_p``: mean ``|p - p_clean|`` of p(positive);
- ``mean_abs_delta_margin``: mean ``|m - m_clean|`` of the decision margin (log-odds of the
  positive class against its strongest competitor): it keeps moving when p(positive) is stuck
  at 0 or 1 (a saturated model), so saturation cannot hide sensitivity;
- ``mean_p`` and ``mean_margin``;
- ``auc``: ROC AUC of p(positive) against ``label == positive_class`` (:func:`~medrobust.core.metrics.classification.binary_auc`), when both
  classes are present among the labelled cases;
- ``ks``: two-sample Kolmogorov-Smirnov statistic between p(positive) of positives and
  negatives (``scipy.stats.ks_2samp``), the class separability of METHODS.md B2;
- ``accuracy``: fraction of labelled cases whose predicted class equals the label
  (Clopper-Pearson interval).

Every figure ``f`` has ``f_lo`` / ``f_hi``: a 95 % interval, exact Clopper-Pearson for the two
proportions, otherwise a percentile bootstrap over cases (:mod:`.intervals`, 1000 resamples,
seeded per cell from ``seed``, severity and subgroup, so the table is reproducible).

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"case_id": ["a", "b", "a", "b"], "family": ["f"] * 4, "severity": [0, 0, 1, 1],
    ...                    "p_positive": [0.9, 0.2, 0.4, 0.3], "margin": [2.2, -1.4, -0.4, -0.8],
    ...                    "predicted_class": [1, 0, 0, 0], "label": [1, 0, 1, 0], "subgroup": [None] * 4})
    >>> s = summarise(df)
    >>> s[s.severity == 1].flip_rate.item(), s[s.severity == 0].auc.item()
    (0.5, 1.0)
    >>> round(s[s.severity == 1].mean_abs_delta_margin.item(), 2)  # (|-0.4 - 2.2| + |-0.8 + 1.4|) / 2
    1.6
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from medrobust.core.metrics.classification import binary_auc
from medrobust.perturbations.registry import sample_seed
from medrobust.sensitivity.intervals import (
    N_BOOT,
    auc_rows,
    bootstrap_indices,
    ks_rows,
    percentile_interval,
    proportion_interval,
)

__all__ = ["SUMMARY_COLUMNS", "METRICS", "summarise", "summarise_cnr", "metrics_for"]

#: the summary figures; each has ``<name>_lo`` and ``<name>_hi`` columns beside it
METRICS = ("flip_rate", "mean_abs_delta_p", "mean_abs_delta_margin", "mean_p", "mean_margin", "auc", "ks", "accuracy")

SUMMARY_COLUMNS = (
    "family",
    "severity",
    "subgroup",
    "n",
    "n_labelled",
    *[c for m in METRICS for c in (m, f"{m}_lo", f"{m}_hi")],
)


def metrics_for(
    p: np.ndarray,
    cls: np.ndarray,
    p0: np.ndarray,
    cls0: np.ndarray,
    label: np.ndarray,
    positive_class: int = 1,
    *,
    margin: np.ndarray | None = None,
    margin0: np.ndarray | None = None,
    seed: int = 0,
    n_boot: int = N_BOOT,
) -> dict:
    """The metrics of one (family, severity, subgroup) cell and their 95 % intervals.

    Arrays are aligned by case (``(n,)``); ``label`` NaN = unknown; ``margin`` NaN (an older
    store) gives NaN margin figures. ``seed`` seeds the cell's bootstrap.
    """
    n = len(p)
    nan = float("nan")
    margin = np.full(n, np.nan) if margin is None else np.asarray(margin, dtype=float)
    margin0 = np.full(n, np.nan) if margin0 is None else np.asarray(margin0, dtype=float)
    known = ~np.isnan(label)
    y = label[known] == positive_class
    pk = p[known]
    both = bool(y.any() and (~y).any())
    flips = int(np.sum(cls != cls0))
    correct = int(np.sum(cls[known] == label[known]))
    out = {
        "n": int(n),
        "n_labelled": int(known.sum()),
        "flip_rate": flips / n if n else nan,
        "mean_abs_delta_p": float(np.mean(np.abs(p - p0))) if n else nan,
        "mean_abs_delta_margin": float(np.mean(np.abs(margin - margin0))) if n else nan,
        "mean_p": float(np.mean(p)) if n else nan,
        "mean_margin": float(np.mean(margin)) if n else nan,
        "auc": binary_auc(pk, y) if both else nan,
        "ks": float(ks_2samp(pk[y], pk[~y]).statistic) if both else nan,
        "accuracy": correct / int(known.sum()) if known.any() else nan,
    }
    out["flip_rate_lo"], out["flip_rate_hi"] = proportion_interval(flips, n)
    out["accuracy_lo"], out["accuracy_hi"] = proportion_interval(correct, int(known.sum()))
    if n:
        idx = bootstrap_indices(n, n_boot=n_boot, seed=seed)
        per_case = {
            "mean_abs_delta_p": np.abs(p - p0),
            "mean_abs_delta_margin": np.abs(margin - margin0),
            "mean_p": p,
            "mean_margin": margin,
        }
        for name, v in per_case.items():
            out[f"{name}_lo"], out[f"{name}_hi"] = (
                percentile_interval(v[idx].mean(1)) if np.isfinite(v).all() else (nan, nan)
            )
    else:
        for name in ("mean_abs_delta_p", "mean_abs_delta_margin", "mean_p", "mean_margin"):
            out[f"{name}_lo"], out[f"{name}_hi"] = nan, nan
    if both:
        kidx = bootstrap_indices(int(known.sum()), n_boot=n_boot, seed=seed + 1)
        out["auc_lo"], out["auc_hi"] = percentile_interval(auc_rows(pk[kidx], y[kidx]))
        out["ks_lo"], out["ks_hi"] = percentile_interval(ks_rows(pk[kidx], y[kidx]))
    else:
        out["auc_lo"] = out["auc_hi"] = out["ks_lo"] = out["ks_hi"] = nan
    return out


def summarise(
    predictions: pd.DataFrame,
    *,
    plan: Mapping[str, Sequence[float]] | None = None,
    positive_class: int = 1,
    seed: int = 0,
    n_boot: int = N_BOOT,
) -> pd.DataFrame:
    """Summary table (columns :data:`SUMMARY_COLUMNS`) from ``predictions.csv`` rows.

    Args:
        predictions: columns ``case_id, family, severity, p_positive, margin, predicted_class,
            label, subgroup`` (``margin`` may be missing: an older store).
        plan: optional ``{family: severities}`` to order families as swept.
        positive_class: label value counted as positive for AUC / KS.
        seed: base seed of the per-cell bootstraps.
        n_boot: bootstrap resamples per cell.
    """
    if predictions.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    # rows in a canonical order: the bootstraps resample by position, so intervals must not depend on the
    # order rows were written in (batching, resumes, merged torchrun shards)
    df = predictions.sort_values(["case_id", "family", "severity"], kind="stable").reset_index(drop=True)
    if "margin" not in df:
        df["margin"] = np.nan
    df["severity"] = df["severity"].astype(float)
    df["margin"] = pd.to_numeric(df["margin"], errors="coerce")
    df["label"] = pd.to_numeric(df["label"], errors="coerce")
    df["subgroup"] = df["subgroup"].where(df["subgroup"].notna() & (df["subgroup"].astype(str) != ""), None)
    families = list(plan) if plan is not None else list(dict.fromkeys(df["family"]))
    rows = []
    for fam in families:
        fd = df[df["family"] == fam]
        clean = fd[fd["severity"] == 0.0].set_index("case_id")
        if clean.empty:
            continue
        fd = fd[fd["case_id"].isin(clean.index)]
        p0 = clean["p_positive"].astype(float)
        m0 = clean["margin"].astype(float)
        c0 = clean["predicted_class"].astype(int)
        subgroups = ["all"] + sorted(str(s) for s in fd["subgroup"].dropna().unique())
        for sev in sorted(fd["severity"].unique()):
            cell = fd[fd["severity"] == sev]
            for sg in subgroups:
                part = cell if sg == "all" else cell[cell["subgroup"].astype(str) == sg]
                if part.empty:
                    continue
                ids = part["case_id"]
                m = metrics_for(
                    part["p_positive"].to_numpy(float),
                    part["predicted_class"].to_numpy(int),
                    p0.loc[ids].to_numpy(float),
                    c0.loc[ids].to_numpy(int),
                    part["label"].to_numpy(float),
                    positive_class,
                    margin=part["margin"].to_numpy(float),
                    margin0=m0.loc[ids].to_numpy(float),
                    seed=sample_seed(float(sev), sg, base_seed=seed) % (2**32),  # not the family: identical clean cells get identical intervals
                    n_boot=n_boot,
                )
                rows.append({"family": fam, "severity": float(sev), "subgroup": sg, **m})
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def summarise_cnr(cnr: pd.DataFrame) -> pd.DataFrame:
    """Mean ROI CNR per family x severity x subgroup, and its ratio to the clean CNR.

    Columns: ``family, severity, subgroup, n, mean_cnr, mean_cnr_ratio`` (ratio = CNR / clean
    CNR of the same case, averaged).
    """
    cols = ["family", "severity", "subgroup", "n", "mean_cnr", "mean_cnr_ratio"]
    if cnr is None or cnr.empty:
        return pd.DataFrame(columns=cols)
    df = cnr.copy()
    df["severity"] = df["severity"].astype(float)
    df["cnr"] = pd.to_numeric(df["cnr"], errors="coerce")
    clean = df[df["severity"] == 0.0].set_index(["family", "case_id"])["cnr"]
    df["ratio"] = [
        c / clean.get((f, k), np.nan) if clean.get((f, k), 0) else np.nan
        for f, k, c in zip(df["family"], df["case_id"], df["cnr"])
    ]
    df["subgroup"] = df["subgroup"].where(df["subgroup"].notna() & (df["subgroup"].astype(str) != ""), None)
    rows = []
    for (fam, sev), cell in df.groupby(["family", "severity"], sort=True):
        groups = [("all", cell)] + [(str(g), cell[cell["subgroup"] == g]) for g in sorted(cell["subgroup"].dropna().unique())]
        for sg, part in groups:
            rows.append(
                {
                    "family": fam,
                    "severity": float(sev),
                    "subgroup": sg,
                    "n": int(part["cnr"].notna().sum()),
                    "mean_cnr": float(part["cnr"].mean()),
                    "mean_cnr_ratio": float(part["ratio"].mean()),
                }
            )
    return pd.DataFrame(rows, columns=cols)
