"""De-identification: case ids that come from file names or hashes, and whitelisted metadata.

Nothing from a DICOM header reaches a case id, a log line or ``LoadedImage.meta`` unless its
keyword is in :data:`SAFE_DICOM_KEYWORDS` (technical acquisition/pixel fields only). Patient,
study, institution, operator, date/time and UID fields are never copied.

Example:
    >>> stable_hash("1.2.840.113619.2.55.3")[:4] == stable_hash("1.2.840.113619.2.55.3")[:4]
    True
    >>> case_id_from_path("/data/case_0001.nii.gz")
    'case_0001'
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

__all__ = [
    "SAFE_DICOM_KEYWORDS",
    "IDENTIFYING_KEYWORDS",
    "stable_hash",
    "case_id_from_path",
    "safe_dicom_meta",
    "describe_sop_class",
]

#: technical DICOM fields that may be copied into ``meta`` (no identifiers, dates or UIDs).
SAFE_DICOM_KEYWORDS: tuple[str, ...] = (
    "Modality",
    "SOPClassUID",  # stored as its registered name, e.g. "Digital Mammography X-Ray Image Storage ..."
    "ImageType",
    "PresentationIntentType",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "NominalScannedPixelSpacing",
    "EstimatedRadiographicMagnificationFactor",
    "SliceThickness",
    "SpacingBetweenSlices",
    "ImageOrientationPatient",
    "ViewPosition",
    "ImageLaterality",
    "Laterality",
    "BodyPartExamined",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "PresentationLUTShape",
    "LossyImageCompression",
    "Manufacturer",
    "ManufacturerModelName",
)

#: fields that identify a person or place; listed so tests and reviewers can check they never leak.
IDENTIFYING_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "OperatorsName",
    "StudyID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)


def stable_hash(text: str, length: int = 12) -> str:
    """A short, stable (process- and machine-independent) hex digest of ``text``.

    Args:
        text: e.g. a SeriesInstanceUID or a relative path.
        length: number of hex characters kept (1-64).
    """
    if not 1 <= length <= 64:
        raise ValueError(f"length must be in [1, 64], got {length}")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def case_id_from_path(path: str | Path) -> str:
    """The file stem without image suffixes (``a/b/case_01.nii.gz`` -> ``case_01``).

    Folders (DICOM series) keep their name.
    """
    name = Path(path).name
    low = name.lower()
    for suffix in (".nii.gz", ".nii", ".dcm", ".dicom", ".ima", ".mha", ".mhd", ".nrrd", ".nhdr", ".png", ".hdr"):
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def describe_sop_class(ds: Any) -> str:
    """A readable name of what a DICOM object is, e.g. ``"RTSTRUCT (RT Structure Set Storage)"``.

    Uses only Modality and the SOP Class UID's registered name (never identifiers).
    """
    modality = str(ds.get("Modality", "") or "").strip()
    sop = ds.get("SOPClassUID", None)
    sop_name = getattr(sop, "name", None) if sop is not None else None
    if sop_name and sop_name != str(sop):
        return f"{modality} ({sop_name})" if modality else str(sop_name)
    return modality or "DICOM object without Modality/SOP class"


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a pydicom element value (MultiValue -> list, DSfloat -> float)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return None  # binary blobs are never useful meta
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def safe_dicom_meta(ds: Any) -> dict[str, Any]:
    """The whitelisted technical fields of a pydicom Dataset as plain Python values.

    Args:
        ds: a ``pydicom.Dataset`` (pixel data need not be loaded).

    Returns:
        ``{keyword: value}`` for the keywords in :data:`SAFE_DICOM_KEYWORDS` that are present;
        SOPClassUID is given by its registered name, and the transfer syntax as ``TransferSyntax``.
    """
    out: dict[str, Any] = {}
    for kw in SAFE_DICOM_KEYWORDS:
        if kw not in ds:
            continue
        try:
            value = ds[kw].value
        except Exception:  # an unparseable value is simply left out
            continue
        if kw == "SOPClassUID":
            value = getattr(value, "name", str(value))
        plain = _plain(value)
        if plain is not None and plain != "":
            out[kw] = plain
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID", None) if meta is not None else None
    if ts is not None:
        out["TransferSyntax"] = getattr(ts, "name", str(ts))
    return out
