"""The customised sparse attack mFI-PSO (Shu, Shi, Jia, Zhu, Chen; arXiv 2006.03243).

1. Per-entry Fisher-information sensitivity (:func:`medrobust.core.fisher.pixel_fisher_information`,
   w.r.t. ``log p_target``) picks the ``k`` most vulnerable pixels/voxels.
2. Standard particle-swarm optimisation (global best, personal bests updated when a particle
   improves; the reference code's local-best and personal-best bugs are not reproduced) searches
   their values to reach the target class, or a chosen target probability ``p*``, with a small
   L1 change. Fitness to minimise: ``a1 * A1 + a2 * sum_j |delta_j| / (high_j - low_j)`` with

   - targeted, ``p*`` given: ``A1 = |p_target - p*|``;
   - targeted: ``A1 = p_top1 - p_target`` until the target wins, then 0;
   - untargeted: ``A1 = p_top1 - p_top2`` while still classified as ``y``, then 0.

   Each delta lies in ``[-box (x_j - low_j), box (high_j - x_j)]`` (the paper's
   ``[-0.15 x_j, 0.15 (1 - x_j)]`` for [0, 1] images); velocities are clipped to
   ``velocity_clip`` of that range; inertia 0.6, ``c1 = c2 = 2``; ``iterations`` rounds, plus
   ``extra_iterations`` when not yet successful.

Unlike the other attacks, ``sparse_pso`` is **targeted by default** (``targeted=True``, as in
the paper): without ``target`` it pushes each input to its second most probable class; pass
``targeted=False`` to only leave the label ``y``.

Samples are attacked one at a time (the swarm is the batch), so results do not depend on the
batch; randomness comes from per-sample generators.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> res = sparse_pso(net, torch.rand(2, 1, 4, 4), k=3, swarm=20, iterations=3, extra_iterations=0)
    >>> bool((res.info["norm"] <= 3).all())
    True
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
    check_attack_settings,
    flat_norm,
    model_output,
    per_sample_generators,
)
from medrobust.core.attacks.losses import classification_success, labels_or_prediction
from medrobust.core.fisher import image_fisher_information, pixel_fisher_information
from medrobust.core.utils import class_logits, clip_to_bounds, eval_mode
from medrobust.core.validation import check_batch, check_labels

__all__ = ["sparse_pso", "pso_fitness"]


def pso_fitness(
    probs: torch.Tensor,
    delta_l1: torch.Tensor,
    *,
    label: int,
    target: int,
    targeted: bool,
    p_target: float | None,
    a1: float,
    a2: float,
) -> torch.Tensor:
    """mFI-PSO fitness ``(S,)`` of ``S`` candidates from their probabilities ``(S, K)`` and
    normalised L1 changes ``(S,)`` (see the module docstring)."""
    top2 = probs.topk(2, dim=1)
    if targeted and p_target is not None:
        a1_term = (probs[:, target] - p_target).abs()
    elif targeted:
        a1_term = torch.where(top2.indices[:, 0] == target, torch.zeros_like(delta_l1),
                              top2.values[:, 0] - probs[:, target])
    else:
        a1_term = torch.where(top2.indices[:, 0] == label, top2.values[:, 0] - top2.values[:, 1],
                              torch.zeros_like(delta_l1))
    return a1 * a1_term + a2 * delta_l1


def _success(probs: torch.Tensor, *, label: int, target: int, targeted: bool, p_target: float | None,
             p_tol: float) -> torch.Tensor:
    if not targeted:
        return classification_success(probs, torch.full_like(probs[:, 0], label, dtype=torch.long), targeted=False)
    ok = classification_success(probs, torch.full_like(probs[:, 0], target, dtype=torch.long), targeted=True)
    if p_target is not None:
        ok &= (probs[:, target] - p_target).abs() <= p_tol
    return ok


def sparse_pso(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    target: torch.Tensor | int | None = None,
    targeted: bool = True,
    k: int | None = None,
    fi_threshold: float = 0.01,
    k_max: int = 100,
    p_target: float | None = None,
    p_tol: float = 0.05,
    swarm: int = 200,
    iterations: int = 10,
    extra_iterations: int = 40,
    inertia: float = 0.6,
    c1: float = 2.0,
    c2: float = 2.0,
    velocity_clip: float = 0.05,
    box: float = 0.15,
    a1: float = 1e7,
    a2: float | None = None,
    bounds: Bounds = (0.0, 1.0),
    mask: torch.Tensor | None = None,
    generator: GeneratorLike = None,
    chunk: int | None = None,
) -> AttackResult:
    """mFI-PSO: change at most ``k`` entries of each input to reach a target class / probability.

    Args:
        model: classifier ``(B, C, *spatial) -> (B, K)`` (or one logit); an ``nn.Module`` runs in
            eval mode and its train/eval flags are restored; parameters untouched.
        x: ``(B, C, *spatial)`` inside ``bounds``.
        y: true labels ``(B,)``; ``None``: the clean prediction.
        target: target class (int or ``(B,)``); ``None``: the second most probable class.
        targeted: default ``True`` (unlike the other attacks): reach ``target``; ``False``: only
            leave ``y`` (pixels still chosen by FI w.r.t. ``target``).
        k: entries to perturb; ``None``: those with pixel FI ``>= fi_threshold`` (at least 1,
            at most ``k_max``).
        p_target: requested target probability ``p*`` (``None``: just make the target win).
        p_tol: success needs ``|p_target(x_adv) - p*| <= p_tol`` (with ``p*``) and the target winning.
        swarm, iterations, extra_iterations: PSO size and rounds (+ extra rounds when not yet
            successful after ``iterations``).
        inertia, c1, c2, velocity_clip: PSO constants (velocity clipped to this fraction of each range).
        box: each change lies in ``[-box (x - low), box (high - x)]``.
        a1, a2: fitness weights; ``a2`` default 255 (1 when ``p_target`` is given).
        bounds, mask: as in :func:`~medrobust.core.attacks.gradient.pgd`; only entries inside
            ``mask`` are chosen.
        generator: per-sample randomness, see :func:`~medrobust.core.attacks.base.per_sample_generators`.
        chunk: candidates per forward (default: the whole swarm, or fewer so that a chunk holds
            at most 2**24 input values).

    Returns:
        :class:`~medrobust.core.attacks.base.AttackResult`; ``info``: ``indices`` (list of ``(k_i,)``
        flat indices per sample), ``k`` (``(B,)``), ``norm`` (L0, ``(B,)``), ``loss`` (best fitness),
        ``p_target_adv`` (``(B,)``), ``target`` (``(B,)``), ``fi_image`` (image-level FI of the clean
        input w.r.t. ``y``), ``queries`` (``(B,)``), ``grad_calls``.

    Raises:
        TypeError, ValueError: bad ``x``/``y``/``target`` (see :func:`~medrobust.core.attacks.gradient.pgd`);
            a setting out of range (``box`` and ``velocity_clip`` in ``(0, 1]`` / ``> 0``,
            ``p_target`` in ``(0, 1)``, ``swarm`` >= 2, ``iterations`` >= 1, ...); bad ``bounds``;
            a ``mask`` with nothing inside for some sample.
    """
    check_batch(x, y)
    check_attack_settings(k=k, fi_threshold=fi_threshold, k_max=k_max, p_target=p_target, p_tol=p_tol, swarm=swarm,
                          iterations=iterations, extra_iterations=extra_iterations, inertia=inertia, c1=c1, c2=c2,
                          velocity_clip=velocity_clip, box=box, a1=a1, a2=a2, bounds=bounds, chunk=chunk)
    x0 = x.detach()
    b = x0.shape[0]
    lo, hi = as_bounds(bounds, x0)
    m = as_mask(mask, x0)
    with eval_mode(model):
        with torch.no_grad():
            probs0 = torch.softmax(class_logits(model_output(model, x0)), dim=1)
        labels = labels_or_prediction(probs0, y)
        n_cls = probs0.shape[1]
        if target is None:
            tgt = probs0.scatter(1, labels[:, None], -1.0).argmax(dim=1)  # most probable other class
        else:
            tgt = check_labels(target, batch=b, num_classes=n_cls, name="target").to(x0.device).clone()
        fi_map = pixel_fisher_information(model, x0, tgt)
        fi_img = image_fisher_information(model, x0, labels)
        return _swarm(model, x0, labels, tgt, fi_map, fi_img, lo, hi, m, n_cls=n_cls, targeted=targeted, k=k,
                      fi_threshold=fi_threshold, k_max=k_max, p_target=p_target, p_tol=p_tol, swarm=swarm,
                      iterations=iterations, extra_iterations=extra_iterations, inertia=inertia, c1=c1, c2=c2,
                      velocity_clip=velocity_clip, box=box, a1=a1, a2=a2, generator=generator, chunk=chunk)


def _swarm(model: Callable[[torch.Tensor], Any], x0: torch.Tensor, labels: torch.Tensor, tgt: torch.Tensor,
           fi_map: torch.Tensor, fi_img: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, m: torch.Tensor | None,
           *, n_cls: int, targeted: bool, k: int | None, fi_threshold: float, k_max: int, p_target: float | None, p_tol: float,
           swarm: int, iterations: int, extra_iterations: int, inertia: float, c1: float, c2: float,
           velocity_clip: float, box: float, a1: float, a2: float | None, generator: GeneratorLike,
           chunk: int | None) -> AttackResult:
    """The PSO search of :func:`sparse_pso` on validated inputs (model already in the right mode)."""
    b = x0.shape[0]
    a2_eff = (1.0 if p_target is not None else 255.0) if a2 is None else float(a2)
    valid = torch.ones_like(x0, dtype=torch.bool) if m is None else (m.expand_as(x0) > 0)
    fi_map = torch.where(valid, fi_map, torch.full_like(fi_map, float("-inf")))
    gens = per_sample_generators(generator, b)
    lo_f, hi_f = lo.expand_as(x0).reshape(b, -1), hi.expand_as(x0).reshape(b, -1)
    x_flat = x0.reshape(b, -1)
    step = int(chunk) if chunk else max(1, min(swarm, 2**24 // max(1, x_flat.shape[1])))

    x_adv = x0.clone().reshape(b, -1)
    success = torch.zeros(b, dtype=torch.bool, device=x0.device)
    best_fit = torch.zeros(b, dtype=x0.dtype, device=x0.device)
    p_adv = torch.zeros(b, dtype=x0.dtype, device=x0.device)
    queries = torch.zeros(b, dtype=torch.long, device=x0.device)
    all_idx, ks = [], torch.zeros(b, dtype=torch.long, device=x0.device)
    for i in range(b):
        fi_i = fi_map[i].reshape(-1)
        ki = int(k) if k is not None else int((fi_i >= fi_threshold).sum().clamp(1, k_max))
        n_valid = int(valid[i].sum())
        if n_valid == 0:
            raise ValueError(f"mask: sample {i} has no entry inside the mask to perturb.")
        ki = max(1, min(ki, n_valid))
        idx = fi_i.topk(ki).indices
        all_idx.append(idx)
        ks[i] = ki
        xi, span = x_flat[i, idx], (hi_f[i, idx] - lo_f[i, idx])
        lb, ub = -box * (xi - lo_f[i, idx]), box * (hi_f[i, idx] - xi)
        vmax = velocity_clip * (ub - lb)
        g = gens[i]

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=g, device=g.device).to(x0)

        def evaluate(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            prs = []
            for j in range(0, pos.shape[0], step):  # candidates built per chunk: volumes x swarm can be large
                cand = x_flat[i].expand(min(step, pos.shape[0] - j), -1).clone()
                cand[:, idx] = xi + pos[j:j + step]
                with torch.no_grad():
                    out = model_output(model, cand.reshape(cand.shape[0], *x0.shape[1:]))
                prs.append(torch.softmax(class_logits(out), dim=1))
            pr = torch.cat(prs)
            l1 = (pos.abs() / span).sum(dim=1)
            kw = dict(label=int(labels[i]), target=int(tgt[i]), targeted=targeted, p_target=p_target)
            return pso_fitness(pr, l1, a1=a1, a2=a2_eff, **kw), _success(pr, p_tol=p_tol, **kw), pr

        pos = lb + (ub - lb) * rand(swarm, ki)
        vel = (2 * rand(swarm, ki) - 1) * vmax
        fit, succ, pr = evaluate(pos)
        queries[i] += swarm
        pbest, pbest_fit, pbest_succ, pbest_pr = pos.clone(), fit.clone(), succ.clone(), pr.clone()
        gi = int(pbest_fit.argmin())
        rounds = iterations
        it = 0
        while it < rounds:
            gbest = pbest[gi]
            vel = inertia * vel + c1 * rand(swarm, ki) * (pbest - pos) + c2 * rand(swarm, ki) * (gbest - pos)
            vel = torch.maximum(torch.minimum(vel, vmax), -vmax)
            pos = torch.maximum(torch.minimum(pos + vel, ub), lb)
            fit, succ, pr = evaluate(pos)
            queries[i] += swarm
            improved = fit < pbest_fit  # standard PSO: a particle's best only moves when it improves
            pbest = torch.where(improved[:, None], pos, pbest)
            pbest_fit = torch.where(improved, fit, pbest_fit)
            pbest_succ = torch.where(improved, succ, pbest_succ)
            pbest_pr = torch.where(improved[:, None], pr, pbest_pr)
            gi = int(pbest_fit.argmin())
            it += 1
            if it == iterations and not bool(pbest_succ[gi]):
                rounds = iterations + extra_iterations
        x_adv[i, idx] = xi + pbest[gi]
        success[i] = pbest_succ[gi]
        best_fit[i] = pbest_fit[gi]
        p_adv[i] = pbest_pr[gi, tgt[i]]

    x_adv = clip_to_bounds(x_adv, lo_f, hi_f).reshape(x0.shape)
    info = {
        "indices": all_idx,
        "k": ks,
        "norm": flat_norm(x_adv - x0, 0),
        "loss": best_fit,
        "p_target_adv": p_adv,
        "target": tgt,
        "fi_image": fi_img,
        "queries": queries,
        "grad_calls": n_cls * 2,
    }
    return AttackResult(x_adv.detach(), success, info)
