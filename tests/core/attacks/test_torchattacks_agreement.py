"""Agreement with torchattacks 3.5.1 on the same model and settings (test-only dependency).

The 1e-6 agreement holds on this float32 model (no max-pool) and in float64; in float32 a
rounding-order difference (``x + delta`` vs torchattacks' clamped delta) can flip a max-pool tie
after a few steps on other models, so do not expect bitwise agreement there.
"""

from __future__ import annotations

import pytest
import torch

from medrobust.core.attacks import cw_l2, deepfool, fgsm, pgd
from medrobust.core.attacks.losses import margin_loss

torchattacks = pytest.importorskip("torchattacks")


def test_fgsm_identical(trained_classifier):
    model, x, y = trained_classifier
    ours = fgsm(model, x, y, eps=8 / 255).x_adv
    theirs = torchattacks.FGSM(model, eps=8 / 255)(x, y)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert not model.training


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_without_random_start_identical(trained_classifier, targeted):
    model, x, y = trained_classifier
    eps, alpha, steps = 8 / 255, 2 / 255, 10
    atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
    labels = y
    if targeted:
        labels = (y + 1) % 3
        atk.set_mode_targeted_by_function(lambda images, lab: (lab + 1) % 3)
        theirs = atk(x, y)
    else:
        theirs = atk(x, y)
    ours = pgd(model, x, labels, eps=eps, alpha=alpha, steps=steps, random_start=False, targeted=targeted).x_adv
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_pgd_random_start_same_distribution(trained_classifier, acc):
    """With random starts the draws differ; robust accuracy must agree closely."""
    model, x, y = trained_classifier
    torch.manual_seed(0)  # torchattacks draws from the global RNG
    theirs = torchattacks.PGD(model, eps=12 / 255, alpha=3 / 255, steps=10, random_start=True)(x, y)
    ours = pgd(model, x, y, eps=12 / 255, alpha=3 / 255, steps=10, generator=0).x_adv
    assert abs(acc(model, ours, y) - acc(model, theirs, y)) <= 0.1


def test_cw_success_rate_agrees(trained_classifier):
    model, x, y = trained_classifier
    theirs = torchattacks.CW(model, c=1, kappa=0, steps=50, lr=0.01)(x, y)
    ours = cw_l2(model, x, y, c=1.0, kappa=0.0, steps=50, lr=0.01)
    with torch.no_grad():
        rate_theirs = float((model(theirs).argmax(1) != y).float().mean())
    rate_ours = float(ours.success.float().mean())
    assert abs(rate_ours - rate_theirs) <= 0.1
    l2_theirs = (theirs - x).flatten(1).norm(dim=1)
    both = ours.success & (l2_theirs > 0)
    if bool(both.any()):  # similar perturbation sizes where both succeed
        ratio = ours.info["norm"][both].median() / l2_theirs[both].median()
        assert 0.7 <= float(ratio) <= 1.3


def test_deepfool_agrees(trained_classifier):
    """Same perturbations; success differs only where torchattacks stops exactly on the boundary.

    Both stop once a step crosses the linearised boundary, so the final margin is tiny; torchattacks
    applies the overshoot to the last step only and can end on a tie (``argmax`` then keeps the
    label), while the overshoot on the accumulated perturbation keeps a small positive margin.
    """
    model, x, y = trained_classifier
    theirs = torchattacks.DeepFool(model, steps=50, overshoot=0.02)(x, y)
    ours = deepfool(model, x, y, steps=50, overshoot=0.02)
    with torch.no_grad():
        z_theirs = model(theirs)
    succ_theirs = z_theirs.argmax(1) != y
    assert float(ours.success.float().mean()) >= float(succ_theirs.float().mean()) - 0.05
    disagree = ours.success != succ_theirs
    assert bool((margin_loss(z_theirs[disagree], y[disagree]).abs() < 1e-3).all())
    l2_theirs = (theirs - x).flatten(1).norm(dim=1)
    torch.testing.assert_close(ours.info["norm"], l2_theirs, atol=0.02, rtol=0.05)
