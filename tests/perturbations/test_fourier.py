"""The Gaussian Fourier filters against an independent numpy implementation of METHODS.md B2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medrobust.perturbations.natural import (
    FOURIER_R0,
    fourier_gaussian_filter,
    fourier_highpass,
    fourier_lowpass,
    gaussian_mask,
    highpass_radius,
    lowpass_radius,
)
from medrobust.perturbations.registry import PerturbationContext


def reference_filter(img: np.ndarray, low_pass: bool, radius: float, rescale: bool = True) -> np.ndarray:
    """METHODS.md B2 literally: F = fftshift(fftn)/sqrt(N), centred Gaussian mask, inverse, min-max."""
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in img.shape], indexing="ij")
    d2 = sum(g.astype(float) ** 2 for g in grids)
    mask = np.exp(-d2 / (2 * radius**2))
    if not low_pass:
        mask = 1 - mask
    scale = np.sqrt(img.size)
    freq = np.fft.fftshift(np.fft.fftn(img)) / scale
    out = np.real(np.fft.ifftn(np.fft.ifftshift(freq * mask))) * scale
    if rescale:
        out = (out - out.min()) / (out.max() - out.min())
    return out


def _images(shape, n=2, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, *shape))


@pytest.mark.parametrize("shape", [(33, 48), (40, 27), (12, 15, 10), (16, 16, 8)])
@pytest.mark.parametrize("severity", [0.33, 1.0, 4.0])
def test_matches_numpy_reference(shape, severity) -> None:
    imgs = _images(shape)
    ctx = PerturbationContext.from_seeds([0, 1])
    x = torch.from_numpy(imgs)  # float64: tight comparison
    lo = fourier_lowpass(x, severity, ctx).numpy()
    hi = fourier_highpass(x, severity, ctx).numpy()
    for b in range(len(imgs)):
        np.testing.assert_allclose(lo[b, 0], reference_filter(imgs[b, 0], True, lowpass_radius(severity)), atol=1e-10)
        np.testing.assert_allclose(hi[b, 0], reference_filter(imgs[b, 0], False, highpass_radius(severity)), atol=1e-10)
    # float32 stays close to the float64 reference
    lo32 = fourier_lowpass(x.float(), severity, ctx).numpy()
    np.testing.assert_allclose(lo32, lo, atol=2e-5)


def test_lowpass_keeps_mean_and_removes_high_frequencies() -> None:
    x = torch.from_numpy(_images((64, 64), n=3, seed=1))
    r = 6.0
    y = fourier_gaussian_filter(x, r)  # raw, not rescaled
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-12, rtol=0)
    k = np.fft.fftfreq(64) * 64
    d = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    ex = np.abs(np.fft.fft2(x.numpy()[:, 0])) ** 2
    ey = np.abs(np.fft.fft2(y.numpy()[:, 0])) ** 2
    high, low = d > 2 * r, (d < r / 4) & (d > 0)
    assert ey[:, high].sum() / ex[:, high].sum() < np.exp(-4)  # mask^2 <= exp(-4) beyond 2r
    assert ey[:, low].sum() / ex[:, low].sum() > 0.9


@pytest.mark.parametrize("severity", [0.17, 0.5, 2.0])
def test_highpass_is_the_complement(severity) -> None:
    x = torch.from_numpy(_images((30, 41), seed=2))
    r = highpass_radius(severity)
    assert r == pytest.approx(lowpass_radius(4.0 / severity))
    total = fourier_gaussian_filter(x, r) + fourier_gaussian_filter(x, r, high_pass=True)
    torch.testing.assert_close(total, x, atol=1e-12, rtol=0)
    m = gaussian_mask((30, 41), r, centred=True).double()
    mh = gaussian_mask((30, 41), r, high_pass=True, centred=True).double()
    torch.testing.assert_close(m + mh, torch.ones_like(m))
    assert float(m[15, 20]) == 1.0  # the spectrum centre (N // 2) is untouched by the low-pass


def test_severity_is_blur_sigma_per_256_pixels() -> None:
    """Low-pass at severity s on an N-pixel periodic image = Gaussian blur with sigma s * N / 256."""
    img = np.random.default_rng(3).random((128, 128))
    s = 4.0
    y = fourier_gaussian_filter(torch.from_numpy(img)[None, None], lowpass_radius(s))[0, 0].numpy()
    blurred = ndimage.gaussian_filter(img, sigma=s * 128 / 256, mode="wrap", truncate=8)
    assert np.abs(y - blurred).max() < 0.01 * np.ptp(img)
    assert lowpass_radius(4.0) == pytest.approx(FOURIER_R0 / 4) and abs(lowpass_radius(4.0) - 10.19) < 0.01


def test_bad_radius() -> None:
    with pytest.raises(ValueError, match="radius"):
        gaussian_mask((8, 8), 0.0)
