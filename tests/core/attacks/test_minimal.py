"""CW-L2 and DeepFool (minimal perturbations) and Square (black-box, gradient-masking check)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.core.attacks import CarliniWagnerL2, cw_l2, deepfool, pgd, square


def _distance_to_boundary(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    lin = model[1]
    with torch.no_grad():
        return model(x)[:, 0].abs() / lin.weight.norm()


@pytest.fixture()
def linear_case(logistic_model):
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(5)) * 2 - 1
    return logistic_model, x, _distance_to_boundary(logistic_model, x)


def test_deepfool_golden_linear(linear_case):
    """On a linear model DeepFool lands (1 + overshoot) times the exact boundary distance away."""
    model, x, dmin = linear_case
    res = deepfool(model, x, bounds=(-10.0, 10.0), overshoot=0.02)
    assert bool(res.success.all())
    torch.testing.assert_close(res.info["norm"], 1.02 * dmin, rtol=1e-3, atol=1e-4)
    assert int(res.info["steps"].max()) == 1


def test_cw_near_optimal_linear(linear_case):
    """CW-L2 with a binary search on c gets within a few percent of the minimal L2 distance."""
    model, x, dmin = linear_case
    res = cw_l2(model, x, bounds=(-2.0, 2.0), binary_search_steps=5, steps=100)
    assert bool(res.success.all())
    ratio = res.info["norm"] / dmin
    assert bool((ratio >= 0.999).all()) and float(ratio.median()) <= 1.01 and float(ratio.max()) <= 1.1


@pytest.mark.parametrize("attack", ["cw", "deepfool"])
def test_minimal_attacks_flip_with_near_minimal_perturbations(trained_classifier, acc, attack):
    """Both flip (almost) every label of the trained CNN; half their perturbation does not."""
    model, x, y = trained_classifier
    res = cw_l2(model, x, y, steps=50) if attack == "cw" else deepfool(model, x, y)
    assert float(res.success.float().mean()) >= 0.95
    assert acc(model, res.x_adv, y) <= 0.05
    half = x + 0.5 * (res.x_adv - x)
    assert acc(model, half, y) >= 0.7
    # on average smaller than the fixed L2 budget PGD needs to flip as many labels
    needed = next(e for e in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
                  if acc(model, pgd(model, x, y, eps=e, norm="2", steps=10, generator=0).x_adv, y) <= 0.05)
    assert float(res.info["norm"].mean()) < needed
    assert bool((res.x_adv >= 0).all() and (res.x_adv <= 1).all())


def test_cw_targeted_and_class(trained_classifier):
    model, x, y = trained_classifier
    target = (y[:16] + 1) % 3
    res = CarliniWagnerL2(steps=60, c=5.0, targeted=True)(model, x[:16], target)
    with torch.no_grad():
        reached = model(res.x_adv).argmax(1) == target
    assert float(reached.float().mean()) >= 0.8
    assert torch.equal(reached, res.success)


def test_deepfool_linf_and_3d(classifier_3d):
    model, x, y = classifier_3d
    for norm in ("2", "inf"):
        res = deepfool(model, x, y, norm=norm)
        assert float(res.success.float().mean()) >= 0.75
        assert res.x_adv.shape == x.shape


def _blind(model: nn.Module):
    """The model as a black box: no gradient can flow through it."""

    def f(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(v.detach())

    return f


def test_square_lowers_accuracy_without_gradients(trained_classifier, acc):
    model, x, y = trained_classifier
    res = square(_blind(model), x, y, eps=0.1, queries=200, generator=0)
    assert acc(model, x, y) >= 0.95
    assert acc(model, res.x_adv, y) <= 0.3
    assert float(res.info["norm"].max()) <= 0.1 + 1e-6
    done = res.success
    assert int(res.info["queries"][done].max()) < 200  # successful samples stop querying
    with pytest.raises(RuntimeError):  # PGD indeed needs the gradients Square does without
        pgd(_blind(model), x, y, eps=0.1, steps=1)


def test_square_3d_and_targeted(classifier_3d):
    model, x, y = classifier_3d
    target = (y + 1) % 3
    res = square(model, x, target, eps=0.3, queries=100, targeted=True, generator=1)
    with torch.no_grad():
        assert torch.equal(model(res.x_adv).argmax(1) == target, res.success)
    assert float(res.info["norm"].max()) <= 0.3 + 1e-6


def test_square_beats_masked_gradients(trained_classifier, acc):
    """Gradient-masking check: a model whose input gradient is zero defeats PGD but not Square."""
    model, x, y = trained_classifier

    class Masked(nn.Module):
        def forward(self, v):
            q = torch.round(v * 64) / 64  # quantised input: zero gradient almost everywhere
            return model(q)

    masked = Masked()
    white = pgd(masked, x, y, eps=0.1, steps=10, generator=0)
    black = square(masked, x, y, eps=0.1, queries=200, generator=0)
    assert bool(white.info["zero_grad"].all())
    assert acc(masked, black.x_adv, y) < acc(masked, white.x_adv, y) - 0.3
