"""NIfTI, MetaImage/NRRD and PNG loading, and the generic failure modes (NaN, empty, missing, corrupt)."""

from __future__ import annotations

import numpy as np
import pytest

from medrobust.data import LoadError, UnusableImageError, iter_loaded, load_image, scan_dataset


def _nifti(path, data, zooms=(1.0, 1.0, 1.0)):
    import nibabel as nib

    affine = np.diag([*zooms[:3], 1.0]) if len(zooms) >= 3 else np.diag([*zooms, 1.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.mark.parametrize(
    "shape, expected",
    [((5, 6), (1, 5, 6)), ((5, 6, 7), (1, 5, 6, 7)), ((5, 6, 7, 2), (2, 5, 6, 7)), ((5, 6, 1), (1, 5, 6))],
)
def test_nifti_shapes_channel_first(tmp_path, shape, expected):
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    img = load_image(_nifti(tmp_path / "v.nii.gz", data, (0.5, 0.6, 2.0)))
    assert img.array.shape == expected and img.array.dtype == np.float32 and img.modality is None
    np.testing.assert_array_equal(np.moveaxis(img.array, 0, -1).reshape(data.shape), data)
    assert img.spacing == pytest.approx((0.5, 0.6, 2.0)[: len(expected) - 1])
    assert img.case_id == "v"


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "inf")])
def test_nan_inf_nifti_is_unusable(tmp_path, bad, word):
    data = np.ones((4, 4, 3), np.float32)
    data[1, 2, 0] = bad
    data[0, 0, 0] = bad
    path = _nifti(tmp_path / "bad.nii", data)
    with pytest.raises(UnusableImageError, match=rf"bad\.nii: .*{word} in 2 voxels"):
        load_image(path)


def test_zero_size_missing_and_corrupt_files(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(UnusableImageError, match=r"empty\.dcm: empty file \(0 bytes\)"):
        load_image(tmp_path / "empty.dcm")
    with pytest.raises(UnusableImageError, match=r"nothere\.nii\.gz: file not found"):
        load_image(tmp_path / "nothere.nii.gz")
    good = _nifti(tmp_path / "cut.nii.gz", np.random.default_rng(0).random((16, 16, 16)).astype(np.float32))
    good.write_bytes(good.read_bytes()[:600])
    with pytest.raises(UnusableImageError, match=r"cut\.nii\.gz: unreadable NIfTI"):
        load_image(good)
    (tmp_path / "fake.png").write_bytes(b"not a png at all")
    with pytest.raises(UnusableImageError, match="no PNG signature"):
        load_image(tmp_path / "fake.png")
    items, errors = scan_dataset(tmp_path)  # the scan reads headers only: the truncated body shows when loading
    assert [i.case_id for i in items] == ["cut"] and sorted(e.path.name for e in errors) == ["empty.dcm", "fake.png"]
    (out,) = list(iter_loaded(items))
    assert isinstance(out, LoadError) and out.path.name == "cut.nii.gz" and "unreadable NIfTI" in out.reason


@pytest.mark.parametrize("dtype, mode_max", [(np.uint16, 65535), (np.uint8, 255)])
def test_png_grey_8_and_16_bit(tmp_path, dtype, mode_max):
    from PIL import Image

    data = (np.linspace(0, 1, 12 * 20).reshape(12, 20) * mode_max).astype(dtype)
    Image.fromarray(data).save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.array.shape == (1, 12, 20)  # (C, H, W): rows first, as displayed
    np.testing.assert_array_equal(img.array[0], data.astype(np.float32))
    assert img.meta["value_range"] == [0.0, float(mode_max)]


def test_png_rgba_drops_alpha(tmp_path):
    from PIL import Image

    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "c.png")
    img = load_image(tmp_path / "c.png")
    assert img.array.shape == (3, 5, 7) and img.array[0].min() == 200 and img.array[1:].max() == 0


@pytest.mark.parametrize("suffix", [".mha", ".nrrd", ".mhd"])
def test_itk_2d_and_3d_through_simpleitk_written_files(tmp_path, suffix):
    import SimpleITK as sitk

    img2 = np.arange(6 * 9, dtype=np.int16).reshape(6, 9)  # numpy (rows, cols)
    im = sitk.GetImageFromArray(img2)
    im.SetSpacing((0.3, 0.4))  # ITK (x = column, y = row)
    sitk.WriteImage(im, str(tmp_path / f"two{suffix}"))
    out = load_image(tmp_path / f"two{suffix}")
    assert out.array.shape == (1, 6, 9)
    np.testing.assert_array_equal(out.array[0], img2)
    assert out.spacing == pytest.approx((0.4, 0.3))  # (row, column) spacing
    vol = np.random.default_rng(1).normal(size=(4, 5, 6)).astype(np.float32)  # numpy (z, y, x)
    im3 = sitk.GetImageFromArray(vol)
    im3.SetSpacing((1.0, 2.0, 3.0))
    sitk.WriteImage(im3, str(tmp_path / f"three{suffix}"))
    out3 = load_image(tmp_path / f"three{suffix}")
    assert out3.array.shape == (1, 6, 5, 4)  # MONAI ITKReader order (x, y, z)
    np.testing.assert_allclose(out3.array[0], vol.transpose(2, 1, 0))
    assert out3.spacing == pytest.approx((1.0, 2.0, 3.0))
    items, errors = scan_dataset(tmp_path)
    assert sorted(i.case_id for i in items) == ["three", "two"] and {i.kind for i in items} == {"itk"} and not errors


def test_mhd_without_data_file_is_reported(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 3), np.uint8)), str(tmp_path / "lost.mhd"))
    (tmp_path / "lost.raw").unlink()
    with pytest.raises(UnusableImageError, match=r"lost\.mhd: unreadable MetaImage"):
        load_image(tmp_path / "lost.mhd")


def test_nifti_hdr_img_pair_is_one_item(tmp_path):
    import nibabel as nib

    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    nib.save(nib.Nifti1Pair(data, np.eye(4)), str(tmp_path / "pair.img"))
    items, errors = scan_dataset(tmp_path)
    assert [(i.case_id, i.kind, i.path.name) for i in items] == [("pair", "nifti", "pair.hdr")] and not errors
    np.testing.assert_array_equal(load_image(items[0]).array[0], data)
    (tmp_path / "pair.img").unlink()
    with pytest.raises(UnusableImageError, match=r"pair\.hdr: NIfTI header \(\.hdr\) without its \.img"):
        load_image(tmp_path / "pair.hdr")
