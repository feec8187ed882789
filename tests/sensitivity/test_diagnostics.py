"""Trust checks fire on constructed bad cases and stay silent on healthy ones; intervals cover at the nominal rate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from medrobust.core.metrics.classification import binary_auc
from medrobust.sensitivity.diagnostics import (
    check_domain_shift,
    check_labels,
    check_predictions,
    declare_training_statistics,
    input_statistics,
)
from medrobust.sensitivity.intervals import auc_rows, bootstrap_indices, ks_rows, percentile_interval, proportion_interval
from medrobust.sensitivity.summary import summarise


def _clean(p, labels=None) -> pd.DataFrame:
    p = np.asarray(p, dtype=float)
    return pd.DataFrame({
        "case_id": [f"c{i}" for i in range(len(p))], "family": "f", "severity": 0.0, "p_positive": p,
        "predicted_class": (p >= 0.5).astype(int), "label": labels if labels is not None else np.nan, "subgroup": None,
    })


def _healthy(n=40, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    p = np.clip(0.5 + 0.25 * (2 * y - 1) + 0.15 * rng.standard_normal(n), 0.02, 0.98)
    return _clean(p, y)


@pytest.mark.parametrize(
    "p, expected",
    [
        ([1.0] * 30, {"saturated_clean", "one_class_clean"}),
        ([0.9995] * 20 + [0.2] * 10, {"saturated_clean"}),  # saturated but both classes
        ([0.7, 0.8, 0.6, 0.9] * 8, {"one_class_clean"}),
        ([0.9, 0.2] * 2, {"few_cases"}),
    ],
)
def test_prediction_checks_fire(p, expected) -> None:
    assert {f.code for f in check_predictions(_clean(p))} == expected


def test_prediction_and_label_checks_silent_when_healthy() -> None:
    df = _healthy()
    assert check_predictions(df) == [] and check_labels(df) == []


@pytest.mark.parametrize(
    "labels, code",
    [(None, "no_labels"), ([1] * 40, "one_class_labels"), ([1] * 35 + [0] * 5, "few_labels")],
)
def test_label_checks_fire(labels, code) -> None:
    df = _healthy().assign(label=labels if labels is not None else np.nan)
    assert [f.code for f in check_labels(df)] == [code]


def test_domain_shift_fires_far_and_silent_near() -> None:
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"mean": rng.normal(0.3, 0.02, 50), "std": rng.normal(0.25, 0.02, 50),
                          "background_fraction": rng.normal(0.4, 0.03, 50), "foreground_mean": rng.normal(0.5, 0.03, 50)})
    declared = declare_training_statistics(train, source="test")
    near = train.sample(10, random_state=1)
    assert check_domain_shift(near, declared) == []
    far = near.assign(background_fraction=0.05, mean=0.7)
    found = check_domain_shift(far, declared)
    assert [f.code for f in found] == ["domain_shift"] and "background_fraction" in found[0].message
    assert check_domain_shift(far, None) == []


def test_input_statistics_shapes_2d_3d() -> None:
    import torch

    x = torch.zeros(2, 1, 8, 8)
    x[0, :, :4] = 1.0
    st = input_statistics(x)
    assert st[0]["background_fraction"] == 0.5 and st[0]["foreground_mean"] == 1.0 and np.isnan(st[1]["foreground_mean"])
    assert len(input_statistics(torch.rand(3, 1, 4, 4, 4))) == 3


def test_vectorised_auc_ks_equal_the_references() -> None:
    rng = np.random.default_rng(1)
    s = np.round(rng.random((6, 25)), 1)  # ties
    y = rng.random((6, 25)) > 0.5
    for r in range(6):
        assert auc_rows(s, y)[r] == pytest.approx(binary_auc(s[r], y[r]))
        assert ks_rows(s, y)[r] == pytest.approx(ks_2samp(s[r][y[r]], s[r][~y[r]]).statistic)
    assert np.isnan(auc_rows(s[:1], np.ones((1, 25), bool))[0])


def test_intervals_cover_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(2)
    reps, n = 300, 40
    cp_hit = boot_hit = 0
    for r in range(reps):
        flips = int((rng.random(n) < 0.3).sum())
        lo, hi = proportion_interval(flips, n)
        cp_hit += lo <= 0.3 <= hi
        d = rng.exponential(0.1, n)  # |delta p| like: skewed, true mean 0.1
        lo, hi = percentile_interval(d[bootstrap_indices(n, n_boot=400, seed=r)].mean(1))
        boot_hit += lo <= 0.1 <= hi
    assert cp_hit / reps >= 0.93  # exact interval: at least nominal (up to simulation noise)
    assert 0.87 <= boot_hit / reps <= 0.99  # percentile bootstrap: near nominal at n = 40


def test_summary_has_intervals_around_each_figure() -> None:
    df = _healthy(30)
    pert = df.assign(severity=1.0, p_positive=np.clip(df["p_positive"] + 0.1, 0.01, 0.99))
    pert["predicted_class"] = (pert["p_positive"] >= 0.5).astype(int)
    both = pd.concat([df, pert]).assign(margin=lambda d: np.log(d.p_positive / (1 - d.p_positive)))
    s = summarise(both, seed=3)
    row = s[s.severity == 1.0].iloc[0]
    for m in ("flip_rate", "mean_abs_delta_p", "mean_abs_delta_margin", "auc", "ks", "accuracy"):
        assert row[f"{m}_lo"] <= row[m] <= row[f"{m}_hi"], m
    pd.testing.assert_frame_equal(s, summarise(both, seed=3))  # seeded
