"""Fixtures for medrobust.data tests: a small DICOM writer and distinctive fake identifiers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

#: fake identifiers that must never show up in case ids, meta, reasons or logs
IDENTIFIERS = {
    "PatientName": "Zyxwvut^Quixotica",
    "PatientID": "PID-98765XQ",
    "AccessionNumber": "ACC-55Z7731",
    "InstitutionName": "Secretvale Infirmary",
    "PatientBirthDate": "19451231",
}


@pytest.fixture(scope="session")
def identifiers() -> dict[str, str]:
    return dict(IDENTIFIERS)


def _write_dicom(
    path: Path,
    pixels: np.ndarray | None,
    *,
    modality: str = "MG",
    sop_class: str | None = None,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    signed: bool = False,
    preamble: bool = True,
    transfer_syntax: str | None = None,
    **attrs,
) -> Path:
    """Write a minimal but valid DICOM file; ``pixels`` (H, W) or (F, H, W) ints, or None (no pixel data)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_classes = {
        "MG": "1.2.840.10008.5.1.4.1.1.1.2",
        "CT": "1.2.840.10008.5.1.4.1.1.2",
        "MR": "1.2.840.10008.5.1.4.1.1.4",
        "RTSTRUCT": "1.2.840.10008.5.1.4.1.1.481.3",
        "RTPLAN": "1.2.840.10008.5.1.4.1.1.481.5",
        "SR": "1.2.840.10008.5.1.4.1.1.88.33",
    }
    sop = sop_class or sop_classes.get(modality, "1.2.840.10008.5.1.4.1.1.7")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = attrs.pop("SeriesInstanceUID", None) or generate_uid()
    ds.Modality = modality
    for k, v in IDENTIFIERS.items():
        setattr(ds, k, v)
    if pixels is not None:
        pixels = np.asarray(pixels)
        bits = bits_stored or 16
        ds.Rows, ds.Columns = pixels.shape[-2:]
        if pixels.ndim == 3:
            ds.NumberOfFrames = pixels.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
        ds.PixelRepresentation = 1 if signed else 0
        ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    for k, v in attrs.items():
        setattr(ds, k, v)
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:  # no 128-byte preamble / DICM magic, no file meta (old ACR-NEMA style)
        ds.file_meta = FileMetaDataset()
        from pydicom.filewriter import dcmwrite

        dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    return path


@pytest.fixture
def make_dicom() -> Callable[..., Path]:
    """``make_dicom(path, pixels, modality=..., photometric=..., bits_stored=..., **attributes)``."""
    return _write_dicom
