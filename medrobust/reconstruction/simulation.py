"""Simulated MR acquisition from magnitude images: smooth phase, coil maps, k-space, zero-filled recon.

Complex tensors carry a trailing (real, imaginary) axis of size 2 (MONAI convention); FFTs are the
orthonormal centred ones of :mod:`medrobust.reconstruction.fft`. The forward model for coil ``c`` is
``k_c = F(S_c * m * exp(i phi)) (+ noise)``, with ``m`` the magnitude, ``phi`` a smooth random phase
(:func:`smooth_phase`) and ``S_c`` birdcage sensitivities normalised so that
``sum_c |S_c|^2 = 1`` (:func:`coil_sensitivities`). Because the maps are normalised and the FFT is
unitary, the root-sum-of-squares of the fully sampled coil images is exactly ``m`` again.

Example:
    >>> import torch
    >>> mag = torch.rand(2, 1, 16, 12)
    >>> k, img = simulate_kspace(mag, num_coils=4, generator=torch.Generator().manual_seed(0))
    >>> tuple(k.shape), tuple(img.shape)
    ((2, 4, 16, 12, 2), (2, 1, 16, 12, 2))
    >>> bool(torch.allclose(zero_filled(k), mag, atol=1e-5))  # fully sampled: the magnitude back
    True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch

from medrobust.reconstruction.fft import fft2c, ifft2c

__all__ = ["normalize_magnitude", "smooth_phase", "coil_sensitivities", "simulate_kspace", "zero_filled", "rss"]


def _fresh(generator: torch.Generator | None, name: str) -> torch.Generator:
    if generator is None:
        g = torch.Generator()
        g.seed()  # non-deterministic, and the global RNG is left alone
        return g
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name}: generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _spatial_shape(shape: Sequence[int], name: str) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"{name}: shape must be 2 or 3 positive sizes (H, W[, D]), got {shape}")
    return shape


def normalize_magnitude(volume: torch.Tensor | np.ndarray, *, upper_percentile: float = 99.5) -> torch.Tensor:
    """Robust intensity scaling of a magnitude image or volume to [0, 1] before simulation.

    Raw MR intensities differ by scanner and protocol (PROMISE12: int16 up to a few thousand), so
    each volume is scaled on its own: its minimum maps to 0 and its ``upper_percentile``-th
    percentile to 1, values above are clipped to 1 (a few bright voxels, e.g. fat or flow, would
    otherwise compress the rest of the range). MONAI's ``ScaleIntensityRangePercentiles`` does the
    work (``lower=0``, ``clip=True``).

    Args:
        volume: real magnitude, any shape (one volume: the percentile is over all its voxels).
        upper_percentile: percentile mapped to 1, in (50, 100].

    Returns:
        float32 tensor of the same shape in [0, 1].

    Raises:
        ValueError: NaN/inf values, a constant volume, or a bad percentile.

    Example:
        >>> v = normalize_magnitude(torch.arange(1000.0).reshape(10, 10, 10))
        >>> float(v.min()), float(v.max()), round(float(v.flatten()[500]), 3)
        (0.0, 1.0, 0.503)
    """
    from monai.transforms import ScaleIntensityRangePercentiles
    from monai.utils import convert_to_tensor

    if not (50.0 < upper_percentile <= 100.0):
        raise ValueError(f"normalize_magnitude: upper_percentile must be in (50, 100], got {upper_percentile!r}")
    x = torch.as_tensor(np.asarray(volume) if not isinstance(volume, torch.Tensor) else volume, dtype=torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError("normalize_magnitude: volume has NaN/inf values")
    hi = torch.quantile(x.flatten().double(), upper_percentile / 100.0) if x.numel() < 2**24 else x.max()
    if not hi > x.min():
        raise ValueError(f"normalize_magnitude: constant volume (value {float(x.min()):g}) cannot be scaled")
    scale = ScaleIntensityRangePercentiles(lower=0.0, upper=upper_percentile, b_min=0.0, b_max=1.0, clip=True)
    return convert_to_tensor(scale(x[None])[0], dtype=torch.float32, track_meta=False)  # a plain tensor, not a MetaTensor


def smooth_phase(
    shape: Sequence[int], *, generator: torch.Generator | None = None, order: int = 2, max_phase: float = math.pi
) -> torch.Tensor:
    """A smooth random phase map: a polynomial of total degree <= ``order`` in the coordinates.

    Real MR images carry a slowly varying phase (B0 inhomogeneity, coil and receiver phase); a
    low-order polynomial is the usual stand-in when k-space is simulated from magnitude images.
    Coefficients are uniform in [-1, 1] on coordinates scaled to [-1, 1], then the map is scaled
    so that its largest absolute value is ``max_phase`` radians.

    Args:
        shape: spatial shape ``(H, W)`` or ``(H, W, D)``.
        generator: source of randomness (``None``: a fresh unseeded one).
        order: maximum total polynomial degree (0 = a constant phase).
        max_phase: peak absolute phase in radians.

    Returns:
        float32 phase ``shape`` in radians.

    Example:
        >>> p = smooth_phase((32, 24), generator=torch.Generator().manual_seed(0))
        >>> tuple(p.shape), round(float(p.abs().max()), 4) == round(math.pi, 4)
        ((32, 24), True)
    """
    shape = _spatial_shape(shape, "smooth_phase")
    if not (isinstance(order, int) and 0 <= order <= 6):
        raise ValueError(f"smooth_phase: order must be an int in [0, 6], got {order!r}")
    if not (max_phase >= 0 and math.isfinite(max_phase)):
        raise ValueError(f"smooth_phase: max_phase must be finite and >= 0, got {max_phase!r}")
    gen = _fresh(generator, "smooth_phase")
    axes = torch.meshgrid(*[torch.linspace(-1.0, 1.0, n, dtype=torch.float64) for n in shape], indexing="ij")
    powers = [p for p in itertools.product(range(order + 1), repeat=len(shape)) if sum(p) <= order]
    coef = torch.rand(len(powers), generator=gen, dtype=torch.float64) * 2 - 1
    phi = torch.zeros(shape, dtype=torch.float64)
    for c, p in zip(coef, powers):
        term = torch.ones(shape, dtype=torch.float64)
        for ax, e in zip(axes, p):
            term = term * ax**e
        phi = phi + c * term
    peak = phi.abs().max()
    phi = phi * (max_phase / peak) if peak > 0 else phi
    return phi.float()


def coil_sensitivities(
    shape: Sequence[int], num_coils: int, *, radius: float = 1.5, coils_per_ring: int = 8
) -> torch.Tensor:
    """Birdcage coil sensitivity maps, normalised so that ``sum_c |S_c|^2 = 1`` at every pixel.

    The formula is SigPy's ``sigpy.mri.birdcage_maps`` (BSD): coil ``c`` sits at angle
    ``2 pi c / C`` on a circle of ``radius`` (in units of half the field of view), its map is
    ``exp(i (angle to the coil - 2 pi c / C)) / distance to the coil``; in 3-D, rings of
    ``coils_per_ring`` coils are stacked along the last axis. Written out here because SigPy
    pulls numba/LLVM (too heavy for a dependency) and the light fork ``sigpy-lite`` installs
    under the same ``sigpy`` import name, which would clobber a user's SigPy. Checked against
    sigpy-lite 0.1.27's ``birdcage_maps`` (after the same normalisation) when written.

    Args:
        shape: spatial shape ``(H, W)`` or ``(H, W, D)``.
        num_coils: number of coils ``C`` (1 gives a constant map of ones).
        radius: coil circle radius relative to half the field of view (> 1: coils outside).
        coils_per_ring: 3-D only, coils per ring.

    Returns:
        float32 ``(C, *shape, 2)``.

    Example:
        >>> s = coil_sensitivities((16, 16), 8)
        >>> tuple(s.shape), bool(torch.allclose(s.pow(2).sum(dim=(0, -1)), torch.ones(16, 16), atol=1e-5))
        ((8, 16, 16, 2), True)
    """
    shape = _spatial_shape(shape, "coil_sensitivities")
    if isinstance(num_coils, bool) or not isinstance(num_coils, int) or num_coils < 1:
        raise ValueError(f"coil_sensitivities: num_coils must be an int >= 1, got {num_coils!r}")
    if not radius > 1.0:
        raise ValueError(f"coil_sensitivities: radius must be > 1 (coils outside the field of view), got {radius!r}")
    if num_coils == 1:
        out = torch.zeros((1, *shape, 2))
        out[..., 0] = 1.0
        return out
    dt = torch.float64
    c = torch.arange(num_coils, dtype=dt).reshape((-1,) + (1,) * len(shape))
    grids = torch.meshgrid(*[torch.arange(n, dtype=dt) for n in shape], indexing="ij")
    y = (grids[0] - shape[0] / 2.0) / (shape[0] / 2.0)
    x = (grids[1] - shape[1] / 2.0) / (shape[1] / 2.0)
    per_ring = num_coils if len(shape) == 2 else int(coils_per_ring)
    angle = c * (2 * math.pi / per_ring)
    x_co = x - radius * torch.cos(angle)
    y_co = y - radius * torch.sin(angle)
    if len(shape) == 2:
        dist2 = x_co**2 + y_co**2
        coil_phase = -angle
    else:
        z = (grids[2] - shape[2] / 2.0) / (shape[2] / 2.0)
        ring = torch.floor(c / per_ring)
        z_co = z - (ring - 0.5 * (math.ceil(num_coils / per_ring) - 1))
        dist2 = x_co**2 + y_co**2 + z_co**2
        coil_phase = -(c + ring) * (2 * math.pi / per_ring)
    phi = torch.atan2(x_co, -y_co) + coil_phase
    amp = dist2.rsqrt()
    maps = torch.stack([amp * torch.cos(phi), amp * torch.sin(phi)], dim=-1)
    maps = maps / maps.pow(2).sum(dim=(0, -1), keepdim=True).sqrt()
    return maps.float()


def simulate_kspace(
    magnitude: torch.Tensor,
    *,
    num_coils: int = 1,
    phase: bool = True,
    generator: torch.Generator | None = None,
    max_phase: float = math.pi,
    noise_std: float = 0.0,
    coil_radius: float = 1.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fully sampled (single- or multi-coil) k-space from magnitude images.

    Args:
        magnitude: ``(B, 1, H, W)`` or ``(B, 1, H, W, D)`` real, finite.
        num_coils: ``C``; 1 is single-coil (sensitivity 1).
        phase: multiply by a smooth random phase (:func:`smooth_phase`, one per item).
        generator: source of randomness for phase and noise (``None``: fresh, unseeded).
        max_phase: peak absolute phase in radians.
        noise_std: standard deviation of complex white Gaussian noise added to each k-space
            sample (real and imaginary parts each); the FFT is unitary, so this is also the
            image-domain noise level per coil. 0 = noiseless.
        coil_radius: birdcage radius (see :func:`coil_sensitivities`).

    Returns:
        ``(kspace, image)``: k-space ``(B, C, *spatial, 2)`` and the complex ground-truth image
        ``(B, 1, *spatial, 2)`` (``|image| == magnitude``). The sensitivity maps used are
        ``coil_sensitivities(spatial, C, radius=coil_radius)`` (deterministic).

    Raises:
        ValueError: bad shape, non-finite values, bad settings.
        TypeError: not a floating-point tensor.
    """
    if not isinstance(magnitude, torch.Tensor) or not magnitude.is_floating_point():
        raise TypeError(f"simulate_kspace: magnitude must be a floating-point torch.Tensor, got {type(magnitude).__name__}"
                        + (f" {magnitude.dtype}" if isinstance(magnitude, torch.Tensor) else ""))
    if magnitude.ndim not in (4, 5) or magnitude.shape[1] != 1:
        raise ValueError(f"simulate_kspace: magnitude must be (B, 1, H, W[, D]), got shape {tuple(magnitude.shape)}")
    if not torch.isfinite(magnitude).all():
        raise ValueError("simulate_kspace: magnitude has NaN/inf values")
    if not (noise_std >= 0 and math.isfinite(noise_std)):
        raise ValueError(f"simulate_kspace: noise_std must be finite and >= 0, got {noise_std!r}")
    spatial = tuple(magnitude.shape[2:])
    sd = len(spatial)
    gen = _fresh(generator, "simulate_kspace") if (phase or noise_std > 0) else None
    if phase:
        phi = torch.stack([smooth_phase(spatial, generator=gen, max_phase=max_phase) for _ in range(magnitude.shape[0])])
        phi = phi.unsqueeze(1).to(magnitude)
    else:
        phi = torch.zeros_like(magnitude)
    image = torch.stack([magnitude * torch.cos(phi), magnitude * torch.sin(phi)], dim=-1)  # (B, 1, *spatial, 2)
    maps = coil_sensitivities(spatial, num_coils, radius=coil_radius).to(magnitude).unsqueeze(0)  # (1, C, *spatial, 2)
    coil_images = torch.stack(
        [image[..., 0] * maps[..., 0] - image[..., 1] * maps[..., 1], image[..., 0] * maps[..., 1] + image[..., 1] * maps[..., 0]],
        dim=-1,
    )
    kspace = fft2c(coil_images, spatial_dims=sd)
    if noise_std > 0:
        kspace = kspace + noise_std * torch.randn(kspace.shape, generator=gen, dtype=kspace.dtype)
    return kspace, image


