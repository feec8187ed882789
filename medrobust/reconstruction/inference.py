"""Reconstruct a k-space file (or a simulated acquisition of a magnitude image) and write the
result as NIfTI and as a DICOM MR series with fresh UIDs and no identifiers from the input.

Input: anything :func:`medrobust.reconstruction.io.read_kspace` reads (fastMRI HDF5, ISMRMRD,
BART, NIfTI/DICOM magnitude). When the file carries no undersampling mask (fully sampled data or
a simulated acquisition), a column mask at ``acceleration`` is applied (seeded), so the demo
shows what the network does with undersampled data; ``acceleration=None`` keeps all data.

Outputs: ``<name>_recon.nii.gz`` (float32, ``(H, W, S)``), ``<name>_zero_filled.nii.gz``, and
``<name>_dicom/slice_NNN.dcm`` (MR Image Storage, 16-bit, one file per slice, new Study/Series/SOP
Instance UIDs from ``pydicom.uid.generate_uid``; patient name/ID are fixed placeholders and no
attribute is copied from the input file). No DICOM writer exists elsewhere in medrobust, and
MONAI's writers produce NIfTI/PNG only, hence the short pydicom code here.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrobust.reconstruction.io import read_kspace
from medrobust.reconstruction.masks import FASTMRI_CENTER_FRACTIONS, undersampling_mask
from medrobust.reconstruction.simulation import zero_filled

__all__ = ["reconstruct_file", "write_dicom_series"]

logger = logging.getLogger(__name__)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_dicom_series(volume: np.ndarray, out_dir: str | Path, *, spacing: tuple[float, float] = (1.0, 1.0),
                       slice_thickness: float = 1.0, description: str = "medrobust reconstruction") -> list[Path]:
    """Write ``volume`` ``(S, H, W)`` (>= 0) as 16-bit DICOM MR images with fresh UIDs.

    Intensities are scaled to ``[0, 4095]`` with ``RescaleSlope`` recording the factor back to
    the input units. Returns the file paths.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim != 3 or not np.isfinite(vol).all():
        raise ValueError(f"write_dicom_series: volume must be a finite (S, H, W) array, got shape {vol.shape}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vmax = float(vol.max()) if vol.max() > 0 else 1.0
    slope = vmax / 4095.0
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    now = datetime.datetime.now()
    paths = []
    for s in range(vol.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = out / f"slice_{s:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientName, ds.PatientID = "MR", "Anonymous", "ANON"
        ds.StudyDate = ds.SeriesDate = now.strftime("%Y%m%d")
        ds.SeriesDescription, ds.ImageType = description, ["DERIVED", "SECONDARY"]
        ds.SeriesNumber, ds.InstanceNumber = 1, s + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(s * slice_thickness)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [float(spacing[0]), float(spacing[1])], float(slice_thickness)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = int(vol.shape[1]), int(vol.shape[2])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = 0.0, slope
        ds.PixelData = np.clip(np.round(vol[s] / slope), 0, 4095).astype(np.uint16).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def reconstruct_file(
    net: torch.nn.Module,
    path: str | Path,
    out_dir: str | Path,
    *,
    acceleration: float | None = 4,
    seed: int = 0,
    batch_size: int = 8,
    device: Any = "cpu",
) -> dict[str, Any]:
    """Reconstruct ``path`` slice by slice with ``net`` (zero-filled magnitude in, magnitude out).

    Returns ``{"nifti", "zero_filled", "dicom" (list), "slices", "mask" ("file" | "simulated x4" | "none")}``.

    Raises:
        ValueError: unreadable/bad k-space file (from :func:`~medrobust.reconstruction.io.read_kspace`,
            naming the file).
    """
    import nibabel as nib

    vol = read_kspace(path)
    k = vol.kspace
    s, c, h, w, _ = k.shape
    if vol.mask is not None:
        mask, how = vol.mask, "file"
    elif acceleration:
        mask = undersampling_mask(w, acceleration=acceleration, center_fraction=FASTMRI_CENTER_FRACTIONS.get(int(acceleration)),
                                  kind="random", generator=torch.Generator().manual_seed(int(seed)))
        how = f"simulated x{acceleration:g}"
    else:
        mask, how = None, "none"
    zf = zero_filled(k, mask)  # (S, 1, H, W)
    net = net.to(device).eval()
    with torch.no_grad():
        rec = torch.cat([net(zf[i:i + batch_size].to(device)).cpu() for i in range(0, s, batch_size)])
    rec = rec.clamp_min(0)[:, 0].numpy()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(str(path)).name.split(".")[0]
    spacing = vol.metadata.get("spacing") or [1.0, 1.0, 1.0]
    affine = np.diag([float(spacing[0]), float(spacing[1]), float(spacing[2] if len(spacing) > 2 else 1.0), 1.0])
    nii = out / f"{name}_recon.nii.gz"
    nib.save(nib.Nifti1Image(np.moveaxis(rec, 0, -1).astype(np.float32), affine), str(nii))
    zfp = out / f"{name}_zero_filled.nii.gz"
    nib.save(nib.Nifti1Image(np.moveaxis(zf[:, 0].numpy(), 0, -1).astype(np.float32), affine), str(zfp))
    dcm = write_dicom_series(rec, out / f"{name}_dicom", spacing=(float(spacing[0]), float(spacing[1])))
    logger.info("reconstructed %d slices (%s mask) -> %s", s, how, nii)
    return {"nifti": nii, "zero_filled": zfp, "dicom": dcm, "slices": s, "mask": how}
