"""Datalists for the bundle: a MedMNIST ``.npz`` (official splits) or a dataset folder.

- ``.npz``: :func:`medrobust.data.medmnist.medmnist_datalist` (BreastMNIST: pass
  ``label_map={0: 1, 1: 0}`` so that 1 = malignant).
- folder: images found by :func:`medrobust.data.scan_dataset` (DICOM, NIfTI, PNG, ...), labels
  from ``labels.csv`` in the folder (``case_id``/``file``, ``label``); loaded with
  :func:`medrobust.data.load_image`, averaged to ``in_channels`` = 1 when they have 3, resized to
  ``spatial_size`` and min-max scaled to ``[0, 1]`` per image. The split comes from a ``split``
  column of the CSV when present (``train``/``val``/``test``), else from a stable hash of the
  case id (fractions ``split_fractions``).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.transforms import Resize, ScaleIntensity

from medrobust.data.medmnist import MEDMNIST_SPLITS, medmnist_datalist

__all__ = ["load_datalist", "folder_datalist", "inference_datalist"]

logger = logging.getLogger(__name__)


def _hash_split(case_id: str, fractions: Sequence[float]) -> str:
    from medrobust.data import stable_hash

    u = int(stable_hash(case_id, 8), 16) / 16**8
    edges = np.cumsum(np.asarray(fractions, dtype=float) / float(sum(fractions)))
    return MEDMNIST_SPLITS[int(np.searchsorted(edges, u, side="right").clip(0, 2))]


def _csv_splits(csv_path: Path) -> dict[str, str]:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = {c.lower(): c for c in (reader.fieldnames or [])}
        if "split" not in cols:
            return {}
        from medrobust.data import case_id_from_path

        id_col = cols.get("case_id") or cols.get("file")
        if id_col is None:
            return {}
        out = {}
        for row in reader:
            cid = row[id_col].strip() if id_col == cols.get("case_id") else case_id_from_path(row[id_col].strip())
            out[cid] = row[cols["split"]].strip().lower()
        return out


def _prepare(arr: np.ndarray, spatial_size: Sequence[int], in_channels: int, path: Path) -> np.ndarray:
    """``(in_channels, *spatial_size)`` float32 in ``[0, 1]``: channels averaged to 1 if needed, resized, min-max scaled."""
    if arr.shape[0] != in_channels:
        if in_channels != 1:
            raise ValueError(f"{path}: {arr.shape[0]} channels, the network expects in_channels={in_channels}.")
        arr = arr.mean(axis=0, keepdims=True)
    if arr.ndim - 1 != len(spatial_size):
        raise ValueError(f"{path}: image has {arr.ndim - 1} spatial dims, spatial_size={list(spatial_size)}.")
    resize = Resize(spatial_size=tuple(int(s) for s in spatial_size), mode="area")
    return np.asarray(ScaleIntensity(minv=0.0, maxv=1.0)(resize(arr)), dtype=np.float32)


def folder_datalist(
    root: str | Path,
    split: str,
    *,
    spatial_size: Sequence[int],
    in_channels: int = 1,
    labels_csv: str | Path | None = None,
    split_fractions: Sequence[float] = (0.7, 0.1, 0.2),
) -> list[dict]:
    """``[{"image", "label", "case_id"}]`` for one split of a labelled image folder (see the module docstring).

    Raises:
        FileNotFoundError: no labels CSV.
        ValueError: no labelled image in the split, or an image whose channels cannot become ``in_channels``.
    """
    from medrobust.data import UnusableImageError, load_image, match_labels, read_labels, scan_dataset

    root = Path(root)
    csv_path = Path(labels_csv) if labels_csv else root / "labels.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"dataset folder {root}: labels CSV {csv_path} not found (columns case_id,label).")
    items, errors = scan_dataset(root)
    for e in errors:
        logger.warning("skipped %s: %s", e.path, e.reason)
    match = match_labels(items, read_labels(csv_path))
    splits = _csv_splits(csv_path)
    out = []
    for item, lab in match.pairs:
        if lab.label is None:
            continue
        if splits.get(item.case_id, _hash_split(item.case_id, split_fractions)) != split:
            continue
        try:
            arr = load_image(item).array
        except UnusableImageError as e:
            logger.warning("skipped %s", e)
            continue
        out.append({"image": _prepare(arr, spatial_size, in_channels, item.path), "label": int(lab.label),
                    "case_id": item.case_id})
    if not out:
        raise ValueError(f"dataset folder {root}: no labelled, loadable image in split {split!r}.")
    return out


def load_datalist(
    source: str | Path,
    split: str,
    *,
    label_map: Mapping[int | str, int] | None = None,
    spatial_size: Sequence[int] = (28, 28),
    in_channels: int = 1,
    limit: int | None = None,
    labels_csv: str | Path | None = None,
) -> list[dict]:
    """The datalist of ``split`` from a MedMNIST ``.npz`` or a dataset folder.

    Args:
        source: ``.npz`` file or folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        label_map: ``{stored: ours}`` label remapping (``.npz`` and folders alike).
        spatial_size: image size the network takes (folders are resized; ``.npz`` must match).
        in_channels: channels the network takes.
        limit: keep the first ``limit`` items (quick runs).
        labels_csv: folder mode: labels CSV (default ``<folder>/labels.csv``).

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: unknown split, or ``.npz`` images whose shape differs from
            ``(in_channels, *spatial_size)``.
    """
    p = Path(source)
    if not p.exists():
        raise FileNotFoundError(f"dataset_dir {p} does not exist (a MedMNIST .npz file or an image folder).")
    if split not in MEDMNIST_SPLITS:
        raise ValueError(f"split must be one of {MEDMNIST_SPLITS}, got {split!r}.")
    if p.is_file():
        data = medmnist_datalist(p, split, label_map=label_map, spatial_dims=len(spatial_size), limit=limit)
        want = (int(in_channels), *(int(s) for s in spatial_size))
        if data and tuple(data[0]["image"].shape) != want:
            raise ValueError(f"{p}: images are {tuple(data[0]['image'].shape)}, the network expects {want} "
                             "(set in_channels / spatial_size).")
        return data
    data = folder_datalist(p, split, spatial_size=spatial_size, in_channels=in_channels, labels_csv=labels_csv)
    if label_map:
        table = {int(k): int(v) for k, v in label_map.items()}
        for d in data:
            d["label"] = table.get(d["label"], d["label"])
    return data if limit is None else data[: int(limit)]


def inference_datalist(
    source: str | Path,
    split: str = "test",
    *,
    spatial_size: Sequence[int] = (28, 28),
    in_channels: int = 1,
    limit: int | None = None,
) -> list[dict]:
    """Images to predict: one split of a MedMNIST ``.npz``, or every loadable image of a folder
    (no labels needed; ``label`` is -1). Same preprocessing as :func:`load_datalist`.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: no loadable image in the folder.
    """
    p = Path(source)
    if not p.exists():
        raise FileNotFoundError(f"dataset_dir {p} does not exist (a MedMNIST .npz file or an image folder).")
    if p.is_file():
        return load_datalist(p, split, spatial_size=spatial_size, in_channels=in_channels, limit=limit)
    from medrobust.data import UnusableImageError, load_image, scan_dataset

    items, errors = scan_dataset(p)
    for e in errors:
        logger.warning("skipped %s: %s", e.path, e.reason)
    out = []
    for item in items[: None if limit is None else int(limit)]:
        try:
            img = _prepare(load_image(item).array, spatial_size, in_channels, item.path)
        except (UnusableImageError, ValueError) as e:
            logger.warning("skipped %s", e)
            continue
        out.append({"image": img, "label": -1, "case_id": item.case_id})
    if not out:
        raise ValueError(f"dataset folder {p}: no loadable image.")
    return out
