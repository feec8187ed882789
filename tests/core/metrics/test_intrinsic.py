"""Intrinsic robustness (max KL in an eps-ball by PGD) and the loss-surface plot."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medrobust.core.metrics.intrinsic import intrinsic_robustness, kl_loss, loss_surface, plot_loss_surface


def test_kl_loss_matches_torch():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    ref = F.kl_div(F.log_softmax(a, 1), F.softmax(b, 1), reduction="none").sum(1)  # KL(softmax(b) || softmax(a))
    assert torch.allclose(kl_loss(a, b), ref, atol=1e-6)
    z, r = torch.randn(5, 1, generator=g), torch.randn(5, 1, generator=g)  # single logit = two classes (0, z)
    two = lambda t: torch.cat([torch.zeros_like(t), t], 1)  # noqa: E731
    assert torch.allclose(kl_loss(z, r), kl_loss(two(z), two(r)), atol=1e-6)
    assert torch.allclose(kl_loss(a, a), torch.zeros(4), atol=1e-6)


def test_zero_at_eps_zero_and_increasing(model2d, data2d):
    x = data2d[0][:16]
    assert torch.equal(intrinsic_robustness(model2d, x, eps=0.0), torch.zeros(16))
    means = [float(intrinsic_robustness(model2d, x, eps=e, steps=10, generator=1).mean()) for e in (0.01, 0.03, 0.1)]
    assert 0 < means[0] < means[1] < means[2]


def test_batch_consistency_3d_and_untouched_model(model3d, data3d):
    x = data3d[0][:4]
    model3d.train()
    before = [p.detach().clone() for p in model3d.parameters()]
    psi = intrinsic_robustness(model3d, x, eps=0.05, steps=5, generator=3, batch_size=4)
    psi_small = intrinsic_robustness(model3d, x, eps=0.05, steps=5, generator=3, batch_size=1)
    assert model3d.training  # the caller's mode is restored
    model3d.eval()
    assert all(torch.equal(a, b) for a, b in zip(before, model3d.parameters()))
    assert all(p.grad is None for p in model3d.parameters())
    assert psi.shape == (4,) and bool((psi >= 0).all())
    assert torch.allclose(psi, psi_small, atol=1e-5)  # per-sample generators: batching does not matter


def test_attack_finds_more_than_random_noise(model2d, data2d):
    x = data2d[0][:16]
    eps = 0.05
    psi = intrinsic_robustness(model2d, x, eps=eps, steps=10, generator=0)
    noise = (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) - 1) * eps
    with torch.no_grad():
        rand_kl = kl_loss(model2d((x + noise).clamp(0, 1)), model2d(x))
    assert float(psi.mean()) > float(rand_kl.mean())


@pytest.mark.parametrize("quantity", ["margin", "loss"])
def test_loss_surface(quantity, model2d, data2d, tmp_path):
    x, y = data2d[0][:2], data2d[1][:2]
    s = loss_surface(model2d, x, y, span=0.2, resolution=9, quantity=quantity, generator=0)
    assert s.values.shape == (2, 9, 9)
    with torch.no_grad():
        out = model2d(x)
    centre = s.values[:, 4, 4]
    if quantity == "margin":
        ref = out.gather(1, y[:, None])[:, 0] - out.gather(1, (1 - y)[:, None])[:, 0]
        assert torch.allclose(centre, ref, atol=1e-5)
        # moving along the adversarial direction lowers the margin (first order)
        assert bool((s.values[:, -1, 4] < s.values[:, 4, 4]).all())
    else:
        assert torch.allclose(centre, F.cross_entropy(out, y, reduction="none"), atol=1e-5)
    assert plot_loss_surface(s, tmp_path / "s.png", index=1).stat().st_size > 0


def test_bad_inputs(model2d, data2d):
    with pytest.raises(ValueError, match="eps"):
        intrinsic_robustness(model2d, data2d[0][:2], eps=-0.1)
    with pytest.raises(ValueError, match="quantity"):
        loss_surface(model2d, data2d[0][:2], span=0.1, quantity="dice")
