"""Shared plumbing for every attack: the result type, bounds/eps broadcasting, per-sample
randomness, the settings table every attack (function and class) is checked against, and the
input gradient.

Everything here is tensor-native and works for any number of spatial dimensions:
``x`` is ``(B, C, *spatial)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Union

import torch

from medrobust.core.utils import base_seed, clip_to_bounds, model_output
from medrobust.core.validation import check_bounds, check_nonnegative, check_number, check_positive

__all__ = [
    "AttackResult",
    "Bounds",
    "GeneratorLike",
    "as_bounds",
    "as_per_sample",
    "as_mask",
    "per_sample_generators",
    "draw",
    "ATTACK_SETTINGS",
    "check_attack_settings",
    "flat_norm",
    "atleast_kd",
    "model_output",
    "input_gradient",
    "clip_to_bounds",
]

Bounds = tuple[Union[float, torch.Tensor], Union[float, torch.Tensor]]
GeneratorLike = Union[torch.Generator, Sequence[torch.Generator], int, None]


class AttackResult(NamedTuple):
    """What every attack returns.

    Attributes:
        x_adv: adversarial inputs ``(B, C, *spatial)``, same dtype/device as ``x``, inside the bounds.
        success: bool ``(B,)``: the attack met its success criterion on that sample.
        info: diagnostics; at least ``"loss"`` (final attack loss per sample, ``(B,)``),
            ``"norm"`` (perturbation norm per sample in the attack's norm, ``(B,)``),
            ``"grad_calls"`` (input-gradient evaluations of the whole batch) and
            ``"forward_calls"`` / ``"queries"`` (model forwards of the whole batch).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    info: dict[str, Any]


def atleast_kd(t: torch.Tensor, k: int) -> torch.Tensor:
    """Append singleton dims to ``t`` until it has ``k`` dims (Foolbox's helper of the same name)."""
    return t.reshape(t.shape + (1,) * (k - t.ndim))


def flat_norm(t: torch.Tensor, p: float | str) -> torch.Tensor:
    """Per-sample ``p``-norm of ``t`` ``(B, ...)`` -> ``(B,)``; ``p`` in ``{"inf", 2, 1, 0}``."""
    f = t.reshape(t.shape[0], -1)
    if p in ("inf", float("inf")):
        return f.abs().amax(dim=1) if f.shape[1] else f.new_zeros(f.shape[0])
    if p in (0, "0"):
        return (f != 0).sum(dim=1).to(t.dtype)
    return torch.linalg.vector_norm(f, ord=float(p), dim=1)


def _as_tensor(v: float | torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(v, (int, float)):
        return torch.as_tensor(float(v), dtype=x.dtype, device=x.device)
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be a float or a torch.Tensor, got {type(v).__name__}.")
    return v.to(device=x.device, dtype=x.dtype)


def _broadcast_to_x(t: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    if t.ndim == 0:
        return t
    if t.ndim == 1:  # per channel (C,): the natural way to give per-channel HU windows
        if t.shape[0] not in (1, x.shape[1]):
            raise ValueError(
                f"{name}: a 1-D tensor is per channel and needs {x.shape[1]} entries, got {t.shape[0]}."
            )
        return t.reshape(1, -1, *([1] * (x.ndim - 2)))
    if t.ndim > x.ndim:
        raise ValueError(f"{name} has {t.ndim} dims, more than x {tuple(x.shape)}.")
    t = atleast_kd(t, x.ndim)  # leading dims are (B, C, ...)
    try:
        torch.broadcast_shapes(t.shape, x.shape)
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(t.shape)} does not broadcast to x {tuple(x.shape)} "
            "(dims align with x's leading dims (B, C, ...); a 1-D tensor is per channel)."
        ) from None
    return t


def as_bounds(bounds: Bounds, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)`` as tensors broadcastable to ``x``.

    Each bound is a float, a 0-d tensor, a 1-D tensor of ``C`` entries (per channel, e.g. HU
    windows of a multi-window CT input), or a tensor whose dims align with the leading dims of
    ``x`` (``(B, 1)`` per sample, ``(1, C, H, W)`` per pixel, ...).

    Raises:
        ValueError: ``bounds`` is not a pair, is not finite, does not broadcast, has
            ``low >= high``, or ``x`` lies outside it.
    """
    check_bounds(bounds)
    lo = _broadcast_to_x(_as_tensor(bounds[0], x, "bounds[0]"), x, "bounds[0]")
    hi = _broadcast_to_x(_as_tensor(bounds[1], x, "bounds[1]"), x, "bounds[1]")
    if bool((lo >= hi).any()):
        raise ValueError(f"bounds: every low must be below its high, got low={bounds[0]!r}, high={bounds[1]!r}.")
    tol = 1e-5 * float((hi - lo).abs().max())
    if bool(((x < lo - tol) | (x > hi + tol)).any()):
        raise ValueError(
            f"x lies outside bounds (x in [{float(x.min()):.4g}, {float(x.max()):.4g}]); clip or "
            "window the input first, or pass the bounds of its intensity space (e.g. an HU window)."
        )
    return lo, hi


def as_per_sample(v: float | torch.Tensor, x: torch.Tensor, name: str, *, positive: bool = True) -> torch.Tensor:
    """A scalar or per-sample ``(B,)`` value as a tensor broadcastable to ``x`` (``(B, 1, ..., 1)`` or 0-d)."""
    t = _as_tensor(v, x, name)
    if t.ndim == 1:
        if t.shape[0] != x.shape[0]:
            raise ValueError(f"{name}: a per-sample tensor needs {x.shape[0]} entries (batch), got {t.shape[0]}.")
        t = atleast_kd(t, x.ndim)
    elif t.ndim != 0:
        raise ValueError(f"{name} must be a scalar or a (B,) tensor, got shape {tuple(t.shape)}.")
    if positive and bool((t < 0).any()):
        raise ValueError(f"{name} must be >= 0, got {v!r}.")
    return t


def as_mask(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """A ROI mask broadcastable to ``x`` (``(B|1, C|1, *spatial)``) as ``x.dtype``; ``None`` stays ``None``."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}.")
    if mask.ndim != x.ndim:
        raise ValueError(f"mask must have the dims of x (B|1, C|1, *spatial) = {x.ndim}, got {tuple(mask.shape)}.")
    try:
        torch.broadcast_shapes(mask.shape, x.shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to x {tuple(x.shape)}.") from None
    return mask.to(device=x.device, dtype=x.dtype)


def per_sample_generators(generator: GeneratorLike, batch: int) -> list[torch.Generator]:
    """One ``torch.Generator`` per sample.

    - a sequence of generators: used as given, one per sample (they advance as the attack draws
      from them) -- this makes a sample's result independent of the batch it is in; the
      perturbation registry passes these;
    - a single generator or an int seed: a base seed is drawn from it (or is the int) and sample
      ``i`` gets a CPU generator seeded ``base + i``, so sample ``i`` of a batch equals running it
      alone with ``[torch.Generator().manual_seed(base + i)]``;
    - ``None``: as the seed ``0`` (reproducible by default; the global RNG is never touched).
    """
    if isinstance(generator, Sequence) and not isinstance(generator, (str, bytes)):
        gens = list(generator)
        if len(gens) != batch:
            raise ValueError(f"generator: got {len(gens)} per-sample generators for a batch of {batch}.")
        if not all(isinstance(g, torch.Generator) for g in gens):
            raise TypeError("generator: every entry of the sequence must be a torch.Generator.")
        return gens
    try:
        base = base_seed(generator)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            "generator must be a torch.Generator, a sequence of them, an int seed or None, "
            f"got {type(generator).__name__}."
        ) from None
    return [torch.Generator(device="cpu").manual_seed(base + i) for i in range(batch)]


