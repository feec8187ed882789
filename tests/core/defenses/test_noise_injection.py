"""PNI / CNI: noise statistics, noise on at eval, module swapping on MONAI nets (2-D, 3-D),
parameter groups, the 0.5/0.5 adversarial-training step on the clean prediction, bad settings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.engines import SupervisedTrainer
from monai.networks.blocks import Convolution
from torch import nn

from medrobust.core.defenses import (
    NoiseInjectionTraining,
    NoisyLayer,
    PGDAdversarialTraining,
    build_defense,
    inject_noise,
    noise_disabled,
    noise_parameter_groups,
    set_noise_generator,
)
from medrobust.core.defenses.noise_injection import noisy_layers


def monai_net(dims: int) -> nn.Module:
    torch.manual_seed(0)
    pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
    return nn.Sequential(Convolution(dims, 1, 4, kernel_size=3, norm="batch"), Convolution(dims, 4, 4, kernel_size=3),
                         pool, nn.Flatten(), nn.Linear(4, 2))


def data(dims: int, b: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand((b, 1) + (6,) * dims, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1] * (b // 2))


@pytest.mark.parametrize("conv", [nn.Conv2d, nn.Conv3d])
def test_pni_draw_has_std_alpha_times_std_w(conv):
    layer = NoisyLayer(conv(8, 16, 3), kind="pni")
    layer.generator = torch.Generator().manual_seed(0)
    sd_w = float(layer.layer.weight.std())
    draws = torch.stack([layer.weight_noise().detach() for _ in range(20)])
    assert float(draws.std()) == pytest.approx(0.25 * sd_w, rel=0.03)
    assert float(draws.mean()) == pytest.approx(0.0, abs=0.01 * sd_w)


def test_pni_per_channel_alpha():
    layer = NoisyLayer(nn.Conv3d(4, 3, 3), kind="pni", per_channel=True)
    layer.generator = torch.Generator().manual_seed(1)
    assert layer.alpha.shape == (3, 1, 1, 1, 1)
    with torch.no_grad():
        layer.alpha.copy_(torch.tensor([0.1, 0.5, 1.0]).reshape(3, 1, 1, 1, 1))
    sd_w = float(layer.layer.weight.std())
    draws = torch.stack([layer.weight_noise().detach() for _ in range(200)])
    per_channel = draws.transpose(0, 1).reshape(3, -1).std(1) / sd_w
    assert torch.allclose(per_channel, torch.tensor([0.1, 0.5, 1.0]), rtol=0.05)


def test_cni_covariance_matches_its_factors():
    layer = NoisyLayer(nn.Linear(3, 2), kind="cni", rank=2)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        layer.diag.copy_(torch.rand(6, generator=g))
        layer.factor.copy_(0.1 * torch.randn(6, 2, generator=g))
    layer.generator = torch.Generator().manual_seed(4)
    draws = torch.stack([layer.weight_noise().detach().reshape(-1) for _ in range(10000)])
    emp = torch.cov(draws.T)
    cov = layer.covariance().detach()
    assert torch.allclose(emp, cov, atol=0.08 * float(cov.diag().max()))
    sd = float(layer.layer.weight.std())
    assert torch.allclose(cov - layer.factor @ layer.factor.T, torch.diag(sd * layer.diag.abs()).detach(), atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", ["pni", "cni"])
def test_swap_monai_net_noise_on_at_eval(dims, kind):
    net = monai_net(dims).eval()
    x, _ = data(dims)
    ref = net(x).detach()
    inject_noise(net, kind=kind, activations=True)
    assert sum(isinstance(m, NoisyLayer) for m in net.modules()) == 3
    assert not torch.equal(net(x), net(x))  # eval mode: noise still on
    with noise_disabled(net):
        assert torch.allclose(net(x), ref, atol=1e-6)  # mean weights = the original network
    assert all(m.enabled for m in net.modules() if isinstance(m, NoisyLayer))
    set_noise_generator(net, 7)
    a = net(x)
    set_noise_generator(net, 7)
    assert torch.equal(a, net(x))


def test_parameter_groups_keep_noise_out_of_weight_decay():
    net = inject_noise(monai_net(2), kind="pni", per_channel=True, activations=True)
    groups = noise_parameter_groups(net, weight_decay=5e-4)
    noise = {id(p) for p in groups[1]["params"]}
    assert groups[1]["weight_decay"] == 0.0 and len(noise) == 6  # alpha + alpha_act for 3 layers
    assert all(id(m.alpha) in noise for m in net.modules() if isinstance(m, NoisyLayer))
    assert len(groups[0]["params"]) + len(noise) == len(list(net.parameters()))


@pytest.mark.parametrize("dims", [2, 3])
def test_training_step_half_clean_half_adversarial_on_prediction(dims):
    net = inject_noise(monai_net(dims))
    x, y = data(dims)
    step = NoiseInjectionTraining(eps=4 / 255, steps=2, seed=0)
    assert step.clean_weight == 0.5
    with noise_disabled(net):
        net.eval()
        pred = net(x).argmax(1)
        wrong = 1 - pred
        a = step.make_adversarial(net, x, wrong, None)  # attacks the clean prediction, not the labels
        b = PGDAdversarialTraining(eps=4 / 255, steps=2, seed=0).make_adversarial(net, x, pred, None)
        assert torch.equal(a, b)
        loss, _ = step.training_loss(net, x, a, y, nn.CrossEntropyLoss())
        assert float(loss) == pytest.approx(float(0.5 * F.cross_entropy(net(a), y) + 0.5 * F.cross_entropy(net(x), y)),
                                            rel=1e-5)
    alpha0 = [float(m.alpha) for m in net.modules() if isinstance(m, NoisyLayer)]
    opt = torch.optim.SGD(noise_parameter_groups(net, weight_decay=0.0), lr=0.5)
    SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=[{"image": x, "label": y}] * 2, network=net,
                      optimizer=opt, loss_function=nn.CrossEntropyLoss(), iteration_update=step).run()
    alpha1 = [float(m.alpha) for m in net.modules() if isinstance(m, NoisyLayer)]
    assert alpha0 != alpha1  # alpha is learned


@pytest.mark.parametrize("kwargs, err, match", [
    ({"kind": "gauss"}, ValueError, "kind must be one of"),
    ({"kind": "cni", "rank": 0}, ValueError, "rank must be > 0"),
    ({"kind": "cni", "per_channel": True}, ValueError, "per_channel applies to kind='pni'"),
    ({"init": -0.1}, ValueError, "init must be >= 0"),
    ({"exclude": ("nope",)}, ValueError, "exclude: no modules named"),
])  # fmt: skip
def test_bad_settings_raise(kwargs, err, match):
    with pytest.raises(err, match=match):
        inject_noise(monai_net(2), **kwargs)


def test_bad_models_raise():
    with pytest.raises(ValueError, match="no Conv1d/2d/3d or Linear"):
        inject_noise(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="not a single layer"):
        inject_noise(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="lazy layer"):
        NoisyLayer(nn.LazyLinear(2))
    with pytest.raises(TypeError, match="Conv1d/2d/3d or Linear"):
        NoisyLayer(nn.ReLU())
    with pytest.raises(ValueError, match="label must be"):
        NoiseInjectionTraining(eps=0.01, label="soft")
    with pytest.raises(TypeError, match="generator must be"):
        set_noise_generator(inject_noise(monai_net(2)), "seed")


def test_exclude_keeps_layer_deterministic_and_no_double_swap():
    net = inject_noise(monai_net(2), exclude=("4",))
    assert isinstance(net[4], nn.Linear)
    with pytest.raises(ValueError, match="no Conv1d/2d/3d or Linear"):  # noisy layers are not wrapped again
        inject_noise(net, kind="pni", exclude=("4",))
    inject_noise(net)
    assert isinstance(net[4], NoisyLayer)
    assert not any(isinstance(m.layer, NoisyLayer) for m in net.modules() if isinstance(m, NoisyLayer))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name, kind, per_channel", [("pni-w", "pni", False), ("PNI_C", "pni", True), ("cni", "cni", False)])
def test_build_defense_names_inject_noise_at_first_iteration(dims, name, kind, per_channel):
    step = build_defense(name, eps=2 / 255, steps=1, seed=0)
    assert isinstance(step, NoiseInjectionTraining) and (step.inject, step.per_channel) == (kind, per_channel)
    net = monai_net(dims)
    x, y = data(dims)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    trainer = SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=[{"image": x, "label": y}] * 2,
                                network=net, optimizer=opt, loss_function=nn.CrossEntropyLoss(), iteration_update=step)
    trainer.run()
    layers = noisy_layers(net)
    assert len(layers) == 3 and all(m.kind == kind and m.per_channel == per_channel for m in layers)
    # the noise parameters were added once, without weight decay, and were trained
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["weight_decay"] == 0.0
    assert {id(p) for p in opt.param_groups[1]["params"]} == {id(p) for m in layers for p in m.parameters(recurse=False)}
    assert all(opt.state[p] for p in opt.param_groups[1]["params"])
    trainer.run()  # a second run does not inject again
    assert len(opt.param_groups) == 2 and not any(isinstance(m.layer, NoisyLayer) for m in layers)


def test_inject_option_bad_settings_and_noisy_net_kept():
    with pytest.raises(ValueError, match="inject must be None or one of"):
        NoiseInjectionTraining(eps=0.01, inject="gauss")
    with pytest.raises(ValueError, match="per_channel applies to inject='pni'"):
        NoiseInjectionTraining(eps=0.01, inject="cni", per_channel=True)
    net = inject_noise(monai_net(2), kind="cni", rank=2)  # already noisy: inject= leaves it alone
    x, y = data(2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=[{"image": x, "label": y}], network=net,
                      optimizer=opt, loss_function=nn.CrossEntropyLoss(),
                      iteration_update=NoiseInjectionTraining(eps=0.01, steps=1, inject="pni")).run()
    assert all(m.kind == "cni" for m in noisy_layers(net)) and len(opt.param_groups) == 1
