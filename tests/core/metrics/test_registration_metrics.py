"""Registration metrics: Jacobians of known maps, TRE in physical space, folding, HD95, Dice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medrobust.core.metrics.registration import (
    ddf_voxel_to_world,
    ddf_world_to_voxel,
    dice_score,
    folding_percentage,
    hd95,
    jacobian_determinant,
    label_centroids,
    std_log_jacobian,
    tre_from_labels,
    tre_from_points,
    warp_points,
)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _oblique_affine() -> torch.Tensor:
    """Anisotropic spacing (0.8, 1.7, 3.1) mm and a non-identity, non-axis-aligned direction."""
    a = np.eye(4)
    a[:3, :3] = _rotation(0.3, -0.5, 0.9) @ np.diag([0.8, 1.7, 3.1])
    a[:3, 3] = [12.0, -40.0, 7.5]
    return torch.tensor(a)


def _affine_ddf(matrix: np.ndarray, shift: np.ndarray, shape: tuple[int, ...], batch: int = 2) -> torch.Tensor:
    """Voxel DDF of the map i -> matrix @ i + shift, i.e. u(i) = (matrix - I) i + shift."""
    n = len(shape)
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij"))
    m = torch.tensor(matrix - np.eye(n))
    u = torch.einsum("ij,j...->i...", m, grid) + torch.tensor(shift).reshape(n, *([1] * n))
    return u.unsqueeze(0).repeat(batch, *([1] * (n + 1)))


@pytest.mark.parametrize("shape", [(9, 10, 11), (12, 14)])
def test_jacobian_of_affine_map_equals_its_determinant_everywhere(shape):
    rng = np.random.default_rng(0)
    n = len(shape)
    matrix = np.eye(n) + 0.2 * rng.standard_normal((n, n))
    ddf = _affine_ddf(matrix, rng.standard_normal(n), shape)
    det = jacobian_determinant(ddf)
    assert det.shape == (2, *shape)
    torch.testing.assert_close(det, torch.full_like(det, float(np.linalg.det(matrix))), atol=1e-10, rtol=0)
    assert float(std_log_jacobian(ddf).abs().max()) < 1e-10
    assert torch.equal(folding_percentage(ddf), torch.zeros(2, dtype=torch.float64))


def test_folding_counts_reflected_voxels():
    ddf = _affine_ddf(np.diag([-1.0, 1.0, 1.0]), np.zeros(3), (8, 8, 8))  # a reflection folds everywhere
    assert torch.allclose(folding_percentage(ddf), torch.full((2,), 100.0, dtype=torch.float64))
    ddf[1] = 0
    out = folding_percentage(ddf)
    assert out[0] == 100.0 and out[1] == 0.0
    mask = torch.zeros(2, 8, 8, 8, dtype=torch.bool)
    mask[:, :2] = True
    assert torch.allclose(folding_percentage(ddf, mask), torch.tensor([100.0, 0.0], dtype=torch.float64))


def test_std_log_jacobian_grows_with_irregularity():
    gen = torch.Generator().manual_seed(0)
    smooth = 0.01 * torch.randn(2, 3, 10, 10, 10, generator=gen)
    rough = 0.2 * torch.randn(2, 3, 10, 10, 10, generator=gen)
    assert (std_log_jacobian(rough) > std_log_jacobian(smooth)).all()


def test_tre_of_known_translation_is_its_length_in_mm_with_oblique_anisotropic_grid():
    affine = _oblique_affine()
    shift = (3, -2, 1)  # voxels along the array axes
    fixed = torch.zeros(2, 3, 20, 20, 16)
    fixed[:, 0, 5:8, 6:9, 4:7] = 1
    fixed[:, 1, 10:12, 9:13, 7:9] = 1
    fixed[:, 2, 12:15, 4:6, 9:12] = 0.5  # soft label: centroid is intensity weighted
    moved = torch.roll(fixed, shifts=shift, dims=(2, 3, 4))
    tre = tre_from_labels(moved, fixed, affine)
    expected = float(np.linalg.norm(affine[:3, :3].numpy() @ np.array(shift, float)))
    assert tre.shape == (2, 3)
    torch.testing.assert_close(tre, torch.full_like(tre, expected), atol=1e-9, rtol=0)
    # the voxel-count answer (what DeepReg reports) differs: we are not computing that
    assert abs(expected - math.sqrt(sum(s * s for s in shift))) > 1.0
    assert torch.equal(tre_from_labels(moved, fixed, affine, channels=[1]), tre[:, 1:2])


def test_tre_from_points_with_translation_ddf():
    affine = _oblique_affine()
    shape = (12, 10, 8)
    d_vox = np.array([1.5, -0.5, 2.0])
    ddf = _affine_ddf(np.eye(3), d_vox, shape)
    gen = torch.Generator().manual_seed(1)
    idx = torch.rand(2, 5, 3, generator=gen, dtype=torch.float64) * torch.tensor([11.0, 9.0, 7.0])
    fixed_pts = idx @ affine[:3, :3].T + affine[:3, 3]
    shift_mm = affine[:3, :3] @ torch.tensor(d_vox)
    moving_pts = fixed_pts + shift_mm  # where the registration should send them
    torch.testing.assert_close(tre_from_points(fixed_pts, moving_pts, ddf, affine), torch.zeros(2, 5, dtype=torch.float64), atol=1e-9, rtol=0)
    no_reg = tre_from_points(fixed_pts, moving_pts, torch.zeros_like(ddf), affine)
    torch.testing.assert_close(no_reg, torch.full_like(no_reg, float(shift_mm.norm())), atol=1e-9, rtol=0)
    torch.testing.assert_close(warp_points(fixed_pts, ddf, affine), moving_pts, atol=1e-9, rtol=0)


def test_ddf_world_voxel_round_trip_and_centroids():
    affine = _oblique_affine()
    ddf = torch.randn(2, 3, 5, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(ddf_world_to_voxel(ddf_voxel_to_world(ddf, affine), affine), ddf)
    lab = torch.zeros(1, 2, 5, 6, 7)
    lab[0, 0, 2, 3, 4] = 1
    cents = label_centroids(lab, affine)
    torch.testing.assert_close(cents[0, 0], affine[:3, :3] @ torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64) + affine[:3, 3])
    assert torch.isnan(cents[0, 1]).all()  # empty channel


def test_hd95_in_mm_and_dice():
    a = torch.zeros(2, 1, 16, 16, 16)
    a[:, :, 4:10, 4:10, 4:10] = 1
    b = torch.roll(a, 1, dims=2)
    torch.testing.assert_close(hd95(b, a, spacing=(2.0, 1.0, 1.0)), torch.full((2, 1), 2.0))
    torch.testing.assert_close(dice_score(b, a), torch.full((2, 1), 2 * 5 / 12))
    torch.testing.assert_close(dice_score(a, a), torch.ones(2, 1))


@pytest.mark.parametrize(
    "shape",
    [(2, 2, 8, 8, 8), (2, 3, 8, 8), (3, 8, 8, 8)],
)
def test_bad_ddf_shape_is_named(shape):
    with pytest.raises(ValueError, match="ddf must be"):
        jacobian_determinant(torch.zeros(shape))


def test_mismatched_labels_are_rejected():
    with pytest.raises(ValueError, match="same shape"):
        tre_from_labels(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 3, 4, 4, 4), torch.eye(4))
