"""Bayesian last layer: swap on a MONAI extractor (2-D, 3-D), predictive-mean convergence,
KL/ELBO, posterior draws for the probabilistic-robustness estimator, randomized_robustness, bad settings."""

from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import Convolution
from torch import nn

from medrobust.core.attacks.eot import PredictiveMean
from medrobust.core.defenses import (
    BayesianLinear,
    LastLayerPosterior,
    bayesian_last_layer,
    elbo_loss,
    randomized_robustness,
)
from medrobust.core.metrics.probabilistic import hoeffding_sample_size, probabilistic_robustness


def monai_net(dims: int) -> nn.Module:
    torch.manual_seed(0)
    pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
    return nn.Sequential(Convolution(dims, 1, 4, kernel_size=3, norm="batch"), pool, nn.Flatten(), nn.Linear(4, 2))


def data(dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand((4, 1) + (6,) * dims, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1, 0, 1])


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", ["variational", "dropout"])
def test_head_swap_frozen_extractor_and_deterministic_mean(dims, kind):
    net = monai_net(dims).eval()
    x, _ = data(dims)
    ref = net(x).detach()
    bayesian_last_layer(net, kind=kind, init_std=0.5)
    head = net[-1]
    assert isinstance(head, BayesianLinear)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == (
        ["3.weight", "3.bias", "3.weight_rho", "3.bias_rho"] if kind == "variational" else ["3.weight", "3.bias"])
    assert not torch.equal(net(x), net(x))  # stochastic in eval mode
    with head.deterministic():
        assert torch.allclose(net(x), ref, atol=1e-6)


@pytest.mark.parametrize("kind", ["variational", "dropout"])
def test_predictive_mean_converges_with_samples(kind):
    net = bayesian_last_layer(monai_net(3).eval(), kind=kind, init_std=1.0)
    x, _ = data(3)
    ref = PredictiveMean(net, samples=2000)(x).exp()
    def err(s: int) -> float:  # mean over 5 repeats of the max error against the 2000-draw reference
        return sum(float((PredictiveMean(net, samples=s)(x).exp() - ref).abs().max()) for _ in range(5)) / 5

    errs = {s: err(s) for s in (2, 20, 200)}
    assert errs[200] < errs[20] < errs[2]
    assert errs[200] < 0.04


def test_kl_and_elbo():
    net = bayesian_last_layer(monai_net(2), kind="variational", init_std=0.1, prior_std=1.0)
    head = net[-1]
    mu, s = head.weight.detach(), torch.full_like(head.weight, 0.1)
    expected = (torch.log(1.0 / s) + (s**2 + mu**2) / 2 - 0.5).sum()
    b, sb = head.bias.detach(), torch.full_like(head.bias, 0.1)
    expected = expected + (torch.log(1.0 / sb) + (sb**2 + b**2) / 2 - 0.5).sum()
    assert float(head.kl()) == pytest.approx(float(expected), rel=1e-4)
    x, y = data(2)
    torch.manual_seed(0)
    loss = elbo_loss(net, n_train=10, kl_weight=2.0)(net(x), y)
    assert float(loss) > 2.0 * float(expected) / 10
    drop = bayesian_last_layer(monai_net(2), kind="dropout")
    assert float(drop[-1].kl()) == 0.0


def test_posterior_draws_feed_probabilistic_robustness():
    net = bayesian_last_layer(monai_net(2).eval(), kind="variational", init_std=0.3)
    x, _ = data(2)
    sampler = LastLayerPosterior(net)
    f1 = sampler(torch.Generator().manual_seed(0))
    a = f1(x).detach()
    assert torch.equal(a, f1(x))
    b = sampler(torch.Generator().manual_seed(1))(x)
    assert not torch.equal(a, b)
    r = probabilistic_robustness(sampler, x[:2], input_eps=2 / 255, eps=0.2, delta=0.2, attack_steps=2, generator=0)
    assert int(r.n_samples[0]) == hoeffding_sample_size(0.2, 0.2)
    assert bool(((r.estimate >= 0) & (r.estimate <= 1)).all()) and "upper bound" in r.guarantee


@pytest.mark.parametrize("dims", [2, 3])
def test_randomized_robustness_on_bll(dims):
    base = monai_net(dims).eval()
    net = bayesian_last_layer(monai_net(dims).eval(), kind="variational", init_std=0.3)
    x, y = data(dims)
    r = randomized_robustness(net, x, y, eps=8 / 255, steps=2, eot_samples=2, predict_samples=3, queries=3,
                              transfer_from={"det": base}, return_probabilities=True)
    for k in ("pgd", "pgd_eot", "pgd_mean", "square", "transfer_det"):
        assert 0.0 <= r[k] <= r["clean_accuracy"]
    p = r["clean_probabilities"]  # the probabilities clean accuracy was computed from
    assert p.shape == (x.shape[0], 2) and torch.allclose(p.sum(1), torch.ones(x.shape[0]))
    assert float((p.argmax(1) == y).float().mean()) == pytest.approx(r["clean_accuracy"])
    assert "clean_probabilities" not in randomized_robustness(base, x, y, eps=8 / 255, steps=1, queries=2,
                                                              stochastic=False)
    assert r["worst_attack"] == min(r[k] for k in ("pgd", "pgd_eot", "pgd_mean", "square", "transfer_det",
                                                   "clean_accuracy"))


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="no nn.Linear head"):
        bayesian_last_layer(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(ValueError, match="kind must be one of"):
        bayesian_last_layer(monai_net(2), kind="laplace")
    with pytest.raises(ValueError, match="p must be"):
        bayesian_last_layer(monai_net(2), kind="dropout", p=1.0)
    with pytest.raises(ValueError, match="init_std must be > 0"):
        bayesian_last_layer(monai_net(2), init_std=0.0)
    with pytest.raises(ValueError, match="already a BayesianLinear"):
        bayesian_last_layer(bayesian_last_layer(monai_net(2)))
    with pytest.raises(ValueError, match="no BayesianLinear head"):
        elbo_loss(monai_net(2), n_train=10)
    with pytest.raises(ValueError, match="n_train must be > 0"):
        elbo_loss(bayesian_last_layer(monai_net(2)), n_train=0)
