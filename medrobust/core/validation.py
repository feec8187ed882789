"""One input contract for every public entry point: attacks, defenses' hooks, metrics, detectors.

Each check raises ``TypeError`` (the wrong kind of object) or ``ValueError`` (the right kind with
a bad value) whose message names the argument, says what was expected and what came, and how to
fix it. Checks run early: in constructors for settings, at the top of a call for inputs.

- :func:`check_finite_tensor`: a tensor with no NaN/inf;
- :func:`check_batch`: an image batch ``(B, C, *spatial)`` (non-empty, finite, not a single
  unbatched image) and, optionally, one target per sample;
- :func:`check_labels`: class indices ``(B,)`` in ``[0, num_classes)``;
- :func:`check_number` (and :func:`check_positive`, :func:`check_nonnegative`): a finite scalar
  setting (or a per-sample tensor of them) inside a range;
- :func:`check_bounds`: an intensity range ``(low, high)`` with ``low < high``.

Example:
    >>> import torch
    >>> x = torch.rand(2, 1, 8, 8)
    >>> check_batch(x, torch.tensor([0, 2]), num_classes=3)
    >>> check_positive("steps", 10, integer=True)
    10
    >>> check_batch(torch.rand(1, 8, 8))
    Traceback (most recent call last):
    ...
    ValueError: x must be a batch (B, C, *spatial) with at least 2 spatial dims (4 dims), got shape (1, 8, 8); a single image? add the batch dim: x[None] (and the channel dim if missing: x[:, None]).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, TypeVar, Union

import torch

__all__ = [
    "check_finite_tensor",
    "check_batch",
    "check_labels",
    "check_class_range",
    "check_number",
    "check_positive",
    "check_nonnegative",
    "check_bounds",
]

N = TypeVar("N", int, float, torch.Tensor)
Bound = Union[float, torch.Tensor]


def _show(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"a tensor of shape {tuple(v.shape)}" if v.numel() > 8 else f"tensor {v.tolist()}"
    return repr(v)


def check_finite_tensor(name: str, x: Any) -> torch.Tensor:
    """``x`` is a tensor without NaN or inf; returns it.

    Raises:
        TypeError: ``x`` is not a ``torch.Tensor``.
        ValueError: ``x`` holds NaN or inf.

    Example:
        >>> check_finite_tensor("x", torch.tensor([1.0, float("nan")]))
        Traceback (most recent call last):
        ...
        ValueError: x must be finite, got 1 NaN/inf value(s) among 2 (shape (2,)); replace or mask them first (e.g. torch.nan_to_num(x), or window the image).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; convert it with torch.as_tensor.")
    if x.is_floating_point() or x.is_complex():
        n_bad = int((~torch.isfinite(x)).sum())
        if n_bad:
            raise ValueError(
                f"{name} must be finite, got {n_bad} NaN/inf value(s) among {x.numel()} (shape {tuple(x.shape)}); "
                f"replace or mask them first (e.g. torch.nan_to_num({name}), or window the image)."
            )
    return x


def check_batch(
    x: Any,
    y: Any = None,
    *,
    num_classes: int | None = None,
    min_spatial_dims: int = 2,
    name: str = "x",
    label_name: str = "y",
) -> None:
    """``x`` is a non-empty, finite, floating batch ``(B, C, *spatial)``; ``y`` has one entry per sample.

    Medical images are 2-D or 3-D, so by default ``x`` needs at least 2 spatial dims: a single
    2-D image ``(C, H, W)`` is refused instead of being read as a batch. (A single 3-D volume
    ``(C, D, H, W)`` has the dims of a 2-D batch; giving ``y`` catches it by its length.)

    Args:
        x: inputs ``(B, C, *spatial)``.
        y: targets whose first dim is ``B`` (class indices ``(B,)``, masks ``(B, 1, *spatial)``,
            ...); a 0-d value or ``None`` is not checked for length; anything that is not a
            tensor, number or sequence (e.g. a dict) is not checked.
        num_classes: when given, ``y`` must be class indices in ``[0, num_classes)`` (see
            :func:`check_labels`).
        min_spatial_dims: fewest spatial dims ``x`` may have.
        name, label_name: the argument names used in messages.

    Raises:
        TypeError: ``x`` is not a floating-point tensor.
        ValueError: too few dims, an empty batch, NaN/inf in ``x`` (or in a floating ``y``), a
            ``y`` whose length is not ``B``, or class indices out of range.
    """
    check_finite_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}; convert it with {name}.float().")
    need = 2 + min_spatial_dims
    if x.ndim < need:
        raise ValueError(
            f"{name} must be a batch (B, C, *spatial) with at least {min_spatial_dims} spatial dims ({need} dims), "
            f"got shape {tuple(x.shape)}; a single image? add the batch dim: {name}[None] (and the channel dim "
            f"if missing: {name}[:, None])."
        )
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); pass at least one sample with non-zero size.")
    if y is None:
        return
    if num_classes is not None:
        check_labels(y, batch=x.shape[0], num_classes=num_classes, name=label_name)
        return
    if isinstance(y, (numbers.Number, Sequence)) and not isinstance(y, (str, bytes)):
        y = torch.as_tensor(y)
    if not isinstance(y, torch.Tensor) or y.ndim == 0:
        return
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{label_name} must hold one entry per sample of {name} ({x.shape[0]}), got shape {tuple(y.shape)}; "
            f"if {name} {tuple(x.shape)} is a single image, add the batch dim: {name}[None]."
        )
    if y.is_floating_point():
        check_finite_tensor(label_name, y)


