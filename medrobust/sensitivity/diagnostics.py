"""When a sensitivity result cannot be trusted: checks stated at the top of the report and in summary.json.

A saturated model looks robust (p(positive) = 1.0 before and after every perturbation, zero flips);
an AUC from four cases looks perfect; labels that match no image label nothing. Each check here
returns :class:`Finding` records (``code``, ``level``, ``message``) that the report prints before
any figure:

- ``saturated_clean``: for most cases (> 50 %) the clean p(positive) lies within 1e-3 of 0 or 1;
- ``one_class_clean``: every clean prediction is the same class;
- ``domain_shift``: the clean model inputs' statistics (:func:`input_statistics`) lie far (> 3
  training standard deviations, median over cases) from those the model's bundle declares for
  its training data (``metadata.json`` -> ``medrobust.training_input_statistics``);
- ``few_cases``: fewer than :data:`MIN_CASES` cases;
- ``no_labels`` / ``one_class_labels`` / ``few_labels``: AUC and KS need labels of both classes,
  each with at least :data:`MIN_PER_CLASS` cases to mean much;
- ``label_mismatch``: images without a label row, label rows without an image, ambiguous ids;
- ``skipped_files``: files that could not be used;
- ``model_notice``: the model's own notice (e.g. a demonstration model trained on synthetic data).

Example:
    >>> import pandas as pd
    >>> clean = pd.DataFrame({"case_id": list("abcd"), "family": "f", "severity": 0.0,
    ...                       "p_positive": [1.0, 1.0, 0.9999, 1.0], "predicted_class": 1})
    >>> [f.code for f in check_predictions(clean)]
    ['saturated_clean', 'one_class_clean', 'few_cases']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

__all__ = [
    "Finding",
    "MIN_CASES",
    "MIN_PER_CLASS",
    "SATURATION_EPS",
    "STATISTICS",
    "input_statistics",
    "declare_training_statistics",
    "check_predictions",
    "check_labels",
    "check_domain_shift",
    "findings_to_json",
]

#: fewer cases than this: every figure's interval is wide
MIN_CASES = 20
#: fewer labelled cases of either class than this: AUC / KS are not reliable
MIN_PER_CLASS = 10
#: a clean p(positive) within this of 0 or 1 is saturated
SATURATION_EPS = 1e-3
#: the per-case input statistics compared with a bundle's declaration
STATISTICS = ("mean", "std", "background_fraction", "foreground_mean")
#: intensity (in the [0, 1] perturbation space) below which a pixel counts as background
BACKGROUND = 0.05
#: a dataset statistic this many training standard deviations away is a likely domain shift
SHIFT_Z = 3.0


@dataclass(frozen=True)
class Finding:
    """One check's result: ``level`` is ``"warning"`` (a figure may mislead) or ``"note"``."""

    code: str
    level: str
    message: str


def input_statistics(x: torch.Tensor) -> list[dict[str, float]]:
    """Per-sample statistics of clean model inputs ``x: (B, C, *spatial)`` in ``[0, 1]``.

    ``mean``, ``std``, ``background_fraction`` (pixels below 0.05) and ``foreground_mean`` (mean
    of the others; NaN when there are none).
    """
    flat = x.detach().float().reshape(x.shape[0], -1)
    fg = flat >= BACKGROUND
    n_fg = fg.sum(1)
    fg_mean = torch.where(n_fg > 0, (flat * fg).sum(1) / n_fg.clamp_min(1), torch.full_like(n_fg, float("nan"), dtype=flat.dtype))
    return [
        {"mean": float(m), "std": float(s), "background_fraction": float(b), "foreground_mean": float(f)}
        for m, s, b, f in zip(flat.mean(1), flat.std(1), 1.0 - fg.float().mean(1), fg_mean)
    ]


def declare_training_statistics(stats: pd.DataFrame, *, source: str) -> dict:
    """The ``training_input_statistics`` entry of a bundle's metadata from per-case statistics.

    Args:
        stats: one row per training case with the :data:`STATISTICS` columns (e.g. the
            ``inputs.csv`` of a sweep over the training data).
        source: how they were computed (kept in the metadata for the reader).
    """
    out: dict = {"source": source, "n_cases": int(len(stats))}
    for name in STATISTICS:
        v = pd.to_numeric(stats[name], errors="coerce").dropna()
        out[name] = {"mean": round(float(v.mean()), 5), "std": round(float(v.std(ddof=1)), 5),
                     "min": round(float(v.min()), 5), "max": round(float(v.max()), 5)}
    return out


