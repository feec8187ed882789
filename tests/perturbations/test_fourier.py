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
    fourier_padding,
    gaussian_mask,
    highpass_radius,
    lowpass_radius,
)
from medrobust.perturbations.registry import PerturbationContext


def reference_filter(img: np.ndarray, low_pass: bool, radius: float, rescale: bool = True, pad: bool = True) -> np.ndarray:
    """METHODS.md B2 literally: F = fftshift(fftn)/sqrt(N), centred Gaussian mask, inverse, min-max;
    with ``pad``, on the image reflect-padded (numpy) by the documented widths, radius scaled per axis."""
    shape = img.shape
    widths = fourier_padding(shape, radius) if pad else tuple((0, 0) for _ in shape)
    work = np.pad(img, widths, mode="reflect")
    radii = [radius * m / n for m, n in zip(work.shape, shape)]
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in work.shape], indexing="ij")
    mask = np.exp(-sum(g.astype(float) ** 2 / (2 * r**2) for g, r in zip(grids, radii)))
    if not low_pass:
        mask = 1 - mask
    scale = np.sqrt(work.size)
    freq = np.fft.fftshift(np.fft.fftn(work)) / scale
    out = np.real(np.fft.ifftn(np.fft.ifftshift(freq * mask))) * scale
    out = out[tuple(slice(a, a + n) for (a, _), n in zip(widths, shape))]
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
    # pad="wrap" is the circular filter of METHODS.md B2 as written
    raw = fourier_gaussian_filter(x, lowpass_radius(severity), pad="wrap", bounds=(0.0, 1.0)).numpy()
    np.testing.assert_allclose(raw[0, 0], reference_filter(imgs[0, 0], True, lowpass_radius(severity), pad=False), atol=1e-10)


@pytest.mark.parametrize("severity", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("shape", [(64, 256), (24, 256, 12)])  # large enough that the mask is ~0 at Nyquist (no ringing)
def test_far_border_unchanged_no_wrap_around(shape, severity) -> None:
    """A bright 'chest wall' along the first column must not leak into the dark far border."""
    x = torch.zeros(2, 1, *shape, dtype=torch.float64)
    x[:, :, :, : shape[1] // 4] = 1.0
    ctx = PerturbationContext.from_seeds([0, 1])
    y = fourier_lowpass(x, severity, ctx)
    far = y[:, :, :, -3:]
    assert float(far.abs().max()) < 0.01, float(far.abs().max())
    raw = fourier_gaussian_filter(x, lowpass_radius(severity))  # without rescaling too
    assert float(raw[:, :, :, -3:].abs().max()) < 0.01
    circular = fourier_gaussian_filter(x, lowpass_radius(severity), pad="wrap")
    assert float(circular[:, :, :, -1:].max()) > 0.05  # the test can fail: unpadded filtering leaks


def test_lowpass_keeps_mean_and_removes_high_frequencies() -> None:
    x = torch.from_numpy(_images((64, 64), n=3, seed=1))
    r = 6.0
    y = fourier_gaussian_filter(x, r, pad="wrap")  # raw, not rescaled, circular: the spectrum is the mask's
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


@pytest.mark.parametrize("pad, mode", [("wrap", "wrap"), ("reflect", "mirror")])
def test_severity_is_blur_sigma_per_256_pixels(pad, mode) -> None:
    """Low-pass at severity s on an N-pixel image = Gaussian blur with sigma s * N / 256 (circular
    without padding; with reflect padding, ndimage's "mirror" boundary, the same reflection)."""
    img = np.random.default_rng(3).random((128, 128))
    s = 4.0
    y = fourier_gaussian_filter(torch.from_numpy(img)[None, None], lowpass_radius(s), pad=pad)[0, 0].numpy()
    blurred = ndimage.gaussian_filter(img, sigma=s * 128 / 256, mode=mode, truncate=8)
    assert np.abs(y - blurred).max() < 0.01 * np.ptp(img)
    assert lowpass_radius(4.0) == pytest.approx(FOURIER_R0 / 4) and abs(lowpass_radius(4.0) - 10.19) < 0.01


def test_bad_radius_and_pad() -> None:
    with pytest.raises(ValueError, match="radius"):
        gaussian_mask((8, 8), 0.0)
    with pytest.raises(ValueError, match="pad should be"):
        fourier_gaussian_filter(torch.rand(2, 1, 8, 8), 2.0, pad="zeros")


def test_padding_widths_cover_three_sigma_and_stay_below_the_axis() -> None:
    for n in (7, 64, 3328):
        for r in (0.5, 2.0, 10.0, 40.0):
            (a, b), = fourier_padding((n,), r)
            assert a <= b <= n - 1 and (a >= 3 * n / (2 * np.pi * r) or a == n - 1)


@pytest.mark.parametrize("shape", [(3, 1, 40, 56), (2, 1, 12, 16, 10)])
@pytest.mark.parametrize("family", ["fourier_lowpass", "fourier_highpass", "fourier_noise"])
def test_whole_batch_fft_path_equals_per_sample_path(monkeypatch, shape, family):
    """The batched FFT path (taken on GPUs) gives the per-sample CPU path's result, seed for seed."""
    import medrobust.perturbations.natural as natural
    from medrobust.perturbations.registry import get_family

    x = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    fam = get_family(family)
    sev = fam.severities[len(fam.severities) // 2]
    ctx = lambda: PerturbationContext.from_seeds(list(range(shape[0])), bounds=(0.0, 1.0))  # noqa: E731
    per_sample = fam.apply(x.clone(), sev, ctx())
    natural._SPECTRUM_CACHE.clear()
    monkeypatch.setattr(natural, "_fft_per_sample", lambda device: False)
    batched = fam.apply(x.clone(), sev, ctx())
    natural._SPECTRUM_CACHE.clear()
    torch.testing.assert_close(batched, per_sample, atol=1e-5, rtol=0)
