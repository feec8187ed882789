"""DICOM: header checks, the display pipeline, single files, multi-frame files and series.

Files are parsed with MONAI's :class:`monai.data.PydicomReader` (``read`` only). Its ``get_data``
is not used on purpose: it applies rescale slope/intercept but not a Modality LUT Sequence,
VOI LUT/window or MONOCHROME1 inversion, and it swaps the row/column axes. The pixel pipeline
is pydicom's (``apply_modality_lut`` -> ``apply_voi_lut`` -> MONOCHROME1 inversion) so
intensities are display-ready and higher always means brighter.

Compressed transfer syntaxes (JPEG-LS, 12-bit JPEG, JPEG 2000) need the ``dicom-codecs``
extra (pylibjpeg plugins; python-gdcm works too); without it such a file is reported as an
:class:`~medrobust.data.records.UnusableImageError` naming the file, the transfer syntax and
the extra to install.

Example:
    >>> from pydicom.data import get_testdata_files
    >>> path = next(f for f in get_testdata_files() if f.endswith("/CT_small.dcm"))
    >>> arr, spacing, modality, meta = load_dicom_file(path)
    >>> arr.shape, arr.dtype, modality  # (C, H, W)
    ((1, 128, 128), dtype('float32'), 'CT')
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.data.deid import describe_sop_class, safe_dicom_meta
from medrobust.data.records import UnusableImageError

__all__ = [
    "quiet_pydicom",
    "read_dicom",
    "read_dicom_header",
    "pixel_problem",
    "dicom_pixels",
    "load_dicom_file",
    "load_dicom_series",
    "is_volume_slice",
    "slice_positions",
    "PROJECTION_MODALITIES",
    "CODECS_EXTRA",
]

logger = logging.getLogger(__name__)

#: the optional extra with decoders for JPEG-LS, 12-bit JPEG and JPEG 2000 (pylibjpeg plugins).
CODECS_EXTRA = "dicom-codecs"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: projection modalities: several files of one series are separate images, never a volume.
PROJECTION_MODALITIES = frozenset({"MG", "CR", "DX", "IO", "PX", "XA", "RF", "US", "OT", "SC", "ES", "XC", "GM", "SM"})


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's value validation while we read.

    pydicom reports invalid element values through its logger and ``warnings``, quoting the
    value, which may be a name or an id; with validation off nothing is quoted. The previous
    setting is restored afterwards.
    """
    from pydicom import config

    old = config.settings._reading_validation_mode  # private: restores "unset" exactly
    config.settings.reading_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings._reading_validation_mode = old


def read_dicom(path: str | Path, *, header_only: bool = False) -> Any:
    """Parse a DICOM file with MONAI's PydicomReader (``force=True``: files without preamble).

    Args:
        path: the file.
        header_only: defer large values (pixel data is not read into memory).

    Raises:
        UnusableImageError: the file cannot be parsed as DICOM.
    """
    from monai.data import PydicomReader

    kwargs: dict[str, Any] = {"force": True}
    if header_only:
        kwargs["defer_size"] = 4096
    try:
        with quiet_pydicom():
            ds = PydicomReader(**kwargs).read(str(path))
    except Exception as e:  # pydicom raises InvalidDicomError, EOFError, struct.error, ...
        raise UnusableImageError(path, f"not a readable DICOM file ({type(e).__name__})") from None
    if len(ds) == 0:
        raise UnusableImageError(path, "not a readable DICOM file (no data elements)")
    _ensure_transfer_syntax(ds)
    return ds


