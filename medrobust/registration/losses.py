"""Losses for weakly supervised (label-driven) registration: multiscale Dice and DDF smoothness.

All from MONAI: ``MultiScaleLoss(DiceLoss())`` smooths both labels with Gaussians of the given
sigmas (voxels) and averages ``1 - Dice``; ``DiffusionLoss`` is the L2 norm of the DDF gradient,
``BendingEnergyLoss`` the squared second derivatives. The adversarial regulariser lives in
:mod:`medrobust.registration.adversarial`.

Example:
    >>> import torch
    >>> loss = label_loss()
    >>> lab = torch.zeros(2, 1, 16, 16, 16); lab[..., 4:12, 4:12, 4:12] = 1
    >>> float(loss(lab, lab)) < 1e-3
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import BendingEnergyLoss, DiceLoss, DiffusionLoss, MultiScaleLoss

__all__ = ["DEFAULT_SCALES", "SMOOTHNESS", "REGULARISERS", "label_loss", "smoothness_loss"]

DEFAULT_SCALES: tuple[float, ...] = (0, 1, 2, 4, 8, 16)  # Hu et al. 2018 / label-reg, in voxels
SMOOTHNESS = ("none", "diffusion", "bending")
REGULARISERS = SMOOTHNESS + ("adversarial",)


def label_loss(scales: Sequence[float] | None = DEFAULT_SCALES) -> MultiScaleLoss:
    """Multiscale soft Dice loss ``1 - 2 sum(t p) / (sum(t^2) + sum(p^2))``, averaged over scales;
    call as ``loss(y_true, y_pred)`` with labels ``(B, C, *spatial)``.

    Args:
        scales: Gaussian sigmas in voxels (0 = unsmoothed); ``None`` for plain Dice.
    """
    # squared denominators (V-Net Dice): smoothed labels are soft, and only then is 1 - Dice zero at a perfect match
    dice = DiceLoss(include_background=True, squared_pred=True, reduction="mean", smooth_nr=1e-5, smooth_dr=1e-5)
    return MultiScaleLoss(dice, scales=None if scales is None else [float(s) for s in scales])


def smoothness_loss(name: str) -> torch.nn.Module | None:
    """DDF smoothness penalty by name: ``"none"`` -> None, ``"diffusion"`` (L2 gradient), ``"bending"``.

    The returned module maps a DDF ``(B, N, *spatial)`` to a scalar.

    Raises:
        ValueError: unknown name (``"adversarial"`` is not a smoothness penalty).
    """
    if name == "none":
        return None
    if name == "diffusion":
        return DiffusionLoss()
    if name == "bending":
        return BendingEnergyLoss()
    raise ValueError(f"smoothness regulariser must be one of {SMOOTHNESS}, got {name!r}.")
