"""Attribution robustness: differentiable path Integrated Gradients, top-k intersection of two
attribution maps, and a top-k attribution attack (Ghorbani et al., AAAI 2019; as evaluated by
Chen et al., NeurIPS 2019 and Chalasani et al., ICML 2020).

- :func:`path_integrated_gradients`: IG of any per-sample scalar score along the straight path
  ``x_from -> x_to`` (midpoint Riemann rule), optionally with ``create_graph=True`` so the
  result can be differentiated again (training objectives, attacks on attributions). Captum's
  ``IntegratedGradients`` (used by :func:`medrobust.core.metrics.attribution.integrated_gradients`
  for evaluation) detaches its result, hence this small differentiable version.
- :func:`topk_intersection`: share of the ``k`` largest-magnitude voxels of one map that are
  also among the ``k`` largest of the other (channels summed per voxel).
- :func:`topk_attribution_attack`: L-inf perturbation (the library's PGD) that moves attribution
  mass out of the clean map's top-k voxels; reports which samples kept their label (the attack
  is meant to change the explanation, not the prediction).

Shapes: ``x`` ``(B, C, *spatial)`` (2-D or 3-D); maps have the same shape.

Example:
    >>> import torch
    >>> a = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]]); b = torch.tensor([[[3.0, 0.0, 2.0, 1.0]]])
    >>> topk_intersection(a[:, None], b[:, None], k=2).tolist()
    [0.5]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from medrobust.core.attacks import pgd
from medrobust.core.utils import class_logits, eval_mode, model_output
from medrobust.core.validation import check_batch, check_number, check_positive

__all__ = ["path_integrated_gradients", "topk_intersection", "topk_mask", "topk_attribution_attack",
           "class_score"]

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def class_score(model: Callable[[torch.Tensor], Any], target: torch.Tensor) -> ScoreFn:
    """``z -> logit of class target[b]`` per sample ``(B,)`` (a binary single logit ``z`` reads as ``[0, z]``)."""

    def score(z: torch.Tensor) -> torch.Tensor:
        reps = z.shape[0] // target.shape[0]
        t = target.repeat(reps)
        return class_logits(model_output(model, z)).gather(1, t[:, None])[:, 0]

    return score


def path_integrated_gradients(
    score_fn: ScoreFn,
    x_from: torch.Tensor,
    x_to: torch.Tensor,
    *,
    steps: int = 10,
    create_graph: bool = False,
) -> torch.Tensor:
    """``IG_i = (x_to - x_from)_i * mean_k d score(x_from + a_k (x_to - x_from)) / d x_i``, ``a_k = (k + 1/2) / steps``.

    Args:
        score_fn: ``(S * B, C, *spatial) -> (S * B,)`` per-sample scores; it receives the ``S``
            path points stacked step-major (``z[s * B + b]``), so a score that needs per-sample
            targets must repeat them ``S`` times (as :func:`class_score` does).
        x_from: baseline ``(B, C, *spatial)`` (zeros for the usual IG; the clean input for the
            IG-NORM regulariser of Chen et al.).
        x_to: end point, same shape.
        steps: path points ``S``.
        create_graph: keep the graph so the result is differentiable (w.r.t. ``x_to``,
            ``x_from`` and the model's parameters).

    Returns:
        ``(B, C, *spatial)``; sums to about ``score(x_to) - score(x_from)`` (completeness, up to
        the quadrature error).

    Example:
        >>> w = torch.tensor([1.0, -2.0])
        >>> ig = path_integrated_gradients(lambda z: (z.reshape(z.shape[0], -1) @ w) ** 2,
        ...                                torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, 2), steps=50)
        >>> round(float(ig.sum()), 3)  # (1 - 2)^2 - 0
        1.0
    """
    check_positive("steps", steps, integer=True)
    if x_from.shape != x_to.shape:
        raise ValueError(f"x_from {tuple(x_from.shape)} and x_to {tuple(x_to.shape)} must have the same shape.")
    b = x_to.shape[0]
    diff = x_to - x_from
    alphas = (torch.arange(steps, dtype=x_to.dtype, device=x_to.device) + 0.5) / steps
    view = (steps, *([1] * x_to.ndim))
    with torch.enable_grad():
        path = (x_from.unsqueeze(0) + alphas.reshape(view) * diff.unsqueeze(0)).reshape(steps * b, *x_to.shape[1:])
        if not path.requires_grad:
            path.requires_grad_(True)
        s = score_fn(path)
        if s.shape != (steps * b,):
            raise ValueError(f"score_fn must return one score per path point ({steps * b},), got {tuple(s.shape)}.")
        (g,) = torch.autograd.grad(s.sum(), path, create_graph=create_graph)
    avg = g.reshape(steps, *x_to.shape).mean(0)
    return diff * avg


def _k(k: int | float, n: int) -> int:
    check_number("k", k, low=0, low_open=True)
    kk = int(round(k * n)) if isinstance(k, float) and k < 1 else int(k)
    if not 1 <= kk <= n:
        raise ValueError(f"k must be an int in [1, {n}] or a fraction in (0, 1), got {k!r}.")
    return kk


def topk_mask(attributions: torch.Tensor, k: int | float) -> torch.Tensor:
    """Boolean ``(B, *spatial)``: the ``k`` voxels with the largest ``sum_c |attr|`` per sample (``k`` < 1: a fraction)."""
    if not isinstance(attributions, torch.Tensor) or attributions.ndim < 3:
        raise TypeError("attributions must be a tensor (B, C, *spatial).")
    a = attributions.detach().abs().sum(1)
    flat = a.reshape(a.shape[0], -1)
    kk = _k(k, flat.shape[1])
    idx = flat.topk(kk, dim=1).indices
    m = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
    return m.reshape(a.shape)


def topk_intersection(a: torch.Tensor, b: torch.Tensor, k: int | float) -> torch.Tensor:
    """Share ``(B,)`` of the top-``k`` voxels of ``a`` that are also top-``k`` in ``b`` (1 = same top-k set).

    Args:
        a, b: attribution maps ``(B, C, *spatial)`` of the same shape.
        k: voxels (int) or a fraction of the voxels (float < 1).
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        raise ValueError(f"a and b must be tensors of the same shape (B, C, *spatial), got "
                         f"{getattr(a, 'shape', type(a))} and {getattr(b, 'shape', type(b))}.")
    ma, mb = topk_mask(a, k), topk_mask(b, k)
    kk = ma.reshape(ma.shape[0], -1).sum(1)
    return (ma & mb).reshape(ma.shape[0], -1).sum(1).double() / kk.double()


