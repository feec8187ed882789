"""fastMRI-style NMSE / PSNR / SSIM and masked NMSE against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from medrobust.core.metrics.reconstruction import masked_nmse, nmse, psnr, reconstruction_metrics, ssim


def _volume(seed: int, shape=(3, 20, 24)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = rng.random(shape) * 4.0
    gt[1] *= 0.5  # slices with different maxima: data_range must be the *volume* max
    return gt, gt + rng.normal(0, 0.4, shape)


def _ssim_reference(a: np.ndarray, b: np.ndarray, data_range: float, win: int = 7) -> float:
    """Wang et al. SSIM with a uniform window and sample covariance, valid region (scipy only)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    n = win * win
    f = lambda v: uniform_filter(v, size=win, mode="reflect")  # noqa: E731
    ux, uy = f(a), f(b)
    cov = n / (n - 1)
    vx, vy, vxy = cov * (f(a * a) - ux * ux), cov * (f(b * b) - uy * uy), cov * (f(a * b) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    p = (win - 1) // 2
    return float(s[p:-p, p:-p].mean())


def test_ssim_matches_scipy_reference_with_volume_max():
    gt, pred = _volume(0)
    ref = np.mean([_ssim_reference(gt[i], pred[i], gt.max()) for i in range(gt.shape[0])])
    assert ssim(gt, pred) == pytest.approx(ref, abs=1e-5)
    assert ssim(torch.from_numpy(gt), torch.from_numpy(pred)) == pytest.approx(ref, abs=1e-5)
    assert ssim(gt, gt) == pytest.approx(1.0, abs=1e-6)


def test_against_scikit_image_as_fastmri_calls_it():
    metrics = pytest.importorskip("skimage.metrics")
    gt, pred = _volume(1)
    ref_ssim = np.mean([metrics.structural_similarity(gt[i], pred[i], data_range=gt.max()) for i in range(3)])
    assert ssim(gt, pred) == pytest.approx(ref_ssim, abs=1e-5)
    assert psnr(gt, pred) == pytest.approx(metrics.peak_signal_noise_ratio(gt, pred, data_range=gt.max()), abs=1e-9)
    one = gt[0]
    assert ssim(one, pred[0]) == pytest.approx(metrics.structural_similarity(one, pred[0], data_range=one.max()), abs=1e-5)


def test_nmse_psnr_formulas():
    gt, pred = _volume(2)
    assert nmse(gt, pred) == pytest.approx(np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2, rel=1e-12)
    mse = np.mean((gt - pred) ** 2)
    assert psnr(gt, pred) == pytest.approx(10 * np.log10(gt.max() ** 2 / mse), rel=1e-9)
    assert psnr(gt, pred, data_range=1.0) == pytest.approx(10 * np.log10(1.0 / mse), rel=1e-9)
    assert psnr(gt, gt) == float("inf")
    m = reconstruction_metrics(gt, pred)
    assert set(m) == {"nmse", "psnr", "ssim"}


def test_masked_nmse_small_feature():
    gt, pred = _volume(3)
    mask = np.zeros_like(gt, dtype=bool)
    mask[1, 5:8, 6:9] = True  # a 9-pixel "feature"
    ref = np.sum((gt[mask] - pred[mask]) ** 2) / np.sum(gt[mask] ** 2)
    assert masked_nmse(gt, pred, mask) == pytest.approx(ref, rel=1e-12)
    # errors outside the mask do not count; a soft mask weights the voxels
    pred2 = pred.copy()
    pred2[~mask] += 100.0
    assert masked_nmse(gt, pred2, mask) == pytest.approx(ref, rel=1e-12)
    w = mask * 0.5
    assert masked_nmse(gt, pred, w) == pytest.approx(ref, rel=1e-12)  # uniform weights cancel
    # FNAF's false-negative threshold: a feature reconstructed 10% too dark has masked NMSE 0.01
    assert masked_nmse(gt, gt * np.where(mask, 0.9, 1.0), mask) == pytest.approx(0.01, rel=1e-9)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        nmse(np.ones((2, 8, 8)), np.ones((2, 8, 9)))
    with pytest.raises(ValueError, match="all zeros"):
        nmse(np.zeros((8, 8)), np.ones((8, 8)))
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(np.ones((4, 5)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="inside the mask"):
        masked_nmse(np.ones((8, 8)), np.ones((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="volume"):
        psnr(np.ones((2, 2, 8, 8)), np.ones((2, 2, 8, 8)))