def _ensure_transfer_syntax(ds: Any) -> None:
    """Files without a file meta header (no preamble): take the transfer syntax from how pydicom read them."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        return
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def read_dicom_header(path: str | Path) -> Any:
    """:func:`read_dicom` with pixel data deferred (cheap for scans)."""
    return read_dicom(path, header_only=True)


@quiet_pydicom()
def pixel_problem(ds: Any) -> str | None:
    """Why the dataset has no usable pixel data (None if it looks usable).

    Checks: DICOMDIR, no pixel element (RTSTRUCT, RTPLAN, SR, KO, PR, waveforms, ...),
    zero Rows/Columns.
    """
    if "DirectoryRecordSequence" in ds:
        return "DICOMDIR (media directory index), not an image"
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        return f"{describe_sop_class(ds)} has no pixel data"
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except (TypeError, ValueError):
        return "Rows/Columns are not integers"
    if rows <= 0 or cols <= 0:
        return f"zero-size image (Rows={rows}, Columns={cols})"
    return None


def _decode(ds: Any, path: Path) -> np.ndarray:
    """``ds.pixel_array`` with decoder/size failures turned into specific reasons."""
    ts = getattr(getattr(ds, "file_meta", None), "get", lambda *_: None)("TransferSyntaxUID")
    ts_name = getattr(ts, "name", None) or "unknown transfer syntax"
    try:
        return np.asarray(ds.pixel_array)
    except (NotImplementedError, RuntimeError) as e:
        msg = str(e)
        lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
        if "missing dependencies" in msg or "No pixel data decoders" in msg or isinstance(e, NotImplementedError):
            raise UnusableImageError(
                path,
                f"unsupported compression: transfer syntax {ts_name} ({ts}) needs a decoder that is not installed; "
                f"install medrobust's extra: pip install 'medrobust[{CODECS_EXTRA}]' (pylibjpeg, or python-gdcm)",
            ) from None
        detail = lines[-1] if lines else type(e).__name__
        raise UnusableImageError(path, f"compressed pixel data could not be decoded ({ts_name}): {detail[:200]}") from None
    except (ValueError, EOFError, OSError, KeyError, AttributeError, TypeError) as e:
        msg = str(e)
        low = msg.lower()
        if "length" in low or "truncat" in low or "buffer" in low or "expected" in low or isinstance(e, EOFError):
            raise UnusableImageError(path, f"truncated or inconsistent pixel data ({ts_name}): {msg[:200]}") from None
        raise UnusableImageError(path, f"invalid image header or pixel data ({ts_name}): {type(e).__name__}: {msg[:200]}") from None


def _value_range(ds: Any) -> tuple[float, float]:
    """Range of the modality-LUT output from BitsStored/PixelRepresentation (PS3.3 C.11.1)."""
    if ds.get("ModalityLUTSequence"):
        depth = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**depth - 1)
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, icpt = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = sorted((lo * slope + icpt, hi * slope + icpt))
    return lo, hi


def _voi_range(ds: Any, modality_range: tuple[float, float]) -> tuple[float, float]:
    """Output range of pydicom's ``apply_voi_lut`` (VOI LUT Sequence preferred over a window)."""
    if ds.get("VOILUTSequence"):
        depth = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**depth - 1)
    return modality_range