def topk_attribution_attack(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    eps: float,
    k: int | float = 0.1,
    steps: int = 10,
    ig_steps: int = 10,
    alpha: float | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k attack on IG attributions (Ghorbani et al.): L-inf PGD minimising the share of attribution mass
    that stays in the clean map's top-``k`` voxels.

    The attributions are IG from an all-zero baseline of the class-``y`` logit (``ig_steps``
    points, differentiable); the clean top-k set is fixed from the clean map. Gradients of
    piecewise-linear (ReLU) networks reach the input only through the path end point, so this is a
    first-order attack on the explanation, like the original (which smooths ReLUs instead).

    Args:
        model: classifier ``(B, C, *spatial) -> (B, K)``; run in eval mode (restored afterwards).
        x: inputs ``(B, C, *spatial)`` inside ``bounds``.
        y: class explained per sample ``(B,)``; ``None``: the clean prediction.
        eps: L-inf radius.
        k: top-k size (int voxels or a fraction < 1).
        steps, alpha, bounds, generator: as :func:`medrobust.core.attacks.pgd`.
        ig_steps: IG path points inside the attack.

    Returns:
        ``(x_adv, label_kept)``: ``(B, C, *spatial)`` and ``(B,)`` bool (prediction unchanged);
        compare attributions only where ``label_kept``.
    """
    check_batch(x)
    check_number("eps", eps, low=0)
    with eval_mode(model):
        with torch.no_grad():
            pred = class_logits(model_output(model, x)).argmax(1)
        target = pred if y is None else y.reshape(-1).long().to(x.device)
        zeros = torch.zeros_like(x)
        ig0 = path_integrated_gradients(class_score(model, target), zeros, x, steps=ig_steps)
        top = topk_mask(ig0, k).unsqueeze(1)  # (B, 1, *spatial)

        def mass_in_topk(z: torch.Tensor) -> torch.Tensor:
            ig = path_integrated_gradients(class_score(model, target), torch.zeros_like(z), z, steps=ig_steps,
                                           create_graph=True).abs()
            inside = (ig * top).reshape(z.shape[0], -1).sum(1)
            return (inside / ig.reshape(z.shape[0], -1).sum(1).clamp_min(1e-12))[:, None]

        res = pgd(mass_in_topk, x, target, loss_fn=lambda out, _: -out[:, 0], eps=eps, alpha=alpha, steps=steps,
                  bounds=bounds, generator=generator)
        with torch.no_grad():
            kept = class_logits(model_output(model, res.x_adv)).argmax(1) == pred
    return res.x_adv, kept
