"""Slice datasets that simulate MR acquisitions on the fly from magnitude volumes, split by volume.

Sources: the PROMISE12 development volumes (``image_trainNN.npy.gz`` int16 ``(slices, H, W)`` with
``label_trainNN.npy.gz`` gland masks; :func:`load_promise12`) or a folder of the user's NIfTI/DICOM
magnitude volumes (:func:`load_magnitude_folder`). Each volume is scaled on its own to [0, 1]
(:func:`~medrobust.reconstruction.simulation.normalize_magnitude`: minimum -> 0, 99.5th
percentile -> 1, brighter voxels clipped; raw intensities differ ~10x between PROMISE12 scanners)
and every slice is resized to ``size`` (bilinear with anti-aliasing; gland masks nearest). No
voxel spacing is stored with PROMISE12: ~0.6 mm in-plane at the native matrix is *assumed*, so
``spacing`` is ``0.6 * native / size`` and is not a measured value.

:class:`KspaceSliceDataset` returns MONAI-style dicts; item ``i`` draws its phase, noise and mask
from a generator seeded by ``(seed, epoch, i)``, so an item is the same every time it is read
(evaluation) and changes only when :meth:`~KspaceSliceDataset.set_epoch` is called (training).
:func:`split_volumes` splits volume ids (never slices) with a seed and writes the split to JSON.

Example:
    >>> import torch
    >>> vol = prepare_volume("v0", torch.rand(3, 40, 40) * 900, size=(32, 32))
    >>> ds = KspaceSliceDataset([vol], num_coils=4, acceleration=4, seed=0)
    >>> item = ds[1]
    >>> tuple(item["kspace"].shape), tuple(item["mask"].shape), tuple(item["target"].shape), item["slice"]
    ((4, 32, 32, 2), (1, 1, 32, 1), (1, 32, 32), 1)
    >>> bool(torch.equal(item["kspace"], ds[1]["kspace"]))
    True
    >>> split_volumes([f"case{i:02d}" for i in range(16)], seed=0)["test"]
    ['case01', 'case08', 'case15']
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medrobust.reconstruction.masks import undersampling_mask
from medrobust.reconstruction.simulation import normalize_magnitude, simulate_kspace, zero_filled

__all__ = [
    "PROMISE12_SPACING_MM",
    "MagnitudeVolume",
    "prepare_volume",
    "load_promise12",
    "load_magnitude_folder",
    "KspaceSliceDataset",
    "split_volumes",
    "read_split",
]

logger = logging.getLogger(__name__)

#: assumed PROMISE12 in-plane pixel size (mm) at the native matrix: the arrays carry no spacing
PROMISE12_SPACING_MM = 0.6
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class MagnitudeVolume:
    """A normalised, resized magnitude volume.

    Attributes:
        volume_id: identifier (PROMISE12 ``trainNN`` or a de-identified case id).
        image: float32 ``(S, H, W)`` in [0, 1].
        gland: uint8 ``(S, H, W)`` mask, or None.
        spacing: in-plane pixel size in mm after resizing (assumed for PROMISE12), or None.
    """

    volume_id: str
    image: torch.Tensor
    gland: torch.Tensor | None = None
    spacing: tuple[float, float] | None = None


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    s = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(v) for v in size)
    if len(s) != 2 or min(s) < 8:
        raise ValueError(f"size must be an int or (H, W) with sides >= 8, got {size!r}")
    return s  # type: ignore[return-value]


def prepare_volume(
    volume_id: str,
    image: np.ndarray | torch.Tensor,
    gland: np.ndarray | torch.Tensor | None = None,
    *,
    size: int | Sequence[int] | None = (96, 96),
    spacing: Sequence[float] | None = None,
    upper_percentile: float = 99.5,
) -> MagnitudeVolume:
    """Normalise a magnitude volume ``(S, H, W)`` and resize its slices to ``size``.

    Args:
        volume_id: identifier kept with the slices.
        image: ``(S, H, W)`` magnitude (any real dtype).
        gland: ``(S, H, W)`` binary mask, resized with nearest-neighbour.
        size: output ``(H, W)`` (an int for square); None keeps the native size.
        spacing: native in-plane spacing in mm, rescaled with the resize.
        upper_percentile: see :func:`~medrobust.reconstruction.simulation.normalize_magnitude`.

    Raises:
        ValueError: wrong dims, a gland of another shape, NaN/inf, a constant volume.
    """
    from medrobust.data.preprocess import resize_batch  # lazily: the package stays importable without medrobust.data

    img = torch.as_tensor(np.asarray(image, dtype=np.float32) if not isinstance(image, torch.Tensor) else image.float())
    if img.ndim != 3 or min(img.shape) < 1:
        raise ValueError(f"prepare_volume({volume_id!r}): image must be (slices, H, W), got shape {tuple(img.shape)}")
    try:
        img = normalize_magnitude(img, upper_percentile=upper_percentile)
    except ValueError as e:
        raise ValueError(f"prepare_volume({volume_id!r}): {e}") from None
    native = tuple(img.shape[1:])
    out = native if size is None else _size2(size)
    img = resize_batch(img[:, None], out)[:, 0].clamp_(0.0, 1.0)
    g = None
    if gland is not None:
        g = torch.as_tensor(np.asarray(gland)).float()
        if tuple(g.shape) != (img.shape[0], *native):
            raise ValueError(f"prepare_volume({volume_id!r}): gland shape {tuple(g.shape)} != image shape {(img.shape[0], *native)}")
        g = (F.interpolate(g[:, None], size=out, mode="nearest-exact")[:, 0] > 0.5).to(torch.uint8)
    sp = None if spacing is None else tuple(float(s) * n / o for s, n, o in zip(spacing, native, out))
    return MagnitudeVolume(volume_id, img.contiguous(), g, sp)  # type: ignore[arg-type]


def _load_npy_gz(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as fh:
            return np.load(fh, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: unreadable gzip-compressed .npy ({type(e).__name__}: {str(e)[:120]})") from None


def load_promise12(
    root: str | Path, *, size: int | Sequence[int] | None = (96, 96), volume_ids: Sequence[str] | None = None
) -> list[MagnitudeVolume]:
    """Load the PROMISE12 development volumes (``image_trainNN.npy.gz`` + ``label_trainNN.npy.gz``).

    Args:
        root: folder holding the files.
        size: slice size after resizing (None: native 256 or 160).
        volume_ids: subset such as ``["train00", "train13"]`` (default: all, sorted).

    Returns:
        one :class:`MagnitudeVolume` per volume; spacing assumes :data:`PROMISE12_SPACING_MM`.

    Raises:
        FileNotFoundError: no ``image_train*.npy.gz`` under ``root`` or a requested id missing.
        ValueError: an unreadable file or mismatched image/label shapes.
    """
    root = Path(root)
    found = {re.sub(r"^image_|\.npy\.gz$", "", p.name): p for p in sorted(root.glob("image_train*.npy.gz"))}
    if not found:
        raise FileNotFoundError(f"load_promise12: no image_train*.npy.gz files in {root}")
    ids = sorted(found) if volume_ids is None else list(volume_ids)
    missing = [v for v in ids if v not in found]
    if missing:
        raise FileNotFoundError(f"load_promise12: {missing} not in {root} (have {sorted(found)})")
    vols = []
    for vid in ids:
        img = _load_npy_gz(found[vid])
        lab_path = root / f"label_{vid}.npy.gz"
        lab = _load_npy_gz(lab_path) if lab_path.is_file() else None
        vols.append(prepare_volume(vid, img, lab, size=size, spacing=(PROMISE12_SPACING_MM, PROMISE12_SPACING_MM)))
    return vols


def load_magnitude_folder(
    folder: str | Path, *, size: int | Sequence[int] | None = (96, 96)
) -> tuple[list[MagnitudeVolume], list]:
    """Load every NIfTI/DICOM magnitude volume under ``folder`` (slices along the last axis).

    Bad files are skipped and reported, not raised: the second return value lists
    :class:`~medrobust.data.LoadError` records (file and reason).

    Returns:
        ``(volumes, errors)``; volume ids are the de-identified case ids of
        :func:`~medrobust.data.scan_dataset`.
    """
    from medrobust.data import LoadError, load_image, scan_dataset  # lazily, see prepare_volume

    items, errors = scan_dataset(folder)
    vols: list[MagnitudeVolume] = []
    for item in items:
        try:
            img = load_image(item)
            arr = np.asarray(img.array, dtype=np.float32)
            if arr.shape[0] != 1:
                raise ValueError(f"{item.path}: expected a grey magnitude image, got {arr.shape[0]} channels")
            vol = np.moveaxis(arr[0] if arr.ndim == 4 else arr[0][..., None], -1, 0)  # (S, H, W)
            vols.append(prepare_volume(item.case_id, vol, size=size, spacing=tuple(img.spacing[:2])))
        except ValueError as e:  # UnusableImageError is a ValueError
            errors.append(LoadError(item.path, str(e)))
            logger.warning("skipped %s: %s", item.path, e)
    return vols, errors


class KspaceSliceDataset(torch.utils.data.Dataset):
    """2-D slices with simulated single- or multi-coil k-space, optionally undersampled.

    Args:
        volumes: :class:`MagnitudeVolume` list (all slices of a volume share its size).
        num_coils: 1 (single-coil) or more (birdcage maps, see
            :func:`~medrobust.reconstruction.simulation.coil_sensitivities`).
        acceleration: undersampling factor; None = fully sampled (mask of ones).
        center_fraction: default the fastMRI fraction for 4x/8x.
        mask_kind: ``"random"`` or ``"equispaced"``.
        exact_mask: exact column count (default) or MONAI's expected-count masks.
        seed: base seed; item ``i`` uses ``SeedSequence([seed, epoch, i])``.
        phase: smooth random phase (one per item).
        noise_std: complex Gaussian k-space noise (target intensities are in [0, 1]).

    Items (dict):
        ``kspace`` ``(C, H, W, 2)`` measured (masked) k-space; ``kspace_full`` ``(C, H, W, 2)``;
        ``mask`` ``(1, 1, W, 1)``; ``zero_filled`` ``(1, H, W)``; ``target`` ``(1, H, W)`` the
        magnitude in [0, 1]; ``image`` ``(1, H, W, 2)`` complex ground truth; ``gland``
        ``(1, H, W)`` float 0/1 (zeros when absent, see ``has_gland``); ``volume_id``; ``slice``.
    """

    def __init__(
        self,
        volumes: Sequence[MagnitudeVolume],
        *,
        num_coils: int = 1,
        acceleration: float | None = None,
        center_fraction: float | None = None,
        mask_kind: str = "random",
        exact_mask: bool = True,
        seed: int = 0,
        phase: bool = True,
        noise_std: float = 0.0,
    ) -> None:
        if not volumes:
            raise ValueError("KspaceSliceDataset: no volumes given")
        if isinstance(num_coils, bool) or not isinstance(num_coils, int) or num_coils < 1:
            raise ValueError(f"KspaceSliceDataset: num_coils must be an int >= 1, got {num_coils!r}")
        self.volumes = list(volumes)
        self.index = [(v, s) for v in range(len(self.volumes)) for s in range(self.volumes[v].image.shape[0])]
        self.num_coils, self.acceleration, self.center_fraction = num_coils, acceleration, center_fraction
        self.mask_kind, self.exact_mask, self.seed = mask_kind, exact_mask, int(seed)
        self.phase, self.noise_std, self.epoch = phase, float(noise_std), 0
        if acceleration is not None:  # fail now, not in a worker
            undersampling_mask(self.volumes[0].image.shape[-1], acceleration=acceleration, center_fraction=center_fraction,
                               kind=mask_kind, generator=torch.Generator().manual_seed(0), exact=exact_mask)

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Draw new phases, noise and masks for every item (call once per training epoch)."""
        self.epoch = int(epoch)

    def generator(self, i: int) -> torch.Generator:
        """The generator item ``i`` uses (seeded by ``(seed, epoch, i)``)."""
        state = np.random.SeedSequence([self.seed, self.epoch, int(i)]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"KspaceSliceDataset: index {i} out of range for {len(self)} slices")
        i = i % len(self)
        v, s = self.index[i]
        vol = self.volumes[v]
        gen = self.generator(i)
        target = vol.image[s][None]  # (1, H, W)
        kfull, image = simulate_kspace(target[None], num_coils=self.num_coils, phase=self.phase, generator=gen,
                                       noise_std=self.noise_std)
        w = target.shape[-1]
        if self.acceleration is None:
            mask = torch.ones(1, 1, 1, w, 1)
        else:
            mask = undersampling_mask(w, acceleration=self.acceleration, center_fraction=self.center_fraction,
                                      kind=self.mask_kind, generator=gen, exact=self.exact_mask)  # type: ignore[arg-type]
        kspace = kfull * mask
        gland = vol.gland[s][None].float() if vol.gland is not None else torch.zeros_like(target)
        return {
            "kspace": kspace[0],
            "kspace_full": kfull[0],
            "mask": mask[0],
            "zero_filled": zero_filled(kspace)[0],
            "target": target.clone(),
            "image": image[0],
            "gland": gland,
            "has_gland": vol.gland is not None,
            "volume_id": vol.volume_id,
            "slice": s,
        }


