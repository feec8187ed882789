"""Differentiable path IG, top-k intersection and the top-k attribution attack (2-D and 3-D)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.core.metrics.attribution_robustness import (
    class_score,
    path_integrated_gradients,
    topk_attribution_attack,
    topk_intersection,
    topk_mask,
)


def _net(dims: int) -> nn.Module:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    torch.manual_seed(0)
    return nn.Sequential(conv(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 ** dims, 3)).double()


@pytest.mark.parametrize("dims", [2, 3])
def test_path_ig_completeness_and_differentiable(dims):
    net = _net(dims)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, *([6] * dims), generator=g, dtype=torch.float64)
    base = torch.rand(x.shape, generator=g, dtype=torch.float64) * 0.1
    t = torch.tensor([0, 1, 2])
    score = class_score(net, t)
    ig = path_integrated_gradients(score, base, x, steps=64)
    gap = score(x) - score(base)
    assert torch.allclose(ig.reshape(3, -1).sum(1), gap, atol=1e-3)
    ig2 = path_integrated_gradients(score, base, x, steps=4, create_graph=True)
    (gw,) = torch.autograd.grad(ig2.abs().sum(), net[0].weight)
    assert gw.abs().sum() > 0


def test_topk_intersection_values():
    a = torch.arange(16.0).reshape(2, 1, 2, 2, 2)
    assert torch.equal(topk_intersection(a, a, k=3), torch.ones(2, dtype=torch.float64))
    b = -a.flip(-1).flip(-2).flip(-3)  # magnitudes reversed within each sample
    assert topk_intersection(a, b, k=4).tolist() == [0.0, 0.0]
    assert topk_mask(a, 0.25).reshape(2, -1).sum(1).tolist() == [2, 2]
    two_channels = torch.cat([a, -a], 1)  # channels summed by magnitude per voxel
    assert topk_mask(two_channels, 2).shape == (2, 2, 2, 2)


def test_topk_errors():
    a = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="same shape"):
        topk_intersection(a, torch.rand(2, 1, 4, 5), k=2)
    with pytest.raises(ValueError, match="k must be"):
        topk_mask(a, 17)
    with pytest.raises(ValueError, match="one score per path point"):
        path_integrated_gradients(lambda z: z.sum(), a, a, steps=2)


@pytest.mark.parametrize("dims", [2, 3])
def test_topk_attack_moves_attribution(dims):
    net = _net(dims).float()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(4, 1, *([6] * dims), generator=g)
    eps = 8 / 255
    x_adv, kept = topk_attribution_attack(net, x, eps=eps, k=0.2, steps=5, ig_steps=4, generator=0)
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert kept.shape == (4,) and kept.dtype == torch.bool
    pred = net(x).argmax(1)
    score = class_score(net, pred)
    ig_x = path_integrated_gradients(score, torch.zeros_like(x), x, steps=4)
    ig_a = path_integrated_gradients(score, torch.zeros_like(x), x_adv, steps=4)
    top = topk_mask(ig_x, 0.2).unsqueeze(1)
    share = lambda ig: ((ig.abs() * top).reshape(4, -1).sum(1) / ig.abs().reshape(4, -1).sum(1))  # noqa: E731
    assert bool((share(ig_a) < share(ig_x)).all())