def rss(x: torch.Tensor, *, dim: int = 1, is_complex: bool = True) -> torch.Tensor:
    """Root-sum-of-squares over the coil axis, keeping it (size 1).

    ``sqrt(sum_c |x_c|^2)`` as MONAI's ``root_sum_of_squares(complex_abs(x))``, computed with
    ``torch.linalg.vector_norm`` over the coil and complex axes at once because MONAI's
    ``(x**2).sum() ** 0.5`` has a NaN gradient wherever the image is exactly 0 (background of a
    fully sampled image), which attacks and robust training differentiate through.

    Args:
        x: coil images ``(B, C, *spatial, 2)`` (``is_complex``) or real ``(B, C, *spatial)``.
        dim: coil axis.
        is_complex: whether the last axis is (real, imaginary).

    Returns:
        ``(B, 1, *spatial)`` real.

    Example:
        >>> rss(torch.tensor([[[[3.0, 0.0]], [[0.0, 4.0]]]])).tolist()
        [[[5.0]]]
    """
    if is_complex:
        if x.shape[-1] != 2:
            raise ValueError(f"rss: expected a trailing real/imaginary axis of size 2, got shape {tuple(x.shape)}")
        return torch.linalg.vector_norm(x, dim=(dim, -1)).unsqueeze(dim)
    return torch.linalg.vector_norm(x, dim=dim, keepdim=True)


def zero_filled(kspace: torch.Tensor, mask: torch.Tensor | None = None, *, spatial_dims: int = 2) -> torch.Tensor:
    """Zero-filled reconstruction: inverse FFT of the (masked) k-space, root-sum-of-squares over coils.

    Args:
        kspace: ``(B, C, *spatial, 2)``.
        mask: broadcastable to ``kspace`` (e.g. ``(1, 1, 1, W, 1)`` from
            :func:`~medrobust.reconstruction.masks.undersampling_mask`); ``None`` = fully sampled.
        spatial_dims: 2 or 3.

    Returns:
        magnitude ``(B, 1, *spatial)``.
    """
    if not isinstance(kspace, torch.Tensor) or kspace.ndim != spatial_dims + 3:
        raise ValueError(
            f"zero_filled: kspace must be (B, C, *spatial, 2) with {spatial_dims} spatial dims, got "
            f"{tuple(kspace.shape) if isinstance(kspace, torch.Tensor) else type(kspace).__name__}"
        )
    if mask is not None:
        kspace = kspace * mask
    return rss(ifft2c(kspace, spatial_dims=spatial_dims), dim=1)
