"""Carlini-Wagner L2 attack for classifiers (Carlini & Wagner, S&P 2017), any spatial dims.

Minimises ``||x' - x||_2^2 + c * f(x')`` over ``x' = box(w)`` (tanh change of variables onto
``bounds``), with ``f`` the clipped logit margin, by Adam on ``w``; an optional per-sample
binary search on ``c``. Returns the smallest successful perturbation found per sample (the
clean input where none was found).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> res = cw_l2(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), steps=20)
    >>> res.info["norm"].shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from medrobust.core.attacks.base import (
    AttackResult,
    Bounds,
    as_bounds,
    as_mask,
    as_per_sample,
    atleast_kd,
    check_attack_settings,
    flat_norm,
    model_output,
)
from medrobust.core.attacks.losses import classification_success, labels_or_prediction, margin_loss
from medrobust.core.utils import class_logits, eval_mode
from medrobust.core.validation import check_batch

__all__ = ["cw_l2"]


def cw_l2(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    targeted: bool = False,
    c: float | torch.Tensor = 1.0,
    kappa: float = 0.0,
    steps: int = 100,
    lr: float = 0.01,
    binary_search_steps: int = 1,
    bounds: Bounds = (0.0, 1.0),
    mask: torch.Tensor | None = None,
) -> AttackResult:
    """Carlini-Wagner L2.

    Args:
        model: classifier ``(B, C, *spatial) -> (B, K)`` logits (or one logit); an ``nn.Module``
            runs in eval mode and its train/eval flags are restored; parameters untouched.
        x: ``(B, C, *spatial)`` inside ``bounds``.
        y: labels ``(B,)`` (targets when ``targeted``); ``None``: the clean prediction.
        targeted: reach ``y`` instead of leaving it.
        c: initial trade-off constant (float or ``(B,)``).
        kappa: confidence margin (``>= 0``).
        steps: Adam steps per binary-search round.
        lr: Adam learning rate (in tanh space).
        binary_search_steps: rounds of the per-sample search on ``c`` (x10 until a success, then
            bisection).
        bounds, mask: as in :func:`~medrobust.core.attacks.gradient.pgd`.

    Returns:
        :class:`~medrobust.core.attacks.base.AttackResult`; ``info``: ``norm`` (L2), ``loss``
        (margin at ``x_adv``), ``c`` (final per-sample constants), ``grad_calls``, ``forward_calls``.

    Raises:
        TypeError, ValueError: bad ``x``/``y`` (see :func:`~medrobust.core.attacks.gradient.pgd`),
            ``c`` or ``lr`` not > 0, ``kappa`` < 0, ``steps``/``binary_search_steps`` < 1, bad ``bounds``.
    """
    check_batch(x, y)
    check_attack_settings(c=c, kappa=kappa, steps=steps, lr=lr, binary_search_steps=binary_search_steps,
                          bounds=bounds)
    x0 = x.detach()
    lo, hi = as_bounds(bounds, x0)
    m = as_mask(mask, x0)
    with eval_mode(model):
        with torch.no_grad():
            labels = labels_or_prediction(model_output(model, x0), y)
        return _cw_l2(model, x0, labels, targeted, c, kappa, steps, lr, binary_search_steps, lo, hi, m)


def _cw_l2(model: Callable[[torch.Tensor], Any], x0: torch.Tensor, labels: torch.Tensor, targeted: bool,
           c: float | torch.Tensor, kappa: float, steps: int, lr: float, binary_search_steps: int,
           lo: torch.Tensor, hi: torch.Tensor, m: torch.Tensor | None) -> AttackResult:
    b, nd = x0.shape[0], x0.ndim
    const = as_per_sample(c, x0, "c").reshape(-1).expand(b).clone()
    lower = torch.zeros_like(const)
    upper = torch.full_like(const, float("inf"))

    span = hi - lo
    # tanh change of variables keeps every iterate inside the bounds without clipping.
    w0 = torch.atanh(((x0 - lo) / span * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    best_x = x0.clone()
    best_l2 = torch.full((b,), float("inf"), dtype=x0.dtype, device=x0.device)
    grads, fwd = 0, 1

    def f_term(z: torch.Tensor) -> torch.Tensor:
        marg = margin_loss(z, labels)  # max_{k != y} z_k - z_y
        return (marg if targeted else -marg).clamp_min(-kappa)

    for _ in range(binary_search_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        found = torch.zeros(b, dtype=torch.bool, device=x0.device)
        for _ in range(steps):
            with torch.enable_grad():
                xa = lo + span * (torch.tanh(w) + 1) / 2
                if m is not None:
                    xa = x0 + m * (xa - x0)
                z = class_logits(model_output(model, xa))
                l2sq = (xa - x0).reshape(b, -1).pow(2).sum(1)
                cost = l2sq + const * f_term(z)
                (g,) = torch.autograd.grad(cost.sum(), w)  # w.r.t. w only: parameters' .grad untouched
            grads += 1
            fwd += 1
            w.grad = g
            opt.step()
            with torch.no_grad():
                succ = classification_success(z, labels, targeted=targeted)
                if kappa > 0:
                    succ &= f_term(z) <= -kappa
                l2 = l2sq.sqrt()
                better = succ & (l2 < best_l2)
                best_l2 = torch.where(better, l2, best_l2)
                best_x = torch.where(atleast_kd(better, nd), xa.detach(), best_x)
                found |= succ
        upper = torch.where(found, torch.minimum(upper, const), upper)
        lower = torch.where(found, lower, torch.maximum(lower, const))
        const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)

    with torch.no_grad():
        z = class_logits(model_output(model, best_x))
    fwd += 1
    success = classification_success(z, labels, targeted=targeted)
    info = {
        "norm": flat_norm(best_x - x0, 2),
        "loss": margin_loss(z, labels),
        "c": const,
        "grad_calls": grads,
        "forward_calls": fwd,
    }
    return AttackResult(best_x.detach(), success, info)
