"""Contrast-to-noise ratio of an ROI (e.g. a microcalcification cluster) against its surround.

``CNR = (mean_roi - mean_ring) / std_ring``, where the ring is the ROI dilated by
``ring_width`` pixels (a ``(2w+1)``-wide box, via max-pooling) minus the ROI itself, and the
statistics are over the channel-averaged image. Used to show what Fourier low-pass filtering
does to microcalcification visibility (METHODS.md B2).

Example:
    >>> import torch
    >>> img = torch.zeros(1, 32, 32); img[0, 14:18, 14:18] = 1.0
    >>> img += 0.1 * torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> roi = torch.zeros(32, 32, dtype=torch.bool); roi[14:18, 14:18] = True
    >>> contrast_to_noise(img[None], roi)[0] > 5
    tensor(True)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MASK_NAME_SUFFIXES", "ring_mask", "contrast_to_noise", "find_mask", "load_roi_mask"]

_MASK_SUFFIXES = (".npy", ".png", ".nii.gz", ".nii", ".dcm", ".mha", ".nrrd")


def ring_mask(roi: torch.Tensor, ring_width: int = 5) -> torch.Tensor:
    """The background ring around ``roi`` (bool, ``(*spatial)``, 2-D or 3-D)."""
    if ring_width < 1:
        raise ValueError(f"ring_width should be >= 1 pixel, got {ring_width}.")
    pool = {2: F.max_pool2d, 3: F.max_pool3d}.get(roi.ndim)
    if pool is None:
        raise ValueError(f"roi should be 2-D or 3-D, got shape {tuple(roi.shape)}.")
    k = 2 * int(ring_width) + 1
    dilated = pool(roi[None, None].float(), kernel_size=k, stride=1, padding=int(ring_width))[0, 0] > 0
    return dilated & ~roi


def contrast_to_noise(images: torch.Tensor, roi: torch.Tensor, ring_width: int = 5) -> torch.Tensor:
    """CNR per sample.

    Args:
        images: ``(B, C, *spatial)``.
        roi: bool ``(*spatial)``, the same for every sample.
        ring_width: background ring width in pixels.

    Returns:
        ``(B,)`` float64; NaN where the ROI or the ring is empty or the ring has no variation.
    """
    if tuple(images.shape[2:]) != tuple(roi.shape):
        raise ValueError(f"ROI mask shape {tuple(roi.shape)} does not match the image's {tuple(images.shape[2:])}.")
    roi = roi.to(images.device, torch.bool)
    ring = ring_mask(roi, ring_width)
    grey = images.mean(dim=1).double()
    out = torch.full((images.shape[0],), float("nan"), dtype=torch.float64)
    if int(roi.sum()) == 0 or int(ring.sum()) < 2:
        return out
    for b in range(images.shape[0]):
        inner, bg = grey[b][roi], grey[b][ring]
        sd = bg.std()
        if sd > 0:
            out[b] = float((inner.mean() - bg.mean()) / sd)
    return out


#: mask-name suffixes tried after the case id, in order (sample_data writes ``<id>_calc`` and ``<id>_roi``)
MASK_NAME_SUFFIXES = ("", "_calc", "_roi", "_mask")


def find_mask(folder: Path, case_id: str, name_suffixes: tuple[str, ...] = MASK_NAME_SUFFIXES) -> Path | None:
    """The mask file for ``case_id`` in ``folder``: ``<case_id><suffix>.npy/.png/.nii.gz/...``.

    The first name suffix with any existing file wins (so ``<id>_calc`` before ``<id>_roi``).
    """
    for name_suffix in name_suffixes:
        for suffix in _MASK_SUFFIXES:
            p = folder / f"{case_id}{name_suffix}{suffix}"
            if p.is_file():
                return p
    return None


def load_roi_mask(path: Path, spatial_shape: tuple[int, ...]) -> torch.Tensor | None:
    """Read a mask (``.npy`` or any image medrobust.data loads) as bool ``spatial_shape``.

    Returns:
        the mask, or None when it is empty (e.g. no calcifications in this case).

    Raises:
        ValueError: unreadable or not matching ``spatial_shape``.
    """
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        from medrobust.data import load_image

        arr = load_image(path).array
    arr = np.asarray(arr)
    while arr.ndim > len(spatial_shape) and arr.shape[0] == 1:
        arr = arr[0]
    while arr.ndim > len(spatial_shape) and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if tuple(arr.shape) != tuple(spatial_shape):
        raise ValueError(f"ROI mask {path.name} has shape {arr.shape}, the image {tuple(spatial_shape)}")
    mask = torch.from_numpy(np.ascontiguousarray(arr > 0))
    return mask if bool(mask.any()) else None
