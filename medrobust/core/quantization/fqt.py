"""Quantisation-aware (QAT) and fully quantised training (FQT) layers, and :func:`quantize` to
convert a MONAI / torch network in place.

Forward (both modes): the layer's input and weight are fake-quantised per tensor to ``bits``
(deterministic rounding, straight-through backward); bias and normalisation layers stay in
float. Backward in ``mode="fqt"`` (Chen et al., NeurIPS 2020): :class:`FQTFunction` recomputes
the layer from its quantised operands and back-propagates the output gradient twice, once
quantised by the ``grad_quantizer`` (PTQ / PSQ / BHQ) at ``grad_bits`` for the input gradient,
once per-tensor at ``weight_grad_bits`` (8) for the weight and bias gradient, always with
stochastic rounding, so the FQT gradient is an unbiased estimate of the QAT gradient. In eval
mode the layers back-propagate the QAT gradient (deterministic: what an attack on the deployed
quantised model should follow).

Converted layers keep their parameters (the same ``Parameter`` objects: an optimiser built
before conversion still works) and their ``state_dict`` keys, so checkpoints load either way.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.BatchNorm3d(4), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4 * 4 ** 3, 2))
    >>> _ = quantize(net, bits=8, grad_bits=5, grad_quantizer="bhq", seed=0)
    >>> type(net[0]).__name__, type(net[1]).__name__
    ('FQTConv3d', 'BatchNorm3d')
    >>> net(torch.rand(2, 1, 6, 6, 6)).sum().backward()
    >>> net[0].weight.grad.shape
    torch.Size([4, 1, 3, 3, 3])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from medrobust.core.quantization.quantizers import check_bits, fake_quantize, gradient_quantizer, ptq

__all__ = [
    "FQTFunction",
    "QuantSettings",
    "FQTConv1d",
    "FQTConv2d",
    "FQTConv3d",
    "FQTLinear",
    "quantize",
    "quantized_layers",
    "QUANTIZABLE",
]

logger = logging.getLogger(__name__)

MODES = ("qat", "fqt")


class QuantSettings:
    """Settings of one quantised layer (validated).

    Args:
        bits: forward bits of input and weight (QAT quantiser).
        grad_bits: bits of the output gradient on the input-gradient path (FQT).
        weight_grad_bits: bits of the output gradient on the weight-gradient path (FQT; 8).
        grad_quantizer: ``"ptq"``, ``"psq"`` or ``"bhq"`` (input-gradient path).
        mode: ``"qat"`` (float backward) or ``"fqt"``.
        generator: stochastic-rounding generator (``None``: a fresh one seeded 0).
    """

    def __init__(self, *, bits: int = 8, grad_bits: int | None = None, weight_grad_bits: int = 8,
                 grad_quantizer: str = "bhq", mode: str = "fqt", generator: torch.Generator | None = None) -> None:
        self.bits = check_bits(bits, "bits")
        self.grad_bits = check_bits(self.bits if grad_bits is None else grad_bits, "grad_bits")
        self.weight_grad_bits = check_bits(weight_grad_bits, "weight_grad_bits")
        gradient_quantizer(grad_quantizer)
        self.grad_quantizer = str(grad_quantizer).lower()
        if str(mode).lower() not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        self.mode = str(mode).lower()
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
        self.generator = torch.Generator().manual_seed(0) if generator is None else generator

    def __repr__(self) -> str:
        return (f"bits={self.bits}, grad_bits={self.grad_bits}, weight_grad_bits={self.weight_grad_bits}, "
                f"grad_quantizer={self.grad_quantizer!r}, mode={self.mode!r}")


class FQTFunction(torch.autograd.Function):
    """``op(x_q, w_q, b)`` with FQT's two quantised backward paths.

    Forward: ``op`` once, without graph. Backward: ``op`` is recomputed with a graph; the output
    gradient ``g`` is quantised twice, ``Q_x(g)`` (``settings.grad_quantizer`` at ``grad_bits``)
    back-propagated to ``x_q`` and ``Q_w(g)`` (per-tensor at ``weight_grad_bits``) to ``w_q`` and ``b``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,  # type: ignore[override]
                op: Callable[..., torch.Tensor], settings: QuantSettings) -> torch.Tensor:
        ctx.save_for_backward(x, w, b)
        ctx.op, ctx.settings = op, settings
        return op(x, w, b)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        x, w, b = ctx.saved_tensors
        st: QuantSettings = ctx.settings
        gen = st.generator
        needs = ctx.needs_input_grad
        gx = gw = gb = None
        with torch.enable_grad():
            xd = x.detach().requires_grad_(needs[0])
            wd = w.detach().requires_grad_(needs[1])
            bd = None if b is None else b.detach().requires_grad_(needs[2])
            if needs[0]:
                y = ctx.op(xd, wd.detach(), None)
                gx = torch.autograd.grad(y, xd, gradient_quantizer(st.grad_quantizer)(g, st.grad_bits, generator=gen))[0]
            if needs[1] or (b is not None and needs[2]):
                y = ctx.op(xd.detach(), wd, bd)
                inputs = [t for t, n in ((wd, needs[1]), (bd, b is not None and needs[2])) if n]
                grads = torch.autograd.grad(y, inputs, ptq(g, st.weight_grad_bits, generator=gen))
                grads = list(grads)
                gw = grads.pop(0) if needs[1] else None
                gb = grads.pop(0) if (b is not None and needs[2]) else None
        return gx, gw, gb, None, None


