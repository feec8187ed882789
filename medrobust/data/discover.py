"""``scan_dataset``: find loadable images under a folder, by content, without stopping on bad files.

Rules:

- Files are recognised by content (DICOM preamble/``DICM`` magic or a forced pydicom parse, NIfTI
  and PNG signatures, MetaImage/NRRD headers); extensions are only hints, so extension-less
  DICOM files are found.
- DICOM objects without pixel data (RTSTRUCT, RTPLAN, SR, DICOMDIR, ...) and unreadable or
  unsupported files become :class:`LoadError` records; plainly non-image files (CSV, JSON, text)
  are skipped silently.
- Several single-frame, positioned, cross-sectional slices (CT, MR, PT, ...) of one
  SeriesInstanceUID in one folder form one ``"dicom-series"`` item named after the folder (plus
  a hash of the UID when a folder holds several series). Projection images (MG, CR, DX, US, ...)
  stay separate items even when they share a series.
- Case ids come from file stems / folder names; when two files would share an id, their path
  relative to the root is used (``sub__case``). Never from header values.
- Folders matching ``exclude`` (default: hidden folders and ``masks``, where ROI masks live by
  convention) are not entered.

Example:
    >>> items, errors = scan_dataset("sample_data/generated/mammo")  # doctest: +SKIP
    >>> items[0].kind, len(errors)  # doctest: +SKIP
    ('dicom', 0)
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections import defaultdict
from pathlib import Path

from medrobust.data.deid import case_id_from_path, stable_hash
from medrobust.data.dicom import is_volume_slice, pixel_problem, read_dicom_header, slice_positions
from medrobust.data.records import ImageItem, LoadError, UnusableImageError
from medrobust.data.sniff import sniff

__all__ = ["scan_dataset", "DEFAULT_EXCLUDE"]

logger = logging.getLogger(__name__)

#: folder-name patterns a scan does not enter (hidden folders; ``masks`` holds ROI masks).
DEFAULT_EXCLUDE: tuple[str, ...] = (".*", "__pycache__", "masks")

_DATA_FILE_SUFFIXES = {".img": ".hdr", ".raw": ".mhd", ".zraw": ".mhd"}


def _walk(root: Path, recursive: bool, exclude: tuple[str, ...]) -> list[tuple[Path, list[Path]]]:
    """(folder, sorted files) for every folder visited, in a deterministic order."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not any(fnmatch.fnmatch(d, p) for p in exclude))
        if not recursive:
            dirnames[:] = []
        files = [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
        out.append((Path(dirpath), [f for f in files if f.is_file()]))
    return out


def _is_paired_data_file(path: Path) -> bool:
    """``x.img`` next to ``x.hdr``, or ``.raw``/``.zraw`` next to a ``.mhd``: read via the header."""
    header_suffix = _DATA_FILE_SUFFIXES.get(path.suffix.lower())
    if header_suffix is None:
        return False
    if header_suffix == ".hdr":
        return path.with_suffix(".hdr").exists() or path.with_suffix(".HDR").exists()
    return any(path.parent.glob("*.mhd")) or any(path.parent.glob("*.MHD"))


def _unique_ids(items: list[ImageItem], root: Path) -> list[ImageItem]:
    """Replace colliding case ids by root-relative paths (``sub__case``), then by a path hash."""
    counts: dict[str, int] = defaultdict(int)
    for it in items:
        counts[it.case_id] += 1
    out = []
    for it in items:
        if counts[it.case_id] == 1:
            out.append(it)
            continue
        rel = it.path.relative_to(root) if it.path != root else Path(it.path.name)
        cid = "__".join([*rel.parent.parts, case_id_from_path(rel)]) or it.case_id
        out.append(ImageItem(cid, it.path, it.kind, it.files))
    seen: dict[str, int] = defaultdict(int)
    for it in out:
        seen[it.case_id] += 1
    final = []
    for it in out:
        if seen[it.case_id] > 1:  # e.g. a.nii and a.nii.gz side by side
            rel = str(it.path.relative_to(root)) if it.path != root else it.path.name
            it = ImageItem(f"{it.case_id}_{stable_hash(rel, 8)}", it.path, it.kind, it.files)
        final.append(it)
    return final


def scan_dataset(
    root: str | Path, *, recursive: bool = True, exclude: tuple[str, ...] = DEFAULT_EXCLUDE
) -> tuple[list[ImageItem], list[LoadError]]:
    """Discover images under ``root``.

    Args:
        root: a folder (or a single file).
        recursive: descend into sub-folders.
        exclude: ``fnmatch`` patterns of folder names not to enter (``()`` scans everything).

    Returns:
        ``(items, errors)``: :class:`ImageItem` for every loadable-looking image or series, sorted
        by path; :class:`LoadError` for every file that is certainly unusable (unreadable,
        unsupported format, DICOM without pixel data, empty). Pixel decoding problems are only
        found by :func:`~medrobust.data.load_image` / :func:`~medrobust.data.iter_loaded`.

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    root = Path(root).expanduser().absolute()
    if not root.exists():
        raise FileNotFoundError(f"scan_dataset: root {root} does not exist")
    if root.is_file():
        folders = [(root.parent, [root])]
        base = root.parent
    else:
        folders = _walk(root, recursive, tuple(exclude))
        base = root
    items: list[ImageItem] = []
    errors: list[LoadError] = []
    for folder, files in folders:
        dicoms: list[tuple[Path, object]] = []
        for f in files:
            try:
                found = _classify(f)
            except Exception as e:  # a scan never stops on one bad file
                found = LoadError(f, f"unexpected error while scanning ({type(e).__name__})")
            if isinstance(found, LoadError):
                errors.append(found)
            elif isinstance(found, ImageItem):
                items.append(found)
            elif found is not None:
                dicoms.append((f, found))
        items.extend(_group_dicoms(folder, dicoms))
    items = _unique_ids(sorted(items, key=lambda i: str(i.path)), base)
    n_series = sum(i.kind == "dicom-series" for i in items)
    logger.info("scanned %s: %d images (%d DICOM series), %d unusable files", root, len(items), n_series, len(errors))
    return items, errors


def _classify(f: Path) -> ImageItem | LoadError | object | None:
    """One file -> an ImageItem, a LoadError, a DICOM header to group later, or None (skip)."""
    if _is_paired_data_file(f):
        return None
    s = sniff(f)
    if s.kind == "skip":
        logger.debug("skip non-image file %s", f.name)
        return None
    if s.kind is None:
        return LoadError(f, s.reason or "unsupported format")
    if s.kind != "dicom":
        return ImageItem(case_id_from_path(f), f, s.kind)
    try:
        ds = read_dicom_header(f)
    except UnusableImageError as e:
        return e.to_record()
    problem = pixel_problem(ds)
    return LoadError(f, problem) if problem else ds


def _series_key(ds: object) -> str | None:
    """SeriesInstanceUID + orientation + matrix size of a volume slice (None: not a slice)."""
    try:
        if not is_volume_slice(ds):
            return None
        uid = str(ds.get("SeriesInstanceUID", "") or "")  # type: ignore[attr-defined]
        iop = ",".join(f"{float(v):.3f}" for v in ds.ImageOrientationPatient)  # type: ignore[attr-defined]
        return f"{uid}|{iop}|{int(ds.Rows)}x{int(ds.Columns)}" if uid else None  # type: ignore[attr-defined]
    except Exception:  # unparseable header values: a single image
        return None


def _group_dicoms(folder: Path, dicoms: list[tuple[Path, object]]) -> list[ImageItem]:
    """Series items for multi-slice volumes, single items for everything else.

    A series is >= 2 slices with the same SeriesInstanceUID, orientation and matrix size at
    distinct positions (so e.g. copies of one slice in different encodings stay separate).
    """
    groups: dict[str, list[tuple[Path, object]]] = defaultdict(list)
    singles: list[Path] = []
    for f, ds in dicoms:
        key = _series_key(ds)
        if key is None:
            singles.append(f)
        else:
            groups[key].append((f, ds))
    series: dict[str, tuple[Path, ...]] = {}
    for key, members in groups.items():
        pos = slice_positions([ds for _, ds in members])
        if len(members) >= 2 and pos is not None and len(set(pos.round(4).tolist())) == len(members):
            series[key] = tuple(sorted(f for f, _ in members))
        else:
            singles.extend(f for f, _ in members)
    items = [ImageItem(case_id_from_path(f), f, "dicom") for f in singles]
    for key, fs in series.items():
        # the folder name, plus a hash of the key (never the UID itself) when a folder holds several series
        cid = folder.name if len(series) == 1 else f"{folder.name}_{stable_hash(key, 8)}"
        items.append(ImageItem(cid, folder, "dicom-series", fs))
    return items
