"""Per family x severity (x subgroup) metrics of a sensitivity run.

For each family, the severity-0 row of a case is its clean reference. Per (family, severity,
subgroup) with ``subgroup = "all"`` for every case:

- ``flip_rate``: fraction of cases whose predicted class differs from the clean one;
- ``mean_abs_delta_p``: mean ``|p - p_clean|`` of p(positive);
- ``mean_p``: mean p(positive);
- ``auc``: ROC AUC of p(positive) against ``label == positive_class`` (:func:`~medrobust.core.metrics.classification.binary_auc`), when both
  classes are present among the labelled cases;
- ``ks``: two-sample Kolmogorov-Smirnov statistic between p(positive) of positives and
  negatives (``scipy.stats.ks_2samp``), the class separability of METHODS.md B2;
- ``accuracy``: fraction of labelled cases whose predicted class equals the label.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"case_id": ["a", "b", "a", "b"], "family": ["f"] * 4, "severity": [0, 0, 1, 1],
    ...                    "p_positive": [0.9, 0.2, 0.4, 0.3], "predicted_class": [1, 0, 0, 0],
    ...                    "label": [1, 0, 1, 0], "subgroup": [None] * 4})
    >>> s = summarise(df)
    >>> s[s.severity == 1].flip_rate.item(), s[s.severity == 0].auc.item()
    (0.5, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from medrobust.core.metrics.classification import binary_auc

__all__ = ["SUMMARY_COLUMNS", "summarise", "summarise_cnr", "metrics_for"]

SUMMARY_COLUMNS = (
    "family",
    "severity",
    "subgroup",
    "n",
    "n_labelled",
    "flip_rate",
    "mean_abs_delta_p",
    "mean_p",
    "auc",
    "ks",
    "accuracy",
)


def metrics_for(p: np.ndarray, cls: np.ndarray, p0: np.ndarray, cls0: np.ndarray, label: np.ndarray, positive_class: int = 1) -> dict:
    """The metrics of one (family, severity, subgroup) cell (arrays aligned by case; label NaN = unknown)."""
    known = ~np.isnan(label)
    y = label[known] == positive_class
    pk = p[known]
    both = bool(y.any() and (~y).any())
    return {
        "n": int(len(p)),
        "n_labelled": int(known.sum()),
        "flip_rate": float(np.mean(cls != cls0)) if len(p) else np.nan,
        "mean_abs_delta_p": float(np.mean(np.abs(p - p0))) if len(p) else np.nan,
        "mean_p": float(np.mean(p)) if len(p) else np.nan,
        "auc": binary_auc(pk, y) if both else np.nan,
        "ks": float(ks_2samp(pk[y], pk[~y]).statistic) if both else np.nan,
        "accuracy": float(np.mean(cls[known] == label[known])) if known.any() else np.nan,
    }


def summarise(
    predictions: pd.DataFrame, *, plan: Mapping[str, Sequence[float]] | None = None, positive_class: int = 1
) -> pd.DataFrame:
    """Summary table (columns :data:`SUMMARY_COLUMNS`) from ``predictions.csv`` rows.

    Args:
        predictions: columns ``case_id, family, severity, p_positive, predicted_class, label, subgroup``.
        plan: optional ``{family: severities}`` to order families as swept.
        positive_class: label value counted as positive for AUC / KS.
    """
    if predictions.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    df = predictions.copy()
    df["severity"] = df["severity"].astype(float)
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
        c0 = clean["predicted_class"].astype(int)
        subgroups = ["all"] + sorted(str(s) for s in fd["subgroup"].dropna().unique())
        for sev in sorted(fd["severity"].unique()):
            cell = fd[fd["severity"] == sev]
            for sg in subgroups:
                part = cell if sg == "all" else cell[cell["subgroup"].astype(str) == sg]
                if part.empty:
                    continue
                m = metrics_for(
                    part["p_positive"].to_numpy(float),
                    part["predicted_class"].to_numpy(int),
                    p0.loc[part["case_id"]].to_numpy(float),
                    c0.loc[part["case_id"]].to_numpy(int),
                    part["label"].to_numpy(float),
                    positive_class,
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
