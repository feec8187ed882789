"""Cartesian column (phase-encode) undersampling masks: random and equispaced, fastMRI centre fractions.

Two behaviours:

* ``exact=False`` runs MONAI's :class:`~monai.apps.reconstruction.transforms.array.RandomKspaceMask`
  / :class:`~monai.apps.reconstruction.transforms.array.EquispacedKspaceMask` (the fastMRI
  ``RandomMaskFunc`` / ``EquispacedMaskFunc`` rules, as used by FNAF). Their acceleration holds
  only on average: measured at width 128, 4x, the random mask sampled 27-39 columns instead of 32
  and the equispaced one 31-32.
* ``exact=True`` (default) keeps the same centre block (``round(W * center_fraction)`` columns at
  MONAI's position ``(W - n_low + 1) // 2``) and samples exactly ``round(W / acceleration)``
  columns in all, so every slice of an evaluation has the stated acceleration. No library offers
  an exact-count rule (fastMRI's ``EquispacedMaskFractionFunc`` is exact only on average too),
  hence the few hand-written lines in :func:`_exact_mask`: random picks the outer columns
  uniformly without replacement; equispaced spaces them evenly over the outer columns (the
  columns outside the centre block, in order) from a random offset.

Randomness comes only from the ``torch.Generator`` passed in (or owned by :class:`ColumnMask`);
the global torch/numpy RNGs are never read or seeded. MONAI's transforms need a numpy
``RandomState``: it is seeded from one draw of the generator.

Example:
    >>> import torch
    >>> m = undersampling_mask(128, acceleration=4, kind="random", generator=torch.Generator().manual_seed(0))
    >>> tuple(m.shape), int(m.sum())
    ((1, 1, 1, 128, 1), 32)
    >>> int(m[0, 0, 0, 59:69, 0].sum())  # the 10 = round(0.08 * 128) centre columns
    10
    >>> sampler = ColumnMask(acceleration=8, kind="equispaced", seed=1)
    >>> int(sampler(96).sum())
    12
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from monai.apps.reconstruction.transforms.array import EquispacedKspaceMask, RandomKspaceMask

__all__ = ["FASTMRI_CENTER_FRACTIONS", "undersampling_mask", "center_columns", "ColumnMask"]

#: fastMRI challenge centre fractions per acceleration (fraction of fully sampled central columns)
FASTMRI_CENTER_FRACTIONS: dict[int, float] = {4: 0.08, 8: 0.04}

MaskKind = Literal["random", "equispaced"]


def center_columns(width: int, center_fraction: float) -> tuple[int, int]:
    """``(start, stop)`` of the fully sampled centre block (MONAI/fastMRI placement).

    Example:
        >>> center_columns(128, 0.08)
        (59, 69)
    """
    n_low = int(round(width * center_fraction))
    start = (width - n_low + 1) // 2
    return start, start + n_low


def _validate(width: int, acceleration: float, center_fraction: float, kind: str) -> None:
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 2:
        raise ValueError(f"undersampling_mask: width must be an int >= 2, got {width!r}")
    if not (isinstance(acceleration, (int, float)) and acceleration >= 1):
        raise ValueError(f"undersampling_mask: acceleration must be a number >= 1, got {acceleration!r}")
    if not (isinstance(center_fraction, (int, float)) and 0 <= center_fraction < 1):
        raise ValueError(f"undersampling_mask: center_fraction must be in [0, 1), got {center_fraction!r}")
    if kind not in ("random", "equispaced"):
        raise ValueError(f"undersampling_mask: kind must be 'random' or 'equispaced', got {kind!r}")
    n_low = int(round(width * center_fraction))
    if n_low * acceleration > width + 1e-9:
        raise ValueError(
            f"undersampling_mask: center_fraction {center_fraction} keeps {n_low} of {width} columns, more than "
            f"the {width / acceleration:g} that acceleration {acceleration} allows"
        )


def _exact_mask(width: int, acceleration: float, center_fraction: float, kind: str, gen: torch.Generator) -> torch.Tensor:
    start, stop = center_columns(width, center_fraction)
    mask = torch.zeros(width, dtype=torch.float32)
    mask[start:stop] = 1.0
    n_rest = max(0, int(round(width / acceleration)) - (stop - start))
    outer = torch.cat([torch.arange(0, start), torch.arange(stop, width)])
    if n_rest == 0 or outer.numel() == 0:
        return mask
    n_rest = min(n_rest, outer.numel())
    if kind == "random":
        pick = outer[torch.randperm(outer.numel(), generator=gen)[:n_rest]]
    else:
        spacing = outer.numel() / n_rest  # >= 1, so the floors below are distinct
        offset = torch.rand((), generator=gen, dtype=torch.float64).item() * spacing
        idx = np.floor(offset + spacing * np.arange(n_rest)).astype(np.int64)
        pick = outer[torch.from_numpy(np.minimum(idx, outer.numel() - 1))]
    mask[pick] = 1.0
    return mask


def _monai_mask(width: int, acceleration: float, center_fraction: float, kind: str, gen: torch.Generator) -> torch.Tensor:
    cls = RandomKspaceMask if kind == "random" else EquispacedKspaceMask
    transform = cls(center_fractions=[center_fraction], accelerations=[acceleration], spatial_dims=2, is_complex=True)
    transform.set_random_state(seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    transform(torch.zeros(1, 1, 1, width, 2))  # MONAI builds the mask while masking a k-space: a 1-row dummy
    return torch.as_tensor(transform.mask, dtype=torch.float32).reshape(width)


def undersampling_mask(
    width: int,
    *,
    acceleration: float,
    center_fraction: float | None = None,
    kind: MaskKind = "random",
    generator: torch.Generator | None = None,
    exact: bool = True,
    spatial_dims: int = 2,
) -> torch.Tensor:
    """A Cartesian column mask over the last spatial (phase-encode) axis.

    Args:
        width: number of k-space columns ``W``.
        acceleration: undersampling factor (total columns / sampled columns).
        center_fraction: fraction of central columns always sampled; default
            :data:`FASTMRI_CENTER_FRACTIONS` for 4 and 8 (0.08, 0.04), required otherwise.
        kind: ``"random"`` or ``"equispaced"``.
        generator: source of randomness; ``None`` makes a fresh, unseeded generator (a
            different, non-reproducible mask each call). Pass a seeded one to reproduce.
        exact: sample exactly ``round(W / acceleration)`` columns (default); ``False`` uses
            MONAI's transforms, exact only on average (the fastMRI/FNAF training masks).
        spatial_dims: 2 gives ``(1, 1, 1, W, 1)``; 3 gives ``(1, 1, 1, 1, W, 1)`` (last axis of ``H, W, D``
            k-space is then ``D``: the mask is over the last spatial axis either way).

    Returns:
        float32 mask of ones and zeros, broadcastable over k-space ``(B, C, *spatial, 2)``.

    Raises:
        ValueError: bad width/acceleration/center_fraction/kind, or a centre block wider than
            the acceleration allows.
    """
    if center_fraction is None:
        if acceleration not in FASTMRI_CENTER_FRACTIONS:
            raise ValueError(
                f"undersampling_mask: no fastMRI centre fraction for acceleration {acceleration!r} "
                f"(known: {sorted(FASTMRI_CENTER_FRACTIONS)}); pass center_fraction"
            )
        center_fraction = FASTMRI_CENTER_FRACTIONS[int(acceleration)]
    _validate(width, acceleration, center_fraction, kind)
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"undersampling_mask: spatial_dims must be 1, 2 or 3, got {spatial_dims}")
    gen = generator if generator is not None else torch.Generator().manual_seed(torch.Generator().seed())
    if not isinstance(gen, torch.Generator):
        raise TypeError(f"undersampling_mask: generator must be a torch.Generator or None, got {type(gen).__name__}")
    make = _exact_mask if exact else _monai_mask
    mask = make(int(width), float(acceleration), float(center_fraction), kind, gen)
    return mask.reshape((1, 1) + (1,) * (spatial_dims - 1) + (int(width), 1))


class ColumnMask:
    """A mask sampler that owns its seeded generator: each call draws the next mask.

    Args:
        acceleration, center_fraction, kind, exact, spatial_dims: as :func:`undersampling_mask`.
        seed: seed of the sampler's own ``torch.Generator``.

    Example:
        >>> a, b = ColumnMask(acceleration=4, seed=3), ColumnMask(acceleration=4, seed=3)
        >>> bool(torch.equal(a(64), b(64)))
        True
    """

    def __init__(
        self,
        *,
        acceleration: float,
        center_fraction: float | None = None,
        kind: MaskKind = "random",
        seed: int = 0,
        exact: bool = True,
        spatial_dims: int = 2,
    ) -> None:
        if center_fraction is None and acceleration not in FASTMRI_CENTER_FRACTIONS:
            raise ValueError(f"ColumnMask: no fastMRI centre fraction for acceleration {acceleration!r}; pass center_fraction")
        self.acceleration = acceleration
        self.center_fraction = FASTMRI_CENTER_FRACTIONS[int(acceleration)] if center_fraction is None else center_fraction
        self.kind = kind
        self.exact = exact
        self.spatial_dims = spatial_dims
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, width: int) -> torch.Tensor:
        """Next mask for ``width`` columns (see :func:`undersampling_mask`)."""
        return undersampling_mask(
            width,
            acceleration=self.acceleration,
            center_fraction=self.center_fraction,
            kind=self.kind,
            generator=self.generator,
            exact=self.exact,
            spatial_dims=self.spatial_dims,
        )

    def __repr__(self) -> str:
        return (f"ColumnMask(acceleration={self.acceleration}, center_fraction={self.center_fraction}, "
                f"kind={self.kind!r}, exact={self.exact})")