def draw(
    gens: Sequence[torch.Generator], shape: Sequence[int], fn: Callable[..., torch.Tensor], like: torch.Tensor
) -> torch.Tensor:
    """Stack one draw of ``fn(shape)`` per sample generator (on that generator's device), cast/moved like ``like``."""
    return torch.stack([fn(tuple(shape), generator=g, device=g.device) for g in gens]).to(like)


def input_gradient(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    objective: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample objective ``(B,)``, its gradient w.r.t. ``x`` and the model output.

    Uses ``torch.autograd.grad`` with respect to the input only, so parameters' ``.grad`` and
    ``requires_grad`` flags are never touched (nor is the model's train/eval mode).
    """
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        out = model_output(model, xr)
        val = objective(out)
        (g,) = torch.autograd.grad(val.sum(), xr)
    return val.detach(), g.detach(), out.detach()


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda name, v: None if v is None else check(name, v)


def _in_unit(low_open: bool, high_open: bool) -> Callable[[str, Any], Any]:
    return lambda name, v: check_number(name, v, low=0, high=1, low_open=low_open, high_open=high_open)


def _positive_int(name: str, v: Any) -> Any:
    return check_positive(name, v, integer=True)


def _nonnegative_int(name: str, v: Any) -> Any:
    return check_nonnegative(name, v, integer=True)


def _at_least_two(name: str, v: Any) -> Any:
    return check_number(name, v, low=2, integer=True)


def _bounds(name: str, v: Any) -> Any:
    return check_bounds(v, name=name)


_EPS_HINT = "eps is a radius in input units (e.g. 8/255 for [0, 1] images)."

#: How each attack setting is checked, by name: one table for every attack function and class.
ATTACK_SETTINGS: dict[str, Callable[[str, Any], Any]] = {
    "eps": lambda name, v: check_nonnegative(name, v, hint=_EPS_HINT),
    "alpha": _optional(check_nonnegative),
    "steps": _positive_int,
    "restarts": _positive_int,
    "eot_samples": _positive_int,
    "queries": _positive_int,
    "binary_search_steps": _positive_int,
    "candidates": _at_least_two,
    "swarm": _at_least_two,
    "iterations": _positive_int,
    "extra_iterations": _nonnegative_int,
    "k": _optional(_positive_int),
    "k_max": _positive_int,
    "chunk": _optional(_positive_int),
    "c": check_positive,
    "kappa": check_nonnegative,
    "lr": check_positive,
    "overshoot": check_nonnegative,
    "p_init": _in_unit(True, False),
    "p_target": _optional(_in_unit(True, True)),
    "p_tol": check_nonnegative,
    "fi_threshold": check_nonnegative,
    "inertia": check_nonnegative,
    "c1": check_nonnegative,
    "c2": check_nonnegative,
    "velocity_clip": check_positive,
    "box": _in_unit(True, False),
    "a1": check_nonnegative,
    "a2": _optional(check_nonnegative),
    "bounds": _bounds,
}


def check_attack_settings(**settings: Any) -> None:
    """Check attack settings by name against :data:`ATTACK_SETTINGS` (unknown names are skipped).

    Called at the top of every attack function and by every attack class's constructor, so
    ``PGD(eps=-1)`` fails where it is written, not at the first call.

    Raises:
        TypeError, ValueError: a setting of the wrong type or outside its range, named in the message.

    Example:
        >>> check_attack_settings(eps=8 / 255, steps=10)
        >>> check_attack_settings(steps=0)
        Traceback (most recent call last):
        ...
        ValueError: steps must be > 0, got 0.
    """
    for name, value in settings.items():
        rule = ATTACK_SETTINGS.get(name)
        if rule is not None:
            rule(name, value)
