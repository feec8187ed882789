from __future__ import annotations

import numpy as np
import pytest
import torch

from medrobust.reconstruction.fft import fft2c, ifft2c


def _to_np(x: torch.Tensor) -> np.ndarray:
    return x[..., 0].double().numpy() + 1j * x[..., 1].double().numpy()


def _from_np(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([a.real, a.imag], -1).astype(np.float32))


@pytest.mark.parametrize("shape", [(2, 1, 8, 6), (3, 4, 7, 9), (2, 2, 1, 5)])  # even, odd, a length-1 axis
def test_matches_numpy_2d(shape):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    axes = (-2, -1)
    want_k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(a, axes=axes), norm="ortho"), axes=axes)
    want_x = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(a, axes=axes), norm="ortho"), axes=axes)
    np.testing.assert_allclose(_to_np(fft2c(_from_np(a))), want_k, atol=1e-5)
    np.testing.assert_allclose(_to_np(ifft2c(_from_np(a))), want_x, atol=1e-5)


def test_matches_numpy_3d():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 1, 5, 6, 4)) + 1j * rng.standard_normal((2, 1, 5, 6, 4))
    axes = (-3, -2, -1)
    want = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(a, axes=axes), axes=axes, norm="ortho"), axes=axes)
    got = fft2c(_from_np(a), spatial_dims=3)
    np.testing.assert_allclose(_to_np(got), want, atol=1e-5)
    np.testing.assert_allclose(_to_np(ifft2c(got, spatial_dims=3)), a, atol=1e-5)


def test_centred_and_orthonormal():
    x = torch.zeros(2, 1, 8, 8, 2)
    x[..., 0] = 1.0  # a constant image puts all energy at the k-space centre
    k = fft2c(x)
    assert torch.allclose(k[:, :, 4, 4, 0], torch.full((2, 1), 8.0))  # sqrt(64): orthonormal
    assert torch.allclose(k.pow(2).sum(), x.pow(2).sum())
    # non-contiguous input (a permuted view) is accepted
    y = torch.randn(2, 8, 8, 1, 2).permute(0, 3, 1, 2, 4)
    assert torch.allclose(ifft2c(fft2c(y)), y, atol=1e-5)


def test_gradients_flow():
    x = torch.randn(2, 1, 6, 6, 2, requires_grad=True)
    fft2c(x).pow(2).sum().backward()
    assert torch.allclose(x.grad, 2 * x.detach(), atol=1e-5)  # unitary: d||Fx||^2/dx = 2x


@pytest.mark.parametrize("bad, err, match", [
    (torch.randn(2, 4, 4), ValueError, "size 2"),
    (torch.randn(2, 2), ValueError, "too few|size 2|shape"),
    (torch.ones(2, 4, 4, 2, dtype=torch.int64), TypeError, "floating"),
    (np.zeros((2, 4, 4, 2)), TypeError, "torch.Tensor"),
])
def test_bad_input(bad, err, match):
    with pytest.raises(err, match=match):
        fft2c(bad)
