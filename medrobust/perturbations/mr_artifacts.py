"""MR acquisition artefacts as perturbation families, via TorchIO's deterministic transforms.

TorchIO's ``Random*`` transforms draw their parameters from the global torch RNG. For
reproducible sweeps we draw the same kinds of parameters from each sample's own generator
(``ctx.generators[b]``) and run the deterministic counterparts ``tio.Motion``,
``tio.Ghosting``, ``tio.Spike`` and ``tio.BiasField``. Results are clipped to ``ctx.bounds``.
The families are flagged ``modalities=("MR",)``; the sweep warns when used on other images.

2-D images ``(C, H, W)`` are passed to TorchIO as ``(C, H, W, 1)`` volumes (TorchIO's own 2-D
convention); 3-D images as they are, with unit voxel spacing (so translations are in voxels).

Severity meanings:

- ``mr_motion``: two rigid movements at times ``~1/3, 2/3`` of the acquisition; rotations
  uniform in ``[-10 s, 10 s]`` degrees and translations uniform in ``[-5 s, 5 s]`` voxels per
  axis (2-D: in-plane rotation and translation only).
- ``mr_ghosting``: ``tio.Ghosting`` intensity ``= s`` (0: none, 1: the modified k-space planes
  are zeroed); 4-10 ghosts along a random spatial axis, 2 % of k-space centre restored.
- ``mr_spike``: 1-3 k-space spikes at random positions of intensity ``s`` times the spectrum
  maximum.
- ``mr_bias_field``: multiplicative ``exp`` of a cubic polynomial field whose coefficients are
  uniform in ``[-s, s]``.

Example:
    >>> import torch
    >>> from medrobust.perturbations.registry import PerturbationContext, get_family
    >>> x = torch.rand(2, 1, 32, 32, 16)
    >>> y = get_family("mr_ghosting").apply(x, 0.5, PerturbationContext.from_seeds([0, 1]))
    >>> y.shape
    torch.Size([2, 1, 32, 32, 16])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torchio as tio

from medrobust.perturbations.natural import check_batch
from medrobust.perturbations.registry import PerturbationContext, PerturbationFamily, register

__all__ = ["mr_motion", "mr_ghosting", "mr_spike", "mr_bias_field", "apply_per_sample"]


def _uniform(g: torch.Generator, low: float, high: float, n: int = 1) -> np.ndarray:
    u = torch.rand((n,), generator=g, device=g.device, dtype=torch.float64).cpu().numpy()
    return low + (high - low) * u


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in ``[low, high]`` (inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=g, device=g.device).item())


def apply_per_sample(
    x: torch.Tensor,
    ctx: PerturbationContext,
    make_transform: Callable[[torch.Generator, int], tio.Transform],
) -> torch.Tensor:
    """Run a TorchIO transform built per sample from its generator; clip to the bounds.

    Args:
        x: ``(B, C, H, W[, D])``.
        ctx: one generator per sample and the bounds.
        make_transform: ``(generator, spatial_dims) -> tio.Transform`` drawing its parameters
            from the generator.
    """
    if len(ctx.generators) != x.shape[0]:
        raise ValueError(f"context has {len(ctx.generators)} generators for a batch of {x.shape[0]}.")
    spatial_dims = x.ndim - 2
    lo, hi = ctx.bounds
    out = torch.empty_like(x)
    for b, g in enumerate(ctx.generators):
        vol = x[b].detach().to("cpu", torch.float32)
        if spatial_dims == 2:
            vol = vol.unsqueeze(-1)
        transform = make_transform(g, spatial_dims)
        with torch.random.fork_rng(devices=[]):  # TorchIO's Transform.__call__ draws from the global RNG
            res = transform(vol)
        res = torch.as_tensor(res, dtype=torch.float32)
        if spatial_dims == 2:
            res = res[..., 0]
        out[b] = res.to(x.device, x.dtype)
    return out.clamp_(lo, hi)


def mr_motion(x: torch.Tensor, severity: float, ctx: PerturbationContext) -> torch.Tensor:
    """Rigid-motion artefact (``tio.Motion``); severity scales rotations (10 deg) and shifts (5 vox)."""
    check_batch(x, severity, "mr_motion")
    if severity == 0:
        return x
    s = float(severity)

    def make(g: torch.Generator, spatial_dims: int) -> tio.Transform:
        n = 2
        degrees = _uniform(g, -10 * s, 10 * s, 3 * n).reshape(n, 3)
        translation = _uniform(g, -5 * s, 5 * s, 3 * n).reshape(n, 3)
        if spatial_dims == 2:  # TorchIO's 2-D convention: rotate about the last axis, shift in-plane
            degrees[:, :-1] = 0
            translation[:, 2] = 0
        step = 1.0 / (n + 1)
        times = step * np.arange(1, n + 1) + _uniform(g, -0.3 * step, 0.3 * step, n)
        return tio.Motion(degrees=degrees, translation=translation, times=times, image_interpolation="linear")

    return apply_per_sample(x, ctx, make)


def mr_ghosting(x: torch.Tensor, severity: float, ctx: PerturbationContext) -> torch.Tensor:
    """Ghosting artefact (``tio.Ghosting``) of intensity ``severity``; 4-10 ghosts on a random axis."""
    check_batch(x, severity, "mr_ghosting")
    if severity == 0:
        return x

    def make(g: torch.Generator, spatial_dims: int) -> tio.Transform:
        num_ghosts = _randint(g, 4, 10)
        axis = _randint(g, 0, spatial_dims - 1)
        return tio.Ghosting(num_ghosts=num_ghosts, axis=axis, intensity=float(severity), restore=0.02)

    return apply_per_sample(x, ctx, make)


def mr_spike(x: torch.Tensor, severity: float, ctx: PerturbationContext) -> torch.Tensor:
    """Spike (herringbone) artefact (``tio.Spike``): 1-3 spikes of ``severity`` x the k-space maximum."""
    check_batch(x, severity, "mr_spike")
    if severity == 0:
        return x

    def make(g: torch.Generator, spatial_dims: int) -> tio.Transform:
        n = _randint(g, 1, 3)
        positions = _uniform(g, 0.0, 1.0, 3 * n).reshape(n, 3)
        if spatial_dims == 2:
            positions[:, 2] = 0.0
        return tio.Spike(spikes_positions=positions, intensity=float(severity))

    return apply_per_sample(x, ctx, make)


def mr_bias_field(x: torch.Tensor, severity: float, ctx: PerturbationContext) -> torch.Tensor:
    """Smooth multiplicative bias field (``tio.BiasField``, order 3, coefficients in ``[-s, s]``)."""
    check_batch(x, severity, "mr_bias_field")
    if severity == 0:
        return x
    order = 3
    n_coef = math.comb(order + 3, 3)  # monomials of total degree <= order in 3 variables

    def make(g: torch.Generator, spatial_dims: int) -> tio.Transform:
        coefficients = _uniform(g, -float(severity), float(severity), n_coef).tolist()
        return tio.BiasField(coefficients=coefficients, order=order)

    return apply_per_sample(x, ctx, make)


for _family in (
    PerturbationFamily(
        "mr_motion",
        mr_motion,
        (0.0, 0.25, 0.5, 1.0, 2.0),
        "MR rigid-motion artefact (TorchIO Motion); severity s: rotations up to 10*s deg, shifts up to 5*s voxels",
        modalities=("MR",),
    ),
    PerturbationFamily(
        "mr_ghosting",
        mr_ghosting,
        (0.0, 0.1, 0.25, 0.5, 0.75, 1.0),
        "MR ghosting artefact (TorchIO Ghosting); severity = ghost intensity (1: planes zeroed)",
        modalities=("MR",),
    ),
    PerturbationFamily(
        "mr_spike",
        mr_spike,
        (0.0, 0.1, 0.25, 0.5, 1.0, 2.0),
        "MR k-space spike artefact (TorchIO Spike); severity = spike intensity / k-space maximum",
        modalities=("MR",),
    ),
    PerturbationFamily(
        "mr_bias_field",
        mr_bias_field,
        (0.0, 0.1, 0.2, 0.3, 0.5, 0.8),
        "MR bias field (TorchIO BiasField, order 3); severity = bound of the polynomial coefficients",
        modalities=("MR",),
    ),
):
    register(_family, overwrite=True)
