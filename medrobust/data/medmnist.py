"""MedMNIST-format ``.npz`` reader (MedMNIST v2: BreastMNIST, PneumoniaMNIST, NoduleMNIST3D, ...).

A MedMNIST file holds the official splits as arrays ``{split}_images`` and ``{split}_labels``
for ``split`` in ``train``, ``val``, ``test``. Images are ``uint8``: ``(N, H, W)`` (2-D grey),
``(N, H, W, 3)`` (2-D RGB) or ``(N, D, H, W)`` (3-D); labels ``(N, 1)`` (class index) or
``(N, K)`` (multi-label). This module returns channel-first ``float32`` images in ``[0, 1]`` and
integer labels, optionally remapped (BreastMNIST stores 0 = malignant, 1 = normal/benign; our
contract wants class 1 = the positive, malignant class: ``label_map=BREASTMNIST_MALIGNANT_POSITIVE``).

Example:
    >>> split = load_medmnist("breastmnist.npz", "test", label_map=BREASTMNIST_MALIGNANT_POSITIVE)  # doctest: +SKIP
    >>> split.images.shape, split.labels.shape  # doctest: +SKIP
    ((156, 1, 28, 28), (156,))
    >>> items = medmnist_datalist("breastmnist.npz", "train")  # doctest: +SKIP
    >>> sorted(items[0])  # doctest: +SKIP
    ['case_id', 'image', 'label']
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "MEDMNIST_SPLITS",
    "BREASTMNIST_MALIGNANT_POSITIVE",
    "MedMNISTSplit",
    "load_medmnist",
    "medmnist_datalist",
]

logger = logging.getLogger(__name__)

MEDMNIST_SPLITS = ("train", "val", "test")

#: BreastMNIST stores 0 = malignant, 1 = normal/benign; this map makes 1 = malignant (our contract).
BREASTMNIST_MALIGNANT_POSITIVE: dict[int, int] = {0: 1, 1: 0}


@dataclass(frozen=True)
class MedMNISTSplit:
    """One split of a MedMNIST file.

    Attributes:
        images: ``float32`` ``(N, C, *spatial)`` in ``[0, 1]`` (``uint8 / 255``).
        labels: ``int64`` ``(N,)`` class indices, or ``(N, K)`` for multi-label files.
        case_ids: ``"{split}_{index:05d}"``: stable, de-identified ids.
        split: ``"train"``, ``"val"`` or ``"test"``.
        spatial_dims: 2 or 3.
    """

    images: np.ndarray
    labels: np.ndarray
    case_ids: tuple[str, ...]
    split: str
    spatial_dims: int


def _channel_first(images: np.ndarray, path: Path, key: str, spatial_dims: int | None) -> tuple[np.ndarray, int]:
    """``(N, C, *spatial)`` from MedMNIST's layouts; the RGB/3-D ambiguity of 4-D arrays is
    resolved by ``spatial_dims`` or, when ``None``, by a trailing axis of size 3 meaning RGB."""
    if images.ndim == 3:
        if spatial_dims == 3:
            raise ValueError(f"{path}: {key} is {images.shape} (2-D images) but spatial_dims=3 was asked for.")
        return images[:, None], 2
    if images.ndim == 4:
        rgb = images.shape[-1] == 3 if spatial_dims is None else spatial_dims == 2
        if rgb:
            if images.shape[-1] not in (1, 3):
                raise ValueError(f"{path}: {key} is {images.shape}; 2-D images need a last axis of 1 or 3 channels.")
            return np.moveaxis(images, -1, 1), 2
        return images[:, None], 3
    raise ValueError(
        f"{path}: {key} must be (N, H, W), (N, H, W, 3) or (N, D, H, W), got shape {images.shape}."
    )


def _remap(labels: np.ndarray, label_map: Mapping[int | str, int] | None, path: Path) -> np.ndarray:
    if label_map is None:
        return labels
    table = {int(k): int(v) for k, v in label_map.items()}
    unknown = sorted(set(np.unique(labels).tolist()) - set(table))
    if unknown:
        raise ValueError(f"{path}: labels {unknown} are not in label_map (keys {sorted(table)}).")
    out = labels.copy()
    for k, v in table.items():
        out[labels == k] = v
    return out


def load_medmnist(
    path: str | Path,
    split: str,
    *,
    label_map: Mapping[int | str, int] | None = None,
    spatial_dims: int | None = None,
) -> MedMNISTSplit:
    """Read one official split of a MedMNIST ``.npz`` file.

    Args:
        path: the ``.npz`` file (read in place; nothing is copied or downloaded).
        split: ``"train"``, ``"val"`` or ``"test"``.
        label_map: optional ``{stored label: our label}`` (JSON-style string keys are accepted),
            e.g. :data:`BREASTMNIST_MALIGNANT_POSITIVE`; single-label files only.
        spatial_dims: 2 or 3 to settle 4-D arrays; ``None`` guesses (a last axis of 3 = RGB 2-D).

    Returns:
        :class:`MedMNISTSplit` with images ``(N, C, *spatial)`` float32 in ``[0, 1]``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown split, a file that is not a MedMNIST npz (missing keys, wrong shapes,
            images and labels of different lengths, labels outside ``label_map``).
    """
    path = Path(path)
    if split not in MEDMNIST_SPLITS:
        raise ValueError(f"split must be one of {MEDMNIST_SPLITS}, got {split!r}.")
    if spatial_dims not in (None, 2, 3):
        raise ValueError(f"spatial_dims must be 2, 3 or None, got {spatial_dims!r}.")
    if not path.is_file():
        raise FileNotFoundError(f"MedMNIST file {path} not found.")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz file: {e}") from e
    with data:
        ik, lk = f"{split}_images", f"{split}_labels"
        missing = [k for k in (ik, lk) if k not in data.files]
        if missing:
            raise ValueError(f"{path} is not a MedMNIST file: keys {missing} missing (found {sorted(data.files)}).")
        raw_images, raw_labels = data[ik], data[lk]
    images, nd = _channel_first(raw_images, path, ik, spatial_dims)
    if raw_labels.ndim == 1:
        raw_labels = raw_labels[:, None]
    if raw_labels.ndim != 2 or raw_labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{path}: {lk} must be (N, 1) or (N, K) with N = {images.shape[0]} images, got {raw_labels.shape}."
        )
    labels = raw_labels[:, 0].astype(np.int64) if raw_labels.shape[1] == 1 else raw_labels.astype(np.int64)
    if label_map is not None and labels.ndim != 1:
        raise ValueError(f"{path}: label_map applies to single-label files; {lk} is multi-label {raw_labels.shape}.")
    labels = _remap(labels, label_map, path)
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    if images.dtype != np.uint8:
        logger.warning("%s: %s has dtype %s (MedMNIST stores uint8); values used as they are.", path, ik, images.dtype)
    images = images.astype(np.float32) / scale
    ids = tuple(f"{split}_{i:05d}" for i in range(images.shape[0]))
    return MedMNISTSplit(images=images, labels=labels, case_ids=ids, split=split, spatial_dims=nd)


def medmnist_datalist(
    path: str | Path,
    split: str,
    *,
    label_map: Mapping[int | str, int] | None = None,
    spatial_dims: int | None = None,
    limit: int | None = None,
) -> list[dict]:
    """A MONAI datalist ``[{"image": (C, *spatial) float32, "label": int, "case_id": str}, ...]``.

    Args:
        path, split, label_map, spatial_dims: as :func:`load_medmnist`.
        limit: keep only the first ``limit`` items (quick runs); ``None`` keeps all.

    Example:
        >>> medmnist_datalist("breastmnist.npz", "val", limit=2)[0]["image"].shape  # doctest: +SKIP
        (1, 28, 28)
    """
    s = load_medmnist(path, split, label_map=label_map, spatial_dims=spatial_dims)
    n = len(s.case_ids) if limit is None else min(int(limit), len(s.case_ids))
    return [
        {"image": s.images[i], "label": s.labels[i] if s.labels.ndim > 1 else int(s.labels[i]), "case_id": s.case_ids[i]}
        for i in range(n)
    ]
