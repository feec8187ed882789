"""Batches of seeded FE simulations, cached on disk by their parameters.

A simulation's DDF depends only on its :class:`SimulationParams` and the target grid, so the cache
key is a hash of both (plus a format version): rerunning with the same seed reuses every solve,
and changing a range or the grid recomputes only what changed.

Example:
    >>> import numpy as np
    >>> from medrobust.data.paired import Grid
    >>> grid = Grid((16, 16, 16), np.diag([4.0, 4.0, 4.0, 1.0]))
    >>> gland = Ellipsoid((30.0, 34.0, 30.0), (14.0, 10.0, 12.0))
    >>> ddfs, params = simulate_many(grid, [gland], n=2, seed=0, cache_dir=None, progress=False)
    >>> ddfs.shape
    (2, 3, 16, 16, 16)
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from medrobust.data.paired import Grid
from medrobust.simulation.motion import (
    Ellipsoid,
    SimulationParams,
    SimulationRanges,
    fit_ellipsoid,
    probe_frame,
    sample_parameters,
    simulate_ddf,
)

__all__ = ["CACHE_VERSION", "cache_key", "cached_simulate_ddf", "simulate_many", "fe_bank"]

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_key(params: SimulationParams, grid: Grid) -> str:
    """Stable hex key of (parameters, grid, format version)."""
    payload = {
        "version": CACHE_VERSION,
        "params": params.to_dict(),
        "shape": list(grid.shape),
        "affine": np.round(np.asarray(grid.affine, float), 6).tolist(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def cached_simulate_ddf(params: SimulationParams, grid: Grid, cache_dir: str | Path | None) -> np.ndarray:
    """:func:`simulate_ddf` through an on-disk cache (``<cache_dir>/<key>.npz``; ``None``: no cache)."""
    if cache_dir is None:
        return simulate_ddf(params, grid)
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{cache_key(params, grid)}.npz"
    if path.is_file():
        with np.load(path) as f:
            return f["ddf"]
    ddf = simulate_ddf(params, grid)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, ddf=ddf, params=json.dumps(params.to_dict()))
    tmp.replace(path)  # atomic: a killed run never leaves a half-written entry
    return ddf


def simulate_many(
    grid: Grid,
    glands: Sequence[Ellipsoid],
    *,
    n: int,
    seed: int | Sequence[int],
    cache_dir: str | Path | None,
    ranges: SimulationRanges | None = None,
    progress: bool = True,
    frame: np.ndarray | None = None,
) -> tuple[np.ndarray, list[SimulationParams]]:
    """Run ``n`` simulations (gland ``i % len(glands)`` for the ``i``-th), each with its own generator.

    Simulation ``i`` draws from ``np.random.default_rng([*seed, i])``, so the first ``k`` of a larger
    batch are identical to a batch of ``k``. ``frame``: :func:`~medrobust.simulation.motion.probe_frame`
    (default: that of ``grid.affine``'s header, i.e. anterior = world +A).

    Returns:
        ``(n, 3, *grid.shape)`` float32 voxel-unit DDFs and their parameters.

    Raises:
        ValueError: ``n < 1`` or no gland given.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    if not glands:
        raise ValueError("glands: at least one gland ellipsoid is needed.")
    base = [int(v) for v in np.atleast_1d(seed)]
    frame = probe_frame(grid.affine) if frame is None else frame
    params = [sample_parameters(np.random.default_rng([*base, i]), glands[i % len(glands)], ranges, frame=frame) for i in range(n)]
    ddfs = np.stack(
        [cached_simulate_ddf(p, grid, cache_dir) for p in tqdm(params, desc="FE simulations", disable=not progress)]
    )
    logger.info("%d FE simulations on a %s grid (cache: %s)", n, grid.shape, cache_dir)
    return ddfs, params


def fe_bank(
    items: Sequence[dict],
    *,
    n_per_case: int,
    seed: int,
    cache_dir: str | Path | None,
    ranges: SimulationRanges | None = None,
    gland_channel: int = 0,
    progress: bool = True,
    anterior_axis: str | None = None,
) -> dict[str, torch.Tensor]:
    """Patient-specific FE DDFs for the adversarial regulariser: ``case_id -> (n_per_case, 3, *grid)``.

    Each case's gland ellipsoid is fitted to its moving (MR) gland label on the common grid, and the
    simulations are sampled on that grid (``items`` from :func:`medrobust.data.paired.load_pair`).
    A case uses seed ``[seed, crc32(case_id)]`` (``[seed, k]`` for the ``k``-th item without an id), so
    a case gets the same simulations (and cache entries) in every fold of a cross-validation.
    ``anterior_axis``: see :func:`~medrobust.simulation.motion.probe_frame` (``None``: from the header).

    Raises:
        ValueError: an item without ``moving_label``/``affine``.
    """
    bank: dict[str, torch.Tensor] = {}
    for k, item in enumerate(tqdm(items, desc="FE bank (cases)", disable=not progress)):
        if "moving_label" not in item or "affine" not in item:
            raise ValueError(f"item {item.get('case_id', k)!r} needs 'moving_label' and 'affine' to build FE simulations.")
        affine = np.asarray(item["affine"], dtype=np.float64)
        grid = Grid(tuple(int(s) for s in item["moving_label"].shape[1:]), affine)
        gland = fit_ellipsoid(np.asarray(item["moving_label"][gland_channel]), affine)
        case_seed = zlib.crc32(str(item["case_id"]).encode()) if "case_id" in item else k
        ddfs, _ = simulate_many(grid, [gland], n=n_per_case, seed=[seed, case_seed], cache_dir=cache_dir, ranges=ranges,
                                progress=False, frame=probe_frame(affine, anterior_axis=anterior_axis))
        bank[str(item.get("case_id", k))] = torch.from_numpy(ddfs)
    return bank
