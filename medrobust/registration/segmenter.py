"""A small gland segmenter for the moving (MR) image, so that a mask-input registration network can run on images alone.

A registration network that takes the moving gland segmentation as an input channel registers
far better on small data than one that has to find the gland itself (on mrus_dev's grouped
cross-validation, see the mrus_registration bundle), but users of the paper's setting have only
the two images. :func:`gland_segmenter` builds a MONAI ``UNet`` (instance norm, one output logit
channel) for the registration grid, and :func:`fit_gland_segmenter` trains it on the moving
images and gland masks of the *training* pairs only (MONAI ``DiceCELoss``, random affine
augmentation with MONAI ``RandAffined``, a local seeded generator for the batches), so that the
cascade of :class:`~medrobust.registration.cascade.SegmentThenRegister` never sees a held-out
patient's label. :func:`gland_dice` scores the thresholded prediction.

Example:
    >>> import torch
    >>> images = torch.rand(3, 1, 16, 16, 16)
    >>> masks = torch.zeros(3, 1, 16, 16, 16); masks[..., 4:12, 4:12, 4:12] = 1
    >>> net = gland_segmenter(spatial_dims=3, channels=(4, 8))
    >>> losses = fit_gland_segmenter(net, images, masks, steps=2, batch_size=2, seed=0)
    >>> len(losses), net(images).shape
    (2, torch.Size([3, 1, 16, 16, 16]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DiceCELoss
from monai.metrics import compute_dice
from monai.networks.nets import UNet
from monai.transforms import RandAffined

__all__ = ["gland_segmenter", "fit_gland_segmenter", "gland_dice"]


def gland_segmenter(*, spatial_dims: int = 3, channels: Sequence[int] = (8, 16, 32, 64), num_res_units: int = 1) -> UNet:
    """A MONAI ``UNet`` mapping one image channel to one gland logit channel: ``(B, 1, *S)`` -> ``(B, 1, *S)``.

    Instance norm (no running statistics to go stale after a short run). Each spatial size must be
    divisible by ``2 ** (len(channels) - 1)``.

    Raises:
        ValueError: fewer than 2 levels.
    """
    if len(channels) < 2:
        raise ValueError(f"channels needs at least 2 levels, got {tuple(channels)}.")
    return UNet(spatial_dims=spatial_dims, in_channels=1, out_channels=1, channels=tuple(channels),
                strides=(2,) * (len(channels) - 1), num_res_units=num_res_units, norm="instance")


def _check(images: torch.Tensor, masks: torch.Tensor) -> None:
    if images.ndim < 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (M, 1, *spatial), got {tuple(images.shape)}.")
    if masks.shape != images.shape:
        raise ValueError(f"masks must have the images' shape {tuple(images.shape)}, got {tuple(masks.shape)}.")


def fit_gland_segmenter(
    network: torch.nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    steps: int = 400,
    batch_size: int = 4,
    learning_rate: float = 3e-3,
    seed: int = 0,
    rotate_range: float = 0.087,
    scale_range: float = 0.05,
    translate_range: float = 4.0,
) -> list[float]:
    """Train ``network`` in place to segment ``masks`` from ``images``; returns the loss of every step.

    Args:
        network: logits ``(B, 1, *S)`` from ``(B, 1, *S)`` (e.g. :func:`gland_segmenter`).
        images: ``(M, 1, *S)`` moving images of the training pairs (intensities as the
            registration network sees them).
        masks: ``(M, 1, *S)`` their gland masks in [0, 1].
        steps: optimisation steps (Adam).
        batch_size: images per step, drawn with replacement.
        learning_rate: Adam learning rate.
        seed: seeds the batch draws and the augmentation (local generators; no global seeding).
        rotate_range: +- radians of the random rotation per axis (0 disables).
        scale_range: +- relative scaling per axis.
        translate_range: +- voxels of random translation per axis.

    Raises:
        ValueError: shapes disagree, no images, or ``steps``/``batch_size`` < 1.
    """
    _check(images, masks)
    if images.shape[0] < 1 or steps < 1 or batch_size < 1:
        raise ValueError(f"need images and steps, batch_size >= 1; got {images.shape[0]} images, steps={steps}, batch_size={batch_size}.")
    n = images.ndim - 2
    aug = RandAffined(keys=["image", "mask"], prob=1.0, rotate_range=[rotate_range] * n, scale_range=[scale_range] * n,
                      translate_range=[translate_range] * n, mode=["bilinear", "bilinear"], padding_mode="zeros")
    aug.set_random_state(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = DiceCELoss(sigmoid=True)
    opt = torch.optim.Adam(network.parameters(), lr=learning_rate)
    device = next(network.parameters()).device
    images, masks = images.float(), masks.float().clamp(0, 1)
    network.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=gen).tolist()
        items = [aug({"image": images[i], "mask": masks[i]}) for i in idx]
        x = torch.stack([torch.as_tensor(it["image"]) for it in items]).to(device)
        y = torch.stack([torch.as_tensor(it["mask"]) for it in items]).to(device).clamp(0, 1)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(network(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    network.eval()
    return losses


@torch.no_grad()
def gland_dice(network: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, *, threshold: float = 0.5) -> torch.Tensor:
    """Dice per image ``(M,)`` of ``sigmoid(network(images)) >= threshold`` against ``masks >= 0.5``.

    Raises:
        ValueError: shapes disagree.
    """
    _check(images, masks)
    network.eval()
    pred = (torch.sigmoid(network(images.float())) >= threshold).float()
    return compute_dice(pred, (masks >= 0.5).float(), include_background=True, ignore_empty=False)[:, 0]
