"""Export in the user's own space: the exported transform, applied to the ORIGINAL moving file with SimpleITK,
reproduces the bundle's warped output and the network's own warp on its grid (the centring shift, resampling,
direction and flips composed in)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.blocks import Warp

from medrobust.core.metrics.registration import label_centroids
from medrobust.data.paired import PairedCase, load_pair
from medrobust.registration.export import export_native, native_displacement, resample_native


def _rotation(a: float, b: float) -> np.ndarray:
    ca, sa, cb, sb = np.cos(a), np.sin(a), np.cos(b), np.sin(b)
    return np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1.0]]) @ np.array([[1, 0, 0], [0, cb, -sb], [0, sb, cb]])


def _affine(rot, spacing, origin, flip_x=False):
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing) @ np.diag([-1.0 if flip_x else 1.0, 1.0, 1.0])
    a[:3, 3] = origin
    return a


def _world(aff, shape):
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return idx @ aff[:3, :3].T + aff[:3, 3]


def _write_pair(tmp_path):
    """Moving: oblique, anisotropic, x-flipped, far origin. Fixed: another oblique geometry, other spacings."""
    m_shape, f_shape = (30, 26, 24), (24, 28, 20)
    m_aff = _affine(_rotation(0.5, -0.3), (1.0, 1.6, 1.4), (80.0, -40.0, 15.0), flip_x=True)
    f_aff = _affine(_rotation(-0.4, 0.2), (1.5, 1.2, 2.0), (-30.0, 12.0, 40.0))
    pts = _world(m_aff, m_shape)
    centre = pts.reshape(-1, 3).mean(0)
    offsets = [np.zeros(3), np.array([6.0, 4.0, -3.0]), np.array([-5.0, -6.0, 4.0])]
    radii = [11.0, 4.0, 4.0]
    labels = np.stack([(np.linalg.norm(pts - (centre + o), axis=-1) <= r) for o, r in zip(offsets, radii)], -1).astype(np.float32)
    image = sum(np.exp(-np.sum((pts - (centre + o)) ** 2, -1) / (2 * s**2)) * w
                for o, s, w in [(offsets[0], 9.0, 1.0), (offsets[1], 3.0, 0.8), (offsets[2], 4.0, -0.5), ([10, -8, 6], 5.0, 0.6)])
    for name, data, aff in [("moving_images", image.astype(np.float32), m_aff), ("moving_labels", labels, m_aff),
                            ("fixed_images", np.random.default_rng(0).random(f_shape).astype(np.float32), f_aff),
                            ("fixed_labels", (np.random.default_rng(1).random((*f_shape, 3)) > 0.5).astype(np.float32), f_aff)]:
        (tmp_path / name).mkdir()
        nib.save(nib.Nifti1Image(data, aff), str(tmp_path / name / "p0.nii.gz"))
    return PairedCase("p0", tmp_path / "moving_images/p0.nii.gz", tmp_path / "fixed_images/p0.nii.gz",
                      tmp_path / "moving_labels/p0.nii.gz", tmp_path / "fixed_labels/p0.nii.gz")


def _smooth_ddf(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    raw = torch.nn.functional.avg_pool3d(torch.randn(1, 3, *shape, generator=g), 5, 1, 2, count_include_pad=False)
    return raw[0] * 4.0 + torch.tensor([0.8, -0.6, 0.5]).reshape(3, 1, 1, 1)  # voxels: a shift plus a smooth field


def _sitk_array(image) -> np.ndarray:
    import SimpleITK as sitk

    return np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))


def test_sitk_resampling_of_the_original_file_matches_the_bundle_output(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    case = _write_pair(tmp_path)
    item = load_pair(case, spacing=3.0, alignment="centre")
    shift = item["moving_world_to_original"][:3, 3].numpy()
    assert np.linalg.norm(shift) > 20.0  # the centring moves the MR far: the bug being tested
    ddf = _smooth_ddf(item["moving_image"].shape[1:])
    files = export_native(tmp_path / "out", ddf, item["affine"].numpy(), fixed_path=case.fixed_image, moving_path=case.moving_image,
                          moving_label_path=case.moving_label, moving_world_to_original=item["moving_world_to_original"].numpy())
    fixed = sitk.ReadImage(str(case.fixed_image))
    transform = sitk.ReadTransform(str(files["ddf_itk"]))
    moved = _sitk_array(sitk.Resample(sitk.ReadImage(str(case.moving_image)), fixed, transform, sitk.sitkLinear, 0.0))
    ours = np.asarray(nib.load(files["warped_moving_image"]).dataobj)
    assert ours.std() > 0.05 and np.corrcoef(moved.ravel(), ours.ravel())[0, 1] > 0.99

    f_aff = nib.load(case.fixed_image).affine
    lab_ours = nib.load(files["warped_moving_label"])
    assert lab_ours.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(lab_ours.dataobj))) <= {0, 1}
    gland = np.asarray(nib.load(files["warped_moving_gland"]).dataobj)
    np.testing.assert_array_equal(gland, np.asarray(lab_ours.dataobj)[..., 0])
    src = nib.load(case.moving_label)
    lab_sitk = []
    for c in range(3):  # SimpleITK reads a 4-D NIfTI as 4-D scalars: one 3-D file per channel, same header
        nib.save(nib.Nifti1Image(np.asarray(src.dataobj)[..., c], src.affine), str(tmp_path / f"label{c}.nii.gz"))
        lab_sitk.append(_sitk_array(sitk.Resample(sitk.ReadImage(str(tmp_path / f"label{c}.nii.gz")), fixed, transform,
                                                  sitk.sitkLinear, 0.0)))
    lab_sitk = np.stack(lab_sitk)
    c_ours = label_centroids(torch.as_tensor(np.moveaxis(np.asarray(lab_ours.dataobj), -1, 0)[None], dtype=torch.float64),
                             torch.as_tensor(f_aff))[0]
    c_sitk = label_centroids(torch.as_tensor((lab_sitk >= 0.5)[None], dtype=torch.float64), torch.as_tensor(f_aff))[0]
    assert torch.linalg.vector_norm(c_ours - c_sitk, dim=-1).max() < 0.5  # mm

    # and the network's own warp on its grid (what TRE is computed from) lands in the same place
    warped_grid = Warp(mode="bilinear", padding_mode="zeros")(item["moving_label"][None], ddf[None].float())
    c_grid = label_centroids(warped_grid.double(), item["affine"])[0]
    assert torch.linalg.vector_norm(c_grid - c_ours, dim=-1).max() < 1.0  # mm, on a 3 mm grid


def test_header_alignment_has_no_shift_and_zero_ddf_is_identity(tmp_path):
    case = _write_pair(tmp_path)
    item = load_pair(case, spacing=3.0, alignment="header")
    np.testing.assert_allclose(item["moving_world_to_original"].numpy(), np.eye(4))
    f = nib.load(case.fixed_image)
    disp = native_displacement(np.zeros((3, *item["moving_image"].shape[1:])), item["affine"].numpy(), f.affine, f.shape)
    assert disp.shape == (3, *f.shape) and np.abs(disp).max() < 1e-9
    m = nib.load(case.moving_image)
    same = resample_native(np.asarray(m.dataobj)[None], m.affine, np.zeros((3, *m.shape)), m.affine)
    np.testing.assert_allclose(same[0], np.asarray(m.dataobj), atol=1e-6)
    with pytest.raises(ValueError, match="order must be"):
        resample_native(np.asarray(m.dataobj)[None], m.affine, np.zeros((3, *m.shape)), m.affine, order=3)
