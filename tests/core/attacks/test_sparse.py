"""The customised sparse attack (mFI-PSO)."""

from __future__ import annotations

import pytest
import torch

from medrobust.core.attacks import SparsePSO, sparse_pso
from medrobust.core.attacks.sparse import pso_fitness
from medrobust.core.metrics.fisher import pixel_fisher_information


def test_reaches_requested_target_probability(trained_classifier):
    """At most k pixels change and p_target lands within p_tol of p* on most inputs."""
    model, x, y = trained_classifier
    x, y = x[:12], y[:12]
    k, p_star = 30, 0.6
    res = sparse_pso(model, x, y, k=k, p_target=p_star, box=1.0, swarm=50, generator=0)
    changed = (res.x_adv != x).flatten(1).sum(1)
    assert bool((changed <= k).all()) and bool((res.info["norm"] == changed).all())
    with torch.no_grad():
        p = model(res.x_adv).softmax(1)
    t = res.info["target"]
    p_t = p[torch.arange(12), t]
    reached = ((p_t - p_star).abs() <= 0.05) & (p.argmax(1) == t)
    assert float(reached.float().mean()) >= 0.75
    assert torch.equal(reached, res.success)
    torch.testing.assert_close(res.info["p_target_adv"], p_t, atol=1e-5, rtol=0)
    # default target: the second most probable class at the clean input
    with torch.no_grad():
        p0 = model(x).softmax(1)
    assert torch.equal(t, p0.scatter(1, y[:, None], -1).argmax(1))


def test_changes_only_the_most_fi_sensitive_entries(trained_classifier):
    model, x, y = trained_classifier
    x, y = x[:4], y[:4]
    res = sparse_pso(model, x, y, k=10, swarm=20, iterations=3, extra_iterations=0, generator=1)
    fi = pixel_fisher_information(model, x, res.info["target"]).flatten(1)
    for i in range(4):
        top = set(fi[i].topk(10).indices.tolist())
        assert set(res.info["indices"][i].tolist()) == top
        changed = set((res.x_adv[i] != x[i]).flatten().nonzero().flatten().tolist())
        assert changed <= top
    # deltas stay in the box [-0.15 x, 0.15 (1 - x)]
    d = res.x_adv - x
    assert bool((d >= -0.15 * x - 1e-6).all()) and bool((d <= 0.15 * (1 - x) + 1e-6).all())


def test_targeted_untargeted_and_fi_threshold(trained_classifier):
    model, x, y = trained_classifier
    x, y = x[:6], y[:6]
    target = torch.where(y == 1, 0, 1)  # a neighbouring class (the ball sits left, middle or right)
    res = SparsePSO(k=40, box=1.0, swarm=40, generator=2)(model, x, y, target=target)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(pred == target, res.success) and float(res.success.float().mean()) >= 0.5
    un = sparse_pso(model, x, y, targeted=False, k=40, box=1.0, swarm=40, generator=2)
    with torch.no_grad():
        assert torch.equal(model(un.x_adv).argmax(1) != y, un.success)
    auto = sparse_pso(model, x, y, k=None, fi_threshold=0.0, k_max=7, swarm=4, iterations=1, extra_iterations=0)
    assert bool((auto.info["k"] == 7).all())
    assert auto.info["fi_image"].shape == (6,) and bool((auto.info["fi_image"] >= 0).all())


def test_fitness_terms():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]])
    l1 = torch.tensor([1.0, 2.0])
    kw = dict(label=0, target=1, a1=10.0, a2=1.0)
    # targeted: p_top1 - p_target until the target wins, then 0
    torch.testing.assert_close(pso_fitness(probs, l1, targeted=True, p_target=None, **kw), torch.tensor([6.0, 2.0]))
    # with p*: |p_target - p*|
    torch.testing.assert_close(pso_fitness(probs, l1, targeted=True, p_target=0.5, **kw), torch.tensor([4.0, 3.0]))
    # untargeted: p_top1 - p_top2 while still the label, then 0
    torch.testing.assert_close(pso_fitness(probs, l1, targeted=False, p_target=None, **kw), torch.tensor([6.0, 2.0]))


def test_standard_pso_improves_monotonically(trained_classifier):
    """Global best fitness never gets worse with more iterations (same seed)."""
    model, x, y = trained_classifier
    fits = [float(sparse_pso(model, x[:2], y[:2], k=8, swarm=10, iterations=n, extra_iterations=0,
                             generator=5).info["loss"].sum()) for n in (1, 3, 6)]
    assert fits[0] >= fits[1] >= fits[2]


def test_errors(trained_classifier):
    model, x, y = trained_classifier
    with pytest.raises(ValueError, match="p_target"):
        sparse_pso(model, x[:1], p_target=1.5)
    with pytest.raises(ValueError, match="target"):
        sparse_pso(model, x[:1], target=5)
    with pytest.raises(ValueError, match="mask"):
        sparse_pso(model, x[:1], mask=torch.zeros_like(x[:1]))
