"""Feature-purification diagnostic on first-layer filters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.core.metrics.purification import first_conv_weight, plot_filters, purification_decomposition


def test_known_decompositions():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 2, 3, 3, generator=g)
    r = purification_decomposition(2.5 * w, w)
    assert torch.allclose(r.beta, torch.full((6,), 2.5)) and float(r.residual_ratio.max()) < 1e-6
    assert torch.allclose(r.relative_change, torch.full((6,), 0.6))  # ||2.5w - w|| / ||2.5w||
    # an orthogonal clean filter: beta 0, residual ratio 1
    a = torch.zeros(1, 1, 2, 2)
    a[0, 0, 0, 0] = 1.0
    b = torch.zeros(1, 1, 2, 2)
    b[0, 0, 1, 1] = 3.0
    r = purification_decomposition(a, b)
    assert float(r.beta[0]) == 0.0 and float(r.residual_ratio[0]) == pytest.approx(1.0)
    # general case: ratio^2 + cos^2 = 1 and v is orthogonal to w'
    wc, wr = torch.randn(8, 1, 5, 5, generator=g), torch.randn(8, 1, 5, 5, generator=g)
    r = purification_decomposition(wc, wr, init=wr)
    assert torch.allclose(r.residual_ratio**2 + r.cosine**2, torch.ones(8), atol=1e-5)
    v = wc.flatten(1) - r.beta[:, None] * wr.flatten(1)
    assert torch.allclose((v * wr.flatten(1)).sum(1), torch.zeros(8), atol=1e-4)
    assert torch.allclose(r.cos_init_robust, torch.ones(8), atol=1e-6)
    assert set(r.summary()) >= {"residual_ratio_mean", "abs_cos_init_clean_mean"} and len(r.to_frame()) == 8


@pytest.mark.parametrize("conv", [nn.Conv2d, nn.Conv3d])
def test_models_and_plot(conv, tmp_path):
    make = lambda: nn.Sequential(conv(1, 5, 3), nn.ReLU(), conv(5, 4, 3))  # noqa: E731
    m1, m2 = make(), make()
    assert torch.equal(first_conv_weight(m1), m1[0].weight)
    r = purification_decomposition(m1, m2)
    assert r.residual_ratio.shape == (5,)
    assert plot_filters(m1, m2, tmp_path / "f.png", result=r).stat().st_size > 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="no nn.Conv"):
        first_conv_weight(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="differ in shape"):
        purification_decomposition(torch.zeros(3, 1, 3, 3), torch.zeros(4, 1, 3, 3))
