"""BinaryDenseNet: STE gradient masks, binary convolutions, 2-D/3-D forward/backward, bad sizes."""

from __future__ import annotations

import pytest
import torch

from medrobust.core.quantization import BinaryConv, BinaryDenseNet, sign_activation, sign_weight


def test_sign_activation_ste_mask():
    x = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.5, 1.0, 1.5], requires_grad=True)
    y = sign_activation(x)
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    y.backward(torch.arange(1.0, 8.0))
    assert x.grad.tolist() == [0, 2, 3, 4, 5, 6, 0]  # passes only where |x| <= 1


def test_sign_weight_identity_ste():
    w = torch.tensor([-3.0, 0.2, 5.0], requires_grad=True)
    y = sign_weight(w)
    assert y.tolist() == [-1, 1, 1]
    y.backward(torch.tensor([1.0, -2.0, 3.0]))
    assert w.grad.tolist() == [1, -2, 3]


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_binary_conv_is_conv_of_signs(spatial_dims):
    conv = BinaryConv(spatial_dims, 3, 4, kernel_size=3)
    x = torch.randn(2, 3, *([5] * spatial_dims))
    ref = conv.conv._conv_forward(torch.where(x >= 0, 1.0, -1.0), torch.where(conv.conv.weight >= 0, 1.0, -1.0), None)
    out = conv(x)
    assert torch.equal(out, ref)
    assert torch.equal(out, out.round())  # integer-valued: +-1 products summed
    assert conv.conv.bias is None


@pytest.mark.parametrize("spatial_dims, size", [(2, 16), (3, 8)])
def test_forward_backward_shapes(spatial_dims, size):
    net = BinaryDenseNet(spatial_dims=spatial_dims, in_channels=2, out_channels=3, init_features=8, growth_rate=4,
                         block_config=(2, 2, 1), reduction=(2.0, 1.5))
    x = torch.rand(3, 2, *([size] * spatial_dims), requires_grad=True)
    out = net(x)
    assert out.shape == (3, 3)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    binary = [m.conv.weight for m in net.modules() if isinstance(m, BinaryConv)]
    assert len(binary) == 5 and all(w.grad is not None for w in binary)
    # the stem, transitions and head stay full precision (plain conv / linear layers)
    assert type(net.features.conv0).__name__.startswith("Conv") and isinstance(net.class_layers[-1], torch.nn.Linear)


def test_paper_configuration_builds():
    net = BinaryDenseNet(2, 3, 1000, init_features=64, growth_rate=64, block_config=(6, 6, 6, 5),
                         reduction=(2.7, 2.7, 2.2), stem_kernel=7, stem_stride=2, stem_pool=True)
    assert net.num_features > 64


@pytest.mark.parametrize("kwargs, match", [
    ({"spatial_dims": 4}, "spatial_dims must be 1, 2 or 3"),
    ({"growth_rate": 0}, "growth_rate must be a positive integer"),
    ({"block_config": ()}, "block_config must name at least one"),
    ({"reduction": (2.0,)}, "reduction must be one float >= 1 or 2 of them"),
    ({"reduction": 0.5}, "reduction must be one float"),
    ({"dropout_prob": 1.0}, "dropout_prob must be in"),
])
def test_bad_settings_raise(kwargs, match):
    args = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "block_config": (1, 1, 1), **kwargs}
    with pytest.raises(ValueError, match=match):
        BinaryDenseNet(**args)
