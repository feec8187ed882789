from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medrobust.reconstruction.fft import fft2c, ifft2c
from medrobust.reconstruction.masks import undersampling_mask
from medrobust.reconstruction.simulation import (
    coil_sensitivities,
    normalize_magnitude,
    rss,
    simulate_kspace,
    smooth_phase,
    zero_filled,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape, coils", [((16, 12), 1), ((16, 12), 4), ((24, 24), 8), ((8, 10, 6), 12), ((8, 10, 6), 3)])
def test_sensitivities_normalised(shape, coils):
    s = coil_sensitivities(shape, coils)
    assert s.shape == (coils, *shape, 2)
    assert torch.allclose(s.pow(2).sum(dim=(0, -1)), torch.ones(shape), atol=1e-5)
    if coils > 1:  # coils differ and each is brightest near its own side
        assert not torch.allclose(s[0], s[1])


def test_sensitivities_birdcage_values():
    # 2 coils at angles 0 and pi on a circle of radius 1.5: the left/right columns swap roles
    s = coil_sensitivities((9, 9), 2)
    mag = s.pow(2).sum(-1).sqrt()
    assert mag[0, 4, 8] > mag[0, 4, 0] and mag[1, 4, 0] > mag[1, 4, 8]


def test_smooth_phase_seeded_and_smooth():
    a = smooth_phase((32, 32), generator=_gen(1))
    b = smooth_phase((32, 32), generator=_gen(1))
    c = smooth_phase((32, 32), generator=_gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert math.isclose(float(a.abs().max()), math.pi, rel_tol=1e-5)
    # low order: neighbouring pixels differ little (a quadratic over [-1, 1] at 32 px)
    assert float((a[1:] - a[:-1]).abs().max()) < 0.6 and float((a[:, 1:] - a[:, :-1]).abs().max()) < 0.6
    assert torch.equal(smooth_phase((4, 5), order=0, generator=_gen(0)), torch.full((4, 5), float(smooth_phase((4, 5), order=0, generator=_gen(0))[0, 0])))
    assert smooth_phase((4, 5, 3), generator=_gen(0)).shape == (4, 5, 3)


@pytest.mark.parametrize("coils", [1, 4])
@pytest.mark.parametrize("spatial", [(16, 12), (8, 6, 4)])
def test_fully_sampled_round_trip(coils, spatial):
    mag = torch.rand(2, 1, *spatial, generator=_gen(0))
    k, img = simulate_kspace(mag, num_coils=coils, generator=_gen(3))
    sd = len(spatial)
    assert k.shape == (2, coils, *spatial, 2) and img.shape == (2, 1, *spatial, 2)
    assert torch.allclose(img.pow(2).sum(-1).sqrt(), mag, atol=1e-5)
    # FFT round trip: the coil images are S_c * image
    maps = coil_sensitivities(spatial, coils)
    coil_img = ifft2c(k, spatial_dims=sd)
    expect = torch.stack([img[..., 0] * maps[..., 0] - img[..., 1] * maps[..., 1],
                          img[..., 0] * maps[..., 1] + img[..., 1] * maps[..., 0]], -1)
    assert torch.allclose(coil_img, expect, atol=1e-5)
    assert torch.allclose(fft2c(coil_img, spatial_dims=sd), k, atol=1e-5)
    # zero-filled of fully sampled k-space is the magnitude (single- and multi-coil)
    assert torch.allclose(zero_filled(k, spatial_dims=sd), mag, atol=1e-5)


def test_single_coil_without_phase_is_plain_fft():
    mag = torch.rand(2, 1, 8, 8, generator=_gen(0))
    k, _ = simulate_kspace(mag, phase=False)
    want = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(mag[:, 0].double().numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(k[:, 0, ..., 0].numpy() + 1j * k[:, 0, ..., 1].numpy(), want, atol=1e-5)


def test_seeded_and_noise():
    mag = torch.rand(3, 1, 12, 12, generator=_gen(0))
    a, _ = simulate_kspace(mag, num_coils=2, noise_std=0.01, generator=_gen(5))
    b, _ = simulate_kspace(mag, num_coils=2, noise_std=0.01, generator=_gen(5))
    clean, _ = simulate_kspace(mag, num_coils=2, generator=_gen(5))
    assert torch.equal(a, b)
    assert 0.008 < float((a - clean).std()) < 0.012
    # items in a batch get different phases
    _, img = simulate_kspace(mag, generator=_gen(1))
    ph = torch.atan2(img[..., 1], img[..., 0])
    assert not torch.allclose(ph[0], ph[1])


def test_undersampled_zero_filled_differs_and_grad_is_finite():
    mag = torch.zeros(2, 1, 32, 32)
    mag[:, :, 8:24, 10:20] = 1.0
    k, _ = simulate_kspace(mag, num_coils=4, generator=_gen(0))
    m = undersampling_mask(32, acceleration=4, generator=_gen(0))
    zf = zero_filled(k, m)
    assert zf.shape == (2, 1, 32, 32)
    err = float((zf - mag).norm() / mag.norm())
    assert 0.05 < err < 1.0
    x = mag.clone().requires_grad_(True)
    kk, _ = simulate_kspace(x, phase=False)
    zero_filled(kk).sum().backward()  # exact zeros in the background
    assert torch.isfinite(x.grad).all()


def test_rss_matches_monai():
    from monai.apps.reconstruction.complex_utils import complex_abs
    from monai.apps.reconstruction.mri_utils import root_sum_of_squares

    x = torch.randn(2, 5, 6, 7, 2, generator=_gen(0))
    assert torch.allclose(rss(x)[:, 0], root_sum_of_squares(complex_abs(x), spatial_dim=1), atol=1e-6)
    r = torch.rand(2, 3, 4, 4)
    assert torch.allclose(rss(r, is_complex=False)[:, 0], root_sum_of_squares(r, spatial_dim=1))


@pytest.mark.parametrize("call, err, match", [
    (lambda: simulate_kspace(torch.rand(2, 2, 8, 8)), ValueError, "B, 1"),
    (lambda: simulate_kspace(torch.full((2, 1, 4, 4), float("nan"))), ValueError, "NaN"),
    (lambda: simulate_kspace(torch.ones(2, 1, 4, 4, dtype=torch.int32)), TypeError, "floating"),
    (lambda: simulate_kspace(torch.rand(2, 1, 4, 4), noise_std=-1), ValueError, "noise_std"),
    (lambda: coil_sensitivities((8, 8), 0), ValueError, "num_coils"),
    (lambda: coil_sensitivities((8,), 2), ValueError, "shape"),
    (lambda: coil_sensitivities((8, 8), 2, radius=0.5), ValueError, "radius"),
    (lambda: smooth_phase((8, 8), order=-1), ValueError, "order"),
    (lambda: smooth_phase((8, 8), generator=3), TypeError, "generator"),
    (lambda: zero_filled(torch.rand(2, 8, 8, 2)), ValueError, "kspace"),
    (lambda: rss(torch.rand(2, 3, 4, 4)), ValueError, "size 2"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_normalize_magnitude():
    v = torch.arange(1000.0).reshape(10, 10, 10)
    v[0, 0, 0] = 1e6  # one outlier does not set the scale
    out = normalize_magnitude(v)
    assert type(out) is torch.Tensor and out.dtype == torch.float32
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert 0.49 < float(out.flatten()[500]) < 0.51
    assert float((out == 1.0).float().mean()) <= 0.006  # only the top 0.5 % is clipped
    for bad, match in ((torch.full((4, 4), 3.0), "constant"), (torch.tensor([1.0, float("inf")]), "NaN")):
        with pytest.raises(ValueError, match=match):
            normalize_magnitude(bad)
    with pytest.raises(ValueError, match="upper_percentile"):
        normalize_magnitude(v, upper_percentile=20)
