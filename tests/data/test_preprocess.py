"""Normalisation into the perturbation space and the (differentiable) map to the model input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrobust.data.preprocess import adapt_channels, match_spatial_dims, normalise_image, to_model_input


def test_normalise_min_max_and_errors() -> None:
    x = normalise_image(np.array([[[100.0, 300.0], [200.0, 500.0]]], dtype=np.float32))
    torch.testing.assert_close(x, torch.tensor([[[0.0, 0.5], [0.25, 1.0]]]))
    with pytest.raises(ValueError, match="constant image"):
        normalise_image(np.full((1, 4, 4), 7.0))
    with pytest.raises(ValueError, match="non-finite"):
        normalise_image(np.array([[[0.0, np.inf]]]))


def test_spatial_dims_and_channels() -> None:
    assert match_spatial_dims(torch.zeros(1, 8, 6, 1), 2).shape == (1, 8, 6)
    with pytest.raises(ValueError, match="3 spatial dims, the model takes 2"):
        match_spatial_dims(torch.zeros(1, 8, 6, 4), 2)
    rgb = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(adapt_channels(rgb, 1), rgb.mean(1, keepdim=True))
    assert adapt_channels(torch.rand(2, 1, 5, 5), 3).shape == (2, 3, 5, 5)
    with pytest.raises(ValueError, match="2 channels"):
        adapt_channels(torch.rand(1, 2, 5, 5), 3)


@pytest.mark.parametrize("native, target", [((1, 64, 48), (32, 24)), ((1, 20, 18, 14), (10, 9, 7))])
def test_to_model_input_is_differentiable(native, target) -> None:
    x = torch.rand(2, *native, requires_grad=True)
    y = to_model_input(x, target, in_channels=1)
    assert y.shape == (2, 1, *target)
    y.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    # a constant image stays constant (antialiasing weights sum to one)
    flat = to_model_input(torch.full((1, *native), 0.3), target, in_channels=1)
    torch.testing.assert_close(flat, torch.full_like(flat, 0.3), atol=1e-5, rtol=0)
