"""NIfTI, MetaImage/NRRD and PNG through MONAI's readers (NibabelReader, ITKReader, PILReader).

Axis conventions (see :class:`~medrobust.data.records.LoadedImage`): 2-D images come out as
``(C, H, W)`` in display order (rows, columns); 3-D volumes keep the voxel order of MONAI's
readers ``(C, I, J, K)``; extra non-spatial axes (time, vector components) become channels.

Example:
    >>> import os, tempfile
    >>> import nibabel as nib
    >>> path = os.path.join(tempfile.mkdtemp(), "ct.nii.gz")
    >>> nib.save(nib.Nifti1Image(np.zeros((64, 64, 40), np.float32), np.diag([0.8, 0.8, 2.5, 1.0])), path)
    >>> arr, spacing, meta = load_nifti(path)
    >>> arr.shape  # (C, I, J, K)
    (1, 64, 64, 40)
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from medrobust.data.records import UnusableImageError

__all__ = ["load_nifti", "load_itk", "load_png"]

logger = logging.getLogger(__name__)


def _channel_first(data: np.ndarray, n_spatial: int) -> np.ndarray:
    """(spatial..., extra...) -> (C, spatial...) with all extra axes folded into C."""
    spatial = data.shape[:n_spatial]
    extra = int(np.prod(data.shape[n_spatial:])) if data.ndim > n_spatial else 1
    return np.moveaxis(data.reshape(*spatial, extra), -1, 0)


def _spacing_from_affine(affine: np.ndarray, n_spatial: int) -> tuple[float, ...]:
    from monai.data.utils import affine_to_spacing

    sp = np.asarray(affine_to_spacing(np.asarray(affine, dtype=np.float64), r=n_spatial), dtype=np.float64)
    return tuple(float(s) if np.isfinite(s) and s > 0 else 1.0 for s in sp)


def _as_float32(data: np.ndarray, path: Path) -> np.ndarray:
    if data.dtype.kind == "c":
        raise UnusableImageError(path, f"complex-valued image data ({data.dtype}) is not supported")
    if data.dtype.kind not in "biuf":
        raise UnusableImageError(path, f"unsupported voxel type {data.dtype}")
    return np.ascontiguousarray(data, dtype=np.float32)


def load_nifti(path: str | Path) -> tuple[np.ndarray, tuple[float, ...], dict]:
    """Load NIfTI-1/2 (``.nii``, ``.nii.gz``, ``.hdr/.img``) with MONAI's NibabelReader.

    Scaling (scl_slope/scl_inter) is applied. 2-D files give ``(C, H, W)``, 3-D ``(C, I, J, K)``;
    a 4th+ axis (time, components) becomes C.

    Raises:
        UnusableImageError: unreadable/truncated file, zero-size or complex data.
    """
    from monai.data import NibabelReader

    path = Path(path)
    reader = NibabelReader()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = reader.read(str(path))
            n_spatial = int(min(max(len(img.shape), 1), 3))
            if any(s == 0 for s in img.shape):
                raise UnusableImageError(path, f"zero-size image, shape {tuple(img.shape)}")
            # 2-D images stored with a trailing singleton z axis are 2-D
            while n_spatial > 2 and img.shape[n_spatial - 1] == 1 and len(img.shape) == n_spatial:
                n_spatial -= 1
            data, meta = reader.get_data(img)
    except UnusableImageError:
        raise
    except Exception as e:  # nibabel raises ImageFileError, EOFError, OSError, ValueError, ...
        raise UnusableImageError(path, f"unreadable NIfTI ({type(e).__name__}: {str(e)[:160]})") from None
    data = np.asarray(data)
    if data.ndim > n_spatial and len(img.shape) == n_spatial:  # a squeezed trailing singleton
        data = data.reshape(data.shape[:n_spatial])
    arr = _channel_first(_as_float32(data, path), n_spatial)
    spacing = _spacing_from_affine(meta["affine"], n_spatial)
    out_meta = {
        "format": "nifti",
        "value_range": [float(arr.min()), float(arr.max())] if arr.size else [0.0, 0.0],
        "affine": np.asarray(meta["affine"], dtype=float).round(6).tolist(),
        "original_dtype": str(img.get_data_dtype()),
    }
    return arr, spacing, out_meta


def load_itk(path: str | Path) -> tuple[np.ndarray, tuple[float, ...], dict]:
    """Load MetaImage (``.mha``/``.mhd``) or NRRD with MONAI's ITKReader.

    2-D images give ``(C, H, W)`` (rows, columns), 3-D ``(C, I, J, K)`` (ITK x, y, z order, as
    MONAI's ITKReader returns it); multi-component pixels become channels.

    Raises:
        UnusableImageError: unreadable file (e.g. an ``.mhd`` whose data file is missing).
    """
    from monai.data import ITKReader

    path = Path(path)
    reader = ITKReader(reverse_indexing=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = reader.read(str(path))
            n_spatial = int(img.GetImageDimension())
            n_comp = int(img.GetNumberOfComponentsPerPixel())
            data, meta = reader.get_data(img)
    except Exception as e:  # ITK raises RuntimeError with long C++ traces; keep the first line
        first = str(e).strip().splitlines()[-1][:160] if str(e).strip() else type(e).__name__
        raise UnusableImageError(path, f"unreadable MetaImage/NRRD ({first})") from None
    data = np.asarray(data)
    if data.size == 0:
        raise UnusableImageError(path, f"zero-size image, shape {data.shape}")
    if n_spatial == 2:  # ITK (x, y) -> display (rows, columns)
        data = np.swapaxes(data, 0, 1)
    arr = _channel_first(_as_float32(data, path), n_spatial)
    if n_comp > 1 and arr.shape[0] != n_comp:
        raise UnusableImageError(path, f"unexpected component layout: {n_comp} components, array {data.shape}")
    sp = [float(s) for s in np.asarray(meta.get("spacing", [1.0] * n_spatial))[:n_spatial]]
    if n_spatial == 2:
        sp = sp[::-1]
    out_meta = {"format": "itk", "original_dtype": str(data.dtype), "n_components": n_comp,
                "value_range": [float(arr.min()), float(arr.max())]}
    return arr, tuple(s if s > 0 else 1.0 for s in sp), out_meta


def load_png(path: str | Path) -> tuple[np.ndarray, tuple[float, ...], dict]:
    """Load an 8/16-bit grey, RGB(A) or palette PNG with MONAI's PILReader.

    Returns ``(C, H, W)``: C = 1 (grey), 3 (RGB; alpha dropped, palette expanded). Values
    stay in the file's range (0-255 or 0-65535).

    Raises:
        UnusableImageError: corrupt/truncated PNG.
    """
    from monai.data import PILReader

    path = Path(path)

    def _normalise_mode(img):  # PIL modes that are not plain grey/RGB
        if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
            return img.convert("RGB")
        if img.mode == "RGBA":
            return img.convert("RGB")
        if img.mode == "LA":
            return img.convert("L")
        if img.mode == "1":
            return img.convert("L")
        return img

    reader = PILReader(converter=_normalise_mode, reverse_indexing=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = reader.read(str(path))
            img.load()
            mode = img.mode
            data, _ = reader.get_data(img)
    except Exception as e:  # PIL raises OSError/SyntaxError/ValueError for broken files
        raise UnusableImageError(path, f"unreadable PNG ({type(e).__name__}: {str(e)[:160]})") from None
    data = np.asarray(data)
    if data.size == 0:
        raise UnusableImageError(path, "zero-size PNG")
    arr = _channel_first(_as_float32(data, path), 2)
    top = float(np.iinfo(data.dtype).max) if data.dtype.kind in "ui" else float(arr.max())
    meta = {"format": "png", "mode": mode, "original_dtype": str(data.dtype), "value_range": [0.0, top]}
    return arr, (1.0, 1.0), meta