@quiet_pydicom()
def dicom_pixels(
    ds: Any, path: str | Path, *, voi: bool = True, reference: Any | None = None
) -> tuple[np.ndarray, list[str], tuple[float, float]]:
    """Display-ready pixels of one DICOM object.

    Args:
        ds: a pydicom Dataset with pixel data.
        path: its file (for error messages).
        voi: apply the VOI LUT / window (``False`` keeps modality values, e.g. CT HU).
        reference: dataset whose VOI LUT/window and photometric interpretation are used (the
            first slice of a series, so every slice is windowed alike); defaults to ``ds``.

    Returns:
        ``(array, steps, value_range)``: float32 ``(C, H, W)`` or ``(C, H, W, F)`` for
        multi-frame (C = 1 grey, 3 colour), the names of the steps applied, and the nominal
        ``(low, high)`` of the output (from BitsStored, rescale and VOI), for normalising.

    Raises:
        UnusableImageError: no pixel data, undecodable compression, truncated data,
            unsupported photometric interpretation.
    """
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    path = Path(path)
    ref = ds if reference is None else reference
    problem = pixel_problem(ds)
    if problem:
        raise UnusableImageError(path, problem)
    arr = _decode(ds, path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ref.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
    steps: list[str] = []
    if arr.size == 0:
        raise UnusableImageError(path, "zero-size pixel array")

    if samples == 1 and photometric in ("MONOCHROME1", "MONOCHROME2"):
        arr = apply_modality_lut(arr, ds)
        if ds.get("ModalityLUTSequence") or ("RescaleSlope" in ds and "RescaleIntercept" in ds):
            steps.append("modality_lut")
        lo, hi = _value_range(ds)
        if voi and (ref.get("VOILUTSequence") or ("WindowCenter" in ref and "WindowWidth" in ref)):
            try:
                arr = apply_voi_lut(arr, ref, prefer_lut=True)
                lo, hi = _voi_range(ref, (lo, hi))
                steps.append("voi_lut")
            except (ValueError, TypeError, IndexError, AttributeError) as e:
                logger.debug("%s: VOI LUT/window not applied (%s)", path.name, e)
        shape = str(ref.get("PresentationLUTShape", "") or "").strip().upper()
        if photometric == "MONOCHROME1" or shape == "INVERSE":
            arr = (lo + hi) - np.asarray(arr, dtype=np.float64)  # flip within the value range
            steps.append("invert_monochrome1" if photometric == "MONOCHROME1" else "invert_presentation_lut")
        arr = arr[None]  # channel axis
    elif samples == 1 and photometric == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr, ds)
            lo, hi = 0.0, float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" else float(arr.max())
        except Exception as e:
            raise UnusableImageError(path, f"PALETTE COLOR lookup table unusable: {type(e).__name__}") from None
        arr = np.moveaxis(arr, -1, 0)
        steps.append("palette_color_lut")
    elif samples == 3:
        # pydicom converts YBR_FULL/YBR_FULL_422 to RGB while decoding (as_rgb default)
        arr = np.moveaxis(arr, -1, 0)
        lo, hi = 0.0, float(2 ** int(ds.get("BitsStored", 8) or 8) - 1)
    elif samples == 1:
        raise UnusableImageError(path, f"unsupported PhotometricInterpretation {photometric!r} for 1 sample/pixel")
    else:
        raise UnusableImageError(path, f"unsupported SamplesPerPixel={samples} ({photometric})")

    if frames > 1:  # (C, F, H, W) -> (C, H, W, F)
        arr = np.moveaxis(arr, 1, -1)
    return np.ascontiguousarray(arr, dtype=np.float32), steps, (float(lo), float(hi))


def _pixel_spacing(ds: Any) -> tuple[tuple[float, float], str]:
    """(row spacing, column spacing) in mm and where it came from."""
    for kw in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        value = ds.get(kw, None)
        try:
            if value is not None and len(value) >= 2 and float(value[0]) > 0 and float(value[1]) > 0:
                return (float(value[0]), float(value[1])), kw
        except (TypeError, ValueError):
            continue
    return (1.0, 1.0), "unknown"


@quiet_pydicom()
def load_dicom_file(path: str | Path, *, voi: bool = True) -> tuple[np.ndarray, tuple[float, ...], str | None, dict]:
    """Load one DICOM file (single- or multi-frame).

    Args:
        path: the file.
        voi: apply the VOI LUT / window.

    Returns:
        ``(array (C, H, W[, F]) float32, spacing, modality, meta)``.

    Raises:
        UnusableImageError: see :func:`dicom_pixels` (NaN/inf values are checked by ``load_image``).
    """
    path = Path(path)
    ds = read_dicom(path)
    arr, steps, value_range = dicom_pixels(ds, path, voi=voi)
    (dy, dx), source = _pixel_spacing(ds)
    spacing: tuple[float, ...] = (dy, dx)
    if arr.ndim == 4:
        dz = ds.get("SpacingBetweenSlices", None) or ds.get("SliceThickness", None)
        spacing = (dy, dx, float(dz) if dz else 1.0)
    meta = safe_dicom_meta(ds)
    meta.update(format="dicom", spacing_source=source, steps=steps, value_range=list(value_range))
    modality = str(ds.get("Modality", "") or "").strip() or None
    return arr, spacing, modality, meta


