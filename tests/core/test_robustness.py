"""Robust accuracy under the strong suite and the gradient-masking check (2-D and 3-D, batch > 1)."""

from __future__ import annotations

import pytest
import torch

from medrobust.core.robustness import AttackSpec, default_attacks, robust_accuracy

QUICK = default_attacks(steps=(5, 10), restarts=2, queries=100)


class _Round(torch.nn.Module):
    """Input quantisation with a zero gradient: the textbook gradient-masking defense."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 2) / 2  # d round / dx = 0 everywhere


def _data(spatial: tuple[int, ...], n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, *spatial, generator=g) * 0.5 + 0.25
    y = torch.arange(n) % 2
    x[y == 1] += 0.05  # class 1 slightly brighter: a linear rule separates it with a small margin
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].weight[1] = 1.0 / x[0].numel()
        net[1].bias[:] = torch.tensor([0.0, -float(x.mean())])
    return net, x.clamp(0, 1), y


@pytest.mark.parametrize("spatial", [(6, 6), (4, 4, 4)])
def test_accuracies_are_ordered_and_batch_independent(spatial) -> None:
    net, x, y = _data(spatial)
    net.train()
    r = robust_accuracy(net, x, y, eps=0.05, attacks=QUICK, batch_size=5, seed=1)
    assert net.training  # the caller's mode is restored
    assert set(r.accuracy) == {"pgd5", "pgd10x2", "square"} and r.n == 12
    assert all(a <= r.clean_accuracy for a in r.accuracy.values())
    assert r.worst_case_accuracy <= min(r.accuracy.values())
    assert r.accuracy["pgd10x2"] < r.clean_accuracy  # the attack does something
    assert not r.gradient_masking, r.reasons
    assert robust_accuracy(net, x, y, eps=0.05, attacks=QUICK, batch_size=12, seed=1) == r


@pytest.mark.parametrize("spatial", [(6, 6), (4, 4, 4)])
def test_zero_radius_changes_nothing(spatial) -> None:
    net, x, y = _data(spatial)
    r = robust_accuracy(net, x, y, eps=0.0, attacks=QUICK)
    assert all(a == r.clean_accuracy for a in r.accuracy.values()) and r.worst_case_accuracy == r.clean_accuracy


@pytest.mark.parametrize("spatial", [(6, 6), (4, 4, 4)])
def test_masked_gradients_are_flagged(spatial) -> None:
    net, x, y = _data(spatial)
    masked = torch.nn.Sequential(_Round(), net)
    r = robust_accuracy(masked, x, y, eps=0.3, attacks=QUICK)
    assert r.gradient_masking
    assert any("zero or NaN" in why for why in r.reasons)
    assert r.accuracy["square"] < min(r.accuracy["pgd5"], r.accuracy["pgd10x2"])
    assert any("gradient-free square" in why for why in r.reasons)
    assert r.as_row()["gradient_masking"] is True


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"eps": -0.1}, ValueError, "eps"),
        ({"eps": float("nan")}, ValueError, "eps"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"tolerance": 1.0}, ValueError, "tolerance"),
        ({"attacks": []}, ValueError, "non-empty"),
        ({"attacks": [AttackSpec("a", "pgd"), AttackSpec("a", "square")]}, ValueError, "unique"),
    ],
)
def test_bad_settings_are_refused(kwargs, error, match) -> None:
    net, x, y = _data((6, 6))
    with pytest.raises(error, match=match):
        robust_accuracy(net, x, y, **{"eps": 0.1, **kwargs})


def test_bad_inputs_and_specs_are_refused() -> None:
    net, x, y = _data((6, 6))
    with pytest.raises(ValueError, match="y"):
        robust_accuracy(net, x, y[:3], eps=0.1)
    with pytest.raises(ValueError, match="x"):
        robust_accuracy(net, x[0], y[:1], eps=0.1)
    with pytest.raises(ValueError, match="attack should be one of"):
        AttackSpec("x", "fgsm")
    with pytest.raises(ValueError, match="set by robust_accuracy"):
        AttackSpec("x", "pgd", {"eps": 0.1})
    assert [a.name for a in default_attacks(norm="2")] == ["pgd10", "pgd50x5"]
