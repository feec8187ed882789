"""Band-limited FFT convolution: exactness at full band, Hermitian masks, gradients, layer swapping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet, DenseNet121
from torch import nn
from torch.autograd import gradcheck

from medrobust.core.layers import BandLimitedConv, band_fraction, band_indices, band_mask, bandlimit_convs, bandlimited_conv

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("stride,padding,groups,mode", [(1, 1, 1, "zeros"), (2, 0, 2, "zeros"), (1, "same", 1, "zeros"),
                                                        (2, 2, 1, "reflect"), (1, 1, 4, "circular"), (1, "valid", 1, "zeros")])
def test_full_band_equals_direct_conv(dims, stride, padding, groups, mode):
    power_of_two = stride == 1  # both FFT sizes covered
    g = torch.Generator().manual_seed(dims)
    size = (11, 9, 7)[:dims]
    conv = CONV[dims](4, 8, (3, 5, 3)[:dims] if padding != "same" else 3, stride=stride, padding=padding,
                      groups=groups, padding_mode=mode)
    x = torch.rand(3, 4, *size, generator=g)
    blc = BandLimitedConv.from_conv(conv, compression=0.0, power_of_two=power_of_two)
    ref = conv(x)
    out = blc(x)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)
    # backward at full band is the direct conv's backward
    gy = torch.randn(ref.shape, generator=g)
    gw_ref, = torch.autograd.grad((ref * gy).sum(), conv.weight)
    gw, = torch.autograd.grad((out * gy).sum(), conv.weight)
    assert torch.allclose(gw, gw_ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("shape", [(8, 8), (6, 7), (8, 6, 5), (16, 16, 16)])
@pytest.mark.parametrize("compression", [0.0, 30.0, 50.0, 80.0])
def test_masks_hermitian_and_band_fraction(shape, compression):
    full = band_mask(shape, compression, onesided=False)
    dims = tuple(range(len(shape)))
    mirrored = torch.roll(torch.flip(full, dims), [1] * len(shape), dims)  # M[-k mod N]
    assert torch.equal(full, mirrored)
    one = band_mask(shape, compression)
    assert one.shape == (*shape[:-1], shape[-1] // 2 + 1)
    assert torch.equal(one, full[..., : shape[-1] // 2 + 1])
    # band-limiting a real signal through the full mask leaves it real
    x = torch.rand(shape, dtype=torch.float64)
    y = torch.fft.ifftn(torch.fft.fftn(x) * full)
    assert y.imag.abs().max() < 1e-12
    kept = band_fraction(shape, compression)
    assert kept <= 1.0 and (compression > 0 or kept == 1.0)


def test_band_fraction_tracks_compression():
    kept = [band_fraction((64, 64), c) for c in (0, 20, 40, 60, 80)]
    assert kept == sorted(kept, reverse=True)
    assert abs(kept[-1] - 0.2) < 0.05  # 80 % compression keeps about 20 % of a 64 x 64 spectrum


@pytest.mark.parametrize("dims,size", [(2, (5, 4)), (3, (3, 4, 3))])
@pytest.mark.parametrize("compression", [0.0, 60.0])
def test_gradcheck_float64(dims, size, compression):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, *size, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(4, 1, *([2] * dims), dtype=torch.float64, generator=g, requires_grad=True)
    assert gradcheck(lambda a, b: bandlimited_conv(a, b, compression=compression, padding=1, groups=2), (x, w))


def test_compression_is_a_low_pass_projection():
    """The output at compression c equals the full-band output of the band-limited input and filter."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64)
    w = torch.rand(1, 1, 3, 3, generator=g, dtype=torch.float64)
    mask = band_mask((16, 16), 75.0, onesided=False)
    y = bandlimited_conv(x, w, compression=75.0)  # input 16 -> FFT 16, no padding
    xl = torch.fft.ifftn(torch.fft.fftn(x, dim=(-2, -1)) * mask, dim=(-2, -1)).real
    wl = torch.fft.ifftn(torch.fft.fftn(w, s=(16, 16), dim=(-2, -1)) * mask, dim=(-2, -1)).real
    # circular correlation of the band-limited signals, cropped to the valid part
    c = torch.fft.ifftn(torch.fft.fftn(xl, dim=(-2, -1)) * torch.fft.fftn(wl, dim=(-2, -1)).conj(), dim=(-2, -1)).real
    assert torch.allclose(y, c[..., :14, :14], atol=1e-10)
    assert not torch.allclose(y, F.conv2d(x, w), atol=1e-3)


@pytest.mark.parametrize("compression", [0.0, 50.0])
def test_swap_monai_nets_2d_3d(compression):
    torch.manual_seed(0)
    net3 = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,), num_res_units=1)
    x3 = torch.rand(2, 1, 16, 16, 16)
    ref = net3.eval()(x3)
    before = {k: v.clone() for k, v in net3.state_dict().items()}
    bandlimit_convs(net3, compression=compression)
    assert not any(isinstance(m, nn.Conv3d) for m in net3.modules())
    assert before.keys() == net3.state_dict().keys()
    out = net3(x3)
    assert out.shape == ref.shape
    if compression == 0.0:
        assert torch.allclose(out, ref, atol=1e-4)
    net2 = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2, init_features=4, growth_rate=4, block_config=(1, 1))
    bandlimit_convs(net2, compression=compression)
    net2(torch.rand(2, 1, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in net2.parameters() if p.requires_grad)


def test_swap_recompresses_and_skips():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    bandlimit_convs(net, compression=10.0, skip=["2"])
    assert isinstance(net[0], BandLimitedConv) and isinstance(net[2], nn.Conv2d)
    bandlimit_convs(net, compression=40.0)
    assert net[0].compression == 40.0 and net[2].compression == 40.0
    assert "compression=40" in repr(net)


def test_errors():
    with pytest.raises(ValueError, match="dilation 1 only"):
        bandlimit_convs(nn.Sequential(nn.Conv2d(1, 1, 3, dilation=2)))
    with pytest.raises(TypeError, match="nn.Conv1d/2d/3d"):
        BandLimitedConv.from_conv(nn.ConvTranspose2d(1, 1, 3))
    with pytest.raises(ValueError, match="compression must be a percentage"):
        band_indices((8, 8), 100.0)
    with pytest.raises(ValueError, match="channels"):
        bandlimited_conv(torch.rand(2, 3, 8, 8), torch.rand(4, 2, 3, 3))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        bandlimited_conv(torch.rand(2, 1, 2, 2), torch.rand(1, 1, 3, 3))
    with pytest.raises(ValueError, match="'same' needs stride 1"):
        bandlimited_conv(torch.rand(2, 1, 8, 8), torch.rand(1, 1, 3, 3), padding="same", stride=2)
