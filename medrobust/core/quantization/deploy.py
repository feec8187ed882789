"""Int8 deployment of a trained float model for CPU inference: ONNX export + ONNX Runtime static
quantisation (QDQ format, per-channel int8 weights, uint8 activations calibrated on real inputs).

Why this runtime (measured with torch 2.13.0 on a CPU-only machine, see docs/quantization.md):
torchao 0.18's ``quantize_`` configs (int8 dynamic / weight-only) raise ``NotImplementedError``
on ``aten.convolution`` for Conv2d and Conv3d; its PT2E flow quantises convolutions but runs
int8 kernels only through ``torch.compile`` (a C++ toolchain on the user's workstation and
about a minute of compilation per model); ``torch.ao.quantization`` is deprecated. ONNX
Runtime's ``quantize_static`` handles 2-D and 3-D convolutions, needs no compiler and ships as a
wheel. Optional dependency: ``pip install medrobust[deploy]`` (onnx, onnxruntime).

:class:`OnnxClassifier` wraps an ONNX Runtime session as a ``torch`` callable (no gradients),
so score-based attacks (:func:`medrobust.core.attacks.square`) and the metrics run on the
deployed int8 model itself.

Example:
    >>> import torch, tempfile, os
    >>> net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4 * 4 ** 3, 2)).eval()
    >>> calib = torch.rand(4, 1, 6, 6, 6)
    >>> d = tempfile.mkdtemp()
    >>> paths = export_int8(net, calib, os.path.join(d, "net"))
    >>> int8 = OnnxClassifier(paths["int8"])
    >>> int8(calib).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["export_onnx", "quantize_onnx_int8", "export_int8", "OnnxClassifier", "require_onnxruntime"]

logger = logging.getLogger(__name__)

_INSTALL = "install the deploy extra: pip install 'medrobust[deploy]' (onnx, onnxruntime)"


def require_onnxruntime() -> Any:
    """Import ``onnxruntime`` or raise ``ImportError`` saying how to install it."""
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"int8 deployment needs onnxruntime: {_INSTALL}.") from e
    return onnxruntime


def _check_example(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (B, C, *spatial), got {type(x).__name__}.")
    if x.ndim < 3 or x.shape[0] < 1 or not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (B >= 1, C, *spatial), got {x.dtype} {tuple(x.shape)}.")
    return x.detach().float().cpu()


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: str | os.PathLike, *,
                opset: int = 17) -> Path:
    """Export ``model`` (in eval mode, on CPU) to ONNX with a dynamic batch axis.

    Args:
        model: a float network ``(B, C, *spatial) -> (B, K)``.
        example: an input batch ``(B, C, *spatial)``.
        path: output ``.onnx`` file.
        opset: ONNX opset.

    Returns:
        The written path.
    """
    x = _check_example(example, "example")
    was_training = model.training
    model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # TorchScript-based exporter: handles every MONAI layer we use and needs no onnxscript
            torch.onnx.export(model.cpu(), (x,), str(path), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                              dynamo=False)
    finally:
        model.train(was_training)
    return path


class _Calibration:
    """ONNX Runtime ``CalibrationDataReader`` over a tensor, in batches."""

    def __init__(self, data: torch.Tensor, batch_size: int) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [{"input": data[i:i + batch_size].numpy()} for i in range(0, data.shape[0], batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_onnx_int8(float_path: str | os.PathLike, calibration: torch.Tensor, out_path: str | os.PathLike, *,
                       per_channel: bool = True, batch_size: int = 32) -> Path:
    """Static int8 quantisation of an exported model (QDQ format, MinMax calibration).

    Args:
        float_path: the float ``.onnx`` from :func:`export_onnx`.
        calibration: representative inputs ``(N, C, *spatial)`` (training images, never test).
        out_path: output ``.onnx``.
        per_channel: per-output-channel weight scales (recommended for convolutions).
        batch_size: calibration batch size.

    Returns:
        The written path.
    """
    require_onnxruntime()
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    data = _check_example(calibration, "calibration")
    out_path = Path(out_path)
    pre = out_path.with_suffix(".pre.onnx")
    quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
    try:
        quantize_static(str(pre), str(out_path), _Calibration(data, int(batch_size)), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel)
    finally:
        pre.unlink(missing_ok=True)
    return out_path


def export_int8(model: torch.nn.Module, calibration: torch.Tensor, stem: str | os.PathLike, *,
                per_channel: bool = True) -> dict[str, Path]:
    """Float ONNX + int8 ONNX of ``model``: ``{"float": stem.onnx, "int8": stem.int8.onnx}``."""
    calibration = _check_example(calibration, "calibration")
    stem = Path(stem)
    f = export_onnx(model, calibration[:1], stem.with_suffix(".onnx"))
    q = quantize_onnx_int8(f, calibration, stem.with_suffix(".int8.onnx"), per_channel=per_channel)
    return {"float": f, "int8": q}


class OnnxClassifier:
    """An ONNX Runtime CPU session as a callable ``torch.Tensor (B, C, *spatial) -> logits (B, K)``.

    No gradients (use it with score-based attacks or as the deployed model in an evaluation).

    Args:
        path: ``.onnx`` file.
        threads: intra-op threads (1 on a shared workstation).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int = 1) -> None:
        ort = require_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path: ONNX model {path} does not exist.")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}.")
        out = self.session.run(None, {self.input_name: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)

    def size_bytes(self) -> int:
        """Size of the model file in bytes."""
        return self.path.stat().st_size