def check_labels(y: Any, *, batch: int, num_classes: int | None = None, name: str = "y") -> torch.Tensor:
    """Class indices ``(batch,)`` as a long tensor; a single int applies to every sample.

    Args:
        y: integer labels (an int, a sequence, or a tensor ``(B,)`` / ``(B, 1)``; integral floats
            are accepted).
        batch: the number of samples ``B``.
        num_classes: labels must lie in ``[0, num_classes)``.
        name: the argument name used in messages.

    Raises:
        TypeError: ``y`` is not numeric.
        ValueError: wrong length, non-integral or out-of-range values.

    Example:
        >>> check_labels(1, batch=3, num_classes=2)
        tensor([1, 1, 1])
        >>> check_labels([0, 3], batch=2, num_classes=3)
        Traceback (most recent call last):
        ...
        ValueError: y must be class indices in [0, 3), got tensor [0, 3]; use 0-based class indices (the model has 3 classes).
    """
    try:
        t = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be class indices (an int, a sequence or a tensor), got {type(y).__name__}.") from None
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must hold integer class indices, got dtype {t.dtype}.")
    t = t.reshape(-1)
    if t.numel() == 1 and batch > 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(
            f"{name} must hold one class index per sample ({batch}), got shape {tuple(torch.as_tensor(y).shape)}; "
            "if the input is a single image, add its batch dim."
        )
    if t.is_floating_point():
        check_finite_tensor(name, t)
        if bool((t != t.round()).any()):
            raise ValueError(f"{name} must be integer class indices, got {_show(t)}; pass y.long().")
    t = t.long()
    if num_classes is not None and bool(((t < 0) | (t >= num_classes)).any()):
        raise ValueError(
            f"{name} must be class indices in [0, {num_classes}), got {_show(t)}; use 0-based class indices "
            f"(the model has {num_classes} classes)."
        )
    return t


def check_number(
    name: str,
    value: N,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    hint: str = "",
) -> N:
    """A finite number (or a tensor of them, e.g. per-sample ``eps``) inside a range; returns it unchanged.

    Args:
        name: the setting's name for messages.
        value: an int/float, or (unless ``integer``) a real tensor.
        low, high: the range; ``None`` leaves that side open.
        low_open, high_open: exclude the end point.
        integer: ``value`` must be a Python int (not a float, not a bool).
        hint: appended to range errors (how to choose the value).

    Raises:
        TypeError: not a number (a bool counts as none), or not an int when ``integer``.
        ValueError: NaN/inf, or outside the range.

    Example:
        >>> check_number("p_init", 0.8, low=0, high=1, low_open=True)
        0.8
        >>> check_number("eps", float("inf"), low=0)
        Traceback (most recent call last):
        ...
        ValueError: eps must be a finite number, got inf.
    """
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
        kind = "an int" if integer else "a number (or a tensor of numbers)"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}.")
    if integer and not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {_show(value)}; pass int({name}).")
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number or tensor, got dtype {value.dtype}.")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite, got {_show(value)}.")
    elif not isinstance(value, numbers.Integral) and not (float(value) - float(value) == 0.0):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    v = torch.as_tensor(value)
    parts = []
    if low is not None and bool((v <= low).any() if low_open else (v < low).any()):
        parts.append(f"> {low:g}" if low_open else f">= {low:g}")
    if high is not None and bool((v >= high).any() if high_open else (v > high).any()):
        parts.append(f"< {high:g}" if high_open else f"<= {high:g}")
    if parts:
        lo_s = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
        hi_s = "" if high is None else (f"< {high:g}" if high_open else f"<= {high:g}")
        want = " and ".join(s for s in (lo_s, hi_s) if s)
        raise ValueError(f"{name} must be {want}, got {_show(value)}." + (f" {hint}" if hint else ""))
    return value


