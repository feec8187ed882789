"""DDF export: NIfTI vectors in world mm and an ITK transform that moves points exactly like our DDF."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medrobust.core.metrics.registration import warp_points
from medrobust.registration.export import (
    ddf_to_itk_transform,
    ras_to_lps,
    save_ddf_nifti,
    save_itk_transform,
    save_volume_nifti,
)


def _oblique_grid():
    c, s = np.cos(0.6), np.sin(0.6)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.array([[1, 0, 0], [0, np.cos(-0.4), -np.sin(-0.4)], [0, np.sin(-0.4), np.cos(-0.4)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.9, 1.4, 2.6]) @ np.diag([-1.0, 1.0, 1.0])  # anisotropic, rotated, flipped
    affine[:3, 3] = [-12.0, 30.0, 4.0]
    return affine, (14, 12, 10)


def _smooth_ddf(shape, seed=0, scale=8.0):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(1, 3, *shape, generator=g)
    return (torch.nn.functional.avg_pool3d(raw, 5, 1, 2, count_include_pad=False) * scale)[0].numpy()


@pytest.mark.slow
def test_itk_transform_round_trip_matches_our_warp(tmp_path):
    itk = pytest.importorskip("itk")
    affine, shape = _oblique_grid()
    ddf = _smooth_ddf(shape)
    rng = np.random.default_rng(1)
    idx = rng.uniform(1, np.array(shape) - 2, size=(40, 3))
    pts = idx @ affine[:3, :3].T + affine[:3, 3]
    ours = warp_points(torch.from_numpy(pts)[None], torch.from_numpy(ddf)[None], torch.from_numpy(affine))[0].numpy()
    assert np.abs(ours - pts).max() > 1.0  # the field really moves points
    flip = np.array([-1.0, -1.0, 1.0])  # ITK works in LPS
    for transform in (ddf_to_itk_transform(ddf, affine), itk.transformread(str(save_itk_transform(tmp_path / "t.h5", ddf, affine)))[0]):
        moved = np.array([list(transform.TransformPoint([float(v) for v in p * flip])) for p in pts]) * flip
        assert np.abs(moved - ours).max() < 0.1  # mm
    field = ddf_to_itk_transform(ddf, affine).GetDisplacementField()
    np.testing.assert_allclose(np.asarray(field.GetSpacing()), [0.9, 1.4, 2.6], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(field.GetOrigin()), ras_to_lps(affine)[:3, 3], atol=1e-6)


def test_ddf_nifti_holds_world_mm_vectors(tmp_path):
    affine, shape = _oblique_grid()
    ddf = _smooth_ddf(shape, seed=2)
    img = nib.load(save_ddf_nifti(tmp_path / "ddf.nii.gz", ddf, affine))
    assert img.shape == (*shape, 1, 3)
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    world = np.moveaxis(np.asarray(img.dataobj)[..., 0, :], -1, 0)
    np.testing.assert_allclose(world, np.einsum("ij,j...->i...", affine[:3, :3], ddf), atol=1e-4)


def test_volumes_are_written_channel_last(tmp_path):
    affine, shape = _oblique_grid()
    one = nib.load(save_volume_nifti(tmp_path / "a.nii.gz", torch.rand(1, *shape), affine))
    many = nib.load(save_volume_nifti(tmp_path / "b.nii.gz", torch.rand(4, *shape), affine))
    assert one.shape == shape and many.shape == (*shape, 4)
    with pytest.raises(ValueError, match="ddf must be"):
        from medrobust.registration.export import ddf_to_itk_displacement_field

        ddf_to_itk_displacement_field(np.zeros((2, 4, 4, 4)), affine)
