"""From a loaded image to the perturbation space, and from there to the model input.

The perturbation space is the image at its **native** resolution, intensities min-max
normalised per image into ``[0, 1]`` (over all channels, from the display-ready intensities
of :class:`~medrobust.data.LoadedImage`: DICOM rescale, VOI LUT/window and MONOCHROME1
inversion already applied). Perturbations act there, with bounds ``(0, 1)``; then
:func:`to_model_input` resizes to the network's input shape (2-D: bilinear with antialiasing,
``torch.nn.functional.interpolate``; 3-D: Gaussian anti-aliasing as MONAI ``Resize`` does it, with
replicate padding, then trilinear) and
adapts the channels. Both steps are differentiable, so adversarial families attack the
native image through them.

Example:
    >>> import numpy as np, torch
    >>> x = normalise_image(np.arange(12, dtype=np.float32).reshape(1, 3, 4) * 100)
    >>> float(x.min()), float(x.max())
    (0.0, 1.0)
    >>> to_model_input(x[None], (8, 8), in_channels=3).shape
    torch.Size([1, 3, 8, 8])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BOUNDS", "normalise_image", "match_spatial_dims", "resize_batch", "adapt_channels", "to_model_input"]

#: the perturbation space's intensity bounds
BOUNDS = (0.0, 1.0)


def normalise_image(array: np.ndarray) -> torch.Tensor:
    """Min-max normalise one image ``(C, *spatial)`` into ``[0, 1]`` (float32, in place when possible).

    Raises:
        ValueError: a constant image (nothing to normalise) or non-finite values.
    """
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    lo, hi = x.min(), x.max()
    if not (torch.isfinite(lo) and torch.isfinite(hi)):
        raise ValueError("image has non-finite intensities")
    if hi <= lo:
        raise ValueError(f"constant image (every pixel = {float(lo):g}); cannot normalise to [0, 1]")
    return x.sub_(lo).div_(hi - lo)


def match_spatial_dims(x: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Drop singleton trailing axes of ``x: (C, *spatial)`` so it has ``spatial_dims`` spatial axes.

    Raises:
        ValueError: the image has more non-singleton spatial axes than the model, or fewer.
    """
    while x.ndim - 1 > spatial_dims and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim - 1 != spatial_dims:
        raise ValueError(
            f"image of shape {tuple(x.shape)} (channel-first) has {x.ndim - 1} spatial dims, the model takes {spatial_dims}"
        )
    return x


def resize_batch(x: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Resize ``x: (B, C, *spatial)`` to ``spatial_shape`` (differentiable).

    2-D: ``F.interpolate(mode="bilinear", antialias=True)`` (a fused C++ kernel, far faster on
    2500 x 3300 mammograms than smoothing then sampling); 3-D: Gaussian smoothing with sigma
    ``(scale - 1) / 2`` per down-sampled axis (MONAI ``gaussian_1d`` + ``separable_filtering``,
    replicate padding; torch has no antialiased trilinear mode), then trilinear sampling.
    """
    shape = tuple(int(s) for s in spatial_shape)
    if tuple(x.shape[2:]) == shape:
        return x
    if x.ndim == 4:
        return F.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=True)
    if x.ndim == 5:
        # MONAI Resize's anti-aliasing smooths with zero padding (darkens borders): same sigma rule
        # (max(0, (scale - 1) / 2) per axis), replicate padding, then trilinear sampling
        from monai.networks.layers.simplelayers import gaussian_1d, separable_filtering

        sigmas = [max(0.0, (n / t - 1) / 2) for n, t in zip(x.shape[2:], shape)]
        if any(sg > 0 for sg in sigmas):
            kernels = [
                gaussian_1d(torch.tensor(sg), truncated=4.0, approx="erf", normalize=True).to(x) if sg > 0 else torch.ones(1).to(x)
                for sg in sigmas
            ]
            x = separable_filtering(x, kernels, mode="replicate")
        return F.interpolate(x, size=shape, mode="trilinear", align_corners=False)
    raise ValueError(f"resize_batch: x should be (B, C, H, W[, D]), got shape {tuple(x.shape)}.")


def adapt_channels(x: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Match ``x: (B, C, ...)`` to the model's channels: grey -> repeated, RGB -> mean for grey models.

    Raises:
        ValueError: any other mismatch.
    """
    c = x.shape[1]
    if c == in_channels:
        return x
    if c == 1:
        return x.expand(-1, in_channels, *x.shape[2:])
    if in_channels == 1:
        return x.mean(dim=1, keepdim=True)
    raise ValueError(f"image has {c} channels, the model takes {in_channels}")


def to_model_input(x: torch.Tensor, spatial_shape: Sequence[int], in_channels: int) -> torch.Tensor:
    """``(B, C, *native)`` in the perturbation space -> ``(B, in_channels, *spatial_shape)``."""
    return adapt_channels(resize_batch(x, spatial_shape), in_channels)