def split_volumes(
    volume_ids: Sequence[str],
    *,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    path: str | Path | None = None,
) -> dict[str, list[str]]:
    """Split volume ids (never slices) into train/val/test with a seed; optionally write JSON.

    Counts are the largest-remainder rounding of ``fractions * n`` with at least one volume in
    every split whose fraction is > 0 (16 volumes -> 10/3/3). The JSON records the seed,
    fractions, the unit (``"volume"``) and the ids per split; :func:`read_split` reads it back.

    Raises:
        ValueError: duplicate ids, too few volumes, fractions not summing to 1.
    """
    ids = sorted(str(v) for v in volume_ids)
    if len(set(ids)) != len(ids):
        raise ValueError(f"split_volumes: duplicate volume ids {sorted({v for v in ids if ids.count(v) > 1})}")
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"split_volumes: fractions must be 3 non-negative numbers summing to 1, got {fractions!r}")
    need = sum(f > 0 for f in fr)
    if len(ids) < need:
        raise ValueError(f"split_volumes: {len(ids)} volumes cannot fill {need} non-empty splits")
    raw = [f * len(ids) for f in fr]
    counts = [int(np.floor(r)) for r in raw]
    for k in sorted(range(3), key=lambda k: raw[k] - counts[k], reverse=True)[: len(ids) - sum(counts)]:
        counts[k] += 1
    for k in range(3):  # every split asked for gets at least one volume, taken from the largest
        if fr[k] > 0 and counts[k] == 0:
            counts[int(np.argmax(counts))] -= 1
            counts[k] = 1
    order = np.random.default_rng(seed).permutation(len(ids))
    bounds = np.cumsum([0] + counts)
    split = {name: sorted(ids[j] for j in order[bounds[k]:bounds[k + 1]]) for k, name in enumerate(SPLIT_NAMES)}
    if path is not None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"unit": "volume", "seed": int(seed), "fractions": fr, **split}, indent=2) + "\n")
    return split


def read_split(path: str | Path) -> dict[str, list[str]]:
    """Read a split written by :func:`split_volumes`, checking that no volume is in two splits.

    Raises:
        ValueError: unreadable JSON, missing splits, a volume in more than one split.
    """
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: unreadable split file ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or any(not isinstance(d.get(k), list) for k in SPLIT_NAMES):
        raise ValueError(f"{p}: a split file needs lists {SPLIT_NAMES}")
    seen: dict[str, str] = {}
    for k in SPLIT_NAMES:
        for v in d[k]:
            if v in seen:
                raise ValueError(f"{p}: volume {v!r} is in both {seen[v]!r} and {k!r}")
            seen[v] = k
    return {k: list(d[k]) for k in SPLIT_NAMES}
