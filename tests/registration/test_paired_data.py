"""Paired dataset discovery and physical resampling onto one grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medrobust.core.metrics.registration import label_centroids
from medrobust.data.paired import (
    centre_alignment,
    load_pair,
    load_paired_dataset,
    moving_image_groups,
    resample_to_grid,
    scan_paired,
    target_grid,
)


def _rot_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _blob_volume(shape, affine, centre_world, radius):
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    return (np.linalg.norm(world - centre_world, axis=1) <= radius).reshape(shape).astype(np.float32)


def _write_pair(root, cid, layout="deepreg", n_labels=3, mov_aff=None, fix_aff=None):
    names = {"deepreg": ("moving_images", "fixed_images", "moving_labels", "fixed_labels"),
             "muregpro": ("us_images", "mr_images", "us_labels", "mr_labels")}[layout]
    mov_aff = np.diag([1.5, 1.5, 2.0, 1.0]) if mov_aff is None else mov_aff
    fix_aff = np.diag([-2.0, -2.0, 2.0, 1.0]) if fix_aff is None else fix_aff
    rng = np.random.default_rng(abs(hash(cid)) % 1000)
    for folder, aff, shape in ((names[0], mov_aff, (20, 22, 16)), (names[1], fix_aff, (18, 16, 14))):
        (root / folder).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(rng.integers(0, 255, shape).astype(np.uint8), aff), root / folder / f"{cid}.nii.gz")
    for folder, aff, shape in ((names[2], mov_aff, (20, 22, 16)), (names[3], fix_aff, (18, 16, 14))):
        (root / folder).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.zeros((*shape, n_labels), np.uint8), aff), root / folder / f"{cid}.nii.gz")


def test_resampling_respects_direction_and_spacing():
    src_aff = np.eye(4)
    src_aff[:3, :3] = _rot_z(30) @ np.diag([1.0, 2.0, 1.5]) @ np.diag([-1, 1, 1])  # rotated, flipped, anisotropic
    centre = np.array([2.0, 1.0, 3.0])
    src_aff[:3, 3] = centre - src_aff[:3, :3] @ np.array([20.0, 15.0, 15.0])  # blob mid-volume
    src = _blob_volume((40, 30, 30), src_aff, centre, 6.0)
    dst_aff = np.eye(4)
    dst_aff[:3, :3] = _rot_z(-45) @ np.diag([-2.0, -2.0, 2.0])
    dst_aff[:3, 3] = centre + np.array([3.0, -2.0, 1.0]) - dst_aff[:3, :3] @ np.array([9.5, 9.5, 9.5])
    grid = target_grid(dst_aff, (20, 20, 20), spacing=2.0, size=(20, 20, 20))
    out = resample_to_grid(src[None], src_aff, grid)
    assert out.shape == (1, 20, 20, 20)
    cent = label_centroids(out[None], torch.from_numpy(grid.affine))[0, 0].numpy()
    np.testing.assert_allclose(cent, centre, atol=0.3)  # same physical place, despite different directions
    # a plain array resize would have put it elsewhere
    naive = torch.nn.functional.interpolate(torch.from_numpy(src)[None, None], size=(20, 20, 20), mode="trilinear")[0]
    naive_cent = label_centroids(naive[None], torch.from_numpy(grid.affine))[0, 0].numpy()
    assert np.linalg.norm(naive_cent - centre) > 3.0


def test_target_grid_covers_fixed_fov_and_is_divisible():
    fix_aff = np.diag([-1.5, -1.5, 1.5, 1.0])
    fix_aff[:3, 3] = [10, 20, -30]
    g = target_grid(fix_aff, (47, 63, 44), spacing=3.0)
    assert g.shape == (24, 32, 24) and g.spacing == (3.0, 3.0, 3.0)
    np.testing.assert_allclose(np.sign(np.diag(g.affine[:3, :3])), [-1, -1, 1])
    centre = lambda a, s: a[:3, :3] @ ((np.asarray(s) - 1) / 2) + a[:3, 3]  # noqa: E731
    np.testing.assert_allclose(centre(g.affine, g.shape), centre(fix_aff, (47, 63, 44)))
    with pytest.raises(ValueError, match="spacing must be positive"):
        target_grid(fix_aff, (4, 4, 4), spacing=0.0)


def test_centre_alignment_moves_only_the_translation():
    mov = np.diag([1.5, 1.5, 2.0, 1.0])
    out = centre_alignment(mov, (20, 20, 10), np.diag([2.0, 2.0, 2.0, 1.0]), (10, 10, 10))
    np.testing.assert_allclose(out[:3, :3], mov[:3, :3])
    np.testing.assert_allclose(out[:3, :3] @ [9.5, 9.5, 4.5] + out[:3, 3], [9.0, 9.0, 9.0])


@pytest.mark.parametrize("layout", ["deepreg", "muregpro"])
def test_scan_and_load_both_layouts(tmp_path, layout):
    for cid in ("case000", "case001"):
        _write_pair(tmp_path, cid, layout)
    cases = scan_paired(tmp_path)
    assert [c.case_id for c in cases] == ["case000", "case001"]
    if layout == "muregpro":  # US moving, MR fixed
        assert cases[0].moving_image.parent.name == "us_images" and cases[0].fixed_image.parent.name == "mr_images"
    item = load_pair(cases[0], spacing=4.0, size=(8, 8, 8))
    assert item["moving_image"].shape == (1, 8, 8, 8) and item["fixed_label"].shape == (3, 8, 8, 8)
    assert 0.0 <= float(item["fixed_image"].min()) and float(item["fixed_image"].max()) <= 1.0
    assert item["affine"].shape == (4, 4)
    items = load_paired_dataset(tmp_path, ids=["case001"], spacing=4.0, size=(8, 8, 8), alignment="header")
    assert [i["case_id"] for i in items] == ["case001"]


def test_bad_datasets_are_reported(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        scan_paired(tmp_path / "missing")
    with pytest.raises(ValueError, match="no paired registration layout"):
        scan_paired(tmp_path)
    _write_pair(tmp_path, "case000")
    (tmp_path / "fixed_labels" / "case000.nii.gz").unlink()
    with pytest.raises(ValueError, match="no label file"):
        scan_paired(tmp_path)
    assert len(scan_paired(tmp_path, require_labels=False)) == 1
    _write_pair(tmp_path, "case000")
    with pytest.raises(ValueError, match="case ids not found"):
        load_paired_dataset(tmp_path, ids=["nope"])
    with pytest.raises(ValueError, match="alignment"):
        load_pair(scan_paired(tmp_path)[0], alignment="auto")


def test_duplicate_moving_scans_are_grouped(tmp_path):
    for cid in ("a", "b", "c"):
        _write_pair(tmp_path, cid)
    img = nib.load(tmp_path / "moving_images" / "a.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), tmp_path / "moving_images" / "c.nii.gz")
    assert moving_image_groups(tmp_path) == [["a", "c"], ["b"]]


@pytest.mark.shared_data
def test_mrus_dev_pairs_load_onto_the_coarse_grid(shared_data):
    root = shared_data / "mrus_dev"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    cases = scan_paired(root)
    with open(root / "pairs_by_mr.csv") as f:  # the data's own list of pairs (it grew from 16 to 56)
        n_pairs = sum(1 for _ in f) - 1
    assert len(cases) == n_pairs >= 16
    item = load_pair(cases[0], spacing=3.0)
    assert item["moving_image"].shape == (1, 24, 32, 24)
    assert item["moving_label"].shape[0] == item["fixed_label"].shape[0] == 6
    assert float(item["fixed_label"][0].sum()) > 100  # the gland survives resampling


def test_moving_mask_is_the_moving_gland_with_or_without_fixed_labels(tmp_path):
    _write_pair(tmp_path, "case000")
    lab_path = tmp_path / "moving_labels" / "case000.nii.gz"
    img = nib.load(lab_path)
    data = np.zeros(img.shape, np.uint8)
    data[5:15, 6:16, 4:12, 0] = 1  # the gland (channel 0); landmarks elsewhere
    data[8:10, 8:10, 6:8, 1] = 1
    nib.save(nib.Nifti1Image(data, img.affine), lab_path)
    item = load_pair(scan_paired(tmp_path)[0], spacing=2.0, size=(16, 16, 16), moving_mask=True)
    torch.testing.assert_close(item["moving_mask"], item["moving_label"][:1])
    torch.testing.assert_close(item["fixed_mask"], item["fixed_label"][:1])  # a training target for keypoints
    assert float(item["moving_mask"].sum()) > 10
    (tmp_path / "fixed_labels" / "case000.nii.gz").unlink()  # inference: the TRUS side is not segmented
    case = scan_paired(tmp_path, require_labels=False)[0]
    alone = load_pair(case, spacing=2.0, size=(16, 16, 16), moving_mask=True)
    assert "moving_label" not in alone and "fixed_mask" not in alone
    torch.testing.assert_close(alone["moving_mask"], item["moving_mask"])
    lab_path.unlink()
    with pytest.raises(ValueError, match="needs the moving label file"):
        load_pair(scan_paired(tmp_path, require_labels=False)[0], spacing=2.0, size=(16, 16, 16), moving_mask=True)
