"""SIDP: one step equals the formula on a tiny model; normalisation checks; Opacus DP-SGD on a MONAI
net after ModuleValidator.fix (2-D and 3-D) and its accountant; bad settings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.engines import SupervisedTrainer
from monai.networks.blocks import Convolution
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medrobust.core.defenses import (
    SIDPTraining,
    build_defense,
    dp_epsilon,
    make_dp_sgd,
    non_affine_normalization,
    opacus_compatible,
)
from medrobust.core.defenses.sidp import sidp_noise_scale


def test_sidp_step_equals_formula():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(5, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1])
    lr, c, sigma, b_exp = 0.5, 0.3, 2.0, 4.0
    w0 = {n: p.detach().clone() for n, p in net.named_parameters()}
    step = SIDPTraining(max_grad_norm=c, noise_multiplier=sigma, batch_size=b_exp, seed=7)
    step.step(net, torch.optim.SGD(net.parameters(), lr=lr), x, y, nn.CrossEntropyLoss())
    # by hand: the same noise draw, per-example gradients at the noisy weights, clip, sum / B, SGD
    s = lr * c * sigma / b_exp
    assert step.last_noise_scale == pytest.approx(s)
    g = torch.Generator().manual_seed(7)
    noisy = {n: w + s * torch.randn(w.shape, generator=g) for n, w in w0.items()}
    total = {n: torch.zeros_like(w) for n, w in w0.items()}
    for i in range(5):
        wts = {n: v.clone().requires_grad_(True) for n, v in noisy.items()}
        loss = F.cross_entropy(F.linear(x[i:i + 1].flatten(1), wts["1.weight"], wts["1.bias"]), y[i:i + 1])
        grads = torch.autograd.grad(loss, list(wts.values()))
        norm = torch.sqrt(sum((gr**2).sum() for gr in grads))
        for (n, _), gr in zip(wts.items(), grads):
            total[n] += gr * min(1.0, c / (float(norm) + 1e-6))
    for n, p in net.named_parameters():
        assert torch.allclose(p.detach(), w0[n] - lr * total[n] / b_exp, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_sidp_trains_monai_net_with_non_affine_norm(dims):
    net = nn.Sequential(Convolution(dims, 1, 4, kernel_size=3, norm="batch"), nn.Flatten(), nn.LazyLinear(2))
    x = torch.rand((6, 1) + (5,) * dims, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1] * 3)
    net(x)
    with pytest.raises(ValueError, match="non_affine_normalization"):
        SIDPTraining(max_grad_norm=1.0, noise_multiplier=1.0).step(net, torch.optim.SGD(net.parameters(), 0.1), x, y,
                                                                   nn.CrossEntropyLoss())
    net = non_affine_normalization(net)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    before = [p.detach().clone() for p in net.parameters()]
    SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=[(x, y)], network=net,
                      optimizer=torch.optim.SGD(net.parameters(), 0.1), loss_function=nn.CrossEntropyLoss(),
                      iteration_update=SIDPTraining(max_grad_norm=1.0, noise_multiplier=1.0, batch_size=6)).run()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_affine_groupnorm_is_refused():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(ValueError, match="affine parameters"):
        SIDPTraining(max_grad_norm=1.0, noise_multiplier=1.0).step(
            net, torch.optim.SGD(net.parameters(), 0.1), torch.rand(2, 1, 6, 6), torch.tensor([0, 1]),
            nn.CrossEntropyLoss())


@pytest.mark.parametrize("dims", [2, 3])
def test_opacus_dp_sgd_on_monai_net(dims):
    pytest.importorskip("opacus")
    torch.manual_seed(0)
    net = nn.Sequential(Convolution(dims, 1, 4, kernel_size=3, norm="batch"),
                        nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="opacus_compatible"):
        make_dp_sgd(net, torch.optim.SGD(net.parameters(), 0.1), DataLoader(TensorDataset(torch.rand(2, 1, 4, 4))),
                    noise_multiplier=1.0, max_grad_norm=1.0)
    net = opacus_compatible(net)
    assert any(isinstance(m, nn.GroupNorm) for m in net.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    x = torch.rand((16, 1) + (5,) * dims, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1] * 8)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    engine, model, opt, dp_loader = make_dp_sgd(net, torch.optim.SGD(net.parameters(), 0.1), loader,
                                                noise_multiplier=1.0, max_grad_norm=1.0, seed=0)
    SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=dp_loader, network=model, optimizer=opt,
                      loss_function=nn.CrossEntropyLoss()).run()
    eps = engine.get_epsilon(1e-5)
    steps = sum(h[2] for h in engine.accountant.history)
    assert eps > 0 and steps == len(dp_loader)
    assert dp_epsilon(sample_rate=0.25, noise_multiplier=1.0, steps=steps, delta=1e-5) == pytest.approx(eps, rel=1e-6)


def test_dp_epsilon_values_and_monotonicity():
    pytest.importorskip("opacus")
    assert dp_epsilon(sample_rate=256 / 60000, noise_multiplier=1.1, steps=60 * 235) == pytest.approx(2.60, abs=0.01)
    more_noise = dp_epsilon(sample_rate=0.1, noise_multiplier=2.0, steps=100)
    assert more_noise < dp_epsilon(sample_rate=0.1, noise_multiplier=1.0, steps=100)


@pytest.mark.parametrize("kwargs, match", [
    ({"sample_rate": 0.0, "noise_multiplier": 1.0, "steps": 10}, "sample_rate must be > 0"),
    ({"sample_rate": 0.1, "noise_multiplier": 0.0, "steps": 10}, "noise_multiplier must be > 0"),
    ({"sample_rate": 0.1, "noise_multiplier": 1.0, "steps": 0}, "steps must be > 0"),
    ({"sample_rate": 0.1, "noise_multiplier": 1.0, "steps": 10, "delta": 1.0}, "delta must be"),
    ({"sample_rate": 0.1, "noise_multiplier": 1.0, "steps": 10, "accountant": "moments"}, "accountant must be"),
])  # fmt: skip
def test_dp_epsilon_bad_settings(kwargs, match):
    pytest.importorskip("opacus")
    with pytest.raises(ValueError, match=match):
        dp_epsilon(**kwargs)


def test_sidp_bad_settings():
    with pytest.raises(ValueError, match="max_grad_norm must be > 0"):
        SIDPTraining(max_grad_norm=0.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="noise_multiplier must be >= 0"):
        SIDPTraining(max_grad_norm=1.0, noise_multiplier=-1.0)
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        sidp_noise_scale(lr=0.1, max_grad_norm=1.0, noise_multiplier=1.0, batch_size=0)


@pytest.mark.parametrize("dims", [2, 3])
def test_build_defense_sidp_converts_batchnorm_at_first_step(dims):
    step = build_defense("sidp", eps=2 / 255, steps=3, max_grad_norm=0.5, noise_multiplier=2.0, seed=1)
    assert isinstance(step, SIDPTraining) and step.convert_normalization
    assert (step.max_grad_norm, step.noise_multiplier) == (0.5, 2.0)
    assert build_defense("sidp").max_grad_norm == 1.0  # no eps needed, defaults C = sigma = 1
    net = nn.Sequential(Convolution(dims, 1, 4, kernel_size=3, norm="batch"), nn.Flatten(), nn.Linear(4 * 5**dims, 2))
    x = torch.rand((6, 1) + (5,) * dims, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1] * 3)
    before = [p.detach().clone() for p in net.parameters() if p.ndim > 1]
    SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=[(x, y)], network=net,
                      optimizer=torch.optim.SGD(net.parameters(), 0.1), loss_function=nn.CrossEntropyLoss(),
                      iteration_update=step).run()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert any(isinstance(m, nn.GroupNorm) and not m.affine for m in net.modules())
    assert step.last_noise_scale == pytest.approx(0.1 * 0.5 * 2.0 / 6)
    assert any(not torch.equal(a, b) for a, b in zip(before, [p for p in net.parameters() if p.ndim > 1]))
    with pytest.raises(ValueError, match="the model itself is a normalisation layer"):
        SIDPTraining(convert_normalization=True).step(nn.BatchNorm1d(4), torch.optim.SGD([torch.zeros(1, requires_grad=True)], 0.1),
                                                      torch.rand(2, 4), torch.tensor([0, 1]), nn.CrossEntropyLoss())
