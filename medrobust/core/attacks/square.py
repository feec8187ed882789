"""Square attack, L-inf (Andriushchenko et al., ECCV 2020): score-based and gradient-free.

The gradient-masking check: if this black-box attack lowers accuracy more than PGD does, the
white-box gradients are not to be trusted. Works for any number of spatial dimensions
("squares" are hypercubes over the spatial axes) and for any task through ``loss_fn``.

Per iteration, each not-yet-successful sample gets a random hypercube window whose values are
set to ``x +- eps`` (one sign per channel); the change is kept when the score improves.
Classifiers use the logit margin as score; other tasks use the objective's loss.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    >>> res = square(net, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), eps=0.05, queries=50)
    >>> res.info["queries"].shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
    model_output,
    per_sample_generators,
)
from medrobust.core.attacks.gradient import LossArg
from medrobust.core.attacks.losses import SuccessFn, check_class_targets, margin_loss, per_sample, resolve_objective
from medrobust.core.utils import clip_to_bounds, eval_mode
from medrobust.core.validation import check_batch

__all__ = ["square", "square_p_schedule"]


def square_p_schedule(it: int, queries: int, p_init: float) -> float:
    """Fraction of the image covered by the window at iteration ``it`` (the paper's schedule,
    rescaled to ``queries`` as in the reference code: halving at 10, 50, 200, 500, ... of 10000)."""
    it = int(it / queries * 10000)
    for i, edge in enumerate((10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)):
        if it <= edge:
            return p_init / 2**i
    return p_init / 512


def square(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    y: Any = None,
    *,
    loss_fn: LossArg = None,
    eps: float | torch.Tensor,
    queries: int = 1000,
    p_init: float = 0.8,
    bounds: Bounds = (0.0, 1.0),
    mask: torch.Tensor | None = None,
    targeted: bool = False,
    generator: GeneratorLike = None,
    success_fn: SuccessFn | None = None,
) -> AttackResult:
    """Square attack (L-inf), score-based: only forward passes, no gradients.

    Args:
        model: ``(B, C, *spatial) -> output``; only called under ``torch.no_grad()``. An
            ``nn.Module`` runs in eval mode and its train/eval flags are restored.
        x: ``(B, C, *spatial)`` inside ``bounds``.
        y, loss_fn, targeted, success_fn: as in :func:`~medrobust.core.attacks.gradient.pgd`.
            For classification objectives the score is the logit margin (success = margin
            crossed), otherwise the loss.
        eps: L-inf radius (float or ``(B,)``).
        queries: maximal iterations (one forward of the still-active samples each).
        p_init: initial window fraction (see :func:`square_p_schedule`).
        bounds, mask, generator: as in :func:`~medrobust.core.attacks.gradient.pgd`.

    Returns:
        :class:`~medrobust.core.attacks.base.AttackResult`; ``info``: ``loss`` (objective loss),
        ``norm`` (L-inf), ``queries`` (per sample, ``(B,)``), ``forward_calls``, ``grad_calls`` (0).

    Raises:
        TypeError, ValueError: bad ``x``/``y`` (see :func:`~medrobust.core.attacks.gradient.pgd`),
            ``eps`` negative or not finite, ``queries`` < 1, ``p_init`` outside ``(0, 1]``, bad ``bounds``.
    """
    check_batch(x, y)
    check_attack_settings(eps=eps, queries=queries, p_init=p_init, bounds=bounds)
    obj = resolve_objective(loss_fn, success_fn)
    x0 = x.detach()
    b, c = x0.shape[:2]
    spatial = tuple(x0.shape[2:])
    nd = x0.ndim
    lo, hi = as_bounds(bounds, x0)
    eps_t = as_per_sample(eps, x0, "eps")
    eps_b = eps_t.reshape(-1).expand(b).reshape(b, *([1] * (nd - 1)))
    m = as_mask(mask, x0)
    gens = per_sample_generators(generator, b)
    sign = -1.0 if targeted else 1.0

    with eval_mode(model):
        with torch.no_grad():
            out_clean = model_output(model, x0)
            if y is None:
                y = obj.reference(x0, out_clean)
            elif obj.is_classifier:
                check_class_targets(out_clean, y)
            loss_clean = per_sample(obj.loss(out_clean, y), b)

            def evaluate(xs: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
                """Score to minimise, success and loss of candidates ``xs`` for samples ``idx``."""
                out = model_output(model, xs)
                ys = y[idx] if isinstance(y, torch.Tensor) else y
                loss = per_sample(obj.loss(out, ys), xs.shape[0])
                succ = obj.success(out, ys, targeted=targeted, loss_adv=loss, loss_clean=loss_clean[idx]).reshape(-1).bool()
                if obj.is_classifier:
                    marg = margin_loss(out, ys)  # > 0 once misclassified
                    score = marg if targeted else -marg  # targeted: margin of the target class
                else:
                    score = -sign * loss
                return score, succ, loss

            lo_f, hi_f = lo.expand_as(x0), hi.expand_as(x0)
            m_f = None if m is None else m.expand_as(x0)

            def clip(delta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
                e = eps_b[idx]
                delta = torch.maximum(torch.minimum(delta, e), -e)
                if m_f is not None:
                    delta = delta * m_f[idx]
                return clip_to_bounds(x0[idx] + delta, lo_f[idx], hi_f[idx])

            # initialisation: stripes along the last spatial axis, one sign per (channel, stripe)
            stripes = draw(gens, (c,) + (1,) * (len(spatial) - 1) + (spatial[-1],), torch.rand, x0)
            all_idx = torch.arange(b, device=x0.device)
            x_best = clip(eps_b * (2 * (stripes > 0.5).to(x0) - 1), all_idx)
            score_best, succ_best, loss_best = evaluate(x_best, all_idx)
            n_queries = torch.ones(b, dtype=torch.long, device=x0.device)
            fwd = 2
            n_feat = 1
            for s_ in spatial:
                n_feat *= s_
            for it in range(queries - 1):
                idx = (~succ_best).nonzero().flatten()
                if idx.numel() == 0:
                    break
                p = square_p_schedule(it, queries, p_init)
                side = max(1, min(int(round((p * n_feat) ** (1.0 / len(spatial)))), min(spatial)))
                delta = x_best[idx] - x0[idx]
                for row, i in enumerate(idx.tolist()):
                    g = gens[i]
                    corner = [int(torch.randint(0, s_ - side + 1, (1,), generator=g, device=g.device)) for s_ in spatial]
                    signs = 2 * (torch.rand((c,), generator=g, device=g.device) > 0.5).to(x0) - 1
                    window = (row, slice(None)) + tuple(slice(o, o + side) for o in corner)
                    delta[window] = atleast_kd(signs * eps_b[i].reshape(()), len(spatial) + 1)
                x_new = clip(delta, idx)
                score, succ, loss = evaluate(x_new, idx)
                fwd += 1
                n_queries[idx] += 1
                better = (score < score_best[idx]) | succ
                x_best[idx] = torch.where(atleast_kd(better, nd), x_new, x_best[idx])
                score_best[idx] = torch.where(better, score, score_best[idx])
                loss_best[idx] = torch.where(better, loss, loss_best[idx])
                succ_best[idx] = succ_best[idx] | succ

        info = {
            "loss": loss_best,
            "loss_clean": loss_clean,
            "norm": flat_norm(x_best - x0, "inf"),
            "queries": n_queries,
            "forward_calls": fwd,
            "grad_calls": 0,
        }
        return AttackResult(x_best, succ_best, info)
