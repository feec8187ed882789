"""First-order attacks: FGSM / FGM and PGD (L-inf and L2), for any task and any number of
spatial dimensions.

The iterative loop is written once (:func:`pgd`); each norm only supplies its random start,
step direction and projection (:class:`LinfGeometry`, :class:`L2Geometry`), as in Foolbox 3's
``gradient_descent_base.py``. FGSM / FGM are one step of the same loop.

Guarantees (tested): the perturbation stays in the eps-ball and the output inside ``bounds``;
``x``, ``y`` and the model (``requires_grad``, parameters' ``.grad``, BatchNorm statistics) are
left untouched; an ``nn.Module`` is attacked in eval mode and the caller's train/eval flags are
restored; nothing changes outside ``mask``; the same generator gives the same result, and with
per-sample generators a sample's result does not depend on its batch.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    >>> x = torch.rand(4, 1, 8, 8); y = torch.tensor([0, 1, 2, 0])
    >>> res = pgd(net, x, y, eps=4 / 255, steps=5)
    >>> bool((res.x_adv - x).abs().max() <= 4 / 255 + 1e-6)
    True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Union

import torch

from medrobust.core.attacks.base import (
    AttackResult,
    Bounds,
    GeneratorLike,
    as_bounds,
    as_mask,
    as_per_sample,
    atleast_kd,
    check_attack_settings,
    draw,
    flat_norm,
    per_sample_generators,
)
from medrobust.core.attacks.eot import EOTTransform, eot_generator, eot_input_gradient, eot_output
from medrobust.core.attacks.losses import AttackObjective, SuccessFn, check_class_targets, per_sample, resolve_objective
from medrobust.core.utils import clip_to_bounds, eval_mode
from medrobust.core.validation import check_batch

__all__ = ["pgd", "fgsm", "fgm", "LinfGeometry", "L2Geometry", "geometry", "step_schedule"]

logger = logging.getLogger(__name__)

LossArg = Union[AttackObjective, str, Callable[[torch.Tensor, Any], torch.Tensor], None]
Schedule = Union[str, Callable[[int, int], float]]


class LinfGeometry:
    """L-inf: uniform random start in the cube, sign steps, clipping projection."""

    name = "inf"
    p: float | str = "inf"

    @staticmethod
    def random_start(x: torch.Tensor, eps: torch.Tensor, gens: Sequence[torch.Generator],
                     mask: torch.Tensor | None) -> torch.Tensor:
        u = draw(gens, x.shape[1:], torch.rand, x)
        d = (2 * u - 1) * eps
        return d if mask is None else d * mask

    @staticmethod
    def direction(g: torch.Tensor) -> torch.Tensor:
        return g.sign()

    @staticmethod
    def project(delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(delta, eps), -eps)


class L2Geometry:
    """L2: uniform random start in the ball, normalised-gradient steps, radial projection."""

    name = "2"
    p: float | str = 2

    @staticmethod
    def random_start(x: torch.Tensor, eps: torch.Tensor, gens: Sequence[torch.Generator],
                     mask: torch.Tensor | None) -> torch.Tensor:
        z = draw(gens, x.shape[1:], torch.randn, x)
        if mask is not None:
            z = z * mask
        n = z[0].numel()
        # radius eps * u^(1/n) makes the start uniform in the ball (as Foolbox's uniform_l2_n_balls)
        u = torch.stack([torch.rand((), generator=g, device=g.device) for g in gens]).to(x)
        r = u ** (1.0 / n)
        return atleast_kd(r, x.ndim) * eps * L2Geometry.direction(z)

    @staticmethod
    def direction(g: torch.Tensor) -> torch.Tensor:
        n = atleast_kd(flat_norm(g, 2), g.ndim)
        return torch.where(n > 0, g / n.clamp_min(1e-30), torch.zeros_like(g))

    @staticmethod
    def project(delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        n = atleast_kd(flat_norm(delta, 2), delta.ndim)
        factor = torch.where(n > eps, eps / n.clamp_min(1e-30), torch.ones_like(n))
        return delta * factor


def geometry(norm: str | float) -> type[LinfGeometry] | type[L2Geometry]:
    """The geometry for ``norm`` in ``{"inf", "linf", inf, "2", "l2", 2}``."""
    key = str(norm).lower()
    if key in ("inf", "linf", "l_inf"):
        return LinfGeometry
    if key in ("2", "2.0", "l2"):
        return L2Geometry
    raise ValueError(f"norm must be 'inf' or '2', got {norm!r}.")


def step_schedule(schedule: Schedule) -> Callable[[int, int], float]:
    """Step-size multiplier ``f(t, steps)`` for step ``t`` of ``steps``.

    ``"constant"``; ``"cosine"`` (``0.5 (1 + cos(pi t / steps))``); ``"step"`` (x0.1 at 50% and
    again at 75% of the steps); ``"linear"`` (``1 - t / steps``); or a callable.
    """
    if callable(schedule):
        return schedule
    table: dict[str, Callable[[int, int], float]] = {
        "constant": lambda t, n: 1.0,
        "cosine": lambda t, n: 0.5 * (1.0 + math.cos(math.pi * t / n)),
        "step": lambda t, n: 0.1 ** ((t >= 0.5 * n) + (t >= 0.75 * n)),
        "linear": lambda t, n: 1.0 - t / n,
    }
    if schedule not in table:
        raise ValueError(f"schedule must be one of {sorted(table)} or a callable (t, steps) -> float, got {schedule!r}.")
    return table[schedule]


def pgd(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    y: Any = None,
    *,
    loss_fn: LossArg = None,
    eps: float | torch.Tensor,
    alpha: float | torch.Tensor | None = None,
    steps: int = 10,
    norm: str | float = "inf",
    random_start: bool = True,
    restarts: int = 1,
    bounds: Bounds = (0.0, 1.0),
    mask: torch.Tensor | None = None,
    targeted: bool = False,
    generator: GeneratorLike = None,
    schedule: Schedule = "constant",
    success_fn: SuccessFn | None = None,
    eot_samples: int = 1,
    eot_transform: EOTTransform | None = None,
) -> AttackResult:
    """Projected gradient descent (Madry et al.) on any differentiable task.

    Args:
        model: differentiable callable ``(B, C, *spatial) -> output`` in the units of ``x`` (a
            model that normalises internally just works). An ``nn.Module`` runs in eval mode
            during the attack (BatchNorm statistics are not updated, dropout is off) and every
            submodule's train/eval flag is restored afterwards; a plain callable (e.g. a closure
            over a network in train mode, as the adversarial-training defenses pass) is called
            as is. Parameters are never touched.
        x: inputs ``(B, C, *spatial)``, inside ``bounds``.
        y: what ``loss_fn`` compares the output with (class indices ``(B,)``, a mask, ...); the
            target when ``targeted``; ``None`` uses the clean prediction (``loss_fn.reference``).
        loss_fn: an :class:`~medrobust.core.attacks.losses.AttackObjective`, a name (``"ce"``,
            ``"margin"``, ``"dice"``, ``"mse"``, ``"nmse"``, ``"registration_dice"``, ...), or a
            callable ``(output, y) -> (B,)``. Default: classification cross-entropy.
        eps: radius, a float or per-sample ``(B,)`` tensor, in input units.
        alpha: step size (float or ``(B,)``); default ``2.5 * eps / steps``.
        steps: gradient steps per restart.
        norm: ``"inf"`` or ``"2"``.
        random_start: start uniformly inside the ball (else at ``x``).
        restarts: independent runs; per sample the best is kept (success first, then loss).
        bounds: ``(low, high)``: floats, per-channel ``(C,)`` tensors (e.g. HU windows) or tensors
            aligned with the leading dims of ``x``.
        mask: ROI ``(B|1, C|1, *spatial)``; the perturbation is multiplied by it (zero outside).
        targeted: decrease the loss towards ``y`` instead of increasing it.
        generator: a ``torch.Generator``, one per sample, an int seed, or ``None`` (seed 0); see
            :func:`~medrobust.core.attacks.base.per_sample_generators`.
        schedule: step-size schedule (``"constant"``, ``"cosine"``, ``"step"``, ``"linear"`` or
            a callable ``(t, steps) -> factor``).
        success_fn: replaces the objective's success criterion.
        eot_samples: expectation over transformation (:mod:`medrobust.core.attacks.eot`): every
            step uses the input gradient averaged over ``K`` model calls (each draws the
            model's own randomness: noise layers, always-on dropout), and the clean/final outputs
            (labels, success, restart choice) are the mean of ``K`` outputs. ``1`` (default) is
            plain PGD, bit for bit.
        eot_transform: a random differentiable input transformation ``t(x, generator) -> x'``
            drawn afresh in each of the ``K`` calls (its generator derives from ``generator``).

    Returns:
        :class:`~medrobust.core.attacks.base.AttackResult` with ``info`` keys ``loss``,
        ``loss_clean``, ``norm`` (``(B,)``), ``grad_calls``, ``forward_calls``, ``restart``
        (``(B,)``, the restart kept), ``zero_grad`` and ``nan_grad`` (``(B,)`` bool,
        gradient-masking diagnostics: the input gradient was exactly zero at every step / had NaNs).

    Raises:
        TypeError: ``x`` not a floating tensor, ``steps``/``restarts``/``eot_samples`` not ints.
        ValueError: ``x`` not a batch ``(B, C, *spatial)`` (empty, a single unbatched image) or
            with NaN/inf; ``y`` without one entry per sample or (classifiers) a class outside
            ``[0, K)``; ``eps``/``alpha`` negative or not finite; ``steps``/``restarts``/``eot_samples`` < 1;
            unknown norm; ``x`` outside ``bounds`` or ``low >= high``.
    """
    check_batch(x, y)
    check_attack_settings(eps=eps, alpha=alpha, steps=steps, restarts=restarts, bounds=bounds, eot_samples=eot_samples)
    if eot_transform is not None and not callable(eot_transform):
        raise TypeError(f"eot_transform must be a callable (x, generator) -> x', got {type(eot_transform).__name__}.")
    if restarts > 1 and not random_start:
        logger.warning("pgd: restarts=%d without random_start repeat the same run; set random_start=True.", restarts)
    geo = geometry(norm)
    sched = step_schedule(schedule)
    obj = resolve_objective(loss_fn, success_fn)
    x0 = x.detach()
    b = x0.shape[0]
    lo, hi = as_bounds(bounds, x0)
    eps_t = as_per_sample(eps, x0, "eps")
    alpha_t = eps_t * (2.5 / steps) if alpha is None else as_per_sample(alpha, x0, "alpha")
    m = as_mask(mask, x0)
    gens = per_sample_generators(generator, b) if random_start else []
    sign = -1.0 if targeted else 1.0
    eot = {"samples": eot_samples, "transform": eot_transform,
           "generator": eot_generator(generator) if eot_transform is not None else None}

    with eval_mode(model):
        with torch.no_grad():
            out_clean = eot_output(model, x0, **eot)
            if y is None:
                y = obj.reference(x0, out_clean)
            elif obj.is_classifier:
                check_class_targets(out_clean, y)
            loss_clean = per_sample(obj.loss(out_clean, y), b)

        def objective(out: torch.Tensor) -> torch.Tensor:
            return sign * per_sample(obj.loss(out, y), b)

        best_x = x0.clone()
        best_loss = loss_clean.clone()
        best_succ = torch.zeros(b, dtype=torch.bool, device=x0.device)
        best_restart = torch.full((b,), -1, dtype=torch.long, device=x0.device)
        zero_grad = torch.ones(b, dtype=torch.bool, device=x0.device)
        nan_grad = torch.zeros(b, dtype=torch.bool, device=x0.device)
        fwd, grads = eot_samples, 0
        for r in range(restarts):
            x_adv = x0
            if random_start:
                x_adv = clip_to_bounds(x0 + geo.random_start(x0, eps_t, gens, m), lo, hi)
            for t in range(steps):
                g = eot_input_gradient(model, x_adv, objective, **eot)
                grads += eot_samples
                bad = ~torch.isfinite(g)
                if bool(bad.any()):
                    nan_grad |= bad.reshape(b, -1).any(1)
                    g = torch.where(bad, torch.zeros_like(g), g)
                if m is not None:
                    g = g * m
                zero_grad &= ~g.reshape(b, -1).any(dim=1)
                delta = (x_adv - x0) + alpha_t * sched(t, steps) * geo.direction(g)
                delta = geo.project(delta, eps_t)
                if m is not None:
                    delta = delta * m
                x_adv = clip_to_bounds(x0 + delta, lo, hi)
            with torch.no_grad():
                out_adv = eot_output(model, x_adv, **eot)
                loss_adv = per_sample(obj.loss(out_adv, y), b)
            fwd += eot_samples
            succ = obj.success(out_adv, y, targeted=targeted, loss_adv=loss_adv, loss_clean=loss_clean).reshape(b).bool()
            better = (succ & ~best_succ) | ((succ == best_succ) & (sign * loss_adv > sign * best_loss)) | (best_restart < 0)
            keep = atleast_kd(better, x0.ndim)
            best_x = torch.where(keep, x_adv, best_x)
            best_loss = torch.where(better, loss_adv, best_loss)
            best_succ = torch.where(better, succ, best_succ)
            best_restart = torch.where(better, torch.full_like(best_restart, r), best_restart)
        if bool(nan_grad.any()):
            logger.warning("pgd: NaN/inf input gradients on %d of %d samples (replaced by 0).", int(nan_grad.sum()), b)
        info = {
            "loss": best_loss,
            "loss_clean": loss_clean,
            "norm": flat_norm(best_x - x0, geo.p),
            "grad_calls": grads,
            "forward_calls": fwd + grads,
            "restart": best_restart,
            "zero_grad": zero_grad,
            "nan_grad": nan_grad,
            "objective": obj.name,
        }
        return AttackResult(best_x.detach(), best_succ, info)


def fgsm(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    y: Any = None,
    *,
    loss_fn: LossArg = None,
    eps: float | torch.Tensor,
    alpha: float | torch.Tensor | None = None,
    norm: str | float = "inf",
    random_start: bool = False,
    bounds: Bounds = (0.0, 1.0),
    mask: torch.Tensor | None = None,
    targeted: bool = False,
    generator: GeneratorLike = None,
    success_fn: SuccessFn | None = None,
    eot_samples: int = 1,
    eot_transform: EOTTransform | None = None,
) -> AttackResult:
    """Fast gradient sign method (one step of :func:`pgd`; ``norm="2"`` is FGM).

    The model's mode is handled as in :func:`pgd` (eval mode, caller's flags restored).
    ``alpha`` defaults to ``eps``; ``random_start=True`` with ``alpha=1.25 * eps`` is the
    "fast FGSM" of Wong et al. (2020). Other arguments as in :func:`pgd`.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> res = fgsm(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), eps=0.03)
        >>> res.x_adv.shape
        torch.Size([2, 1, 4, 4])
    """
    return pgd(model, x, y, loss_fn=loss_fn, eps=eps, alpha=eps if alpha is None else alpha, steps=1, norm=norm,
               random_start=random_start, restarts=1, bounds=bounds, mask=mask, targeted=targeted,
               generator=generator, success_fn=success_fn, eot_samples=eot_samples, eot_transform=eot_transform)


def fgm(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    y: Any = None,
    *,
    loss_fn: LossArg = None,
    eps: float | torch.Tensor,
    alpha: float | torch.Tensor | None = None,
    random_start: bool = False,
    bounds: Bounds = (0.0, 1.0),
    mask: torch.Tensor | None = None,
    targeted: bool = False,
    generator: GeneratorLike = None,
    success_fn: SuccessFn | None = None,
    eot_samples: int = 1,
    eot_transform: EOTTransform | None = None,
) -> AttackResult:
    """Fast gradient method: :func:`fgsm` with ``norm="2"`` (a normalised-gradient step of length ``eps``).

    Arguments, model mode and errors as in :func:`fgsm`; ``eps`` is an L2 radius.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> res = fgm(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), eps=0.1)
        >>> bool((res.info["norm"] <= 0.1 + 1e-6).all())
        True
    """
    return fgsm(model, x, y, loss_fn=loss_fn, eps=eps, alpha=alpha, norm="2", random_start=random_start,
                bounds=bounds, mask=mask, targeted=targeted, generator=generator, success_fn=success_fn,
                eot_samples=eot_samples, eot_transform=eot_transform)