@quiet_pydicom()
def is_volume_slice(ds: Any) -> bool:
    """Can this dataset be one slice of a 3-D series (cross-sectional, single frame, positioned)?"""
    try:
        return _is_volume_slice(ds)
    except (TypeError, ValueError, AttributeError):  # unparseable header values: treat as a single image
        return False


def _is_volume_slice(ds: Any) -> bool:
    modality = str(ds.get("Modality", "") or "").strip().upper()
    return (
        modality not in PROJECTION_MODALITIES
        and int(ds.get("NumberOfFrames", 1) or 1) == 1
        and "ImagePositionPatient" in ds
        and "ImageOrientationPatient" in ds
        and pixel_problem(ds) is None
    )


@quiet_pydicom()
def slice_positions(datasets: Sequence[Any]) -> np.ndarray | None:
    """Position of each slice along the slice normal (None if orientation/position missing)."""
    try:
        iop = np.asarray([float(v) for v in datasets[0].ImageOrientationPatient], dtype=np.float64)
        normal = np.cross(iop[:3], iop[3:])
        return np.asarray([float(np.dot([float(v) for v in d.ImagePositionPatient], normal)) for d in datasets])
    except (AttributeError, TypeError, ValueError, IndexError):
        return None


@quiet_pydicom()
def load_dicom_series(
    folder: str | Path, files: Sequence[str | Path], *, voi: bool = True
) -> tuple[np.ndarray, tuple[float, ...], str | None, dict]:
    """Load slices of one series as a volume ``(C, H, W, D)``.

    Slices are ordered along the slice normal (ImagePositionPatient . normal), falling back to
    InstanceNumber. Every slice gets its own Modality LUT; the first slice's VOI LUT/window
    and photometric interpretation apply to all, so the volume is windowed consistently.

    Args:
        folder: the series folder (named in errors).
        files: the slice files (at least 2).
        voi: apply the VOI LUT / window.

    Raises:
        UnusableImageError: fewer than 2 readable slices, slices of different size, bad pixels.
    """
    folder = Path(folder)
    if len(files) < 2:
        raise UnusableImageError(folder, f"a DICOM series needs at least 2 slices, found {len(files)}")
    datasets = [read_dicom(f) for f in files]
    pos = slice_positions(datasets)
    if pos is not None and len(np.unique(np.round(pos, 4))) == len(pos):
        order = np.argsort(pos, kind="stable")
    else:
        order = np.argsort([int(d.get("InstanceNumber", i) or i) for i, d in enumerate(datasets)], kind="stable")
        pos = None
    pairs = [(datasets[i], Path(files[i])) for i in order]
    ref = pairs[0][0]
    slices: list[np.ndarray] = []
    steps: list[str] = []
    value_range = (0.0, 1.0)
    for ds, f in pairs:
        arr, steps, value_range = dicom_pixels(ds, f, voi=voi, reference=ref)
        if slices and arr.shape != slices[0].shape:
            raise UnusableImageError(folder, f"slices differ in shape: {slices[0].shape[1:]} vs {arr.shape[1:]} ({f.name})")
        slices.append(arr)
    vol = np.stack(slices, axis=-1)
    (dy, dx), source = _pixel_spacing(ref)
    if pos is not None:
        dz = float(np.median(np.diff(np.sort(pos))))
    else:
        dz = float(ref.get("SpacingBetweenSlices", None) or ref.get("SliceThickness", None) or 1.0)
    meta = safe_dicom_meta(ref)
    meta.update(format="dicom-series", n_slices=len(slices), spacing_source=source, steps=steps, value_range=list(value_range))
    modality = str(ref.get("Modality", "") or "").strip() or None
    return vol, (dy, dx, abs(dz) if dz else 1.0), modality, meta
