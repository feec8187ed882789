"""Every file in pydicom's and nibabel's shipped test data either loads or is reported with a reason."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from medrobust.data import LoadedImage, LoadError, UnusableImageError, iter_loaded, load_image, scan_dataset


def _pydicom_files() -> list[Path]:
    from pydicom.data import get_testdata_files  # never get_testdata_file: it may download

    return sorted(Path(f) for f in get_testdata_files() if Path(f).is_file())


def _nibabel_files() -> list[Path]:
    from nibabel.testing import data_path

    return sorted(p for p in Path(data_path).rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def _check_outcome(path: Path) -> str:
    """Load ``path``; assert a well-formed image or a specific error. Returns 'ok' or the reason."""
    try:
        img = load_image(path)
    except UnusableImageError as e:
        assert e.reason and len(e.reason) > 10, f"{path}: reason too vague: {e.reason!r}"
        assert str(path.name) in str(e), f"error does not name the file: {e}"
        return e.reason
    assert isinstance(img, LoadedImage)
    assert img.array.dtype == np.float32
    assert img.array.ndim in (3, 4), img.array.shape
    assert 1 <= img.array.shape[0] <= 64, f"implausible channel count {img.array.shape}"
    assert all(s > 0 for s in img.array.shape)
    assert np.isfinite(img.array).all()
    assert len(img.spacing) == img.array.ndim - 1 and all(s > 0 for s in img.spacing)
    assert img.meta["shape"] == list(img.array.shape)
    lo, hi = img.meta["value_range"]
    assert lo <= float(img.array.min()) + 1e-3 and float(img.array.max()) <= hi + 1e-3 * max(1.0, abs(hi))
    return "ok"


@pytest.mark.parametrize("corpus", ["pydicom", "nibabel"])
def test_every_corpus_file_loads_or_is_reported(corpus):
    files = _pydicom_files() if corpus == "pydicom" else _nibabel_files()
    assert len(files) > 50, f"{corpus} test data not found"
    outcomes = {f: _check_outcome(f) for f in files}
    loaded = [f for f, r in outcomes.items() if r == "ok"]
    reasons = {f.name: r for f, r in outcomes.items() if r != "ok"}
    if corpus == "pydicom":
        assert len(loaded) >= 60, f"only {len(loaded)} pydicom files loaded"
        assert "no pixel data" in reasons["rtstruct.dcm"] and "RTSTRUCT" in reasons["rtstruct.dcm"]
        assert "RTPLAN" in reasons["rtplan.dcm"]
        assert "SR" in reasons["test-SR.dcm"] and "no pixel data" in reasons["test-SR.dcm"]
        assert "truncated" in reasons["MR_truncated.dcm"]
        assert "DICOMDIR" in reasons["DICOMDIR"]
        assert "ECG" in reasons["waveform_ecg.dcm"]
        # JPEG-LS needs an optional decoder plugin; without one the reason says so
        jls = reasons.get("MR_small_jpeg_ls_lossless.dcm")
        assert jls is None or "compression" in jls or "decod" in jls
        shapes = {f.name: load_image(f).array.shape for f in loaded if f.name in ("CT_small.dcm", "rtdose.dcm", "examples_palette.dcm", "SC_rgb_rle_2frame.dcm")}
        assert shapes == {"CT_small.dcm": (1, 128, 128), "rtdose.dcm": (1, 10, 10, 15), "examples_palette.dcm": (3, 350, 800), "SC_rgb_rle_2frame.dcm": (3, 100, 100, 2)}
    else:
        assert {"anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "standard.nii.gz"} <= {f.name for f in loaded}
        assert "NaN" in reasons["resampled_anat_moved.nii"]
        assert "unsupported format" in reasons["minc1_1_scale.mnc"]
        assert load_image(Path(files[0]).parent / "example4d.nii.gz").array.shape == (2, 128, 96, 24)


@pytest.mark.parametrize("corpus", ["pydicom", "nibabel"])
def test_scan_and_iter_loaded_never_raise_on_corpus(corpus):
    if corpus == "pydicom":
        from pydicom.data import get_testdata_files

        root = Path(get_testdata_files()[0]).parent
    else:
        from nibabel.testing import data_path as root
    items, errors = scan_dataset(root)
    assert items and errors
    assert all(isinstance(e, LoadError) and e.reason for e in errors)
    covered = {Path(e.path) for e in errors} | {i.path for i in items if i.kind != "dicom-series"}
    covered |= {f for i in items for f in i.files}
    n_files = sum(len(fs) for d, _, fs in os.walk(root) if "__pycache__" not in d)
    assert len(covered) <= n_files
    assert len({i.case_id for i in items}) == len(items), "case ids must be unique"
    outcomes = list(iter_loaded(items))
    assert len(outcomes) == len(items)
    assert all(isinstance(o, (LoadedImage, LoadError)) for o in outcomes)
    assert sum(isinstance(o, LoadedImage) for o in outcomes) >= (50 if corpus == "pydicom" else 5)
