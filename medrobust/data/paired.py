"""Paired registration datasets (moving/fixed images and multi-channel labels) on one physical grid.

Two on-disk layouts are understood, matched by file name across folders:

- ``deepreg``: ``{moving,fixed}_{images,labels}/<case>.nii.gz`` (DeepReg's paired layout; moving
  MR, fixed TRUS in the prostate demo);
- ``muregpro``: ``{us,mr}_{images,labels}/<case>.nii.gz`` (the mu-RegPro challenge: US moving,
  MR fixed).

Labels are 3-D (one channel) or 4-D ``(x, y, z, C)``. Both volumes of a pair are resampled onto a
single grid that covers the fixed image's field of view with the fixed image's direction at a
configurable spacing (e.g. 3 mm, ~24-32 voxels a side), through the images' affines (MONAI
``SpatialResample``), never by resizing arrays: a resize silently rescales anatomy whenever the
two fields of view differ.

Example:
    >>> cases = scan_paired("/data/mrus_dev")                      # doctest: +SKIP
    >>> item = load_pair(cases[0], spacing=3.0)                    # doctest: +SKIP
    >>> item["moving_image"].shape, item["fixed_label"].shape      # doctest: +SKIP
    (torch.Size([1, 24, 32, 24]), torch.Size([6, 24, 32, 24]))
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample

__all__ = [
    "LAYOUTS",
    "PairedCase",
    "Grid",
    "detect_layout",
    "scan_paired",
    "read_volume",
    "target_grid",
    "centre_alignment",
    "resample_to_grid",
    "load_pair",
    "load_paired_dataset",
    "moving_image_groups",
]

logger = logging.getLogger(__name__)

# layout -> (moving images, fixed images, moving labels, fixed labels)
LAYOUTS: dict[str, tuple[str, str, str, str]] = {
    "deepreg": ("moving_images", "fixed_images", "moving_labels", "fixed_labels"),
    "muregpro": ("us_images", "mr_images", "us_labels", "mr_labels"),
}
_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class PairedCase:
    """One moving/fixed pair found on disk (``case_id`` is the shared file stem)."""

    case_id: str
    moving_image: Path
    fixed_image: Path
    moving_label: Path | None
    fixed_label: Path | None


@dataclass(frozen=True)
class Grid:
    """A sampling grid: ``shape`` (N ints) and ``affine`` ((N+1, N+1) voxel -> world mm, float64)."""

    shape: tuple[int, ...]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:-1, :-1], axis=0))


def _stem(p: Path) -> str:
    for s in _SUFFIXES:
        if p.name.endswith(s):
            return p.name[: -len(s)]
    return p.stem


def _files(folder: Path) -> dict[str, Path]:
    return {_stem(p): p for p in sorted(folder.iterdir()) if p.name.endswith(_SUFFIXES)}


def detect_layout(root: str | Path) -> str:
    """Name of the layout whose image folders exist under ``root``; ValueError naming ``root`` otherwise."""
    root = Path(root)
    for name, (mov, fix, _, _) in LAYOUTS.items():
        if (root / mov).is_dir() and (root / fix).is_dir():
            return name
    expected = " or ".join(f"{m}/ + {f}/" for m, f, _, _ in LAYOUTS.values())
    raise ValueError(f"{root}: no paired registration layout found (expected {expected}).")


def scan_paired(root: str | Path, *, layout: str = "auto", require_labels: bool = True) -> list[PairedCase]:
    """Find the moving/fixed pairs under ``root``.

    Args:
        root: dataset folder.
        layout: ``"deepreg"``, ``"muregpro"`` or ``"auto"``.
        require_labels: raise if a pair has no label files.

    Raises:
        ValueError: unknown layout, missing folders, no pairs, or unmatched/missing files (named).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset root {root} is not a directory.")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)} or 'auto', got {layout!r}.")
    dirs = [root / d for d in LAYOUTS[layout]]
    for d in dirs[:2]:
        if not d.is_dir():
            raise ValueError(f"{d}: missing folder for layout {layout!r}.")
    mov, fix = _files(dirs[0]), _files(dirs[1])
    mlab = _files(dirs[2]) if dirs[2].is_dir() else {}
    flab = _files(dirs[3]) if dirs[3].is_dir() else {}
    if set(mov) != set(fix):
        raise ValueError(f"{root}: moving and fixed images do not pair up; unmatched: {sorted(set(mov) ^ set(fix))}.")
    if not mov:
        raise ValueError(f"{root}: no NIfTI pairs in {dirs[0].name}/ and {dirs[1].name}/.")
    cases = []
    for cid in sorted(mov):
        if require_labels and (cid not in mlab or cid not in flab):
            raise ValueError(f"{root}: case {cid!r} has no label file in {dirs[2].name}/ or {dirs[3].name}/.")
        cases.append(PairedCase(cid, mov[cid], fix[cid], mlab.get(cid), flab.get(cid)))
    return cases


