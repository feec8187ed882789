"""Int8 deployment through ONNX Runtime: 2-D and 3-D convolutions, size, agreement with float."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from medrobust.core.quantization import OnnxClassifier, export_int8  # noqa: E402


def _net(spatial_dims: int) -> torch.nn.Module:
    conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
    bn = torch.nn.BatchNorm2d if spatial_dims == 2 else torch.nn.BatchNorm3d
    pool = torch.nn.AdaptiveAvgPool2d if spatial_dims == 2 else torch.nn.AdaptiveAvgPool3d
    torch.manual_seed(0)
    net = torch.nn.Sequential(conv(1, 16, 3, padding=1), bn(16), torch.nn.ReLU(), conv(16, 32, 3, padding=1),
                              bn(32), torch.nn.ReLU(), pool(1), torch.nn.Flatten(), torch.nn.Linear(32, 2))
    return net.eval()


@pytest.mark.parametrize("spatial_dims, size", [(2, 16), (3, 8)])
def test_int8_export_runs_and_agrees(tmp_path, spatial_dims, size):
    net = _net(spatial_dims)
    calib = torch.rand(16, 1, *([size] * spatial_dims), generator=torch.Generator().manual_seed(0))
    paths = export_int8(net, calib, tmp_path / f"net{spatial_dims}d")
    f32, i8 = OnnxClassifier(paths["float"]), OnnxClassifier(paths["int8"])
    x = torch.rand(5, 1, *([size] * spatial_dims), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x)
    assert torch.allclose(f32(x), ref, atol=1e-4)
    q = i8(x)
    assert q.shape == (5, 2)
    scale = float(ref.abs().max())
    assert float((q - ref).abs().max()) < 0.05 * scale + 1e-3  # int8 error small, but present
    assert i8.size_bytes() < 0.7 * f32.size_bytes()  # weights 4x smaller; graph overhead on a tiny net
    import onnx

    ops = {n.op_type for n in onnx.load(str(paths["int8"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert not net.training


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OnnxClassifier(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="calibration must be a float tensor"):
        export_int8(_net(2), torch.zeros(4, 4, dtype=torch.long), tmp_path / "x")
    with pytest.raises(TypeError, match="calibration must be a torch.Tensor"):
        export_int8(_net(2), [[0.0]], tmp_path / "x")
