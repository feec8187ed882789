"""Wald's SPRT, the equivalent fixed-sample test, and kappa calibration."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import binom

from medrobust.core.detectors.sequential import calibrate_kappa, fixed_sample_size, hypotheses, sprt


@pytest.mark.parametrize("p_true,p0,p1", [(0.1, 0.1, 0.3), (0.3, 0.1, 0.3), (0.018, 0.018, 0.022 * 1.5)])
def test_sprt_error_rates_on_bernoulli_streams(p_true, p0, p1):
    alpha = beta = 0.05
    streams = 4000
    g = torch.Generator().manual_seed(int(p_true * 1000))
    obs = torch.rand(3000, streams, generator=g) < p_true
    r = sprt(obs, streams, p0=p0, p1=p1, alpha=alpha, beta=beta, max_n=3000)
    assert float(r.decided.float().mean()) > 0.99
    se = (0.05 * 0.95 / streams) ** 0.5
    if p_true == p0:  # false positives: Wald's bound alpha / (1 - beta), plus 3 standard errors
        assert float(r.adversarial.float().mean()) <= alpha / (1 - beta) + 3 * se
    else:  # misses
        assert float((~r.adversarial).float().mean()) <= beta / (1 - alpha) + 3 * se
    n_fixed, _ = fixed_sample_size(p0, p1, alpha, beta)
    assert float(r.n_used.float().mean()) < n_fixed  # the point of a sequential test


def test_fixed_sample_size_meets_the_bounds():
    n, c = fixed_sample_size(0.1, 0.3, 0.05, 0.05)
    assert binom.sf(c - 1, n, 0.1) <= 0.05 and binom.cdf(c - 1, n, 0.3) <= 0.05
    assert (n, c) == (45, 9)


def test_calibrate_kappa():
    v = torch.tensor([0.0, 0.1, 0.2, 0.1])
    assert calibrate_kappa(v) == pytest.approx(0.1 + 2.5758293 * float(v.std()) / 2, rel=1e-6)


def test_hypotheses_and_bad_inputs():
    assert hypotheses(0.2, 0.1) == pytest.approx((0.18, 0.22))
    assert 0 < hypotheses(0.0, 0.1)[0] < hypotheses(0.0, 0.1)[1]  # kappa floored
    with pytest.raises(ValueError, match="p0 < p1"):
        sprt(torch.zeros(5, 2, dtype=torch.bool), 2, p0=0.3, p1=0.1)
    with pytest.raises(ValueError, match="alpha"):
        sprt(torch.zeros(5, 2, dtype=torch.bool), 2, p0=0.1, p1=0.3, alpha=0.6, beta=0.5)
    with pytest.raises(ValueError, match="max_n"):
        sprt(torch.zeros(5, 3, dtype=torch.bool), 2, p0=0.1, p1=0.3)
    with pytest.raises(ValueError, match="at least 2"):
        calibrate_kappa(torch.tensor([0.1]))