def check_positive(name: str, value: N, *, integer: bool = False, hint: str = "") -> N:
    """``value > 0`` and finite (see :func:`check_number`).

    Example:
        >>> check_positive("steps", 0, integer=True)
        Traceback (most recent call last):
        ...
        ValueError: steps must be > 0, got 0.
    """
    return check_number(name, value, low=0, low_open=True, integer=integer, hint=hint)


def check_nonnegative(name: str, value: N, *, integer: bool = False, hint: str = "") -> N:
    """``value >= 0`` and finite (see :func:`check_number`).

    Example:
        >>> check_nonnegative("eps", -1.0, hint="eps is a radius in input units.")
        Traceback (most recent call last):
        ...
        ValueError: eps must be >= 0, got -1.0. eps is a radius in input units.
    """
    return check_number(name, value, low=0, integer=integer, hint=hint)


def check_class_range(y: Any, logits: Any, *, name: str = "y") -> None:
    """Check per-sample class labels against a classifier's logits ``(B, K)``.

    For hooks whose attack never compares the labels with the logits (TRADES attacks the KL to the
    clean prediction), so that an out-of-range class fails here, naming ``name``, rather than later
    in the trainer's loss. Does nothing for dense outputs (segmentation) or dense/one-hot labels.

    Example:
        >>> check_class_range(torch.tensor([0, 1]), torch.zeros(2, 3))
        >>> check_class_range(torch.tensor([0, 3]), torch.zeros(2, 3))
        Traceback (most recent call last):
        ...
        ValueError: y must be class indices in [0, 3), got tensor [0, 3]; use 0-based class indices (the model has 3 classes).
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        return
    t = y if isinstance(y, torch.Tensor) else torch.as_tensor(y)
    if t.numel() != logits.shape[0]:
        return
    check_labels(t, batch=logits.shape[0], num_classes=logits.shape[1], name=name)


def check_bounds(bounds: Any, *, name: str = "bounds") -> tuple[Bound, Bound]:
    """An intensity range ``(low, high)``: finite floats or tensors, ``low < high`` everywhere.

    Tensors are compared where they broadcast against each other (per channel ``(C,)``, per
    sample, per pixel). Whether ``x`` lies inside is checked by the attacks (``as_bounds``).

    Returns:
        ``(low, high)`` as given.

    Raises:
        TypeError: an entry is neither a number nor a tensor.
        ValueError: not a pair, NaN/inf, shapes that do not broadcast, or ``low >= high``.

    Example:
        >>> check_bounds((0.0, 1.0))
        (0.0, 1.0)
        >>> check_bounds((1, 0))
        Traceback (most recent call last):
        ...
        ValueError: bounds must be (low, high) with low < high, got low=1, high=0; pass them in that order, e.g. (0.0, 1.0) or an HU window (-1000.0, 400.0).
    """
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {bounds!r}.")
    lo, hi = bounds
    for part, v in (("low", lo), ("high", hi)):
        if isinstance(v, bool) or not isinstance(v, (numbers.Real, torch.Tensor)):
            raise TypeError(f"{name}: {part} must be a number or a tensor, got {type(v).__name__} {v!r}.")
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name}: {part} must be finite, got {_show(v)}.")
        if not isinstance(v, torch.Tensor) and not float(v) - float(v) == 0.0:
            raise ValueError(f"{name}: {part} must be finite, got {v!r}.")
    try:
        bad = bool((torch.as_tensor(lo) >= torch.as_tensor(hi)).any())
    except RuntimeError:
        raise ValueError(f"{name}: low {_show(lo)} and high {_show(hi)} do not broadcast against each other.") from None
    if bad:
        raise ValueError(
            f"{name} must be (low, high) with low < high, got low={_show(lo)}, high={_show(hi)}; pass them in that "
            "order, e.g. (0.0, 1.0) or an HU window (-1000.0, 400.0)."
        )
    return lo, hi
