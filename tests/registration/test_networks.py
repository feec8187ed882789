import pytest
import torch
from monai.networks.blocks import Warp

from medrobust.registration.networks import (
    GlobalLocalNet,
    KeypointTranslationNet,
    TranslationNet,
    compose_affine_ddf,
    soft_centroids,
)

S = (12, 14, 10)


def _grid() -> torch.Tensor:
    return torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in S], indexing="ij"))


def _affine_ddf(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    grid = _grid()
    return (torch.einsum("ij,j...->i...", a, grid) + t.reshape(3, 1, 1, 1) - grid)[None]


def test_compose_matches_sequential_warp_on_a_linear_image():
    # a linear image is interpolated exactly, so warping twice must equal one warp with the composed DDF
    gen = torch.Generator().manual_seed(0)
    a = torch.eye(3, dtype=torch.float64) + 0.05 * torch.randn(3, 3, generator=gen, dtype=torch.float64)
    g = _affine_ddf(a, torch.tensor([0.7, -0.4, 0.3], dtype=torch.float64))
    l = 0.5 * torch.nn.functional.avg_pool3d(torch.randn(1, 3, *S, generator=gen, dtype=torch.float64), 5, 1, 2)
    image = (torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64).reshape(3, 1, 1, 1) * _grid()).sum(0)[None, None] + 1.0
    warp = Warp(mode="bilinear", padding_mode="border")
    twice = warp(warp(image, g), l)
    once = warp(image, compose_affine_ddf(g, l))
    inner = (..., slice(3, -3), slice(3, -3), slice(3, -3))  # away from the border clamping
    torch.testing.assert_close(once[inner], twice[inner], atol=1e-9, rtol=0)


def test_compose_with_zero_local_is_the_affine_and_with_identity_affine_is_the_local():
    g = _affine_ddf(torch.eye(3, dtype=torch.float64) * 1.1, torch.zeros(3, dtype=torch.float64))
    l = torch.randn(1, 3, *S, dtype=torch.float64)
    torch.testing.assert_close(compose_affine_ddf(g, torch.zeros_like(l)), g)
    torch.testing.assert_close(compose_affine_ddf(torch.zeros_like(g), l), l)
    with pytest.raises(ValueError, match="same shape"):
        compose_affine_ddf(g, l[..., :-1])


@pytest.mark.parametrize("stage", ["keypoints", "translation", "affine"])
def test_global_local_net_starts_near_identity_and_keeps_the_localnet_interface(stage):
    torch.manual_seed(0)
    net = GlobalLocalNet(image_size=(16, 16, 16), num_channel_initial=2, global_depth=2, extract_levels=(0, 1, 2),
                         global_stage=stage)
    x = torch.rand(2, 2, 16, 16, 16)
    if stage != "keypoints":  # the keypoint stage starts wherever its untrained heatmaps point
        assert net.global_net(x).abs().max() < 0.05
    out = net(x)
    assert out.shape == (2, 3, 16, 16, 16)
    out.square().mean().backward()
    for stage in (net.global_net, net.local_net):  # both stages are trained through the composed DDF
        assert sum(float(p.grad.abs().sum()) for p in stage.parameters() if p.grad is not None) > 0


def test_global_local_net_variants_and_errors():
    local_only = GlobalLocalNet(image_size=(16, 16, 16), num_channel_initial=2, extract_levels=(0, 1, 2), global_stage="none")
    assert local_only.global_net is None and local_only(torch.rand(1, 2, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    affine_only = GlobalLocalNet(image_size=(16, 16, 16), num_channel_initial=2, global_depth=2, global_stage="affine",
                                 local=False)
    assert affine_only.local_net is None and affine_only(torch.rand(1, 2, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    with pytest.raises(ValueError, match="at least one"):
        GlobalLocalNet(image_size=(16, 16, 16), global_stage="none", local=False)
    with pytest.raises(ValueError, match="global_stage"):
        GlobalLocalNet(image_size=(16, 16, 16), global_stage="rigid")
    with pytest.raises(ValueError, match="expected"):
        affine_only(torch.rand(1, 2, 8, 16, 16))


def test_translation_net_is_bounded_and_constant_in_space():
    net = TranslationNet((16, 16, 16), channels=(2, 4, 8), max_translation=3.0)
    with torch.no_grad():
        net.regressor.final[-1].bias.fill_(100.0)  # saturate the tanh
    ddf = net(torch.rand(2, 2, 16, 16, 16))
    assert ddf.shape == (2, 3, 16, 16, 16)
    torch.testing.assert_close(ddf, torch.full_like(ddf, 3.0))
    with pytest.raises(ValueError, match="max_translation"):
        TranslationNet((16, 16, 16), max_translation=0.0)


def test_moving_mask_channel_widens_the_input():
    net = GlobalLocalNet(image_size=(16, 16, 16), num_channel_initial=2, global_depth=2, extract_levels=(0, 1, 2), in_channels=3)
    assert net(torch.rand(1, 3, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    with pytest.raises(ValueError, match=r"expected \(B, 3"):
        net(torch.rand(1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match="in_channels"):
        GlobalLocalNet(image_size=(16, 16, 16), in_channels=1)


def test_soft_centroids_find_a_peak():
    logits = torch.full((1, 2, 8, 9, 10), -50.0)
    logits[0, 0, 2, 3, 4] = 50.0
    logits[0, 1, 6, 1, 9] = 50.0
    torch.testing.assert_close(soft_centroids(logits), torch.tensor([[[2.0, 3.0, 4.0], [6.0, 1.0, 9.0]]]))


def test_keypoint_translation_lays_the_fixed_keypoint_onto_the_moving_one():
    # heatmap networks replaced by a sharp "detector" of the bright blob: the DDF must be the blob's offset,
    # with the sign that makes Warp(moving, ddf) land on the fixed image
    net = KeypointTranslationNet((24, 24, 24), channels=(4, 8, 16), num_keypoints=2)
    detector = torch.nn.Conv3d(1, 2, 1, bias=False)
    torch.nn.init.constant_(detector.weight, 60.0)
    net.moving_net = net.fixed_net = detector
    fixed = torch.zeros(1, 1, 24, 24, 24)
    fixed[..., 9:12, 8:11, 10:13] = 1.0
    moving = torch.roll(fixed, (3, -2, 1), (2, 3, 4))
    ddf = net(torch.cat([moving, fixed], 1))
    torch.testing.assert_close(ddf[:, :, 0, 0, 0], torch.tensor([[3.0, -2.0, 1.0]]), atol=1e-3, rtol=0)
    torch.testing.assert_close(Warp("bilinear", "zeros")(moving, ddf), fixed, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="num_keypoints"):
        KeypointTranslationNet((8, 8, 8), num_keypoints=0)
