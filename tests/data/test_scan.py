"""scan_dataset rules: content detection, skipping, exclusions, unique ids, robustness."""

from __future__ import annotations

import numpy as np
import pytest

from medrobust.data import scan_dataset


def _nifti(path, shape=(4, 4, 4)):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))


def test_non_images_skipped_masks_and_hidden_excluded(tmp_path, make_dicom):
    make_dicom(tmp_path / "a.dcm", np.zeros((4, 4)))
    _nifti(tmp_path / "masks" / "a_roi.nii.gz")
    _nifti(tmp_path / ".cache" / "x.nii")
    (tmp_path / "labels.csv").write_text("case_id,label\na,1\n")
    (tmp_path / "manifest.json").write_text("{}")
    items, errors = scan_dataset(tmp_path)
    assert [i.case_id for i in items] == ["a"] and errors == []
    items, _ = scan_dataset(tmp_path, exclude=())
    assert sorted(i.case_id for i in items) == ["a", "a_roi", "x"]
    items, _ = scan_dataset(tmp_path, recursive=False, exclude=())
    assert [i.case_id for i in items] == ["a"]


def test_duplicate_stems_get_path_based_ids(tmp_path, make_dicom):
    make_dicom(tmp_path / "site1" / "img.dcm", np.zeros((4, 4)))
    make_dicom(tmp_path / "site2" / "img.dcm", np.zeros((4, 4)))
    _nifti(tmp_path / "vol.nii")
    _nifti(tmp_path / "vol.nii.gz")
    items, errors = scan_dataset(tmp_path)
    ids = sorted(i.case_id for i in items)
    assert ids[:2] == ["site1__img", "site2__img"] and not errors
    assert len(ids) == len(set(ids)) == 4 and all(i.startswith("vol_") for i in ids[2:])
    assert scan_dataset(tmp_path)[0] == items  # deterministic


def test_scan_continues_past_bad_files(tmp_path, make_dicom):
    make_dicom(tmp_path / "ok.dcm", np.zeros((4, 4)))
    (tmp_path / "zero.nii").write_bytes(b"")
    (tmp_path / "garbage.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 50)
    (tmp_path / "brain.mnc").write_bytes(b"CDF\x01" + b"\x00" * 60)
    (tmp_path / "unreadable.nii").write_bytes(b"x" * 400)
    items, errors = scan_dataset(tmp_path)
    assert [i.case_id for i in items] == ["ok"]
    reasons = {e.path.name: e.reason for e in errors}
    assert set(reasons) == {"zero.nii", "garbage.dcm", "brain.mnc", "unreadable.nii"}
    assert reasons["zero.nii"] == "empty file (0 bytes)"
    assert "MINC" in reasons["brain.mnc"] and "no NIfTI magic" in reasons["unreadable.nii"]


def test_missing_root_raises_and_single_file_root(tmp_path, make_dicom):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_dataset(tmp_path / "nope")
    f = make_dicom(tmp_path / "one", np.zeros((4, 4)))
    items, errors = scan_dataset(f)
    assert [(i.case_id, i.kind, i.path) for i in items] == [("one", "dicom", f)] and not errors
