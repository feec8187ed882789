"""Quantisation and binary networks: fully quantised training, BinaryDenseNet, int8 deployment.

- Quantisers: :func:`fake_quantize` (QAT forward, STE), :func:`ptq`, :func:`psq`, :func:`bhq`
  (unbiased stochastic gradient quantisers) -- :mod:`.quantizers`
- :func:`quantize` converts a MONAI network's Conv1d/2d/3d and Linear layers in place into QAT /
  FQT layers (:class:`FQTConv2d`, ...; backward through :class:`FQTFunction`) -- :mod:`.fqt`
- :class:`BinaryDenseNet` (sign activations and weights, full-precision stem / transitions /
  head), 1-D / 2-D / 3-D -- :mod:`.binary`
- :func:`export_int8`, :class:`OnnxClassifier`: float model -> int8 ONNX Runtime model for CPU
  inference (optional ``deploy`` extra) -- :mod:`.deploy`

Example:
    >>> import torch
    >>> from medrobust.core.quantization import quantize
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 2))
    >>> net = quantize(net, bits=8, grad_bits=5, grad_quantizer="bhq")
    >>> net(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 2])
"""

from medrobust.core.quantization.binary import BinaryConv, BinaryDenseNet, sign_activation, sign_weight
from medrobust.core.quantization.deploy import OnnxClassifier, export_int8, export_onnx, quantize_onnx_int8
from medrobust.core.quantization.fqt import (
    QUANTIZABLE,
    FQTConv1d,
    FQTConv2d,
    FQTConv3d,
    FQTFunction,
    FQTLinear,
    QuantSettings,
    quantize,
    quantized_layers,
)
from medrobust.core.quantization.quantizers import (
    GRADIENT_QUANTIZERS,
    apply_householder_blocks,
    bhq,
    check_bits,
    fake_quantize,
    gradient_quantizer,
    householder_blocks,
    psq,
    ptq,
    quantize_rows,
    stochastic_round,
)

__all__ = [
    "fake_quantize",
    "stochastic_round",
    "quantize_rows",
    "ptq",
    "psq",
    "bhq",
    "householder_blocks",
    "apply_householder_blocks",
    "gradient_quantizer",
    "GRADIENT_QUANTIZERS",
    "check_bits",
    "QuantSettings",
    "FQTFunction",
    "FQTConv1d",
    "FQTConv2d",
    "FQTConv3d",
    "FQTLinear",
    "QUANTIZABLE",
    "quantize",
    "quantized_layers",
    "BinaryDenseNet",
    "BinaryConv",
    "sign_activation",
    "sign_weight",
    "export_onnx",
    "quantize_onnx_int8",
    "export_int8",
    "OnnxClassifier",
]
