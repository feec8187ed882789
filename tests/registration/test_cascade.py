"""The image-only cascade: MR gland segmenter -> mask-input registration network, as one 2-channel module."""

from __future__ import annotations

import pytest
import torch

from medrobust.registration.cascade import SegmentThenRegister
from medrobust.registration.networks import GlobalLocalNet
from medrobust.registration.segmenter import gland_segmenter

SIZE = (16, 16, 16)


def _cascade(mask_mode: str = "hard", seed: int = 0) -> SegmentThenRegister:
    torch.manual_seed(seed)  # test-side initialisation
    reg = GlobalLocalNet(image_size=SIZE, num_channel_initial=2, global_depth=2, extract_levels=(0, 1, 2), in_channels=3)
    return SegmentThenRegister(gland_segmenter(channels=(4, 8)), reg, mask_mode=mask_mode)


@pytest.mark.parametrize("mask_mode", ["hard", "soft"])
def test_two_image_channels_in_a_ddf_out_and_gradients_reach_both_networks(mask_mode):
    net = _cascade(mask_mode)
    assert net.in_channels == 2
    x = torch.rand(2, 2, *SIZE, generator=torch.Generator().manual_seed(1))
    ddf = net(x)
    assert ddf.shape == (2, 3, *SIZE) and net.global_ddf(x).shape == (2, 3, *SIZE)
    ddf.square().mean().backward()
    for part in (net.segmenter, net.registration):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0, part  # hard masks pass a straight-through gradient


def test_the_registration_network_sees_moving_image_predicted_mask_and_fixed_image():
    net = _cascade("hard").eval()
    x = torch.rand(2, 2, *SIZE, generator=torch.Generator().manual_seed(2))
    inp = net.registration_input(x)
    torch.testing.assert_close(inp[:, 0], x[:, 0])
    torch.testing.assert_close(inp[:, 2], x[:, 1])
    assert set(inp[:, 1].unique().tolist()) <= {0.0, 1.0}  # thresholded
    expected = (torch.sigmoid(net.segmenter(x[:, :1])) >= 0.5).float()
    torch.testing.assert_close(inp[:, 1:2], expected)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.registration(inp))


@pytest.mark.parametrize("stage", ["all", "global"])
def test_trace_equals_eager(stage):
    net = _cascade("hard").eval()
    net.stage = stage
    x = torch.rand(2, 2, *SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        traced = torch.jit.trace(net, x[:1])
        torch.testing.assert_close(traced(x), net(x), atol=1e-5, rtol=1e-4)
        if stage == "global":
            torch.testing.assert_close(net(x), net.global_ddf(x))


def test_bad_settings_and_inputs_are_named():
    reg2 = GlobalLocalNet(image_size=SIZE, num_channel_initial=2, global_depth=2, extract_levels=(0, 1, 2), in_channels=2)
    with pytest.raises(ValueError, match="3 input channels"):
        SegmentThenRegister(gland_segmenter(channels=(4, 8)), reg2)
    with pytest.raises(ValueError, match="mask_mode"):
        _cascade("fuzzy")
    with pytest.raises(ValueError, match="stage"):
        SegmentThenRegister(gland_segmenter(channels=(4, 8)), _cascade().registration, stage="dense")
    with pytest.raises(ValueError, match="threshold"):
        SegmentThenRegister(gland_segmenter(channels=(4, 8)), _cascade().registration, threshold=1.0)
    with pytest.raises(ValueError, match=r"\(B, 2, \*spatial\)"):
        _cascade()(torch.rand(2, 3, *SIZE))