class _QuantMixin:
    """Shared forward of the quantised conv / linear layers."""

    qsettings: QuantSettings

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st = self.qsettings
        xq = fake_quantize(x, st.bits)
        wq = fake_quantize(self.weight, st.bits)  # type: ignore[attr-defined]
        bias = self.bias  # type: ignore[attr-defined]
        if st.mode == "qat" or not self.training or not torch.is_grad_enabled():  # type: ignore[attr-defined]
            return self._op(xq, wq, bias)
        return FQTFunction.apply(xq, wq, bias, self._op, st)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.qsettings!r}"  # type: ignore[misc]


class _QuantConv(_QuantMixin):
    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return self._conv_forward(x, w, b)  # type: ignore[attr-defined]


class FQTConv1d(_QuantConv, torch.nn.Conv1d):
    """``torch.nn.Conv1d`` with QAT forward and FQT backward (see the module docstring)."""


class FQTConv2d(_QuantConv, torch.nn.Conv2d):
    """``torch.nn.Conv2d`` with QAT forward and FQT backward (see the module docstring)."""


class FQTConv3d(_QuantConv, torch.nn.Conv3d):
    """``torch.nn.Conv3d`` with QAT forward and FQT backward (see the module docstring)."""


class FQTLinear(_QuantMixin, torch.nn.Linear):
    """``torch.nn.Linear`` with QAT forward and FQT backward (see the module docstring)."""

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b)


QUANTIZABLE: dict[type, type] = {
    torch.nn.Conv1d: FQTConv1d,
    torch.nn.Conv2d: FQTConv2d,
    torch.nn.Conv3d: FQTConv3d,
    torch.nn.Linear: FQTLinear,
}
# weight layers we know and do not convert: a clear error beats a silently float layer
_UNSUPPORTED = (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d, torch.nn.Bilinear,
                torch.nn.LazyLinear, torch.nn.LazyConv1d, torch.nn.LazyConv2d, torch.nn.LazyConv3d)


def _convert(module: torch.nn.Module, settings: QuantSettings) -> torch.nn.Module:
    new = QUANTIZABLE[type(module)].__new__(QUANTIZABLE[type(module)])
    new.__dict__ = module.__dict__.copy()  # same parameters, buffers, hooks and hyper-parameters
    new._parameters = module._parameters
    new._buffers = module._buffers
    new._modules = module._modules
    new.qsettings = settings
    return new


def quantize(model: torch.nn.Module, *, bits: int = 8, grad_bits: int | None = None, weight_grad_bits: int = 8,
             grad_quantizer: str = "bhq", mode: str = "fqt", seed: int = 0, skip: Iterable[str] = (),
             unsupported: str = "raise") -> torch.nn.Module:
    """Replace, in place, every ``Conv1d/2d/3d`` and ``Linear`` of ``model`` by its quantised twin.

    Normalisation, pooling and activation layers are left alone. Each converted layer gets its
    own stochastic-rounding generator, seeded ``seed + i`` in module order (reproducible).

    Args:
        model: a MONAI network or any ``torch.nn.Module`` (also a bare conv / linear layer: then
            the returned module is the converted copy sharing its parameters).
        bits, grad_bits, weight_grad_bits, grad_quantizer, mode: see :class:`QuantSettings`.
        seed: base seed of the layers' generators.
        skip: qualified module names (``model.named_modules()``) to keep in float, e.g. the stem.
        unsupported: ``"raise"`` (default) on a transposed / lazy convolution or bilinear layer
            (no quantised twin), or ``"skip"`` to leave them in float with a warning.

    Returns:
        ``model`` (converted in place), or the converted layer when ``model`` itself is one.

    Raises:
        ValueError: bad settings (bits outside ``[2, 16]``, unknown quantiser or mode), or a
            ``skip`` name that is not a module of ``model``.
        TypeError: an unsupported weight layer with ``unsupported="raise"``, or an already
            quantised model.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if unsupported not in ("raise", "skip"):
        raise ValueError(f"unsupported must be 'raise' or 'skip', got {unsupported!r}.")
    QuantSettings(bits=bits, grad_bits=grad_bits, weight_grad_bits=weight_grad_bits, grad_quantizer=grad_quantizer,
                  mode=mode)  # validate once before touching the model
    names = dict(model.named_modules())
    skip = set(skip)
    missing = skip - set(names)
    if missing:
        raise ValueError(f"skip: {sorted(missing)} are not modules of the model (names as in named_modules()).")
    if any(isinstance(m, _QuantMixin) for m in names.values()):
        raise TypeError("model is already quantised (it contains FQT layers); quantise the float model once.")
    i = 0
    converted: dict[str, torch.nn.Module] = {}
    for name, m in names.items():
        if name in skip:
            continue
        if isinstance(m, _UNSUPPORTED):
            msg = f"layer {name or '<model>'!r} ({type(m).__name__}) has no quantised version (supported: Conv1d/2d/3d, Linear)"
            if unsupported == "raise":
                raise TypeError(msg + "; pass skip=[...] or unsupported='skip' to keep it in float.")
            logger.warning("%s; left in float.", msg)
            continue
        if type(m) in QUANTIZABLE:
            st = QuantSettings(bits=bits, grad_bits=grad_bits, weight_grad_bits=weight_grad_bits,
                               grad_quantizer=grad_quantizer, mode=mode,
                               generator=torch.Generator(device=m.weight.device).manual_seed(int(seed) + i))
            converted[name] = _convert(m, st)
            i += 1
    if "" in converted:
        return converted[""]
    for name, new in converted.items():
        parent_name, _, attr = name.rpartition(".")
        setattr(names[parent_name], attr, new)
    return model


def quantized_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """``{name: layer}`` of the quantised (QAT / FQT) layers of ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _QuantMixin)}
