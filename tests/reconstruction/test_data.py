from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from medrobust.reconstruction.data import (
    KspaceSliceDataset,
    MagnitudeVolume,
    load_magnitude_folder,
    load_promise12,
    prepare_volume,
    read_split,
    split_volumes,
)
from medrobust.reconstruction.fft import ifft2c
from medrobust.reconstruction.masks import center_columns
from medrobust.reconstruction.simulation import rss


def _volume(vid="v0", slices=3, hw=(40, 36), seed=0, gland=True) -> MagnitudeVolume:
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(slices, *hw, generator=g) * 800 + 50
    lab = np.zeros((slices, *hw), np.int8)
    lab[:, 10:25, 8:20] = 1
    return prepare_volume(vid, img, lab if gland else None, size=(32, 32), spacing=(0.6, 0.6))


def test_prepare_volume_normalises_and_resizes():
    img = np.full((2, 64, 48), 100.0, np.float32)
    img[:, 10:50, 10:40] = np.linspace(200, 2000, 30)[None, None]
    img[0, 0, 0] = 50_000.0  # one hot voxel must not compress the range (percentile scaling)
    lab = np.zeros((2, 64, 48), np.int8)
    lab[:, 20:40, 20:30] = 1
    v = prepare_volume("x", img, lab, size=32, spacing=(0.6, 0.5))
    assert v.image.shape == (2, 32, 32) and v.image.dtype == torch.float32
    assert type(v.image) is torch.Tensor  # not a MONAI MetaTensor
    assert float(v.image.min()) >= 0 and 0.9 < float(v.image.max()) <= 1.0
    assert 0.3 < float(v.image[1, 6:24, 6:19].mean()) < 0.7  # the ramp 200..2000 is not squashed by the hot voxel
    assert v.gland.dtype == torch.uint8 and set(v.gland.unique().tolist()) == {0, 1}
    assert v.spacing == pytest.approx((1.2, 0.75))
    assert prepare_volume("y", img, size=None).image.shape == (2, 64, 48)


@pytest.mark.parametrize("image, gland, match", [
    (np.zeros((4, 4)), None, "slices, H, W"),
    (np.full((2, 8, 8), 5.0), None, "constant"),
    (np.random.default_rng(0).random((2, 8, 8)), np.zeros((2, 8, 9)), "gland shape"),
    (np.full((2, 8, 8), np.nan), None, "NaN"),
])
def test_prepare_volume_bad(image, gland, match):
    with pytest.raises(ValueError, match=match):
        prepare_volume("bad", image, gland, size=16)


@pytest.mark.parametrize("coils", [1, 4])
def test_items_shapes_and_consistency(coils):
    ds = KspaceSliceDataset([_volume("a"), _volume("b", slices=2, seed=1, gland=False)], num_coils=coils, acceleration=4, seed=3)
    assert len(ds) == 5
    it = ds[4]
    assert it["volume_id"] == "b" and it["slice"] == 1 and it["has_gland"] is False and float(it["gland"].sum()) == 0
    assert it["kspace"].shape == (coils, 32, 32, 2) and it["mask"].shape == (1, 1, 32, 1)
    assert int(it["mask"].sum()) == 8
    start, stop = center_columns(32, 0.08)
    assert bool(it["mask"].reshape(-1)[start:stop].all())
    assert torch.equal(it["kspace"], it["kspace_full"] * it["mask"])
    assert torch.allclose(it["zero_filled"], rss(ifft2c(it["kspace"][None]))[0], atol=1e-6)
    assert torch.allclose(rss(ifft2c(it["kspace_full"][None]))[0], it["target"], atol=1e-5)
    assert torch.allclose(it["image"].pow(2).sum(-1).sqrt(), it["target"], atol=1e-5)
    assert ds[0]["has_gland"] is True and float(ds[0]["gland"].sum()) > 0


def test_fully_sampled_zero_filled_is_target():
    ds = KspaceSliceDataset([_volume()], num_coils=2, seed=0)
    it = ds[1]
    assert float(it["mask"].min()) == 1.0
    assert torch.allclose(it["zero_filled"], it["target"], atol=1e-5)


def test_deterministic_per_index_and_seed_and_epoch():
    vols = [_volume("a"), _volume("b", seed=1)]
    torch.manual_seed(0)
    state = torch.get_rng_state().clone()
    a = KspaceSliceDataset(vols, acceleration=8, seed=1)
    b = KspaceSliceDataset(vols, acceleration=8, seed=1)
    c = KspaceSliceDataset(vols, acceleration=8, seed=2)
    for i in (0, 4, 5):
        assert torch.equal(a[i]["kspace"], a[i]["kspace"]) and torch.equal(a[i]["kspace"], b[i]["kspace"])
        assert not torch.equal(a[i]["kspace"], c[i]["kspace"])
    assert not torch.equal(a[0]["mask"], a[1]["mask"]) or not torch.equal(a[0]["image"], a[1]["image"])
    before = a[2]["kspace"]
    a.set_epoch(1)
    assert not torch.equal(before, a[2]["kspace"])
    a.set_epoch(0)
    assert torch.equal(before, a[2]["kspace"])
    assert torch.equal(torch.get_rng_state(), state)  # no global RNG use


