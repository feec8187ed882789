"""Synthetic DICOM datasets and tiny models for the sensitivity tests (built in tmp dirs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

PATIENT_NAME = "Zyxwvut^Quenobia"
PATIENT_ID = "PID-98765-QXZ"
INSTITUTION = "Qwertyuiop General Hospital"

NET_CONFIG = {
    "_target_": "monai.networks.nets.Classifier",
    "in_shape": [1, 32, 32],
    "classes": 2,
    "channels": [4, 8],
    "strides": [2, 2],
}

SLOW_NET_SOURCE = '''
import time
from monai.networks.nets import Classifier


class SlowNet(Classifier):
    """A Classifier that sleeps in forward, so a subprocess can be killed mid-run."""

    def forward(self, x):
        time.sleep(0.15)
        return super().forward(x)
'''


def write_dicom(path: Path, pixels: np.ndarray, *, modality: str = "MG", monochrome: str = "MONOCHROME2") -> Path:
    """A single-frame 16-bit DICOM with identifying header values that must never leak."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - For Presentation
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19010203"
    ds.InstitutionName = INSTITUTION
    ds.AccessionNumber = "ACC-55501-QXZ"
    ds.Modality = modality
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = monochrome
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.1, 0.1]
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16)).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def synthetic_mammo(shape: tuple[int, int], seed: int, calcs: bool) -> np.ndarray:
    """A smooth 'breast' with optional bright specks, as 12-bit values in uint16."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    breast = np.exp(-(((yy - h / 2) / (0.45 * h)) ** 2 + (xx / (0.8 * w)) ** 2))
    img = 1500 * breast + 80 * rng.standard_normal(shape)
    if calcs:
        for _ in range(6):
            r, c = rng.integers(4, h - 4), rng.integers(2, max(3, w // 2))
            img[r - 1 : r + 2, c - 1 : c + 2] += 1800
    return np.clip(img + 200, 0, 4095).astype(np.uint16)


def make_dataset(root: Path, n: int = 6, *, corrupt: bool = True, shapes=((40, 32), (48, 36))) -> tuple[Path, Path]:
    """``n`` DICOM mammograms of two shapes (+ one corrupt file) and a labels CSV with subgroups."""
    root.mkdir(parents=True, exist_ok=True)
    rows = ["case_id,label,subgroup"]
    for i in range(n):
        label = i % 2
        subgroup = "calcification" if i % 3 == 0 else "soft_tissue"
        write_dicom(root / f"case_{i:02d}.dcm", synthetic_mammo(shapes[i % len(shapes)], i, calcs=subgroup == "calcification"))
        rows.append(f"case_{i:02d},{label},{subgroup}")
    if corrupt:
        (root / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage-not-a-dataset")
    labels = root.parent / f"{root.name}_labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return root, labels


def make_model_files(folder: Path, *, slow: bool = False, seed: int = 0) -> tuple[Path, Path]:
    """A tiny MONAI Classifier as state dict + JSON network config (optionally a slow one)."""
    from monai.networks.nets import Classifier

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # test-side weight init only
    net = Classifier(in_shape=(1, 32, 32), classes=2, channels=(4, 8), strides=(2, 2))
    weights = folder / "model.pt"
    torch.save(net.state_dict(), weights)
    config = dict(NET_CONFIG)
    if slow:
        (folder / "slow_net.py").write_text(SLOW_NET_SOURCE)
        config["_target_"] = "slow_net.SlowNet"
    cfg = folder / "net.json"
    cfg.write_text(json.dumps(config))
    return weights, cfg


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    return make_dataset(tmp_path / "mammo")


@pytest.fixture
def model_files(tmp_path: Path) -> tuple[Path, Path]:
    return make_model_files(tmp_path / "model")


@pytest.fixture(scope="session")
def builders():
    """The builders above, for tests (conftest modules are not importable under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        write_dicom=write_dicom,
        synthetic_mammo=synthetic_mammo,
        make_dataset=make_dataset,
        make_model_files=make_model_files,
        identifiers=(PATIENT_NAME.split("^")[0], PATIENT_NAME.split("^")[1], PATIENT_ID, INSTITUTION, "ACC-55501", "19010203"),
        net_config=NET_CONFIG,
    )
