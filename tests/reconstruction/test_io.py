from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from medrobust.reconstruction.io import (
    KspaceVolume,
    read_bart_kspace,
    read_cfl,
    read_fastmri,
    read_ismrmrd,
    read_kspace,
    write_bart_kspace,
    write_cfl,
    write_fastmri,
    write_ismrmrd,
)
from medrobust.reconstruction.simulation import zero_filled


def _kspace(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _complex(v: KspaceVolume) -> np.ndarray:
    return v.kspace[..., 0].numpy() + 1j * v.kspace[..., 1].numpy()


@pytest.mark.parametrize("coils", [1, 4])
def test_fastmri_written_by_hand_read_back(tmp_path, coils):
    """A file laid out like fastMRI's (written here with plain h5py, identifiers included)."""
    ks = _kspace((3, coils, 16, 12))
    ref = np.abs(ks).sum(1)[:, 2:14, 2:10].astype(np.float32)  # fastMRI crops the reference
    p = tmp_path / "file1000001.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("kspace", data=ks[:, 0] if coils == 1 else ks)
        f.create_dataset("reconstruction_esc" if coils == 1 else "reconstruction_rss", data=ref)
        f.create_dataset("mask", data=np.r_[np.zeros(4), np.ones(6), np.zeros(2)].astype(np.float32))
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["max"] = 1.5
        f.attrs["patient_id"] = "PATIENT-SECRET-123"
        f.create_dataset("ismrmrd_header", data=np.bytes_(
            b'<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
            b"<subjectInformation><patientName>DOE^JANE</patientName></subjectInformation>"
            b"<experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz></experimentalConditions>"
            b"<encoding><encodedSpace><matrixSize><x>16</x><y>12</y><z>1</z></matrixSize><fieldOfView_mm><x>280</x><y>140</y><z>4.5</z></fieldOfView_mm></encodedSpace>"
            b"<reconSpace><matrixSize><x>12</x><y>8</y><z>1</z></matrixSize><fieldOfView_mm><x>140</x><y>140</y><z>3</z></fieldOfView_mm></reconSpace>"
            b"<encodingLimits/><trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"))
    for v in (read_fastmri(p), read_kspace(p)):
        assert v.kspace.shape == (3, coils, 16, 12, 2) and v.kspace.dtype == torch.float32
        np.testing.assert_allclose(_complex(v), ks, atol=0)
        np.testing.assert_allclose(v.reference.numpy(), ref)
        assert v.mask.shape == (1, 1, 1, 12, 1) and int(v.mask.sum()) == 6
        assert v.metadata["format"] == "fastmri" and v.metadata["num_coils"] == coils
        assert v.metadata["acquisition"] == "CORPD_FBK" and v.metadata["recon_matrix"] == [12, 8, 1]
        assert "SECRET" not in repr(v.metadata) and "DOE" not in repr(v.metadata)


@pytest.mark.parametrize("coils", [1, 3])
def test_fastmri_writer_round_trip(tmp_path, coils):
    ks = _kspace((2, coils, 10, 8), seed=1)
    ref = np.abs(ks).max(1)
    p = write_fastmri(tmp_path / "w.h5", ks, reference=ref)
    with h5py.File(p) as f:
        assert f["kspace"].shape == ((2, 10, 8) if coils == 1 else (2, coils, 10, 8))
        assert ("reconstruction_esc" if coils == 1 else "reconstruction_rss") in f
    v = read_kspace(p)
    np.testing.assert_array_equal(_complex(v), ks)
    np.testing.assert_allclose(v.reference.numpy(), ref)
    assert v.mask is None and v.metadata["encoded_matrix"] == [10, 8, 1]


def test_ismrmrd_round_trip_with_mask_and_package_layout(tmp_path):
    import ismrmrd

    ks = _kspace((2, 4, 12, 10), seed=2)
    cols = np.zeros(10, bool)
    cols[[0, 3, 4, 5, 8]] = True
    p = write_ismrmrd(tmp_path / "raw.h5", ks, mask=cols)
    # the file is plain ISMRMRD: the package's own reader sees the acquisitions we wrote
    ds = ismrmrd.Dataset(str(p), "dataset", mode="r")
    assert ds.number_of_acquisitions() == 2 * 5
    acq = ds.read_acquisition(6)
    assert (acq.idx.slice, acq.idx.kspace_encode_step_1) == (1, 3)
    np.testing.assert_array_equal(acq.data, ks[1, :, :, 3])
    ds.close()
    for v in (read_ismrmrd(p), read_kspace(p)):
        got = _complex(v)
        np.testing.assert_array_equal(got[..., cols], ks[..., cols])
        assert np.all(got[..., ~cols] == 0)
        np.testing.assert_array_equal(v.mask.reshape(-1).numpy().astype(bool), cols)
        assert v.metadata["format"] == "ismrmrd" and v.metadata["encoded_matrix"] == [12, 10, 1]


def test_ismrmrd_noise_skipped_and_averages_averaged(tmp_path):
    import ismrmrd

    ks = np.ones((1, 2, 8, 4), np.complex64)
    p = write_ismrmrd(tmp_path / "raw.h5", ks)
    with ismrmrd.File(str(p), "a") as f:
        acqs = f["dataset"].acquisitions[:]
        extra = ismrmrd.Acquisition.from_array(np.full((2, 8), 3.0, np.complex64))
        extra.idx.kspace_encode_step_1 = 1
        noise = ismrmrd.Acquisition.from_array(np.full((2, 8), 99.0, np.complex64))
        noise.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        f["dataset"].acquisitions = acqs + [extra, noise]
    got = _complex(read_ismrmrd(p))
    assert np.allclose(got[0, :, :, 1], 2.0) and np.allclose(got[0, :, :, [0, 2, 3]], 1.0)


def test_cfl_round_trip_column_major(tmp_path):
    a = _kspace((5, 4, 3), seed=3)
    base = write_cfl(tmp_path / "arr", a)
    assert (tmp_path / "arr.hdr").read_text().startswith("# Dimensions\n5 4 3")
    np.testing.assert_array_equal(read_cfl(base), a)
    np.testing.assert_array_equal(read_cfl(tmp_path / "arr.cfl"), a)
    # column-major on disk: the first axis varies fastest
    raw = np.fromfile(tmp_path / "arr.cfl", dtype=np.complex64)
    np.testing.assert_array_equal(raw[:5], a[:, 0, 0])
    # trailing size-1 axes are dropped, as BART's readcfl does
    write_cfl(tmp_path / "b", a[..., None, None])
    assert read_cfl(tmp_path / "b").shape == (5, 4, 3)


def test_bart_kspace_round_trip(tmp_path):
    ks = _kspace((3, 2, 8, 6), seed=4)
    write_bart_kspace(tmp_path / "k", ks)
    dims = (tmp_path / "k.hdr").read_text().split("\n")[1].split()
    assert dims[0] == "8" and dims[1] == "6" and dims[3] == "2" and dims[13] == "3"
    for v in (read_bart_kspace(tmp_path / "k"), read_kspace(tmp_path / "k.cfl"), read_kspace(tmp_path / "k")):
        np.testing.assert_array_equal(_complex(v), ks)
        assert v.metadata["format"] == "bart"


def test_nifti_magnitude_simulated(tmp_path):
    import nibabel as nib

    vol = np.zeros((24, 20, 3), np.float32)
    vol[6:18, 5:15] = np.linspace(100, 900, 3)
    nib.save(nib.Nifti1Image(vol, np.diag([0.6, 0.6, 3.0, 1.0])), tmp_path / "t2.nii.gz")
    a = read_kspace(tmp_path / "t2.nii.gz", num_coils=4, seed=1)
    b = read_kspace(tmp_path / "t2.nii.gz", num_coils=4, seed=1)
    assert a.kspace.shape == (3, 4, 24, 20, 2) and torch.equal(a.kspace, b.kspace)
    assert a.metadata["simulated"] is True and a.metadata["spacing"][:2] == pytest.approx([0.6, 0.6])
    assert a.reference.shape == (3, 24, 20) and float(a.reference.max()) == 1.0
    assert torch.allclose(zero_filled(a.kspace)[:, 0], a.reference, atol=1e-5)


# ------------------------------------------------------------------ bad files
def _h5(path: Path, **datasets) -> Path:
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
    return path


def test_bad_fastmri_files(tmp_path):
    cases = {
        "no kspace": (_h5(tmp_path / "a.h5", foo=np.zeros(3)), "neither a fastMRI 'kspace'"),
        "2-D kspace": (_h5(tmp_path / "b.h5", kspace=_kspace((4, 4))), "must be \\(slices, H, W\\)"),
        "5-D kspace": (_h5(tmp_path / "c.h5", kspace=_kspace((1, 1, 1, 4, 4))), "must be \\(slices, H, W\\)"),
        "real kspace": (_h5(tmp_path / "d.h5", kspace=np.zeros((2, 4, 4), np.float32)), "must be complex"),
        "ref mismatch": (_h5(tmp_path / "e.h5", kspace=_kspace((2, 4, 4)), reconstruction_esc=np.zeros((3, 4, 4))), "slices=2"),
    }
    nan = _kspace((2, 4, 4))
    nan[1, 2, 2] = np.nan
    cases["nan"] = (_h5(tmp_path / "f.h5", kspace=nan), "1 NaN/inf")
    (tmp_path / "g.h5").write_text("not really hdf5")
    cases["not hdf5"] = (tmp_path / "g.h5", "not an HDF5 file")
    cases["missing"] = (tmp_path / "nope.h5", "file not found")
    for name, (path, match) in cases.items():
        with pytest.raises(ValueError, match=match) as e:
            read_kspace(path)
        assert path.name in str(e.value), name
    with pytest.raises(ValueError, match="no 'kspace' dataset"):
        read_fastmri(tmp_path / "a.h5")


def test_bad_bart_files(tmp_path):
    write_cfl(tmp_path / "t", _kspace((4, 4, 1, 2)))
    data = (tmp_path / "t.cfl").read_bytes()
    (tmp_path / "t.cfl").write_bytes(data[:-8])
    with pytest.raises(ValueError, match="t.cfl: truncated"):
        read_kspace(tmp_path / "t.cfl")
    (tmp_path / "h.hdr").write_text("hello\n")
    (tmp_path / "h.cfl").write_bytes(b"")
    with pytest.raises(ValueError, match="h.hdr: not a BART header"):
        read_cfl(tmp_path / "h")
    (tmp_path / "h.hdr").write_text("# Dimensions\n4 0 1\n")
    with pytest.raises(ValueError, match="bad BART dimensions"):
        read_cfl(tmp_path / "h")
    write_cfl(tmp_path / "m", _kspace((4, 4)))
    (tmp_path / "m.cfl").unlink()
    with pytest.raises(ValueError, match="m.cfl: file not found"):
        read_kspace(tmp_path / "m.hdr")
    write_cfl(tmp_path / "z", _kspace((4, 4, 3)))  # a PHS2 (3-D) axis
    with pytest.raises(ValueError, match="z.cfl: unsupported BART axes \\[2\\]"):
        read_bart_kspace(tmp_path / "z")
    bad = _kspace((4, 4, 1, 2))
    bad[0, 0, 0, 1] = np.inf
    write_cfl(tmp_path / "n", bad)
    with pytest.raises(ValueError, match="n.cfl: k-space has 1 NaN/inf"):
        read_kspace(tmp_path / "n.cfl")


def test_bad_ismrmrd_files(tmp_path):
    import ismrmrd

    p = write_ismrmrd(tmp_path / "r.h5", _kspace((1, 2, 8, 4)))
    with pytest.raises(ValueError, match="r.h5: no ISMRMRD group 'other'"):
        read_ismrmrd(p, dataset="other")
    with ismrmrd.File(str(p), "a") as f:
        acqs = f["dataset"].acquisitions[:]
        acqs[1].idx.kspace_encode_step_2 = 2
        f["dataset"].acquisitions = acqs
    with pytest.raises(ValueError, match="3-D encoding"):
        read_kspace(p)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_group("dataset").create_dataset("xml", data=np.zeros(1))
    with pytest.raises(ValueError, match="x.h5: ISMRMRD group 'dataset' lacks"):
        read_kspace(tmp_path / "x.h5")


def test_bad_magnitude_file(tmp_path):
    import nibabel as nib

    vol = np.ones((8, 8, 2), np.float32)
    vol[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(ValueError, match="nan.nii.gz"):
        read_kspace(tmp_path / "nan.nii.gz")
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="junk.bin"):
        read_kspace(tmp_path / "junk.bin")


@pytest.mark.parametrize("bad, match", [(np.zeros((2, 3, 4)), "must be complex \\(S, C, H, W\\)"), (_kspace((3, 4)), "shape")])
def test_writers_reject_bad_arrays(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        write_fastmri(tmp_path / "a.h5", bad)
