"""FQT / QAT layers and quantize(): conversion of MONAI nets (2-D/3-D), unbiased FQT gradients,
trainer integration with an adversarial-training defense, bad settings."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.networks.nets import DenseNet, Regressor

from medrobust.core.quantization import FQTConv2d, FQTConv3d, FQTLinear, QuantSettings, quantize, quantized_layers


def _cnn(spatial_dims: int) -> torch.nn.Module:
    conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
    bn = torch.nn.BatchNorm2d if spatial_dims == 2 else torch.nn.BatchNorm3d
    pool = torch.nn.AdaptiveAvgPool2d if spatial_dims == 2 else torch.nn.AdaptiveAvgPool3d
    torch.manual_seed(0)
    return torch.nn.Sequential(conv(1, 4, 3, padding=1), bn(4), torch.nn.ReLU(), conv(4, 6, 3, stride=2),
                               torch.nn.ReLU(), pool(1), torch.nn.Flatten(), torch.nn.Linear(6, 3))


def _grads(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in net.parameters()])


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("grad_quantizer", ["ptq", "psq", "bhq"])
def test_monai_nets_forward_backward(spatial_dims, grad_quantizer):
    net = DenseNet(spatial_dims=spatial_dims, in_channels=1, out_channels=2, init_features=4, growth_rate=4,
                   block_config=(1, 1))
    norms = {n: m for n, m in net.named_modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d))}
    keys = list(net.state_dict())
    params = list(net.parameters())
    quantize(net, bits=6, grad_bits=4, grad_quantizer=grad_quantizer, seed=1)
    assert list(net.state_dict()) == keys  # checkpoints load either way
    assert all(a is b for a, b in zip(params, net.parameters()))  # optimisers keep working
    assert all(dict(net.named_modules())[n] is m for n, m in norms.items())  # norms untouched
    n_conv = sum(isinstance(m, (FQTConv2d, FQTConv3d, FQTLinear)) for m in net.modules())
    assert n_conv == len(quantized_layers(net)) >= 4
    x = torch.rand(3, 1, *([12] * spatial_dims))
    out = net(x)
    assert out.shape == (3, 2)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_regressor_3d_and_linear_layers():
    net = Regressor(in_shape=(1, 8, 8, 8), out_shape=(2,), channels=(4, 8), strides=(2, 2))
    quantize(net, bits=8, grad_bits=5, mode="fqt")
    assert any(isinstance(m, FQTLinear) for m in net.modules())
    net(torch.rand(2, 1, 8, 8, 8)).sum().backward()


def test_forward_is_qat_and_matches_reference():
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3)
    ref = copy.deepcopy(lin)
    q = quantize(lin, bits=4, mode="qat")
    assert isinstance(q, FQTLinear) and q.weight is lin.weight
    x = torch.randn(4, 5)
    from medrobust.core.quantization import fake_quantize
    expected = torch.nn.functional.linear(fake_quantize(x, 4), fake_quantize(ref.weight, 4), ref.bias)
    assert torch.allclose(q(x), expected)
    assert not torch.allclose(q(x), ref(x), atol=1e-4)  # 4 bits really changes the output


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_fqt_gradient_unbiased_tolerance_shrinks(spatial_dims):
    """The mean of n FQT gradients approaches the QAT gradient like 1/sqrt(n)."""
    qat = quantize(_cnn(spatial_dims), bits=8, mode="qat")
    fqt = quantize(_cnn(spatial_dims), bits=8, grad_bits=4, grad_quantizer="ptq", mode="fqt", seed=3)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, *([6] * spatial_dims), generator=gen)
    y = torch.tensor([0, 1, 2, 0])
    g_qat = _grads(qat, x, y)
    draws = torch.stack([_grads(fqt, x, y) for _ in range(128)])
    assert not torch.allclose(draws[0], g_qat, rtol=1e-3)  # a single FQT gradient is noisy
    spread = float((draws - g_qat).norm(dim=1).pow(2).mean().sqrt())  # per-draw error (std)
    for n in (8, 32, 128):
        err = float((draws[:n].mean(0) - g_qat).norm())
        assert err <= 4 * spread / n**0.5, (n, err, spread)


def test_eval_mode_uses_qat_gradient():
    net = quantize(_cnn(2), bits=8, grad_bits=2, grad_quantizer="ptq", mode="fqt").eval()
    ref = quantize(_cnn(2), bits=8, mode="qat").eval()
    x, y = torch.rand(2, 1, 6, 6), torch.tensor([0, 1])
    assert torch.allclose(_grads(net, x, y), _grads(ref, x, y), atol=1e-6)


def test_seeded_reproducible():
    x, y = torch.rand(3, 1, 6, 6, 6), torch.tensor([0, 1, 2])
    a = _grads(quantize(_cnn(3), bits=8, grad_bits=4, seed=5), x, y)
    b = _grads(quantize(_cnn(3), bits=8, grad_bits=4, seed=5), x, y)
    c = _grads(quantize(_cnn(3), bits=8, grad_bits=4, seed=6), x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_trainer_with_adversarial_training_one_step():
    from monai.engines import SupervisedTrainer

    from medrobust.core.defenses import PGDAdversarialTraining

    net = quantize(_cnn(3), bits=8, grad_bits=5, grad_quantizer="bhq")
    before = [p.detach().clone() for p in net.parameters()]
    data = [{"image": torch.rand(4, 1, 6, 6, 6), "label": torch.tensor([0, 1, 2, 0])}]
    trainer = SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=data, network=net,
                                optimizer=torch.optim.SGD(net.parameters(), 0.1),
                                loss_function=torch.nn.CrossEntropyLoss(),
                                iteration_update=PGDAdversarialTraining(eps=2 / 255, steps=2), decollate=False)
    trainer.run()
    assert torch.isfinite(torch.as_tensor(trainer.state.output["loss"]))
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters()))


@pytest.mark.parametrize("kwargs, match", [
    ({"bits": 1}, "bits must be an integer number of bits in"),
    ({"grad_bits": 1}, "grad_bits must be an integer"),
    ({"weight_grad_bits": 40}, "weight_grad_bits must be an integer"),
    ({"grad_quantizer": "lsq"}, "grad_quantizer must be one of"),
    ({"mode": "ptq"}, "mode must be one of"),
])
def test_bad_settings_raise(kwargs, match):
    net = _cnn(2)
    with pytest.raises(ValueError, match=match):
        quantize(net, **kwargs)
    assert not quantized_layers(net)  # nothing converted before the error


def test_unsupported_layer_and_skip():
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.ConvTranspose3d(2, 1, 3))
    with pytest.raises(TypeError, match=r"layer '1' \(ConvTranspose3d\) has no quantised version"):
        quantize(net)
    assert not quantized_layers(net)
    quantize(net, skip=["1"])
    assert isinstance(net[0], FQTConv3d) and type(net[1]) is torch.nn.ConvTranspose3d
    with pytest.raises(TypeError, match="already quantised"):
        quantize(net)
    net2 = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ConvTranspose2d(2, 1, 3))
    quantize(net2, unsupported="skip")
    assert isinstance(net2[0], FQTConv2d)
    with pytest.raises(ValueError, match=r"skip: \['nope'\] are not modules"):
        quantize(_cnn(2), skip=["nope"])
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        quantize("net")
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        QuantSettings(generator=3)
