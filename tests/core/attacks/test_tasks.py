"""Attacks on segmentation, registration, regression and reconstruction models through their losses."""

from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import Warp
from torch import nn

from medrobust.core.attacks import (
    AttackObjective,
    LossIncrease,
    pgd,
    reconstruction_objective,
    registration_objective,
    regression_objective,
    segmentation_objective,
    square,
)
from medrobust.core.attacks.losses import nmse_loss


@pytest.mark.parametrize("kind", ["dice", "dicece"])
def test_segmentation_attack_lowers_dice(trained_segmenter, dice, kind):
    model, x, mask = trained_segmenter
    with torch.no_grad():
        clean = dice(model(x), mask)
    assert float(clean.mean()) >= 0.85
    eps = 0.2 if x.ndim == 4 else 0.1
    # against the clean prediction (y=None) ...
    res = pgd(model, x, None, loss_fn=kind, eps=eps, steps=10, generator=0)
    with torch.no_grad():
        adv = dice(model(res.x_adv), mask)
    assert float(clean.mean() - adv.mean()) >= 0.3
    assert float(res.success.float().mean()) >= 0.75
    # ... and against the label: the same attack, driven by the ground truth
    res_lbl = pgd(model, x, mask, loss_fn=segmentation_objective(kind), eps=eps, steps=10, generator=0)
    with torch.no_grad():
        adv_lbl = dice(model(res_lbl.x_adv), mask)
    assert float(clean.mean() - adv_lbl.mean()) >= 0.3


def test_segmentation_targeted_mask_and_roi(trained_segmenter, dice):
    """Targeted towards an empty mask, perturbing only inside an ROI around the object."""
    model, x, mask = trained_segmenter
    roi = (nn.functional.max_pool2d if x.ndim == 4 else nn.functional.max_pool3d)(mask, 5, 1, 2)
    empty = torch.zeros_like(mask)
    res = pgd(model, x, empty, loss_fn="dice", eps=0.3, steps=10, targeted=True, mask=roi)
    assert torch.equal(res.x_adv * (1 - roi), x * (1 - roi))
    with torch.no_grad():
        fg_before = model(x).argmax(1).sum()
        fg_after = model(res.x_adv).argmax(1).sum()
    assert float(fg_after) < 0.75 * float(fg_before)


def test_one_hot_labels_and_sigmoid_output(trained_segmenter):
    """One-hot labels give the same loss as index labels; single-channel sigmoid outputs work."""
    model, x, mask = trained_segmenter
    obj = segmentation_objective("dice")
    with torch.no_grad():
        out = model(x)
    onehot = torch.cat([1 - mask, mask], 1)
    torch.testing.assert_close(obj.loss(out, mask), obj.loss(out, onehot))
    binary = nn.Sequential(model, nn.Conv2d(2, 1, 1) if x.ndim == 4 else nn.Conv3d(2, 1, 1)).eval()
    res = pgd(binary, x, mask, loss_fn=obj, eps=0.1, steps=3)
    assert res.info["loss"].shape == (x.shape[0],)
    assert bool((res.info["loss"] >= res.info["loss_clean"] - 1e-6).all())


def _warped_dice(ddf: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    warped = Warp(mode="bilinear", padding_mode="border")(labels[:, :1], ddf)
    w, f = (warped > 0.5).float(), labels[:, 1:]
    return 2 * (w * f).flatten(1).sum(1) / (w.flatten(1).sum(1) + f.flatten(1).sum(1))


def test_registration_attack_lowers_dice(registration_pairs):
    model, x, labels = registration_pairs
    with torch.no_grad():
        clean = _warped_dice(model(x), labels)
    assert float(clean.min()) >= 0.85  # the analytic model registers the pairs
    res = pgd(model, x, labels, loss_fn=registration_objective("dice"), eps=0.05, steps=10, generator=0)
    with torch.no_grad():
        adv = _warped_dice(model(res.x_adv), labels)
    assert float(clean.mean() - adv.mean()) >= 0.3
    assert bool(res.success.all())
    assert float(res.info["norm"].max()) <= 0.05 + 1e-6


@pytest.mark.parametrize("similarity", ["mse", "lncc"])
def test_registration_image_similarity(registration_pairs, similarity):
    """Image-similarity mode: y=None uses the clean (moving, fixed) pair itself."""
    model, x, _ = registration_pairs
    res = pgd(model, x, None, loss_fn=registration_objective(similarity), eps=0.05, steps=5)
    assert bool((res.info["loss"] > res.info["loss_clean"]).all())


def test_registration_rejects_non_ddf(registration_pairs):
    _, x, labels = registration_pairs
    with pytest.raises(ValueError, match="DDF"):
        pgd(lambda v: v[:, :1], x, labels, loss_fn="registration_dice", eps=0.05, steps=1)


def test_regression_and_reconstruction():
    """MSE (regression) and NMSE (reconstruction) rise under attack, in 2-D and 3-D."""
    torch.manual_seed(0)
    for conv in (nn.Conv2d, nn.Conv3d):
        model = nn.Sequential(conv(1, 4, 3, padding=1), nn.Tanh(), conv(4, 1, 3, padding=1)).eval()
        shape = (3, 1, 8, 8) if conv is nn.Conv2d else (3, 1, 6, 6, 6)
        x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
        recon = pgd(model, x, None, loss_fn=reconstruction_objective(threshold=0.0), eps=0.05, steps=5)
        assert bool(recon.success.all()) and bool((recon.info["loss"] > 0).all())
        truth = x.clone()  # against a ground truth this time
        recon_gt = pgd(model, x, truth, loss_fn="nmse", eps=0.05, steps=5)
        with torch.no_grad():
            nmse_clean = nmse_loss(model(x), truth)
            nmse_adv = nmse_loss(model(recon_gt.x_adv), truth)
        assert bool((nmse_adv > nmse_clean).all())
        torch.testing.assert_close(recon_gt.info["loss"], nmse_adv)
        head = nn.Sequential(model, nn.Flatten(), nn.LazyLinear(2))
        head(x)
        head.eval()
        target = torch.zeros(3, 2)
        reg = pgd(head, x, target, loss_fn=regression_objective(), eps=0.05, steps=5)
        assert bool((reg.info["loss"] > reg.info["loss_clean"]).all())


def test_custom_callable_loss_and_success():
    """A plain callable loss and a user success criterion; Square works on any task too."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1)).eval()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    calls = []

    def success(out, y, *, targeted, loss_adv, loss_clean):
        calls.append(targeted)
        return loss_adv > 2 * loss_clean

    def loss(out, y):
        return (out - y) ** 2  # (B, 2, 8, 8): reduced per sample by the attack

    res = pgd(model, x, None, loss_fn=loss, success_fn=success, eps=0.1, steps=5)
    assert calls == [False] and res.success.shape == (2,)
    obj = AttackObjective(lambda out, y: (out - y).pow(2).flatten(1).mean(1), LossIncrease(0.0))
    sq = square(model, x, None, loss_fn=obj, eps=0.1, queries=30, generator=0)
    assert bool(sq.success.all())
    assert bool((sq.info["loss"] > sq.info["loss_clean"]).all())