def read_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI volume as channel-first float32 ``(C, x, y, z)`` and its voxel -> RAS-mm affine.

    A 3-D file gives C = 1; a 4-D ``(x, y, z, C)`` file (DeepReg/mu-RegPro labels) gives C channels.
    """
    img = nib.load(str(path))
    arr = np.asarray(img.dataobj, dtype=np.float32)
    if arr.ndim == 5 and arr.shape[3] == 1:  # NIfTI vector convention (x, y, z, 1, C)
        arr = arr[:, :, :, 0]
    if arr.ndim == 3:
        arr = arr[None]
    elif arr.ndim == 4:
        arr = np.moveaxis(arr, -1, 0)
    else:
        raise ValueError(f"{path}: expected a 3-D volume or 4-D (x, y, z, C) labels, got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: {int((~np.isfinite(arr)).sum())} non-finite voxels.")
    return arr, np.asarray(img.affine, dtype=np.float64)


def _fov_centre(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    return affine[:-1, :-1] @ ((np.asarray(shape, dtype=np.float64) - 1) / 2) + affine[:-1, -1]


def target_grid(
    fixed_affine: np.ndarray,
    fixed_shape: Sequence[int],
    *,
    spacing: float | Sequence[float] = 3.0,
    size: Sequence[int] | None = None,
    size_divisible: int = 8,
) -> Grid:
    """The common grid: fixed image's direction and FOV centre, ``spacing`` mm, ``size`` voxels.

    With ``size=None`` the grid covers the fixed field of view, rounded up to a multiple of
    ``size_divisible`` (LocalNet with 4 levels needs multiples of 8).
    """
    n = len(fixed_shape)
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (n,))
    if (sp <= 0).any():
        raise ValueError(f"spacing must be positive, got {spacing}.")
    lin = fixed_affine[:-1, :-1]
    direction = lin / np.linalg.norm(lin, axis=0)
    if size is None:
        extent = np.linalg.norm(lin, axis=0) * np.asarray(fixed_shape)
        size = [int(np.ceil(e / s / size_divisible) * size_divisible) for e, s in zip(extent, sp)]
    size = tuple(int(s) for s in size)
    if len(size) != n or min(size) < 2:
        raise ValueError(f"size must be {n} ints >= 2, got {size}.")
    aff = np.eye(n + 1)
    aff[:-1, :-1] = direction * sp
    aff[:-1, -1] = _fov_centre(fixed_affine, fixed_shape) - aff[:-1, :-1] @ ((np.asarray(size) - 1) / 2)
    return Grid(size, aff)


def centre_alignment(moving_affine: np.ndarray, moving_shape: Sequence[int], fixed_affine: np.ndarray,
                     fixed_shape: Sequence[int]) -> np.ndarray:
    """Moving affine translated so both fields of view share their centre (ITK's GEOMETRY initialiser)."""
    out = moving_affine.copy()
    out[:-1, -1] += _fov_centre(fixed_affine, fixed_shape) - _fov_centre(moving_affine, moving_shape)
    return out


def resample_to_grid(array: np.ndarray | torch.Tensor, affine: np.ndarray, grid: Grid, *, mode: str = "bilinear") -> torch.Tensor:
    """Resample channel-first ``array`` ``(C, *spatial)`` with voxel -> world ``affine`` onto ``grid``.

    Physical resampling through both affines (MONAI ``SpatialResample``); outside the source is 0.
    Returns float32 ``(C, *grid.shape)``.
    """
    img = MetaTensor(torch.as_tensor(np.asarray(array, dtype=np.float32)), affine=torch.as_tensor(affine))
    out = SpatialResample(mode=mode, padding_mode="zeros", dtype=torch.float64)(
        img, dst_affine=torch.as_tensor(grid.affine), spatial_size=grid.shape
    )
    return torch.as_tensor(out.as_tensor() if isinstance(out, MetaTensor) else out, dtype=torch.float32)


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)


