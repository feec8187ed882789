"""FNAF (random-walk features, halo, search, false-negative criterion) and k-space PGD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medrobust.core.attacks import fnaf, kspace_pgd
from medrobust.core.attacks.fnaf import FN_THRESHOLD, draw_features, feature_halo, fnaf_loss, random_walk_blob
from medrobust.core.attacks.base import per_sample_generators


def _face_connected_components(mask: np.ndarray) -> int:
    return ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))[1]


@pytest.mark.parametrize("shape", [(32, 32), (12, 16, 10)])
@pytest.mark.parametrize("size", [1, 10, 57, 100])
def test_blob_size_and_connectivity(shape, size):
    for seed in range(3):
        blob = random_walk_blob(shape, size, generator=torch.Generator().manual_seed(seed))
        assert blob.shape == shape and blob.dtype == torch.bool
        assert int(blob.sum()) == size
        assert _face_connected_components(blob.numpy()) == 1


def test_blob_seeded_start_and_margin():
    a = random_walk_blob((20, 20), 15, generator=torch.Generator().manual_seed(3))
    b = random_walk_blob((20, 20), 15, generator=torch.Generator().manual_seed(3))
    c = random_walk_blob((20, 20), 15, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool(random_walk_blob((9, 9), 1, start=(0, 8))[0, 8])
    full = random_walk_blob((4, 5), 20, generator=torch.Generator().manual_seed(0))
    assert bool(full.all()), "a blob can fill the whole image"
    g = torch.Generator().manual_seed(0)
    starts = [random_walk_blob((100, 100), 1, generator=g, margin=0.2).nonzero()[0] for _ in range(50)]
    assert all(20 <= int(v) < 80 for s in starts for v in s)


def test_blob_errors():
    with pytest.raises(ValueError, match=r"size must be an int in \[1, 16\]"):
        random_walk_blob((4, 4), 17)
    with pytest.raises(ValueError, match="size must be"):
        random_walk_blob((4, 4), 0)
    with pytest.raises(ValueError, match="start must be a pixel inside"):
        random_walk_blob((4, 4), 3, start=(4, 0))
    with pytest.raises(ValueError, match="margin"):
        random_walk_blob((4, 4), 3, margin=0.5)


@pytest.mark.parametrize("spatial", [(24, 24), (10, 12, 14)])
def test_feature_intensity_in_image_range(spatial):
    x = torch.rand(3, 1, *spatial) * torch.tensor([1.0, 100.0, 4.0]).reshape(3, 1, *[1] * len(spatial)) + 2.0
    gens = per_sample_generators(0, 3)
    feats, masks = draw_features(x, gens, size=(10, 30))
    assert masks.shape == (3, 1, *spatial)
    for i in range(3):
        vals = feats[i, 0][masks[i, 0]]
        assert 10 <= vals.numel() <= 30
        assert float(vals.min()) >= float(x[i].min()) and float(vals.max()) <= float(x[i].max())
        assert float(feats[i, 0][~masks[i, 0]].abs().max()) == 0.0
    feats, masks = draw_features(x, per_sample_generators(1, 3), size=5, intensity=(0.5, 0.6))
    vals = feats[masks.expand_as(feats)]
    assert float(vals.min()) >= 0.5 and float(vals.max()) <= 0.6


def test_feature_region_is_respected():
    x = torch.rand(2, 1, 30, 30)
    region = torch.zeros(1, 1, 30, 30, dtype=torch.bool)
    region[..., 20:22, 5:7] = True
    _, masks = draw_features(x, per_sample_generators(0, 2), size=1, region=region)
    assert bool((masks <= region).all())


def test_halo_and_loss():
    m = torch.zeros(2, 1, 7, 7, dtype=torch.bool)
    m[0, 0, 3, 3] = True
    m[1, 0, 0, 0] = True
    h = feature_halo(m, 1.0)
    assert int(h[0].sum()) == 4 and int(h[1].sum()) == 2 and not bool((h & m).any())
    assert int(feature_halo(m, 0).sum()) == 0
    t = torch.ones(2, 1, 7, 7)
    w = m.float()
    assert torch.allclose(fnaf_loss(t * 0.5, t, w), torch.tensor([0.25, 0.25]))
    assert torch.allclose(fnaf_loss(t * 0.5, t, w, kind="l1"), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="kind must be"):
        fnaf_loss(t, t, w, kind="l2")
    with pytest.raises(ValueError, match=r"mask must be \(B, 1, \*spatial\)"):
        feature_halo(torch.zeros(7, 7, dtype=torch.bool))


def _undersample(img: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A test acquisition: centred orthonormal FFT, column mask, IFFT, magnitude."""
    k = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(img, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
    z = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k * keep, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
    return z.abs()


def test_fn_criterion_constructed_case():
    """A model that erases small features -> every feature is a false negative; identity -> none."""
    x = torch.rand(4, 1, 32, 32) * 0.5 + 0.25
    blur = torch.nn.AvgPool2d(5, stride=1, padding=2, count_include_pad=False)
    res = fnaf(blur, x, forward_op=lambda img: img, size=10, restarts=2, generator=0)
    assert res.success.all() and bool((res.info["loss"] >= FN_THRESHOLD).all())
    ident = fnaf(torch.nn.Identity(), x, forward_op=lambda img: img, size=10, restarts=2, generator=0)
    assert not ident.success.any() and float(ident.info["loss"].max()) == 0.0
    assert torch.equal(res.x_adv, x + res.info["feature"])
    a, b = (fnaf(m, x, forward_op=lambda img: img, restarts=1, generator=0) for m in (blur, torch.nn.Identity()))
    assert torch.equal(a.x_adv, b.x_adv), "same seed, same blobs"
    # a fully sampled acquisition keeps the feature; an undersampled one without a model loses it
    full = torch.ones(32)
    ok = fnaf(torch.nn.Identity(), x, forward_op=lambda img: _undersample(img, full), restarts=2)
    assert not ok.success.any()
    keep = torch.zeros(32)
    keep[12:20] = 1  # low frequencies only: small features are smeared out
    lost = fnaf(torch.nn.Identity(), x, forward_op=lambda img: _undersample(img, keep), restarts=2)
    assert lost.success.all()


def test_restarts_keep_the_worst_and_moves_do_not_lower_the_loss():
    x = torch.rand(3, 1, 24, 24, 16)  # 3-D, batch 3
    model = torch.nn.AvgPool3d(3, stride=1, padding=1, count_include_pad=False)
    one = fnaf(model, x, forward_op=lambda img: img, restarts=1, generator=5)
    many = fnaf(model, x, forward_op=lambda img: img, restarts=11, generator=5)
    assert bool((many.info["loss"] >= one.info["loss"] - 1e-12).all())
    assert many.info["forward_calls"] == 11 and many.info["mask"].shape == (3, 1, 24, 24, 16)
    moved = fnaf(model, x, forward_op=lambda img: img, restarts=11, moves=3, generator=5)
    assert bool((moved.info["loss"] >= many.info["loss"] - 1e-12).all())
    assert moved.info["forward_calls"] > 11
    for i in range(3):
        assert int(moved.info["mask"][i].sum()) == 10 and _face_connected_components(moved.info["mask"][i, 0].numpy()) == 1


def test_fnaf_errors():
    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match="restarts must be"):
        fnaf(torch.nn.Identity(), x, forward_op=lambda i: i, restarts=0)
    with pytest.raises(TypeError, match="forward_op must be callable"):
        fnaf(torch.nn.Identity(), x, forward_op=None)
    with pytest.raises(ValueError, match="must return the image shape"):
        fnaf(torch.nn.Identity(), x, forward_op=lambda i: i[..., :8])
    with pytest.raises(ValueError, match="size must be"):
        fnaf(torch.nn.Identity(), x, forward_op=lambda i: i, size=(5, 2))
    with pytest.raises(ValueError, match="region must be"):
        fnaf(torch.nn.Identity(), x, forward_op=lambda i: i, region=torch.ones(2, 16, 16, dtype=torch.bool))


