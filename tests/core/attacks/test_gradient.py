"""FGSM / PGD: golden values on a linear model, effect on a trained classifier, options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.core.attacks import PGD, fgm, fgsm, pgd
from medrobust.core.attacks.gradient import step_schedule


def _wide_x(n: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.rand(n, 1, 6, 6, generator=g) * 2 - 1  # inside (-10, 10): bounds never bind


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "pgd_random_start"])
def test_linf_golden_logistic(logistic_model, attack):
    """Logistic model, label 1: the L-inf optimum is x - eps sign(w), reached exactly."""
    x, y, eps = _wide_x(), torch.ones(4), 0.3
    w = logistic_model[1].weight.detach().reshape(1, 1, 6, 6)
    if attack == "fgsm":
        res = fgsm(logistic_model, x, y, eps=eps, bounds=(-10.0, 10.0))
    else:
        res = pgd(logistic_model, x, y, eps=eps, steps=5, alpha=eps, bounds=(-10.0, 10.0),
                  random_start=attack.endswith("random_start"), generator=3)
    torch.testing.assert_close(res.x_adv, x - eps * w.sign(), atol=1e-6, rtol=0)
    z_clean, z_adv = logistic_model(x)[:, 0], logistic_model(res.x_adv)[:, 0]
    torch.testing.assert_close(z_clean - z_adv, torch.full((4,), eps * float(w.abs().sum())), atol=1e-4, rtol=0)


def test_l2_golden_logistic(logistic_model):
    """The L2 optimum is x - eps w / ||w||: one FGM step and PGD both reach it."""
    x, y, eps = _wide_x(), torch.ones(4), 0.7
    w = logistic_model[1].weight.detach().reshape(1, 1, 6, 6)
    target = x - eps * w / w.norm()
    torch.testing.assert_close(fgm(logistic_model, x, y, eps=eps, bounds=(-10.0, 10.0)).x_adv, target,
                               atol=1e-6, rtol=0)
    exact = pgd(logistic_model, x, y, eps=eps, norm="2", steps=3, alpha=eps, random_start=False, bounds=(-10.0, 10.0))
    torch.testing.assert_close(exact.x_adv, target, atol=1e-6, rtol=0)
    # from a random start, projected steps converge to the same point
    rs = pgd(logistic_model, x, y, eps=eps, norm="2", steps=40, alpha=eps, bounds=(-10.0, 10.0), generator=1)
    torch.testing.assert_close(rs.x_adv, target, atol=2e-3, rtol=0)
    torch.testing.assert_close(rs.info["norm"], torch.full((4,), eps), atol=1e-5, rtol=0)


def test_targeted_golden_logistic(logistic_model):
    """Targeted towards class 1 moves along +sign(w) (a single logit with BCE)."""
    x, eps = _wide_x(), 0.2
    w = logistic_model[1].weight.detach().reshape(1, 1, 6, 6)
    res = pgd(logistic_model, x, torch.ones(4), eps=eps, steps=3, alpha=eps, targeted=True, bounds=(-10.0, 10.0))
    torch.testing.assert_close(res.x_adv, x + eps * w.sign(), atol=1e-6, rtol=0)


def test_unbounded_pgd_drives_classifier_to_chance(trained_classifier, acc):
    model, x, y = trained_classifier
    assert acc(model, x, y) >= 0.95
    res = pgd(model, x, y, eps=1.0, steps=20, alpha=0.05)
    assert acc(model, res.x_adv, y) <= 1 / 3  # 3 classes: chance or below
    assert float(res.success.float().mean()) >= 2 / 3
    small = pgd(model, x, y, eps=8 / 255, steps=10)
    larger = pgd(model, x, y, eps=24 / 255, steps=10)
    assert acc(model, larger.x_adv, y) < acc(model, small.x_adv, y) <= acc(model, x, y)
    assert res.info["grad_calls"] == 20 and res.info["forward_calls"] == 22
    assert bool((res.info["loss"] > res.info["loss_clean"]).all())


def test_targeted_pgd_reaches_target(trained_classifier):
    model, x, y = trained_classifier
    target = (y + 1) % 3
    res = pgd(model, x, target, eps=0.3, steps=30, targeted=True, generator=0)
    with torch.no_grad():
        reached = model(res.x_adv).argmax(1) == target
    assert float(reached.float().mean()) >= 0.8
    assert torch.equal(res.success, reached)
    assert bool((res.info["loss"] < res.info["loss_clean"]).all())


def test_restarts_keep_the_per_sample_best(trained_classifier):
    """Restarts never do worse than the first run, per sample (success first, then loss)."""
    model, x, y = trained_classifier
    x, y = x[:16], y[:16]
    one = pgd(model, x, y, eps=12 / 255, steps=3, restarts=1, generator=9)
    four = pgd(model, x, y, eps=12 / 255, steps=3, restarts=4, generator=9)
    assert bool((four.success | ~one.success).all())
    same = four.success == one.success
    assert bool((four.info["loss"][same] >= one.info["loss"][same] - 1e-6).all())
    assert four.info["grad_calls"] == 12 and int(four.info["restart"].max()) <= 3
    torch.testing.assert_close(four.x_adv[four.info["restart"] == 0], one.x_adv[four.info["restart"] == 0])


def test_step_schedules():
    assert step_schedule("constant")(7, 10) == 1.0
    assert step_schedule("cosine")(0, 10) == pytest.approx(1.0) and step_schedule("cosine")(5, 10) == pytest.approx(0.5)
    assert [step_schedule("step")(t, 8) for t in (0, 4, 6)] == pytest.approx([1.0, 0.1, 0.01])
    assert step_schedule(lambda t, n: 0.5)(3, 4) == 0.5


def test_schedule_changes_steps(trained_classifier):
    model, x, y = trained_classifier
    a = pgd(model, x[:8], y[:8], eps=0.1, steps=6, schedule="constant", random_start=False)
    b = pgd(model, x[:8], y[:8], eps=0.1, steps=6, schedule="cosine", random_start=False)
    assert not torch.equal(a.x_adv, b.x_adv)
    assert float(b.info["norm"].max()) <= 0.1 + 1e-6


def test_fgsm_is_one_pgd_step_and_class_wrapper(trained_classifier):
    model, x, y = trained_classifier
    a = fgsm(model, x, y, eps=0.05)
    b = pgd(model, x, y, eps=0.05, alpha=0.05, steps=1, random_start=False)
    assert torch.equal(a.x_adv, b.x_adv)
    c = PGD(eps=0.05, alpha=0.05, steps=1, random_start=False)(model, x, y)
    assert torch.equal(c.x_adv, b.x_adv)
    with pytest.raises(TypeError, match="unknown setting"):
        PGD(epsilon=0.1)


def test_fast_fgsm_random_start(trained_classifier):
    """FGSM with a random start and alpha = 1.25 eps (Wong et al.) stays in the ball."""
    model, x, y = trained_classifier
    res = fgsm(model, x, y, eps=0.05, alpha=0.0625, random_start=True, generator=3)
    assert float(res.info["norm"].max()) <= 0.05 + 1e-6


def test_default_y_uses_the_clean_prediction(trained_classifier):
    model, x, y = trained_classifier
    with torch.no_grad():
        pred = model(x).argmax(1)
    a = pgd(model, x, None, eps=0.05, steps=3, generator=1)
    b = pgd(model, x, pred, eps=0.05, steps=3, generator=1)
    assert torch.equal(a.x_adv, b.x_adv)


def test_binary_single_logit_bce_and_two_logits_agree():
    """A (B, 1) logit with BCE attacks like the equivalent (B, 2) = [0, z] softmax model."""
    torch.manual_seed(0)
    single = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 1))
    double = nn.Sequential(single, nn.ZeroPad1d((1, 0)))  # [0, z]
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(6, 1, 8, 8, generator=g), torch.tensor([0, 1, 0, 1, 1, 0])
    a = pgd(single, x, y, eps=0.05, steps=4, generator=2)
    b = pgd(double, x, y, eps=0.05, steps=4, generator=2)
    torch.testing.assert_close(a.x_adv, b.x_adv, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.info["loss"], b.info["loss"], atol=1e-5, rtol=1e-5)
    assert torch.equal(a.success, b.success)


def test_zero_gradient_is_reported():
    """A model with zero input gradients (quantised input): flagged as gradient masking."""

    class Quantised(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(16, 2)

        def forward(self, v):
            q = v + (torch.round(v * 4) / 4 - v)  # round with a zero gradient path
            return self.lin((q * 0 + q.detach()).flatten(1))

    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    res = pgd(Quantised(), x, torch.tensor([0, 1, 0]), eps=0.1, steps=2, random_start=False)
    assert bool(res.info["zero_grad"].all())
    assert torch.equal(res.x_adv, x)