def load_pair(
    case: PairedCase,
    *,
    spacing: float | Sequence[float] = 3.0,
    size: Sequence[int] | None = None,
    alignment: str = "centre",
    size_divisible: int = 8,
    moving_mask: bool = False,
) -> dict[str, Any]:
    """Load one pair onto the common grid.

    Args:
        case: from :func:`scan_paired`.
        spacing: target voxel size in mm.
        size: target grid size (default: the fixed FOV, rounded up to ``size_divisible``).
        alignment: ``"header"`` uses both affines as stored; ``"centre"`` first translates the moving
            volume so the two fields of view share their centre (for data whose headers do not put
            the two scans in one scanner frame, such as the DeepReg MR-TRUS demo).
        size_divisible: see :func:`target_grid`.
        moving_mask: also return ``"moving_mask"`` ``(1, *S)``, channel 0 (the gland) of the moving
            label, as a network input (needs the moving label file even at inference), and, when
            the fixed label is there, ``"fixed_mask"`` (the fixed gland, a training target).

    Returns:
        ``{"moving_image": (1, *S), "fixed_image": (1, *S)`` (min-max scaled to [0, 1]),
        ``"moving_label": (C, *S), "fixed_label": (C, *S)`` (soft, linearly resampled),
        ``"affine": (N+1, N+1) float64, "case_id": str}``, ``"moving_mask"`` if asked for, and what
        export needs to map results back onto the user's files: ``"moving_path"``, ``"fixed_path"``,
        ``"moving_label_path"`` (``""`` when absent) and ``"moving_world_to_original"`` ((N+1, N+1)
        world -> world, undoing the centring; identity for ``alignment="header"``), see
        :func:`medrobust.registration.export.export_native`.

    Raises:
        ValueError: unknown alignment, moving/fixed labels with different channel counts, or
            ``moving_mask`` without a moving label file.
    """
    if alignment not in ("centre", "header"):
        raise ValueError(f"alignment must be 'centre' or 'header', got {alignment!r}.")
    mov, mov_aff = read_volume(case.moving_image)
    fix, fix_aff = read_volume(case.fixed_image)
    grid = target_grid(fix_aff, fix.shape[1:], spacing=spacing, size=size, size_divisible=size_divisible)
    if alignment == "centre":
        new_aff = centre_alignment(mov_aff, mov.shape[1:], fix_aff, fix.shape[1:])
    else:
        new_aff = mov_aff
    to_original = np.eye(mov_aff.shape[0])
    to_original[:-1, -1] = mov_aff[:-1, -1] - new_aff[:-1, -1]  # undoes the centring (world -> world)
    item: dict[str, Any] = {
        "case_id": case.case_id,
        "moving_image": _minmax(resample_to_grid(mov[:1], new_aff, grid)),
        "fixed_image": _minmax(resample_to_grid(fix[:1], fix_aff, grid)),
        "affine": torch.as_tensor(grid.affine),
        "moving_world_to_original": torch.as_tensor(to_original),
        "moving_path": str(case.moving_image),
        "fixed_path": str(case.fixed_image),
        "moving_label_path": str(case.moving_label) if case.moving_label is not None else "",
    }
    if case.moving_label is not None and case.fixed_label is not None:
        ml, ml_aff = read_volume(case.moving_label)
        fl, fl_aff = read_volume(case.fixed_label)
        if ml.shape[0] != fl.shape[0]:
            raise ValueError(
                f"case {case.case_id!r}: moving labels have {ml.shape[0]} channels, fixed labels {fl.shape[0]} "
                f"({case.moving_label}, {case.fixed_label})."
            )
        if alignment == "centre":
            ml_aff = new_aff if np.allclose(ml_aff, mov_aff) else centre_alignment(ml_aff, ml.shape[1:], fix_aff, fix.shape[1:])
        item["moving_label"] = resample_to_grid(ml, ml_aff, grid).clamp(0, 1)
        item["fixed_label"] = resample_to_grid(fl, fl_aff, grid).clamp(0, 1)
    if moving_mask:
        if case.moving_label is None:
            raise ValueError(f"case {case.case_id!r}: moving_mask=True needs the moving label file (the moving gland "
                             f"segmentation is a network input), none found next to {case.moving_image}.")
        if "moving_label" in item:
            item["moving_mask"] = item["moving_label"][:1].clone()
            item["fixed_mask"] = item["fixed_label"][:1].clone()
        else:  # inference without a fixed label: only the moving one is read
            ml, ml_aff = read_volume(case.moving_label)
            if alignment == "centre":
                ml_aff = new_aff if np.allclose(ml_aff, mov_aff) else centre_alignment(ml_aff, ml.shape[1:], fix_aff, fix.shape[1:])
            item["moving_mask"] = resample_to_grid(ml[:1], ml_aff, grid).clamp(0, 1)
    return item