# ----------------------------------------------------------------------------- k-space PGD
def _zero_filled(k: torch.Tensor) -> torch.Tensor:
    c = torch.view_as_complex(k.contiguous())
    img = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(c, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
    return img.abs().pow(2).sum(1, keepdim=True).sqrt()


@pytest.mark.parametrize("rel_eps", [0.01, 0.05])
def test_kspace_pgd_relative_bound_and_sampling_mask(rel_eps):
    torch.manual_seed(0)
    mask = torch.zeros(1, 1, 1, 16, 1)
    mask[..., ::2, :] = 1
    k = torch.randn(3, 2, 16, 16, 2) * mask * torch.tensor([1.0, 10.0, 100.0]).reshape(3, 1, 1, 1, 1)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 1, 3, padding=1))

    def model(kk):
        return net(_zero_filled(kk))

    res = kspace_pgd(model, k, rel_eps=rel_eps, steps=5, sampling_mask=mask, generator=0)
    e = res.x_adv - k
    rel = e.reshape(3, -1).norm(dim=1) / k.reshape(3, -1).norm(dim=1)
    assert bool((rel <= rel_eps * (1 + 1e-4)).all()) and bool((rel > 0.5 * rel_eps).all())
    torch.testing.assert_close(rel, res.info["relative_norm"])
    assert float((e * (1 - mask)).abs().max()) == 0.0, "only measured k-space locations are perturbed"
    assert bool((res.info["loss"] > 0).all()), "the reconstruction moved away from the clean one"


def test_kspace_pgd_errors():
    with pytest.raises(ValueError, match="rel_eps"):
        kspace_pgd(lambda k: k, torch.randn(2, 1, 8, 8, 2), rel_eps=-1.0)
    with pytest.raises(ValueError, match="all zeros"):
        kspace_pgd(lambda k: k, torch.zeros(2, 1, 8, 8, 2))
