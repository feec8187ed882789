"""Occlusion baseline-sensitivity study: baselines, rank correlation, MoRF/LeRF."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medrobust.core.metrics.saliency import (
    deletion_scores,
    occlusion_baseline_study,
    occlusion_baselines,
    plot_baseline_study,
    rank_correlation,
)


def test_baselines(data2d):
    x = data2d[0][:3]
    b = occlusion_baselines(x, bounds=(0.0, 1.0), generator=3)
    assert set(b) == {"black", "mean", "blur", "noise"}
    assert torch.equal(b["black"], torch.zeros_like(x))
    assert torch.allclose(b["mean"], x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    assert b["blur"].shape == x.shape and b["blur"].std() < x.std()
    assert b["noise"].min() >= 0 and b["noise"].max() <= 1
    assert torch.equal(b["noise"], occlusion_baselines(x, kinds=["noise"], generator=3)["noise"])
    assert not torch.equal(b["noise"], occlusion_baselines(x, kinds=["noise"], generator=4)["noise"])
    with pytest.raises(ValueError, match="baseline kind"):
        occlusion_baselines(x, kinds=["grey"])


def test_rank_correlation():
    a = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(rank_correlation(a, 2 * a + 1), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(rank_correlation(a, -a), -torch.ones(2, dtype=torch.float64))
    assert math.isnan(float(rank_correlation(torch.ones(1, 4), torch.rand(1, 4))[0]))


def test_morf_lerf_rank_a_true_saliency_correctly():
    # linear 2-class model on 16 pixels, positive weights: class-1 score drops fastest when the
    # largest contributions x * w go first
    lin = nn.Linear(16, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1] = torch.linspace(0.1, 3.0, 16)
        lin.bias.zero_()
    net = nn.Sequential(nn.Flatten(), lin)
    x = torch.full((1, 1, 4, 4), 1.0)
    good = (x * lin.weight[1].reshape(1, 1, 4, 4)).detach()
    s_good = deletion_scores(net, x, 1, good, replacement=0.0, steps=16)
    s_bad = deletion_scores(net, x, 1, -good, replacement=0.0, steps=16)
    assert s_good["morf"][0] < s_bad["morf"][0] and s_good["lerf"][0] > s_bad["lerf"][0]
    assert s_good["morf"][0] < s_good["lerf"][0]
    assert s_good["curves_morf"].shape == (1, 17)
    # the end points: nothing removed = p(x), everything removed = p(baseline) = 0.5
    assert float(s_good["curves_morf"][0, -1]) == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("which", ["2d", "3d"])
def test_study_shapes_and_plot(which, model2d, data2d, model3d, data3d, tmp_path):
    model, (x, _) = (model2d, data2d) if which == "2d" else (model3d, data3d)
    x = x[:2]
    st = occlusion_baseline_study(model, x, window=4, steps=4, generator=0)
    k = len(st.kinds)
    assert st.spearman.shape == (2, k, k)
    assert torch.allclose(torch.diagonal(st.spearman, dim1=1, dim2=2), torch.ones(2, k, dtype=torch.float64))
    assert torch.allclose(st.spearman, st.spearman.transpose(1, 2), equal_nan=True)
    assert len(st.scores) == 2 * k * k and st.score_table().shape == (k * k, 2)
    assert st.spearman_table().shape == (k, k)
    assert plot_baseline_study(st, x, tmp_path / "b.png").stat().st_size > 0