def _clean(predictions: pd.DataFrame) -> pd.DataFrame:
    """The clean (severity 0) row of every case (of the first family; all families share it)."""
    if predictions.empty:
        return predictions
    zero = predictions[pd.to_numeric(predictions["severity"]) == 0.0]
    return zero.drop_duplicates("case_id")


def check_predictions(predictions: pd.DataFrame) -> list[Finding]:
    """Saturated / one-class clean predictions and too few cases."""
    clean = _clean(predictions)
    n = len(clean)
    out: list[Finding] = []
    if n == 0:
        return [Finding("no_predictions", "warning", "No predictions: no usable image was found.")]
    p = pd.to_numeric(clean["p_positive"]).to_numpy(float)
    saturated = np.minimum(p, 1.0 - p) < SATURATION_EPS
    if saturated.mean() > 0.5:
        out.append(Finding(
            "saturated_clean", "warning",
            f"Saturated model: for {int(saturated.sum())} of {n} cases the clean p(positive) is within "
            f"{SATURATION_EPS:g} of 0 or 1. Flip rate and |delta p| then stay near 0 however much the "
            "perturbations move the logits: read the decision-margin columns (mean |delta margin|) instead.",
        ))
    classes = pd.to_numeric(clean["predicted_class"]).astype(int)
    if n >= 2 and classes.nunique() == 1:
        out.append(Finding(
            "one_class_clean", "warning",
            f"Degenerate clean predictions: all {n} cases are predicted class {int(classes.iloc[0])}. "
            "The model does not discriminate on this data (domain shift, wrong preprocessing or a "
            "demonstration model); its sensitivity figures say little about a working classifier.",
        ))
    if n < MIN_CASES:
        out.append(Finding(
            "few_cases", "warning",
            f"Only {n} cases: every figure has a wide confidence interval (see the [lo, hi] columns); "
            f"use at least {MIN_CASES} cases, better hundreds.",
        ))
    return out


def check_labels(predictions: pd.DataFrame, *, positive_class: int = 1) -> list[Finding]:
    """Whether AUC and KS can be computed and trusted from the labels present."""
    clean = _clean(predictions)
    if clean.empty:
        return []
    label = pd.to_numeric(clean["label"], errors="coerce").dropna()
    if label.empty:
        return [Finding("no_labels", "note", "No labels: AUC, KS and accuracy are not computed (give --labels).")]
    n_pos = int((label == positive_class).sum())
    n_neg = int(len(label) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return [Finding(
            "one_class_labels", "warning",
            f"All {len(label)} labelled cases are {'positive' if n_neg == 0 else 'negative'}: AUC and KS need "
            "both classes and are not computed.",
        )]
    if min(n_pos, n_neg) < MIN_PER_CLASS:
        return [Finding(
            "few_labels", "warning",
            f"AUC and KS rest on {n_pos} positive and {n_neg} negative cases (fewer than {MIN_PER_CLASS} of a "
            "class): they are unreliable whatever their value; see their intervals.",
        )]
    return []


def check_domain_shift(inputs: pd.DataFrame, declared: Mapping | None) -> list[Finding]:
    """Compare the clean inputs' statistics with a bundle's declared training statistics.

    Args:
        inputs: one row per case with the :data:`STATISTICS` columns.
        declared: ``metadata["medrobust"]["training_input_statistics"]`` (or None: no check).
    """
    if not declared or inputs is None or inputs.empty:
        return []
    far = []
    for name in STATISTICS:
        ref = declared.get(name)
        if not isinstance(ref, Mapping) or name not in inputs:
            continue
        v = pd.to_numeric(inputs[name], errors="coerce").dropna()
        sd = float(ref.get("std", 0.0)) or 1e-6
        if v.empty:
            continue
        z = (float(v.median()) - float(ref["mean"])) / sd
        if abs(z) > SHIFT_Z:
            far.append(f"{name} median {float(v.median()):.3f} vs training {float(ref['mean']):.3f} +- {sd:.3f} ({z:+.1f} sd)")
    if not far:
        return []
    return [Finding(
        "domain_shift", "warning",
        "Likely domain shift: the clean inputs differ from the data the model declares it was trained on "
        f"({declared.get('source', 'bundle metadata')}): " + "; ".join(far) + ". Predictions, and their "
        "sensitivity, may not reflect how the model behaves on its own domain.",
    )]


def findings_to_json(findings: Sequence[Finding]) -> list[dict]:
    """Findings as JSON-ready dicts (for summary.json)."""
    return [asdict(f) for f in findings]
