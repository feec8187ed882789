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

__all__ = ["DEFAULT_SCALES", "SMOOTHNESS", "REGULARISERS", "label_centroids_voxels", "CentroidDistanceLoss", "label_loss",
           "smoothness_loss"]

DEFAULT_SCALES: tuple[float, ...] = (0, 1, 2, 4, 8, 16)  # Hu et al. 2018 / label-reg, in voxels
SMOOTHNESS = ("none", "diffusion", "bending")
REGULARISERS = SMOOTHNESS + ("adversarial",)


def label_centroids_voxels(labels: torch.Tensor) -> torch.Tensor:
    """Weighted centroid of each channel in voxel indices (differentiable): ``(B, C, *spatial)`` -> ``(B, C, N)``.

    An empty channel gives the origin (its mass is clamped), so a label warped off the grid is far away.
    """
    axes = torch.meshgrid(*[torch.arange(s, dtype=labels.dtype, device=labels.device) for s in labels.shape[2:]],
                          indexing="ij")
    w = labels.clamp(min=0)
    mass = w.flatten(2).sum(-1).clamp(min=1e-6)
    return torch.stack([(w * a).flatten(2).sum(-1) / mass for a in axes], dim=-1)


class CentroidDistanceLoss(torch.nn.Module):
    """Mean Euclidean distance (voxels) between the centroids of ``y_pred`` and ``y_true`` per channel.

    The training-time twin of the landmark TRE: Dice gives a translation little gradient once two
    small labels stop overlapping, a centroid distance always does. Weighted labels (soft, warped);
    a channel warped entirely off the grid has its centroid at the origin, a large distance. MONAI
    has no such loss.

    Example:
        >>> lab = torch.zeros(1, 1, 8, 8, 8); lab[..., 2, 2, 2] = 1
        >>> float(CentroidDistanceLoss()(lab, lab.roll(3, 2)))
        3.0
    """

    def forward(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        if y_true.shape != y_pred.shape:
            raise ValueError(f"y_true {tuple(y_true.shape)} and y_pred {tuple(y_pred.shape)} must match.")
        diff = label_centroids_voxels(y_pred) - label_centroids_voxels(y_true)
        return torch.linalg.vector_norm(diff + 1e-9, dim=-1).mean()


class _DiceAndCentroid(torch.nn.Module):
    def __init__(self, dice: torch.nn.Module, weight: float) -> None:
        super().__init__()
        self.dice, self.centroid, self.weight = dice, CentroidDistanceLoss(), float(weight)

    def forward(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        return self.dice(y_true, y_pred) + self.weight * self.centroid(y_true, y_pred)


def label_loss(scales: Sequence[float] | None = DEFAULT_SCALES, centroid_weight: float = 0.0) -> torch.nn.Module:
    """Multiscale soft Dice loss ``1 - 2 sum(t p) / (sum(t^2) + sum(p^2))``, averaged over scales,
    plus ``centroid_weight`` x :class:`CentroidDistanceLoss` (voxels); call as ``loss(y_true, y_pred)``
    with labels ``(B, C, *spatial)``.

    Args:
        scales: Gaussian sigmas in voxels (0 = unsmoothed); ``None`` for plain Dice.
        centroid_weight: weight of the centroid distance (0: Dice alone, as in Hu et al.).
    """
    if centroid_weight < 0:
        raise ValueError(f"centroid_weight must be >= 0, got {centroid_weight}.")
    # squared denominators (V-Net Dice): smoothed labels are soft, and only then is 1 - Dice zero at a perfect match
    dice = DiceLoss(include_background=True, squared_pred=True, reduction="mean", smooth_nr=1e-5, smooth_dr=1e-5)
    multiscale = MultiScaleLoss(dice, scales=None if scales is None else [float(s) for s in scales])
    return _DiceAndCentroid(multiscale, centroid_weight) if centroid_weight > 0 else multiscale


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
