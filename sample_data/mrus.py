"""Seeded synthetic MR-TRUS pairs in DeepReg's paired layout, deformed by the FE probe simulator.

Each pair: a prostate-like gland ellipsoid and 2-4 landmark blobs defined analytically in world
(RAS mm) coordinates; an MR-like moving volume (smooth textures, bias field, Rician-like noise)
on an anisotropic, slightly rotated grid; a TRUS-like fixed volume (hypoechoic gland with a bright
capsule, multiplicative speckle, depth attenuation from the posterior probe) on a different grid
with flipped axes. The fixed anatomy is the moving anatomy pulled through a finite-element
TRUS-probe simulation plus rigid motion (:mod:`medrobust.simulation`), so the two are related by
a known, physically plausible deformation. Files: ``{moving,fixed}_{images,labels}/caseNNN.nii.gz``
with real affines (labels 4-D ``(x, y, z, C)``, channel 0 the gland), plus ``ground_truth/``
holding each true DDF (world mm on the fixed grid).

Example:
    >>> from pathlib import Path
    >>> root = generate(Path("/tmp/mrus"), n=2, seed=0)   # doctest: +SKIP
    >>> sorted(p.name for p in root.iterdir())           # doctest: +SKIP
    ['fixed_images', 'fixed_labels', 'ground_truth', 'moving_images', 'moving_labels']
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from medrobust.data.paired import Grid
from medrobust.simulation.motion import Ellipsoid, SimulationRanges, rotation_matrix, sample_parameters, simulate_ddf

__all__ = ["generate", "MOVING_SHAPE", "FIXED_SHAPE"]

logger = logging.getLogger(__name__)

MOVING_SHAPE = (48, 48, 36)  # MR: 1.5 x 1.5 x 2.0 mm
FIXED_SHAPE = (44, 48, 40)  # TRUS: 1.6 mm isotropic
_FIELD_MM = 1.0  # resolution of the world-space texture fields
_FIELD_HALF = 64.0  # texture fields cover [-64, 64] mm on every axis


def _grid_points(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def _centred_affine(shape: tuple[int, ...], linear: np.ndarray) -> np.ndarray:
    """Voxel -> world affine with ``linear`` (direction x spacing) and the FOV centred on the origin."""
    aff = np.eye(4)
    aff[:3, :3] = linear
    aff[:3, 3] = -linear @ ((np.asarray(shape) - 1) / 2)
    return aff


class _Field:
    """A smooth random scalar field on a world grid, sampled at arbitrary world points."""

    def __init__(self, rng: np.random.Generator, sigma_mm: float) -> None:
        n = int(2 * _FIELD_HALF / _FIELD_MM) + 1
        f = ndimage.gaussian_filter(rng.standard_normal((n, n, n)).astype(np.float32), sigma_mm / _FIELD_MM)
        self.values = (f - f.mean()) / (f.std() + 1e-8)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        idx = (points + _FIELD_HALF) / _FIELD_MM
        return ndimage.map_coordinates(self.values, idx.T, order=1, mode="nearest")


def _anatomy(rng: np.random.Generator) -> tuple[Ellipsoid, list[tuple[np.ndarray, float]]]:
    rot = rotation_matrix(rng.uniform(-15, 15, 3))
    gland = Ellipsoid(
        centre=tuple(rng.uniform(-4, 4, 3)),
        semi_axes=(float(rng.uniform(16, 21)), float(rng.uniform(12, 16)), float(rng.uniform(14, 19))),
        rotation=tuple(map(tuple, rot.tolist())),
    )
    landmarks = []
    for _ in range(int(rng.integers(2, 5))):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        local = direction * rng.uniform(0.2, 0.65) * np.asarray(gland.semi_axes)
        landmarks.append((np.asarray(gland.centre) + rot @ local, float(rng.uniform(3.0, 4.5))))
    return gland, landmarks


def _labels(points: np.ndarray, gland: Ellipsoid, landmarks: list[tuple[np.ndarray, float]]) -> np.ndarray:
    chans = [gland.contains(points)]
    chans += [np.linalg.norm(points - c, axis=1) <= r for c, r in landmarks]
    return np.stack(chans, axis=1).astype(np.uint8)  # (P, C)


def _mr(points: np.ndarray, labels: np.ndarray, fields: dict[str, _Field], rng: np.random.Generator) -> np.ndarray:
    img = 0.35 + 0.05 * fields["tissue"](points)
    img = np.where(labels[:, 0] > 0, 0.55 + 0.08 * fields["gland"](points), img)
    for c in range(1, labels.shape[1]):  # landmarks: alternately dark (cyst-like) and bright (calcification-like)
        img = np.where(labels[:, c] > 0, 0.15 if c % 2 else 0.85, img)
    rectum = np.linalg.norm(points[:, [0, 2]] * [1.0, 0.25], axis=1) < 10
    img = np.where(rectum & (points[:, 1] < -30), 0.05, img)
    img = img * np.exp(0.15 * fields["bias"](points))
    noise = rng.normal(0, 0.03, (2, len(points)))
    return np.sqrt((img + noise[0]) ** 2 + noise[1] ** 2)  # Rician-like magnitude


def _us(points_moving: np.ndarray, points_fixed: np.ndarray, labels: np.ndarray, gland: Ellipsoid,
        fields: dict[str, _Field], rng: np.random.Generator) -> np.ndarray:
    local = (points_moving - np.asarray(gland.centre)) @ np.asarray(gland.rotation)
    radius = np.sqrt(((local / np.asarray(gland.semi_axes)) ** 2).sum(axis=1))
    img = 0.5 + 0.06 * fields["tissue"](points_moving)
    img = np.where(labels[:, 0] > 0, 0.3 + 0.05 * fields["gland"](points_moving), img)
    img = img + 0.45 * np.exp(-(((radius - 1.0) / 0.06) ** 2))  # bright capsule
    for c in range(1, labels.shape[1]):
        img = np.where(labels[:, c] > 0, 0.1 if c % 2 else 0.9, img)
    depth = points_fixed[:, 1] - points_fixed[:, 1].min()  # the probe sits posteriorly (-y)
    img = img * np.exp(-depth / 120.0)
    speckle = rng.rayleigh(1.0, len(points_fixed)) / np.sqrt(np.pi / 2)
    return img * speckle


def _to_uint8(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    v = values.reshape(shape)
    lo, hi = np.percentile(v, [0.5, 99.5])
    return np.clip(255 * (v - lo) / max(hi - lo, 1e-6), 0, 255).astype(np.uint8)


def generate(out_dir: Path, *, n: int = 16, seed: int = 0) -> Path:
    """Write ``n`` seeded synthetic MR-TRUS pairs under ``out_dir`` (DeepReg paired layout).

    Args:
        out_dir: dataset root to create.
        n: number of pairs.
        seed: case ``i`` draws from ``np.random.default_rng([seed, i])``.

    Returns:
        ``out_dir``.

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    logging.getLogger("skfem").setLevel(logging.WARNING)  # skfem logs every assembly and solve at INFO
    out_dir = Path(out_dir)
    folders = {k: out_dir / k for k in ("moving_images", "fixed_images", "moving_labels", "fixed_labels", "ground_truth")}
    for f in folders.values():
        f.mkdir(parents=True, exist_ok=True)
    ranges = SimulationRanges(element_size=10.0)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        gland, landmarks = _anatomy(rng)
        fields = {name: _Field(rng, s) for name, s in (("tissue", 6.0), ("gland", 3.0), ("bias", 30.0))}
        mr_lin = rotation_matrix((0.0, 0.0, rng.uniform(-10, 10))) @ np.diag([1.5, 1.5, 2.0])
        mr_aff = _centred_affine(MOVING_SHAPE, mr_lin)
        us_aff = _centred_affine(FIXED_SHAPE, np.diag([-1.6, -1.6, 1.6]))  # flipped axes: direction matters
        # moving (MR)
        p_mr = _grid_points(MOVING_SHAPE, mr_aff)
        lab_mr = _labels(p_mr, gland, landmarks)
        img_mr = _mr(p_mr, lab_mr, fields, rng)
        # fixed (TRUS): anatomy pulled through the FE probe deformation
        params = sample_parameters(rng, gland, ranges)
        grid = Grid(FIXED_SHAPE, us_aff)
        ddf_vox = simulate_ddf(params, grid)
        ddf_world = np.einsum("ij,j...->i...", us_aff[:3, :3], ddf_vox).reshape(3, -1).T
        p_us = _grid_points(FIXED_SHAPE, us_aff)
        p_src = p_us + ddf_world
        lab_us = _labels(p_src, gland, landmarks)
        img_us = _us(p_src, p_us, lab_us, gland, fields, rng)
        name = f"case{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(_to_uint8(img_mr, MOVING_SHAPE), mr_aff), folders["moving_images"] / name)
        nib.save(nib.Nifti1Image(_to_uint8(img_us, FIXED_SHAPE), us_aff), folders["fixed_images"] / name)
        nib.save(nib.Nifti1Image(lab_mr.reshape(*MOVING_SHAPE, -1), mr_aff), folders["moving_labels"] / name)
        nib.save(nib.Nifti1Image(lab_us.reshape(*FIXED_SHAPE, -1), us_aff), folders["fixed_labels"] / name)
        gt = ddf_world.reshape(*FIXED_SHAPE, 1, 3).astype(np.float32)
        nib.save(nib.Nifti1Image(gt, us_aff), folders["ground_truth"] / name)
        logger.info("mrus sample %d/%d written", i + 1, n)
    return out_dir
