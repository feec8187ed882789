"""Seeded synthetic multi-coil k-space in every format :func:`medrobust.reconstruction.read_kspace` reads.

Each case is a small pelvis-like phantom volume (a body ellipse, a textured gland ellipse with a
capsule, two bright round structures, a smooth bias field; all from ``np.random.default_rng([seed,
i])``), scaled to [0, 1] and acquired with :func:`medrobust.reconstruction.simulate_kspace`
(8 birdcage coils, smooth phase, light noise). The same k-space is written as:

* ``fastmri/caseNNN.h5``: fastMRI multi-coil layout (``kspace`` (S, C, H, W), ``reconstruction_rss``)
* ``fastmri_singlecoil/caseNNN.h5``: single-coil (coil-combined) k-space with ``reconstruction_esc``
* ``ismrmrd/caseNNN.h5``: ISMRMRD/MRD Cartesian acquisitions
* ``bart/caseNNN.cfl`` + ``.hdr``: BART (READ, PHS1, -, COIL, ..., SLICE)
* ``nifti/caseNNN.nii.gz``: the magnitude volume (0.6 x 0.6 x 3.6 mm), for simulated acquisition

No download; ``python -m sample_data.generate --out DIR --only kspace``.

Example:
    >>> from pathlib import Path
    >>> root = generate(Path("/tmp/kspace_demo"), n=1, seed=0)  # doctest: +SKIP
    >>> sorted(p.name for p in root.iterdir())  # doctest: +SKIP
    ['bart', 'fastmri', 'fastmri_singlecoil', 'ismrmrd', 'nifti']
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from medrobust.reconstruction.io import write_bart_kspace, write_fastmri, write_ismrmrd
from medrobust.reconstruction.simulation import simulate_kspace

__all__ = ["generate", "SHAPE", "NUM_COILS", "SPACING_MM"]

SHAPE = (6, 64, 64)  # slices, H (readout), W (phase encode)
NUM_COILS = 8
SPACING_MM = (0.6, 0.6, 3.6)
NOISE_STD = 0.002  # k-space noise; the magnitude is in [0, 1]


def phantom(rng: np.random.Generator, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A seeded pelvis-like magnitude volume ``(S, H, W)`` in [0, 1]."""
    s, h, w = shape
    z, y, x = np.meshgrid(np.linspace(-1, 1, s), np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    body = ((x / rng.uniform(0.8, 0.92)) ** 2 + (y / rng.uniform(0.6, 0.75)) ** 2) <= 1
    cy, cx = rng.uniform(-0.1, 0.1, 2)
    ry, rx = rng.uniform(0.2, 0.3), rng.uniform(0.25, 0.35)
    r_gland = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + (z / 1.3) ** 2
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), (0.5, 2.0, 2.0))
    img = 0.35 * body + 0.1 * body * texture
    img = np.where(r_gland <= 1, 0.55 + 0.15 * texture, img)
    img = np.where(np.abs(r_gland - 1) < 0.12, 0.25, img)  # darker capsule
    for _ in range(2):  # bright round structures (vessels / bowel)
        py, px, r = rng.uniform(-0.5, 0.5), rng.uniform(-0.7, 0.7), rng.uniform(0.05, 0.1)
        img = np.where(((x - px) ** 2 + (y - py) ** 2) < r**2, 0.9, img)
    bias = 1.0 + 0.2 * (rng.uniform(-1, 1) * x + rng.uniform(-1, 1) * y)
    img = np.clip(img * bias * body, 0, None)
    return (img / img.max()).astype(np.float32)


def generate(out_dir: Path, *, n: int = 2, seed: int = 0) -> Path:
    """Write ``n`` seeded cases in every supported k-space format under ``out_dir``.

    Args:
        out_dir: dataset root to create.
        n: number of cases.
        seed: case ``i`` draws from ``np.random.default_rng([seed, i])`` (phantom) and a torch
            generator seeded from it (phase, noise).

    Returns:
        ``out_dir``.

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    out_dir = Path(out_dir)
    folders = {k: out_dir / k for k in ("fastmri", "fastmri_singlecoil", "ismrmrd", "bart", "nifti")}
    for f in folders.values():
        f.mkdir(parents=True, exist_ok=True)
    fov = (SHAPE[1] * SPACING_MM[0], SHAPE[2] * SPACING_MM[1], SPACING_MM[2])
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        mag = phantom(rng)
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        name = f"case{i:03d}"
        kspace, _ = simulate_kspace(torch.from_numpy(mag)[:, None], num_coils=NUM_COILS, generator=gen, noise_std=NOISE_STD)
        single, _ = simulate_kspace(torch.from_numpy(mag)[:, None], num_coils=1, generator=gen, noise_std=NOISE_STD)
        write_fastmri(folders["fastmri"] / f"{name}.h5", kspace, reference=mag, acquisition="AXT2_SIMULATED", fov_mm=fov)
        write_fastmri(folders["fastmri_singlecoil"] / f"{name}.h5", single, reference=mag, acquisition="AXT2_SIMULATED", fov_mm=fov)
        write_ismrmrd(folders["ismrmrd"] / f"{name}.h5", kspace, fov_mm=fov)
        write_bart_kspace(folders["bart"] / name, kspace)
        affine = np.diag([SPACING_MM[0], SPACING_MM[1], SPACING_MM[2], 1.0])
        nib.save(nib.Nifti1Image(np.ascontiguousarray(np.moveaxis(mag, 0, -1)), affine), folders["nifti"] / f"{name}.nii.gz")
    return out_dir
