"""Captum attributions (IG, DeepLIFT-SHAP, Occlusion), the Gini index and Fisher maps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.core.metrics.attribution import (
    deep_lift_shap,
    fisher_sensitivity,
    gini_index,
    integrated_gradients,
    occlusion,
)


def _linear(spatial: tuple[int, ...], out: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    n = int(torch.tensor(spatial).prod())
    lin = nn.Linear(n, out)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out, n, generator=torch.Generator().manual_seed(seed)))
    return nn.Sequential(nn.Flatten(), lin), lin.weight.detach()


@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)])
def test_ig_on_linear_model_is_input_times_weight(spatial):
    net, w = _linear(spatial, 3)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, *spatial, generator=g)
    t = torch.tensor([0, 1, 2, 1])
    a = integrated_gradients(net, x, t, steps=20)
    expected = x * w[t].reshape(4, 1, *spatial)
    assert torch.allclose(a, expected, atol=1e-5)
    base = torch.rand(1, 1, *spatial, generator=g)  # a non-zero baseline: (x - b) * w
    a = integrated_gradients(net, x, t, baseline=base, steps=7, internal_batch_size=5)
    assert torch.allclose(a, (x - base) * w[t].reshape(4, 1, *spatial), atol=1e-5)


def test_single_logit_model_class_scores():
    net, w = _linear((4, 4), 1)
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    wi = w.reshape(1, 1, 4, 4)
    assert torch.allclose(integrated_gradients(net, x, 1, steps=5), x * wi, atol=1e-5)
    assert torch.allclose(integrated_gradients(net, x, 0, steps=5), -x * wi, atol=1e-5)


def test_ig_completeness_and_chunking_3d(model3d, data3d):
    x = data3d[0][:3]
    a = integrated_gradients(model3d, x, steps=64)
    b = integrated_gradients(model3d, x, steps=64, internal_batch_size=5)
    assert torch.allclose(a, b, atol=1e-5)  # chunking does not change the result
    with torch.no_grad():
        out = model3d(x)
        t = out.argmax(1)
        gap = out.gather(1, t[:, None])[:, 0] - model3d(torch.zeros_like(x)).gather(1, t[:, None])[:, 0]
    assert torch.allclose(a.flatten(1).sum(1), gap, atol=2e-2 * float(gap.abs().max()) + 1e-4)


def test_deep_lift_shap_linear_is_mean_over_baselines():
    net, w = _linear((4, 5), 2)
    g = torch.Generator().manual_seed(3)
    x, refs = torch.rand(3, 1, 4, 5, generator=g), torch.rand(6, 1, 4, 5, generator=g)
    a = deep_lift_shap(net, x, torch.tensor([1, 0, 1]), baselines=refs)
    expected = (x - refs.mean(0, keepdim=True)) * w[torch.tensor([1, 0, 1])].reshape(3, 1, 4, 5)
    assert torch.allclose(a, expected, atol=1e-5)


def test_deep_lift_shap_runs_on_cnn_2d(model2d, data2d):
    x = data2d[0]
    a = deep_lift_shap(model2d, x[:4], baselines=x[10:18])
    assert a.shape == x[:4].shape and torch.isfinite(a).all() and a.abs().sum() > 0


def test_occlusion_window_one_on_linear_model():
    net, w = _linear((4, 4), 2)
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    a = occlusion(net, x, torch.tensor([0, 1]), window=1, stride=1, baseline=0.0)
    assert torch.allclose(a, x * w[torch.tensor([0, 1])].reshape(2, 1, 4, 4), atol=1e-5)


def test_occlusion_3d_shape(model3d, data3d):
    a = occlusion(model3d, data3d[0][:2], window=4)
    assert a.shape == data3d[0][:2].shape and a.abs().sum() > 0


def test_gini_index_known_values():
    n = 784
    one_hot = torch.zeros(2, 1, 28, 28)
    one_hot[0, 0, 3, 4] = 1.0
    one_hot[1, 0, 20, 1] = -5.0  # sign and scale do not matter
    g = gini_index(one_hot)
    assert torch.allclose(g, torch.full((2,), (n - 1) / n, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(gini_index(torch.full((3, 50), 0.7)), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    v = torch.rand(1, 100, generator=torch.Generator().manual_seed(5))
    perm = v[:, torch.randperm(100, generator=torch.Generator().manual_seed(6))]
    assert torch.allclose(gini_index(v), gini_index(perm)) and torch.allclose(gini_index(v), gini_index(3 * v))
    # uniform[0, 1] values have Gini 1/3 in expectation
    big = torch.rand(1, 20000, generator=torch.Generator().manual_seed(7))
    assert float(gini_index(big)[0]) == pytest.approx(1 / 3, abs=0.01)


def test_fisher_sensitivity_wraps_the_one_implementation(model2d, data2d):
    from medrobust.core.metrics.fisher import image_fisher_information

    x, y = data2d[0][:5], data2d[1][:5]
    score, fmap = fisher_sensitivity(model2d, x, y, batch_size=2)
    assert torch.allclose(score, image_fisher_information(model2d, x, y), rtol=1e-5, atol=1e-8)
    assert fmap.shape == x.shape and bool((fmap >= 0).all())
    # two classes: rank-one Fisher metric, so every pixel (with a gradient) carries (1 - p_y) / p_y
    with torch.no_grad():
        p = torch.softmax(model2d(x), 1).gather(1, y[:, None])[:, 0]
    nz = fmap.flatten(1) > 0
    ratio = ((1 - p) / p)[:, None].expand_as(nz)
    assert torch.allclose(fmap.flatten(1)[nz], ratio[nz], rtol=1e-3)


def test_bad_inputs(model2d, data2d):
    x = data2d[0][:2]
    with pytest.raises(ValueError, match="at least 2"):
        deep_lift_shap(model2d, x, baselines=x[:1])
    with pytest.raises(ValueError, match="baselines must be"):
        deep_lift_shap(model2d, x, baselines=torch.zeros(3, 1, 5, 5))
    with pytest.raises(ValueError, match="target must hold one .* per sample"):
        integrated_gradients(model2d, x, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="window"):
        occlusion(model2d, x, window=(2, 2, 2))


def test_ig_default_chunks_volumes():
    # a 64^3 volume: the default chunk holds ~2M voxels, i.e. 8 interpolated volumes per forward
    net = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(2, 2))
    seen = []
    net.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    x = torch.rand(2, 1, 64, 64, 64, generator=torch.Generator().manual_seed(0))
    a = integrated_gradients(net, x, 1, steps=10)
    assert a.shape == x.shape and max(seen) <= 8 and sum(seen) >= 20
