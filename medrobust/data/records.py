"""Typed records that travel between discovery, loading and the rest of medrobust.

"Failures are data": a file that cannot be used becomes a :class:`LoadError` record (or an
:class:`UnusableImageError` from :func:`~medrobust.data.load_image`) that names the file and
says why, instead of stopping a scan or a sweep.

Example:
    >>> from pathlib import Path
    >>> err = LoadError(Path("/data/x.dcm"), "RTSTRUCT has no pixel data")
    >>> str(UnusableImageError(err.path, err.reason))
    '/data/x.dcm: RTSTRUCT has no pixel data'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["ImageItem", "LoadError", "LoadedImage", "CaseLabel", "UnusableImageError", "IMAGE_KINDS"]

#: the values :attr:`ImageItem.kind` can take
IMAGE_KINDS = ("dicom", "dicom-series", "nifti", "itk", "png")


@dataclass(frozen=True)
class ImageItem:
    """Something loadable found by :func:`~medrobust.data.scan_dataset`.

    Attributes:
        case_id: de-identified id: the file stem (a series: its folder name), or a stable hash;
            never a value from a DICOM header.
        path: absolute path of the file, or of the folder for a DICOM series.
        kind: one of :data:`IMAGE_KINDS`.
        files: for ``"dicom-series"``, the slice files found by the scan (empty: the loader
            collects the series from ``path`` itself); for a NIfTI/MHD header+data pair, the
            data file. Empty for single files.
    """

    case_id: str
    path: Path
    kind: str
    files: tuple[Path, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in IMAGE_KINDS:
            raise ValueError(f"ImageItem.kind must be one of {IMAGE_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class LoadError:
    """A file that could not be used, and why (human readable, names no patient data).

    Attributes:
        path: the file (or series folder) concerned.
        reason: e.g. ``"RTSTRUCT (RT Structure Set Storage) has no pixel data"``,
            ``"NaN in 12 voxels"``.
    """

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class LoadedImage:
    """A loaded, display-ready, de-identified image.

    Attributes:
        case_id: as in :class:`ImageItem`.
        array: float32, channel-first. 2-D images: ``(C, H, W)`` with H = rows, W = columns (the
            way the image is displayed). DICOM multi-frame files and series: ``(C, H, W, D)``
            with D = frames / slices. 3-D NIfTI/ITK volumes: ``(C, I, J, K)`` in the voxel
            order of MONAI's readers, so their affines stay valid. C = 1 for grey images,
            3 for colour. Intensities are display-ready: DICOM Modality LUT (rescale
            slope/intercept), VOI LUT or window applied, MONOCHROME1 inverted (higher = brighter).
        spacing: physical size of a pixel/voxel along each spatial axis of ``array`` (mm where
            the file says so; 1.0 where unknown).
        modality: DICOM Modality (``"MG"``, ``"MR"``, ...) or None for non-DICOM files.
        meta: de-identified technical metadata only (see :mod:`medrobust.data.deid`), plus
            ``format``, ``shape`` and ``value_range``: ``[low, high]`` of the intensities, the
            nominal range where the format defines one (DICOM: from BitsStored, rescale and
            VOI; PNG: bit depth), else the observed min/max. ``(array - low) / (high - low)``
            maps every image to [0, 1] consistently.
    """

    case_id: str
    array: np.ndarray
    spacing: tuple[float, ...]
    modality: str | None
    meta: dict = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape without the channel axis."""
        return tuple(self.array.shape[1:])


@dataclass(frozen=True)
class CaseLabel:
    """A row of a labels CSV: ``label`` (0/1 or a class index; mammograms: 1 = malignant) and
    an optional ``subgroup`` (e.g. ``"calcification"`` / ``"soft_tissue"``)."""

    label: int | None
    subgroup: str | None = None


class UnusableImageError(ValueError):
    """Raised by :func:`~medrobust.data.load_image` for a file that cannot be used.

    Args:
        path: the file or folder.
        reason: human-readable reason (names no patient data).

    Attributes:
        path, reason: as given; ``str()`` names both.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = str(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def to_record(self) -> LoadError:
        """This error as a :class:`LoadError` record."""
        return LoadError(self.path, self.reason)
