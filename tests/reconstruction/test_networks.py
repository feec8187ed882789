"""Reconstruction networks: shapes (2-D, 3-D, odd sizes), 2 and 8 coils, gradient flow, size, errors."""

from __future__ import annotations

import pytest
import torch

from medrobust.reconstruction.networks import ReconUNet, VarNet, count_parameters


def _mask(width: int, centre: int = 4, every: int = 3) -> torch.Tensor:
    m = torch.zeros(1, 1, 1, width, 1)
    m[..., ::every, :] = 1
    m[..., width // 2 - centre // 2: width // 2 + centre // 2, :] = 1
    return m


@pytest.mark.parametrize("spatial, feats", [((40, 36), (8, 16, 32, 64, 128, 8)), ((33, 17), (4, 4, 8, 8, 16, 4)),
                                            ((20, 24, 18), (4, 4, 8, 8, 16, 4))])
def test_unet_shapes_and_units(spatial, feats):
    net = ReconUNet(spatial_dims=len(spatial), features=feats)
    x = torch.rand(3, 1, *spatial) * 500.0
    out = net(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    # output is in the input's units (denormalised): the scale follows the input
    torch.manual_seed(0)
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x * 2.0)
    torch.testing.assert_close(b, 2.0 * a, rtol=1e-4, atol=1e-3)


def test_unet_default_is_small_and_trains():
    net = ReconUNet()
    assert 100_000 < count_parameters(net) < 600_000
    x = torch.rand(2, 1, 32, 32)
    net(x).abs().mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_unet_residual_learns_identity_quickly():
    """With residual=True a zero last layer is the identity map (the zero-filled image)."""
    net = ReconUNet(features=(4, 4, 8, 8, 16, 4))
    last = [m for m in net.unet.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    x = torch.rand(2, 1, 24, 24) + 1.0
    torch.testing.assert_close(net(x), x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("coils", [2, 8])
def test_varnet_coils_and_gradients(coils):
    net = VarNet(num_cascades=2)
    assert count_parameters(net) < 1_000_000
    m = _mask(32)
    k = torch.randn(2, coils, 32, 32, 2) * m
    out = net(k, m)
    assert out.shape == (2, 1, 32, 32) and bool((out >= 0).all())
    out.mean().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, no_grad
    assert float(sum(p.grad.abs().sum() for p in net.parameters())) > 0


def test_varnet_3d():
    net = VarNet(spatial_dims=3, num_cascades=1, features=(2, 2, 4, 4, 8, 2), sens_features=(2, 2, 4, 4, 8, 2))
    m = torch.zeros(1, 1, 1, 1, 18, 1)
    m[..., 7:11, :] = 1
    m[..., ::4, :] = 1
    out = net(torch.randn(2, 2, 17, 18, 18, 2) * m, m)
    assert out.shape == (2, 1, 17, 18, 18)


def test_errors():
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        ReconUNet(spatial_dims=1)
    with pytest.raises(ValueError, match="six positive ints"):
        ReconUNet(features=(8, 16))
    with pytest.raises(ValueError, match="residual=True needs"):
        ReconUNet(in_channels=2, out_channels=1)
    with pytest.raises(ValueError, match=r"expects \(B, 1, \*spatial\)"):
        ReconUNet()(torch.rand(2, 32, 32))
    with pytest.raises(ValueError, match="num_cascades"):
        VarNet(num_cascades=0)
    net = VarNet(num_cascades=1)
    with pytest.raises(ValueError, match="masked_kspace must be"):
        net(torch.rand(2, 1, 16, 16), _mask(16))
    with pytest.raises(ValueError, match="one mask for the batch"):
        net(torch.rand(2, 1, 16, 16, 2), _mask(16).expand(2, 1, 1, 16, 1))
