"""MedMNIST reader (medrobust.data.medmnist), the bundle's folder datalists, and the shipped model on
real BreastMNIST (skipped without ../shared/data)."""

from __future__ import annotations

import csv
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from medrobust.core.attacks import pgd
from medrobust.core.metrics.classification import accuracy, roc_auc
from medrobust.data.medmnist import BREASTMNIST_MALIGNANT_POSITIVE, load_medmnist, medmnist_datalist


# ------------------------------------------------------------------------------ MedMNIST npz
def test_load_medmnist_2d_with_breastmnist_remap(synthetic_npz):
    s = load_medmnist(synthetic_npz, "train", label_map=BREASTMNIST_MALIGNANT_POSITIVE)
    raw = np.load(synthetic_npz)
    assert s.images.shape == (48, 1, 16, 16) and s.images.dtype == np.float32 and s.spatial_dims == 2
    np.testing.assert_allclose(s.images[:, 0], raw["train_images"] / 255.0, rtol=1e-6)
    assert np.array_equal(s.labels, 1 - raw["train_labels"][:, 0]), "stored 0 (malignant) must become 1"
    assert s.case_ids[:2] == ("train_00000", "train_00001")
    items = medmnist_datalist(synthetic_npz, "val", limit=3)
    assert len(items) == 3 and items[0]["image"].shape == (1, 16, 16) and isinstance(items[0]["label"], int)


def test_load_medmnist_3d_and_rgb(tmp_path, synthetic_npz_3d):
    s = load_medmnist(synthetic_npz_3d, "test")
    assert s.images.shape == (8, 1, 8, 8, 8) and s.spatial_dims == 3
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, train_images=np.zeros((2, 5, 5, 3), np.uint8), train_labels=np.zeros((2, 1), np.uint8))
    assert load_medmnist(rgb, "train").images.shape == (2, 3, 5, 5)
    assert load_medmnist(rgb, "train", spatial_dims=3).images.shape == (2, 1, 5, 5, 3)


def test_load_medmnist_errors(tmp_path, synthetic_npz):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_medmnist(tmp_path / "nope.npz", "train")
    with pytest.raises(ValueError, match="split must be"):
        load_medmnist(synthetic_npz, "validation")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a MedMNIST file"):
        load_medmnist(other, "train")
    with pytest.raises(ValueError, match=r"labels \[1\] are not in label_map"):
        load_medmnist(synthetic_npz, "train", label_map={0: 1})
    bad = tmp_path / "bad.npz"
    np.savez(bad, train_images=np.zeros((3, 4, 4), np.uint8), train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(ValueError, match="N = 3 images"):
        load_medmnist(bad, "train")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_medmnist(broken, "train")
    assert not zipfile.is_zipfile(broken)


# ----------------------------------------------------------------------- bundle datalists
@pytest.fixture
def bundle_data(bundle_root):
    from medrobust.models import bundle_imports

    with bundle_imports(bundle_root):
        import scripts.data as data

        yield data


def _png_folder(root, n=12, split_column=True):
    root.mkdir()
    rows = []
    for i in range(n):
        arr = np.full((20, 24), 30 + 10 * i, np.uint8)
        arr[:5, :5] = 250
        Image.fromarray(arr).save(root / f"case_{i:02d}.png")
        rows.append({"case_id": f"case_{i:02d}", "label": i % 2, "split": ["train", "val", "test"][i % 3]})
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if split_column else ["case_id", "label"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return root


def test_folder_datalist_reads_pngs_and_splits(bundle_data, tmp_path):
    root = _png_folder(tmp_path / "pngs")
    test = bundle_data.load_datalist(root, "test", spatial_size=(16, 16))
    assert [d["case_id"] for d in test] == ["case_02", "case_05", "case_08", "case_11"]
    assert all(d["image"].shape == (1, 16, 16) and d["image"].min() >= 0 and d["image"].max() <= 1 for d in test)
    assert [d["label"] for d in test] == [0, 1, 0, 1]
    flipped = bundle_data.load_datalist(root, "test", spatial_size=(16, 16), label_map={"0": 1, "1": 0})
    assert [d["label"] for d in flipped] == [1, 0, 1, 0]
    infer = bundle_data.inference_datalist(root, spatial_size=(16, 16))
    assert len(infer) == 12 and all(d["label"] == -1 for d in infer)


def test_folder_datalist_hash_split_and_errors(bundle_data, tmp_path):
    root = _png_folder(tmp_path / "nosplit", split_column=False)
    splits = [[d["case_id"] for d in _safe(bundle_data, root, s)] for s in ("train", "val", "test")]
    assert sorted(sum(splits, [])) == [f"case_{i:02d}" for i in range(12)], "every case lands in exactly one split"
    assert len(splits[0]) >= 4, "about 70% go to train"
    with pytest.raises(FileNotFoundError, match="labels CSV"):
        bundle_data.load_datalist(tmp_path, "train", spatial_size=(8, 8))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bundle_data.load_datalist(tmp_path / "missing", "train")
    npz = tmp_path / "small.npz"
    np.savez(npz, train_images=np.zeros((2, 16, 16), np.uint8), train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(ValueError, match=r"images are \(1, 16, 16\), the network expects \(1, 28, 28\)"):
        bundle_data.load_datalist(npz, "train", spatial_size=(28, 28))
    with pytest.raises(ValueError, match="not a readable .npz"):
        bundle_data.load_datalist(root / "labels.csv", "train")


def _safe(data, root, split):
    try:
        return data.load_datalist(root, split, spatial_size=(8, 8))
    except ValueError:
        return []


# --------------------------------------------------------------------------- real BreastMNIST
@pytest.mark.shared_data
def test_breastmnist_official_splits(shared_data):
    path = shared_data / "breastmnist" / "breastmnist.npz"
    sizes = {s: load_medmnist(path, s, label_map=BREASTMNIST_MALIGNANT_POSITIVE) for s in ("train", "val", "test")}
    assert {k: v.images.shape[0] for k, v in sizes.items()} == {"train": 546, "val": 78, "test": 156}
    assert {k: int(v.labels.sum()) for k, v in sizes.items()} == {"train": 147, "val": 21, "test": 42}, "malignant = 1"


@pytest.mark.shared_data
def test_shipped_model_on_breastmnist_test(shared_data, bundle_root):
    from medrobust.models import load_bundle_network

    net = load_bundle_network(bundle_root)
    s = load_medmnist(shared_data / "breastmnist" / "breastmnist.npz", "test", label_map=BREASTMNIST_MALIGNANT_POSITIVE)
    x, y = torch.from_numpy(s.images), torch.from_numpy(s.labels)
    with torch.no_grad():
        logits = net(x)
    assert roc_auc(logits, y) >= 0.88 and accuracy(logits, y) >= 0.82
    adv = pgd(net, x, y, eps=2 / 255, steps=10, generator=0).x_adv
    with torch.no_grad():
        assert accuracy(net(adv), y) < 0.5, "the natural model is expected to be fragile at 2/255"
