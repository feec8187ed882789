"""``load_image``: any supported file (or a DICOM series folder) -> :class:`LoadedImage`.

Also :func:`iter_loaded` / :func:`load_dataset`, which load a whole scan and turn every
failure into a :class:`LoadError` record instead of an exception.

Example:
    >>> items, errors = scan_dataset("data/mammo")  # doctest: +SKIP
    >>> img = load_image(items[0])  # doctest: +SKIP
    >>> img.array.shape, img.modality  # doctest: +SKIP
    ((1, 1024, 832), 'MG')
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from medrobust.data.deid import case_id_from_path
from medrobust.data.dicom import load_dicom_file, load_dicom_series
from medrobust.data.readers import load_itk, load_nifti, load_png
from medrobust.data.records import ImageItem, LoadedImage, LoadError, UnusableImageError
from medrobust.data.sniff import sniff

__all__ = ["load_image", "iter_loaded", "load_dataset", "item_for_path"]

logger = logging.getLogger(__name__)


def item_for_path(path: str | Path) -> ImageItem:
    """Make an :class:`ImageItem` for one file or DICOM-series folder (kind decided by content).

    Raises:
        UnusableImageError: missing path, unsupported format, a folder without exactly one series.
    """
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise UnusableImageError(path, "file not found")
    if path.is_dir():
        from medrobust.data.discover import scan_dataset

        items, errors = scan_dataset(path, recursive=False)
        series = [i for i in items if i.kind == "dicom-series"]
        if len(series) == 1 and len(items) == 1:
            return ImageItem(case_id_from_path(path), path, "dicom-series", series[0].files)
        found = f"{len(series)} series and {len(items) - len(series)} other images"
        raise UnusableImageError(path, f"a folder must hold exactly one DICOM series to load as one image; found {found}")
    s = sniff(path)
    if s.kind is None:
        raise UnusableImageError(path, s.reason or "unsupported format")
    if s.kind == "skip":
        raise UnusableImageError(path, f"not an image file (suffix {path.suffix or 'none'})")
    return ImageItem(case_id_from_path(path), path, s.kind)


def _series_files(item: ImageItem) -> tuple[Path, ...]:
    if item.files:
        return item.files
    return item_for_path(item.path).files


def load_image(item: ImageItem | str | Path, *, voi: bool = True) -> LoadedImage:
    """Load one image as float32, channel-first, display-ready and de-identified.

    Args:
        item: an :class:`ImageItem` from :func:`~medrobust.data.scan_dataset`, or a path to a
            file (kind decided by content) or to a folder holding one DICOM series.
        voi: apply the DICOM VOI LUT / window (default, display-ready). ``False`` keeps
            modality values (e.g. CT Hounsfield units); MONOCHROME1 is inverted either way.

    Returns:
        :class:`LoadedImage` with ``array`` (C, H, W) for 2-D, (C, H, W, D) for DICOM
        multi-frame/series, (C, I, J, K) for 3-D NIfTI/ITK.

    Raises:
        UnusableImageError: the reason names the file and the problem (missing file, corrupt or
            truncated data, no pixel data such as RTSTRUCT/SR, unsupported compression or
            format, NaN/inf values, zero size).
    """
    if not isinstance(item, ImageItem):
        item = item_for_path(item)
    path = item.path
    if not path.exists():
        raise UnusableImageError(path, "file not found")
    if item.kind == "dicom":
        arr, spacing, modality, meta = load_dicom_file(path, voi=voi)
    elif item.kind == "dicom-series":
        arr, spacing, modality, meta = load_dicom_series(path, _series_files(item), voi=voi)
    elif item.kind == "nifti":
        arr, spacing, meta = load_nifti(path)
        modality = None
    elif item.kind == "itk":
        arr, spacing, meta = load_itk(path)
        modality = None
    elif item.kind == "png":
        arr, spacing, meta = load_png(path)
        modality = None
    else:  # ImageItem validates kind; this guards hand-made subclasses
        raise UnusableImageError(path, f"unknown kind {item.kind!r}")
    _validate(arr, path)
    meta["shape"] = list(arr.shape)
    logger.debug("loaded %s (%s) shape=%s modality=%s", item.case_id, item.kind, arr.shape, modality)
    return LoadedImage(item.case_id, arr, tuple(float(s) for s in spacing), modality, meta)


def _validate(arr: np.ndarray, path: Path) -> None:
    """float32, channel-first, 2-D or 3-D spatial, non-empty, finite."""
    if arr.ndim not in (3, 4):
        raise UnusableImageError(path, f"expected a 2-D or 3-D image, got array shape {arr.shape} (C, spatial...)")
    if arr.size == 0:
        raise UnusableImageError(path, f"zero-size image, shape {arr.shape}")
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(arr.size - finite.sum() - n_nan)
        parts = [f"NaN in {n_nan} voxels" if n_nan else "", f"inf in {n_inf} voxels" if n_inf else ""]
        raise UnusableImageError(path, ", ".join(p for p in parts if p))


def iter_loaded(items: Iterable[ImageItem | str | Path], *, voi: bool = True) -> Iterator[LoadedImage | LoadError]:
    """Load items one by one, yielding :class:`LoadedImage` or a :class:`LoadError` (never raising).

    Args:
        items: from :func:`~medrobust.data.scan_dataset` (or paths).
        voi: passed to :func:`load_image`.
    """
    for item in items:
        try:
            yield load_image(item, voi=voi)
        except UnusableImageError as e:
            logger.warning("skipping %s", e)
            yield e.to_record()
        except Exception as e:  # a reader bug must not stop a sweep: record it
            path = item.path if isinstance(item, ImageItem) else Path(item)
            logger.warning("skipping %s: unexpected %s", path, type(e).__name__)
            yield LoadError(path, f"unexpected error while loading ({type(e).__name__}: {str(e)[:160]})")


def load_dataset(
    root: str | Path, *, recursive: bool = True, voi: bool = True
) -> tuple[list[LoadedImage], list[LoadError]]:
    """Scan ``root`` and load everything: ``(images, errors)`` (scan errors + load errors).

    Loads every image into memory; for large datasets iterate with :func:`iter_loaded`.
    """
    from medrobust.data.discover import scan_dataset

    items, errors = scan_dataset(root, recursive=recursive)
    images: list[LoadedImage] = []
    for out in iter_loaded(items, voi=voi):
        (images if isinstance(out, LoadedImage) else errors).append(out)
    return images, errors
