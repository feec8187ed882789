"""More ways researchers hold a classifier: ONNX files, Python entry points, multi-output networks.

- :func:`load_onnx`: an ``.onnx`` file run by ONNX Runtime (optional ``deploy`` extra:
  ``pip install medrobust[deploy]``), wrapped as an ``nn.Module`` (:class:`OnnxModule`). It has no
  gradients: adversarial families need a torch model.
- :func:`load_entry_point`: ``package.module:factory``, imported with ``importlib`` (never
  ``eval``) and called without arguments; it returns the ``nn.Module`` with its weights.
- :class:`OutputSelector`: a network returning a tuple, list or dict (several heads) wrapped so
  that one chosen output (an index or a key) is the classifier's logits.

Example:
    >>> import torch
    >>> net = OutputSelector(torch.nn.Sequential(), 0)
    >>> net.select((torch.ones(2, 3), torch.zeros(2)))
    tensor([[1., 1., 1.],
            [1., 1., 1.]])
    >>> parse_entry_point("my_pkg.nets:build")
    ('my_pkg.nets', 'build')
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["OnnxModule", "OutputSelector", "load_onnx", "load_entry_point", "parse_entry_point", "is_entry_point"]

_ENTRY = re.compile(r"^([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*):([A-Za-z_][\w]*)$")


def is_entry_point(text: str) -> bool:
    """Whether ``text`` looks like ``package.module:factory`` (and is not an existing path)."""
    return bool(_ENTRY.match(str(text))) and not Path(str(text)).exists()


def parse_entry_point(text: str) -> tuple[str, str]:
    """``"pkg.mod:factory"`` -> ``("pkg.mod", "factory")``.

    Raises:
        ValueError: not of that form.
    """
    m = _ENTRY.match(str(text).strip())
    if not m:
        raise ValueError(f"model entry point should be 'package.module:factory', got {text!r}.")
    return m.group(1), m.group(2)


def load_entry_point(text: str) -> torch.nn.Module:
    """Import ``package.module`` and call its ``factory()``; returns the ``nn.Module``.

    Raises:
        ValueError: bad form, module or factory not found, factory not returning a module.
    """
    module_name, attr = parse_entry_point(text)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ValueError(f"model entry point {text!r}: cannot import {module_name!r} ({e}); is it installed or on PYTHONPATH?") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"model entry point {text!r}: {module_name} has no callable {attr!r}.")
    network = factory()
    if not isinstance(network, torch.nn.Module):
        raise ValueError(f"model entry point {text!r}: {attr}() should return a torch.nn.Module, got {type(network).__name__}.")
    return network


class OutputSelector(torch.nn.Module):
    """Wrap a multi-output network so that its forward returns one output.

    Args:
        network: returns a tensor, or a tuple/list/dict of them.
        output: index (int, or digits) into a tuple/list, or key into a dict; ``None`` accepts
            only single-tensor outputs.
    """

    def __init__(self, network: torch.nn.Module, output: int | str | None) -> None:
        super().__init__()
        self.network = network
        self.output = int(output) if isinstance(output, str) and output.isdigit() else output

    def select(self, out: Any) -> torch.Tensor:
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, Mapping):
            if self.output is None or str(self.output) not in {str(k) for k in out}:
                raise ValueError(f"model returns a dict with keys {list(out)}; choose one with output (--output KEY).")
            return {str(k): v for k, v in out.items()}[str(self.output)]
        if isinstance(out, Sequence):
            if not isinstance(self.output, int) or not -len(out) <= self.output < len(out):
                raise ValueError(f"model returns {len(out)} outputs; choose one with output (--output INDEX), got {self.output!r}.")
            return out[self.output]
        raise TypeError(f"model output should be a tensor, tuple, list or dict, got {type(out).__name__}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.select(self.network(x))


class OnnxModule(torch.nn.Module):
    """An ONNX Runtime session as a (non-differentiable) ``nn.Module``: torch in, torch out.

    Args:
        path: the ``.onnx`` file.
        output: index or name of the output to return (default: the first).
        providers: ONNX Runtime execution providers (default: CUDA when available, else CPU).
    """

    def __init__(self, path: str | Path, *, output: int | str | None = None, providers: Sequence[str] | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ValueError("ONNX models need onnxruntime: pip install 'medrobust[deploy]'.") from e
        avail = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
        try:
            self.session = ort.InferenceSession(str(path), providers=list(providers))
        except Exception as e:  # onnxruntime raises its own exception types
            raise ValueError(f"{path}: not a loadable ONNX model ({type(e).__name__}: {str(e)[:200]}).") from e
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{path}: ONNX model has {len(inputs)} inputs; one image input is supported.")
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)
        names = [o.name for o in self.session.get_outputs()]
        if output is None:
            self.output_name = names[0]
        elif isinstance(output, int) or str(output).isdigit():
            if not 0 <= int(output) < len(names):
                raise ValueError(f"{path}: output index {output} out of range; outputs: {names}.")
            self.output_name = names[int(output)]
        elif output in names:
            self.output_name = str(output)
        else:
            raise ValueError(f"{path}: no output {output!r}; outputs: {names}.")
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)

    def static_input(self) -> tuple[int | None, tuple[int, ...] | None]:
        """``(channels, spatial shape)`` when the graph fixes them (else None)."""
        dims = self.input_shape[1:]
        ok = [d if isinstance(d, int) and d > 0 else None for d in dims]
        channels = ok[0] if ok else None
        spatial = tuple(ok[1:]) if ok[1:] and all(d is not None for d in ok[1:]) else None
        return channels, spatial  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("an ONNX model has no gradients: adversarial families need a torch model.")
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run([self.output_name], {self.input_name: arr})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


def load_onnx(path: str | Path, *, output: int | str | None = None) -> OnnxModule:
    """Open an ONNX classifier (see :class:`OnnxModule`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: onnxruntime missing, unreadable model, several inputs, unknown output.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} not found.")
    return OnnxModule(path, output=output)
