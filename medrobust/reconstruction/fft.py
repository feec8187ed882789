"""One FFT convention for all of :mod:`medrobust.reconstruction`: orthonormal and centred.

``fft2c(x) == fftshift(fftn(ifftshift(x), norm="ortho"))`` over the spatial axes, the
convention of fastMRI (``fastmri.fft2c``) and of MONAI's reconstruction app
(:func:`monai.networks.blocks.fft_utils_t.fftn_centered_t`). Complex tensors carry a trailing
axis of size 2 (real, imaginary), as in MONAI. The transform is unitary, so image-domain and
k-space norms are equal (Parseval) and white noise keeps its standard deviation.

The work is done by MONAI's ``fftn_centered_t`` / ``ifftn_centered_t``; these wrappers only add
input validation (a clear error instead of ``view_as_complex``'s) and make the input contiguous:
MONAI's roll returns its input untouched when a spatial axis has length 1, and
``torch.view_as_complex`` then rejects a non-contiguous view (e.g. a sliced or permuted tensor).

Example:
    >>> import torch
    >>> x = torch.randn(2, 1, 8, 6, 2)
    >>> k = fft2c(x)
    >>> bool(torch.allclose(ifft2c(k), x, atol=1e-5))
    True
    >>> bool(torch.allclose(k.pow(2).sum(), x.pow(2).sum(), rtol=1e-4))  # Parseval
    True
"""

from __future__ import annotations

import torch
from monai.networks.blocks.fft_utils_t import fftn_centered_t, ifftn_centered_t

__all__ = ["fft2c", "ifft2c"]


def _check(x: torch.Tensor, spatial_dims: int, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"{name}: spatial_dims must be 1, 2 or 3, got {spatial_dims}")
    if x.ndim < spatial_dims + 1 or x.shape[-1] != 2:
        raise ValueError(
            f"{name}: expected a complex tensor (..., {'x'.join('HWD'[:spatial_dims])}, 2) with a trailing "
            f"real/imaginary axis of size 2, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    return x.contiguous()


def fft2c(x: torch.Tensor, *, spatial_dims: int = 2) -> torch.Tensor:
    """Centred orthonormal forward FFT, image -> k-space.

    Args:
        x: complex image ``(..., H, W, 2)`` (``(..., H, W, D, 2)`` with ``spatial_dims=3``).
        spatial_dims: number of trailing spatial axes transformed (before the complex axis).

    Returns:
        k-space of the same shape and dtype.

    Raises:
        ValueError: the last axis is not of size 2 or there are too few axes.
        TypeError: not a floating-point tensor.
    """
    return fftn_centered_t(_check(x, spatial_dims, "fft2c"), spatial_dims=spatial_dims, is_complex=True)


def ifft2c(x: torch.Tensor, *, spatial_dims: int = 2) -> torch.Tensor:
    """Centred orthonormal inverse FFT, k-space -> image (the exact inverse of :func:`fft2c`).

    Args:
        x: complex k-space ``(..., H, W, 2)`` (``(..., H, W, D, 2)`` with ``spatial_dims=3``).
        spatial_dims: number of trailing spatial axes transformed (before the complex axis).

    Returns:
        complex image of the same shape and dtype.

    Raises:
        ValueError: the last axis is not of size 2 or there are too few axes.
        TypeError: not a floating-point tensor.
    """
    return ifftn_centered_t(_check(x, spatial_dims, "ifft2c"), spatial_dims=spatial_dims, is_complex=True)
