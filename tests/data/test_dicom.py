"""DICOM pixel pipeline: MONOCHROME1, rescale, VOI LUT/window, bit depths, broken and non-image files, series."""

from __future__ import annotations

import numpy as np
import pytest

from medrobust.data import ImageItem, UnusableImageError, load_image, scan_dataset


def _ramp(bits: int, shape=(8, 16)) -> np.ndarray:
    return np.linspace(0, 2**bits - 1, num=shape[0] * shape[1]).round().reshape(shape).astype(np.int64)


@pytest.mark.parametrize("bits", [12, 14, 16])
def test_monochrome1_is_inverted_so_higher_is_brighter(tmp_path, make_dicom, bits):
    stored = _ramp(bits)
    m2 = load_image(make_dicom(tmp_path / "m2.dcm", stored, photometric="MONOCHROME2", bits_stored=bits))
    m1 = load_image(make_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1", bits_stored=bits))
    top = 2**bits - 1
    np.testing.assert_array_equal(m2.array[0], stored.astype(np.float32))  # 16-bit values are exact in float32
    np.testing.assert_array_equal(m1.array[0], (top - stored).astype(np.float32))
    # the ordering of intensities flips: the largest stored value is the darkest pixel in MONOCHROME1
    assert m1.array[0].argmax() == stored.argmin() and m2.array[0].argmax() == stored.argmax()
    assert m1.meta["steps"] == ["invert_monochrome1"] and m1.meta["value_range"] == [0.0, float(top)]
    assert m1.array.shape == (1, 8, 16) and m1.modality == "MG"


def test_monochrome1_with_window_and_rescale(tmp_path, make_dicom):
    stored = _ramp(12)
    kw = dict(bits_stored=12, RescaleSlope="2", RescaleIntercept="-100", WindowCenter="4000", WindowWidth="6000")
    m2 = load_image(make_dicom(tmp_path / "m2.dcm", stored, photometric="MONOCHROME2", **kw)).array[0]
    m1 = load_image(make_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1", **kw)).array[0]
    lo, hi = -100.0, 4095 * 2 - 100.0
    np.testing.assert_allclose(m1, lo + hi - m2, rtol=1e-6, atol=1e-2)
    # inside the window the mapping is linear in the rescaled value and increasing for MONOCHROME2
    modality = stored * 2.0 - 100
    inside = (modality > 1100) & (modality < 6900)
    assert np.all(np.diff(m2[inside]) > 0)
    assert m2[modality < 900].max() == lo and m2[modality > 7100].min() == hi


def test_rescale_slope_intercept_signed_16bit(tmp_path, make_dicom):
    stored = np.array([[-2000, -1, 0], [1, 1000, 32767]])
    img = load_image(make_dicom(tmp_path / "ct.dcm", stored, modality="CT", signed=True, bits_stored=16,
                                RescaleSlope="0.5", RescaleIntercept="-1024"))
    np.testing.assert_allclose(img.array[0], stored * 0.5 - 1024)
    assert img.meta["steps"] == ["modality_lut"] and img.modality == "CT"
    assert img.meta["value_range"] == [-32768 * 0.5 - 1024, 32767 * 0.5 - 1024]


def test_voi_lut_sequence_is_applied_and_preferred_over_window(tmp_path, make_dicom):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.add_new(0x00283002, "US", [256, 0, 16])  # LUTDescriptor: 256 entries, first value 0, 16 bit
    item.add_new(0x00283006, "US", [i * i for i in range(256)])  # LUTData
    stored = np.arange(64).reshape(8, 8) * 4
    img = load_image(make_dicom(tmp_path / "voi.dcm", stored, bits_stored=8, VOILUTSequence=[item],
                                WindowCenter="10", WindowWidth="5"))
    np.testing.assert_array_equal(img.array[0], (stored**2).astype(np.float32))
    assert "voi_lut" in img.meta["steps"] and img.meta["value_range"] == [0.0, 65535.0]
    raw = load_image(tmp_path / "voi.dcm", voi=False)
    np.testing.assert_array_equal(raw.array[0], stored.astype(np.float32))


def test_multiframe_gives_frames_last(tmp_path, make_dicom):
    frames = np.stack([np.full((4, 5), k) for k in range(3)])
    img = load_image(make_dicom(tmp_path / "mf.dcm", frames, modality="CT", SpacingBetweenSlices="3"))
    assert img.array.shape == (1, 4, 5, 3)
    np.testing.assert_array_equal(img.array[0, 0, 0], [0, 1, 2])
    assert img.spacing[2] == 3.0


def test_extensionless_and_preambleless_files_are_found_by_content(tmp_path, make_dicom):
    make_dicom(tmp_path / "IM0001", _ramp(12))
    make_dicom(tmp_path / "OLD0001", _ramp(12), modality="CT", preamble=False)
    (tmp_path / "notes").write_text("not an image")
    items, errors = scan_dataset(tmp_path)
    assert {(i.case_id, i.kind) for i in items} == {("IM0001", "dicom"), ("OLD0001", "dicom")}
    assert [e.path.name for e in errors] == ["notes"] and "unsupported format" in errors[0].reason
    assert load_image(tmp_path / "OLD0001").array.shape == (1, 8, 16)


def test_truncated_dicom(tmp_path, make_dicom):
    path = make_dicom(tmp_path / "t.dcm", _ramp(12, (64, 64)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(UnusableImageError, match=r"t\.dcm: truncated"):
        load_image(path)
    head = tmp_path / "head.dcm"
    head.write_bytes(data[:140])  # preamble + magic + a few bytes of file meta
    with pytest.raises(UnusableImageError, match=r"head\.dcm: .*(not a readable DICOM|no pixel data)"):
        load_image(head)


@pytest.mark.parametrize("modality, name", [("RTSTRUCT", "RT Structure Set"), ("RTPLAN", "RT Plan"), ("SR", "SR")])
def test_non_image_dicom_is_reported_with_its_kind(tmp_path, make_dicom, modality, name):
    path = make_dicom(tmp_path / "obj.dcm", None, modality=modality)
    with pytest.raises(UnusableImageError, match=f"{modality} .*{name}.* has no pixel data"):
        load_image(path)
    items, errors = scan_dataset(tmp_path)
    assert items == [] and len(errors) == 1 and "no pixel data" in errors[0].reason


def test_zero_rows_and_unsupported_compression(tmp_path, make_dicom):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    zero = make_dicom(tmp_path / "zero.dcm", np.zeros((2, 2)), Rows=0)
    with pytest.raises(UnusableImageError, match="zero-size"):
        load_image(zero)
    jls = make_dicom(tmp_path / "jls.dcm", np.zeros((4, 4)))
    import pydicom

    ds = pydicom.dcmread(jls)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8not-a-real-jpeg-ls-stream\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(jls)
    with pytest.raises(UnusableImageError, match=r"jls\.dcm: .*(unsupported compression|could not be decoded).*JPEG-LS"):
        load_image(jls)


def test_dicom_series_folder_is_one_volume_sorted_by_position(tmp_path, make_dicom):
    from pydicom.uid import generate_uid

    uid = generate_uid()
    folder = tmp_path / "chest_ct"
    zs = [5.0, 0.0, 2.5, 7.5]  # written out of order; InstanceNumber deliberately reversed
    for k, z in enumerate(zs):
        make_dicom(folder / f"slice{k}", np.full((6, 7), int(z * 10)), modality="CT", SeriesInstanceUID=uid,
                   ImagePositionPatient=[0, 0, z], ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                   PixelSpacing=[0.7, 0.8], InstanceNumber=10 - k)
    # a second series in the same folder gets a hashed id, not the UID
    uid2 = generate_uid()
    for z in (0.0, 3.0):
        make_dicom(folder / f"other{z}", np.zeros((6, 7)), modality="MR", SeriesInstanceUID=uid2,
                   ImagePositionPatient=[0, 0, z], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    items, errors = scan_dataset(tmp_path)
    assert errors == [] and [i.kind for i in items] == ["dicom-series", "dicom-series"]
    assert all(i.case_id.startswith("chest_ct_") and uid not in i.case_id and uid2 not in i.case_id for i in items)
    ct = next(i for i in items if len(i.files) == 4)
    img = load_image(ct)
    assert img.array.shape == (1, 6, 7, 4) and img.modality == "CT"
    np.testing.assert_array_equal(img.array[0, 0, 0], [0, 25, 50, 75])
    np.testing.assert_allclose(img.spacing, (0.7, 0.8, 2.5))
    # a folder holding exactly one series loads directly from its path
    single = tmp_path / "single"
    for z in (1.0, 2.0, 3.0):
        make_dicom(single / f"s{z}.dcm", np.full((3, 3), int(z)), modality="MR", SeriesInstanceUID=uid,
                   ImagePositionPatient=[0, 0, z], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    vol = load_image(single)
    assert vol.case_id == "single" and vol.array.shape == (1, 3, 3, 3)
    assert load_image(ImageItem("single", single, "dicom-series")).array.shape == (1, 3, 3, 3)


def test_mammograms_sharing_a_series_stay_separate_images(tmp_path, make_dicom):
    from pydicom.uid import generate_uid

    uid = generate_uid()
    for view in ("LCC", "LMLO", "RCC", "RMLO"):
        make_dicom(tmp_path / "study" / view, _ramp(12), SeriesInstanceUID=uid,
                   ImagePositionPatient=[0, 0, 0], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    items, errors = scan_dataset(tmp_path)
    assert sorted(i.case_id for i in items) == ["LCC", "LMLO", "RCC", "RMLO"] and errors == []
    assert {i.kind for i in items} == {"dicom"}
