"""Average- and worst-case flatness of the robust loss (relative weight perturbations)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medrobust.core.metrics.flatness import average_flatness, perturbable_parameters, robust_loss, worst_flatness


def _rescaled(model: nn.Module, c: float) -> nn.Module:
    """Scale the conv before the first ReLU by c and the next conv by 1/c: the same function."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        m[0].weight.mul_(c)
        m[0].bias.mul_(c)
        m[2].weight.div_(c)
    return m


@pytest.mark.parametrize("relative", ["layer", "filter"])
def test_invariant_to_relu_rescaling(relative, model2d, data2d):
    x, y = data2d[0][:12], data2d[1][:12]
    scaled = _rescaled(model2d, 4.0)
    with torch.no_grad():
        assert torch.allclose(model2d(x), scaled(x), atol=1e-4)
    kw = dict(eps=0.03, steps=3, relative=relative, generator=7)
    a, b = average_flatness(model2d, x, y, samples=3, **kw), average_flatness(scaled, x, y, samples=3, **kw)
    assert a.flatness == pytest.approx(b.flatness, abs=1e-4)
    w1, w2 = worst_flatness(model2d, x, y, xi=0.01, iterations=3, **kw), worst_flatness(scaled, x, y, xi=0.01, iterations=3, **kw)
    assert w1.flatness == pytest.approx(w2.flatness, abs=1e-4)


def test_an_absolute_perturbation_is_not_invariant(model2d, data2d):
    # the control for the test above: the same *absolute* noise hurts the two models differently
    x, y = data2d[0][:12], data2d[1][:12]
    losses = []
    for m in (model2d, _rescaled(model2d, 4.0)):
        m = copy.deepcopy(m)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        losses.append(robust_loss(m, x, y, eps=0.0))
    assert abs(losses[0] - losses[1]) > 1e-3


def test_model_untouched_and_xi_zero(model2d, data2d):
    x, y = data2d[0][:8], data2d[1][:8]
    model2d.train()
    state = copy.deepcopy(model2d.state_dict())
    r = average_flatness(model2d, x, y, xi=0.0, samples=2, eps=0.03, steps=2, generator=0)
    worst_flatness(model2d, x, y, iterations=2, eps=0.03, steps=2, generator=0)
    assert model2d.training
    model2d.eval()
    assert all(torch.equal(v, model2d.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in model2d.parameters())
    # xi = 0: the same weights; with eps = 0 the loss is deterministic, so flatness is exactly 0
    r0 = average_flatness(model2d, x, y, xi=0.0, samples=2, eps=0.0)
    assert r0.flatness == pytest.approx(0.0, abs=1e-7) and r.kind == "average" and len(r.losses) == 2


def test_worst_case_beats_random_directions(model2d, data2d):
    x, y = data2d[0][:16], data2d[1][:16]
    avg = average_flatness(model2d, x, y, xi=0.05, samples=4, eps=0.0, generator=1)
    worst = worst_flatness(model2d, x, y, xi=0.05, iterations=5, eps=0.0, generator=1)
    assert worst.flatness > max(avg.flatness, 0.0)
    assert worst.perturbed_loss >= max(worst.losses) - 1e-9


def test_normalisation_parameters_excluded_and_3d(model3d, data3d):
    net = nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 1, 8, 8, 8))
    names = [n for n, _ in perturbable_parameters(net)]
    assert names == ["0.weight", "0.bias", "4.weight", "4.bias"]
    x, y = data3d
    r = average_flatness(model3d, x[:4], y[:4], samples=2, eps=0.02, steps=2, relative="filter", generator=0)
    assert r.reference_loss > 0 and len(r.losses) == 2


def test_bad_inputs(model2d, data2d):
    x, y = data2d[0][:4], data2d[1][:4]
    with pytest.raises(ValueError, match="relative"):
        average_flatness(model2d, x, y, eps=0.0, relative="neuron")
    with pytest.raises(ValueError, match="labels"):
        robust_loss(model2d, x, y[:3], eps=0.0)
    with pytest.raises(TypeError, match="nn.Module"):
        average_flatness(lambda t: t, x, y, eps=0.0)
