"""Probabilistic robustness: Hoeffding / sequential sample counts and their coverage on a model
whose true P_safe is known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medrobust.core.metrics.probabilistic import (
    GaussianWeightPosterior,
    MCDropoutPosterior,
    clopper_pearson,
    hoeffding_sample_size,
    massart_sample_size,
    probabilistic_robustness,
)


class _Constant(nn.Module):
    """Ignores its input: no perturbation can move its softmax (always safe)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 2)


class _Sensitive(nn.Module):
    """Logit 1000 (mean(x) - m0): any shift of the mean flips the softmax (never safe)."""

    def __init__(self, m0: torch.Tensor) -> None:
        super().__init__()
        self.m0 = m0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 1000 * (x.flatten(1).mean(1) - self.m0)
        return torch.stack([torch.zeros_like(z), z], 1)


def _bernoulli_sampler(p_safe: float, x: torch.Tensor):
    safe, unsafe = _Constant(), _Sensitive(x.flatten(1).mean(1))

    def sampler(g: torch.Generator) -> nn.Module:
        return safe if float(torch.rand((), generator=g)) < p_safe else unsafe

    return sampler


def _shift(model, x):  # an attack that always finds the violation of the sensitive model
    return (x + 0.01).clamp(0, 1)


@pytest.mark.parametrize("eps,delta", [(0.075, 0.075), (0.05, 0.01), (0.1, 0.2), (0.01, 0.05)])
def test_hoeffding_count(eps, delta):
    n = hoeffding_sample_size(eps, delta)
    assert n == math.ceil(math.log(2 / delta) / (2 * eps**2))
    assert 2 * math.exp(-2 * n * eps**2) <= delta < 2 * math.exp(-2 * (n - 1) * eps**2)


def test_paper_setting_is_292():
    assert hoeffding_sample_size(0.075, 0.075) == 292


@pytest.mark.parametrize("sequential", [False, True])
def test_coverage_on_a_model_with_known_p_safe(sequential):
    x = torch.full((1, 1, 4, 4), 0.5)
    eps, delta, trials = 0.075, 0.075, 40
    hits, used = 0, []
    for p_true, seed in [(0.3, 0), (0.92, 1)]:
        for t in range(trials // 2):
            r = probabilistic_robustness(_bernoulli_sampler(p_true, x), x, attack=_shift, eps=eps, delta=delta,
                                         sequential=sequential, generator=1000 * seed + t)  # fmt: skip
            hits += abs(float(r.estimate[0]) - p_true) <= eps
            used.append(int(r.n_samples[0]))
            assert int(r.n_safe[0]) <= int(r.n_samples[0])
    # each estimate is within eps with probability >= 1 - delta; 40 trials: allow the binomial slack
    assert hits / trials >= 1 - delta - 0.05
    if sequential:
        assert max(used) <= 292 and min(used) < 292  # stops early when P_safe is far from 1/2
    else:
        assert set(used) == {292}


def test_massart_and_clopper_pearson():
    lo, hi = clopper_pearson(0, 10, 0.05)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-6)
    lo, hi = clopper_pearson(10, 10, 0.05)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 10), rel=1e-6)
    from scipy.stats import beta

    lo, hi = clopper_pearson(7, 30, 0.1)
    assert lo == pytest.approx(beta.ppf(0.05, 7, 24)) and hi == pytest.approx(beta.ppf(0.95, 8, 23))
    assert massart_sample_size((0.3, 0.7), 0.075, 0.05) is None  # interval holds 1/2: no saving
    far = massart_sample_size((0.01, 0.05), 0.075, 0.025)
    near = massart_sample_size((0.3, 0.4), 0.075, 0.025)
    assert far < near <= hoeffding_sample_size(0.075, 0.025)
    assert massart_sample_size((0.95, 0.99), 0.075, 0.025) == far


def test_default_pgd_attack_with_mc_dropout_and_guarantee_text(data2d):
    net = nn.Sequential(nn.Flatten(), nn.Linear(144, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))
    net.eval()
    x = data2d[0][:2]
    rng = torch.get_rng_state()
    r = probabilistic_robustness(MCDropoutPosterior(net), x, input_eps=0.02, eps=0.2, delta=0.2, attack_steps=2,
                                 generator=0)  # fmt: skip
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is untouched
    assert not net.training and not net[3].training  # the user's model is untouched
    assert r.n_samples.tolist() == [hoeffding_sample_size(0.2, 0.2)] * 2
    assert bool(((r.estimate >= 0) & (r.estimate <= 1)).all())
    assert "upper bound" in r.guarantee and "0.2" in r.guarantee and "Chernoff-Hoeffding" in r.guarantee
    r2 = probabilistic_robustness(MCDropoutPosterior(net), x, input_eps=0.02, eps=0.2, delta=0.2, attack_steps=2,
                                  generator=0)  # fmt: skip
    assert torch.equal(r.estimate, r2.estimate)  # seeded


def test_posteriors_are_deterministic_draws(data2d):
    x = data2d[0][:3]
    net = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(144, 2))
    post = MCDropoutPosterior(net)
    g = torch.Generator().manual_seed(0)
    f1, f2 = post(g), post(g)
    assert torch.equal(f1(x), f1(x)) and not torch.equal(f1(x), f2(x))
    gw = GaussianWeightPosterior(net, scale=0.5)
    w0 = net[2].weight.detach().clone()
    m = gw(g)
    assert not torch.equal(m[2].weight, w0) and torch.equal(net[2].weight, w0)
    with pytest.raises(ValueError, match="no dropout"):
        MCDropoutPosterior(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_bad_inputs():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="eps and delta"):
        hoeffding_sample_size(0.0, 0.1)
    with pytest.raises(ValueError, match="alpha < delta"):
        probabilistic_robustness(_bernoulli_sampler(0.5, x), x, attack=_shift, sequential=True, alpha=0.1, delta=0.05)
    with pytest.raises(ValueError, match="criterion"):
        probabilistic_robustness(_bernoulli_sampler(0.5, x), x, attack=_shift, criterion="dice")