def test_dataloader_batches():
    ds = KspaceSliceDataset([_volume(slices=4)], num_coils=3, acceleration=4, seed=0)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["kspace"].shape == (2, 3, 32, 32, 2) and batch["mask"].shape == (2, 1, 1, 32, 1)
    assert batch["target"].shape == (2, 1, 32, 32) and batch["volume_id"] == ["v0", "v0"]
    assert torch.equal(batch["kspace"], batch["kspace_full"] * batch["mask"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_coils=0), "num_coils"),
    (dict(acceleration=6), "no fastMRI centre fraction"),
    (dict(acceleration=4, mask_kind="radial"), "kind"),
])
def test_dataset_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KspaceSliceDataset([_volume()], **kwargs)
    with pytest.raises(ValueError, match="no volumes"):
        KspaceSliceDataset([])


def test_split_by_volume(tmp_path):
    ids = [f"train{i:02d}" for i in range(16)]
    s = split_volumes(ids, seed=4, path=tmp_path / "split.json")
    assert [len(s[k]) for k in ("train", "val", "test")] == [10, 3, 3]
    assert sorted(s["train"] + s["val"] + s["test"]) == ids
    assert s == split_volumes(list(reversed(ids)), seed=4)  # order of input does not matter
    assert s != split_volumes(ids, seed=5)
    d = json.loads((tmp_path / "split.json").read_text())
    assert d["unit"] == "volume" and d["seed"] == 4
    assert read_split(tmp_path / "split.json") == s
    assert [len(v) for v in split_volumes(ids[:3], seed=0).values()] == [1, 1, 1]
    d["val"].append(d["train"][0])
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="is in both 'train' and 'val'"):
        read_split(tmp_path / "bad.json")


@pytest.mark.parametrize("ids, kwargs, match", [
    (["a", "a", "b"], {}, "duplicate"),
    (["a", "b"], {}, "cannot fill"),
    (["a", "b", "c"], dict(fractions=(0.5, 0.5, 0.5)), "summing to 1"),
])
def test_split_bad(ids, kwargs, match):
    with pytest.raises(ValueError, match=match):
        split_volumes(ids, **kwargs)


def test_magnitude_folder_skips_bad_files(tmp_path):
    import nibabel as nib
    from pydicom.data import get_testdata_files

    vol = np.random.default_rng(0).random((30, 28, 4)).astype(np.float32) * 500
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 3, 1])), tmp_path / "good.nii.gz")
    bad = vol.copy()
    bad[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(bad, np.eye(4)), tmp_path / "bad.nii.gz")
    mr = get_testdata_files("MR_small.dcm")
    if mr:
        shutil.copy(mr[0], tmp_path / "mr.dcm")
    vols, errors = load_magnitude_folder(tmp_path, size=24)
    assert len(errors) == 1 and "bad.nii.gz" in str(errors[0].path)
    assert len(vols) == 1 + bool(mr)
    nifti = next(v for v in vols if v.image.shape[0] == 4)
    assert nifti.image.shape == (4, 24, 24) and nifti.gland is None
    assert nifti.spacing == pytest.approx((0.8 * 30 / 24, 0.8 * 28 / 24))
    ds = KspaceSliceDataset(vols, num_coils=2, acceleration=4, seed=0)
    assert ds[0]["kspace"].shape == (2, 24, 24, 2)


@pytest.mark.shared_data
def test_promise12_volumes(shared_data):
    root = shared_data / "promise12_dev"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    vols = load_promise12(root, size=64, volume_ids=["train01", "train13"])
    assert [v.volume_id for v in vols] == ["train01", "train13"]
    assert [v.image.shape for v in vols] == [(29, 64, 64), (15, 64, 64)]
    assert all(v.gland is not None and int(v.gland.sum()) > 0 for v in vols)
    assert vols[0].spacing == pytest.approx((0.6 * 256 / 64,) * 2) and vols[1].spacing == pytest.approx((0.6 * 160 / 64,) * 2)
    ds = KspaceSliceDataset(vols, num_coils=1, acceleration=4, seed=0)
    nmse = [float(((ds[i]["zero_filled"] - ds[i]["target"]) ** 2).sum() / ds[i]["target"].pow(2).sum()) for i in range(0, len(ds), 4)]
    assert 0.001 < float(np.mean(nmse)) < 0.5  # zero-filled 4x loses detail but not the image
    ids = sorted(p.name[len("image_"):-len(".npy.gz")] for p in root.glob("image_train*.npy.gz"))
    split = split_volumes(ids, seed=0)
    assert not set(split["train"]) & set(split["test"])
    with pytest.raises(FileNotFoundError, match="train99"):
        load_promise12(root, volume_ids=["train99"])