def load_paired_dataset(
    root: str | Path,
    *,
    ids: Sequence[str] | None = None,
    layout: str = "auto",
    spacing: float | Sequence[float] = 3.0,
    size: Sequence[int] | None = None,
    alignment: str = "centre",
    require_labels: bool = True,
    moving_mask: bool = False,
) -> list[dict[str, Any]]:
    """Load the pairs under ``root`` (optionally only ``ids``) as a list of dicts for ``monai.data.Dataset``.

    ``require_labels=False`` (inference) accepts pairs without label files; ``moving_mask`` see :func:`load_pair`.

    Raises:
        ValueError: an id in ``ids`` is not in the dataset (the missing ids are named).
    """
    cases = scan_paired(root, layout=layout, require_labels=require_labels)
    if ids is not None:
        by_id = {c.case_id: c for c in cases}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise ValueError(f"{root}: case ids not found: {missing}.")
        cases = [by_id[i] for i in ids]
    out = [load_pair(c, spacing=spacing, size=size, alignment=alignment, moving_mask=moving_mask) for c in cases]
    logger.info("loaded %d pairs from %s on a %s grid", len(out), root, tuple(out[0]["fixed_image"].shape[1:]) if out else None)
    return out


def moving_image_groups(root: str | Path, *, layout: str = "auto", min_correlation: float = 0.99) -> list[list[str]]:
    """Group case ids whose moving images are (near-)duplicates: the same patient's scan.

    Two cases share a group when their moving images have the same shape and a Pearson correlation
    of at least ``min_correlation`` (the DeepReg demo repeats a few MR volumes with fresh noise).
    Splits must keep a group together, or a test pair's moving scan leaks into training.
    """
    cases = scan_paired(root, layout=layout, require_labels=False)
    vols = [read_volume(c.moving_image)[0].ravel() for c in cases]
    parent = list(range(len(cases)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(cases)):
        for j in range(i + 1, len(cases)):
            if vols[i].shape == vols[j].shape and np.corrcoef(vols[i], vols[j])[0, 1] >= min_correlation:
                parent[find(j)] = find(i)
    groups: dict[int, list[str]] = {}
    for i, c in enumerate(cases):
        groups.setdefault(find(i), []).append(c.case_id)
    return sorted(groups.values())
