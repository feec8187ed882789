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

__all__ = ["MASK_NAME_SUFFIXES", "RoiSampler", "ring_mask", "contrast_to_noise", "find_mask", "load_roi_mask"]

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


class RoiSampler:
    """Flat indices of an ROI and its background ring, computed once, for fast repeated CNRs.

    The ring is found on the ROI's bounding box grown by ``ring_width`` only, so a small
    calcification cluster on a 3328 x 2560 mammogram costs a few thousand pixels, not 8.5 M.

    Args:
        roi: bool ``(*spatial)`` mask (2-D or 3-D), not empty.
        ring_width: background ring width in pixels.
    """

    def __init__(self, roi: torch.Tensor, ring_width: int = 5) -> None:
        roi = roi.to(torch.bool).cpu()
        if not bool(roi.any()):
            raise ValueError("ROI mask is empty.")
        self.shape = tuple(roi.shape)
        nz = roi.nonzero()
        lo = (nz.min(0).values - ring_width).clamp(min=0)
        hi = torch.minimum(nz.max(0).values + ring_width + 1, torch.tensor(self.shape))
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        sub = roi[box]
        ring = ring_mask(sub, ring_width)
        flat = torch.arange(roi.numel()).reshape(self.shape)[box]
        self.roi_idx = flat[sub]
        self.ring_idx = flat[ring]
        self.n_roi = int(self.roi_idx.numel())

    def cnr(self, images: torch.Tensor) -> torch.Tensor:
        """CNR per sample of ``images: (B, C, *spatial)`` (channels averaged); NaN when undefined."""
        if tuple(images.shape[2:]) != self.shape:
            raise ValueError(f"ROI mask shape {self.shape} does not match the image's {tuple(images.shape[2:])}.")
        flat = images.detach().reshape(images.shape[0], images.shape[1], -1)
        inner = flat[:, :, self.roi_idx.to(images.device)].double().mean(1)
        bg = flat[:, :, self.ring_idx.to(images.device)].double().mean(1)
        out = torch.full((images.shape[0],), float("nan"), dtype=torch.float64)
        if bg.shape[1] < 2:
            return out
        sd = bg.std(dim=1).cpu()
        diff = (inner.mean(1) - bg.mean(1)).cpu()
        ok = sd > 0
        out[ok] = diff[ok] / sd[ok]
        return out


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
    if not bool(roi.any()):
        return torch.full((images.shape[0],), float("nan"), dtype=torch.float64)
    return RoiSampler(roi, ring_width).cnr(images)


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
