"""DeepFool (Moosavi-Dezfooli et al., CVPR 2016) for classifiers, L2 or L-inf, any spatial dims.

Each step linearises the logit differences ``z_k - z_y`` of the ``candidates`` most likely
classes, moves to the nearest linearised boundary, and stops per sample once the label flips.
The overshoot is applied to the accumulated perturbation (as in Foolbox).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> res = deepfool(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]))
    >>> bool(res.success.all())
    True
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
    atleast_kd,
    check_attack_settings,
    flat_norm,
    model_output,
)
from medrobust.core.attacks.gradient import geometry
from medrobust.core.attacks.losses import classification_success, labels_or_prediction, margin_loss
from medrobust.core.utils import class_logits, clip_to_bounds, eval_mode
from medrobust.core.validation import check_batch

__all__ = ["deepfool"]


def deepfool(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    steps: int = 50,
    overshoot: float = 0.02,
    candidates: int = 10,
    norm: str | float = "2",
    bounds: Bounds = (0.0, 1.0),
    mask: torch.Tensor | None = None,
) -> AttackResult:
    """Minimal-perturbation untargeted attack.

    Args:
        model: classifier ``(B, C, *spatial) -> (B, K)`` (or one logit); an ``nn.Module`` runs in
            eval mode and its train/eval flags are restored; parameters untouched.
        x: ``(B, C, *spatial)`` inside ``bounds``.
        y: labels ``(B,)``; ``None``: the clean prediction.
        steps: maximal linearisation steps.
        overshoot: the perturbation is scaled by ``1 + overshoot``.
        candidates: classes considered (the most likely at ``x``, label included).
        norm: ``"2"`` or ``"inf"``.
        bounds, mask: as in :func:`~medrobust.core.attacks.gradient.pgd`.

    Returns:
        :class:`~medrobust.core.attacks.base.AttackResult`; ``info``: ``norm``, ``loss`` (margin),
        ``steps`` (per sample), ``grad_calls`` (input-gradient passes of the batch), ``forward_calls``.

    Raises:
        TypeError, ValueError: bad ``x``/``y`` (see :func:`~medrobust.core.attacks.gradient.pgd`),
            ``steps`` < 1, ``overshoot`` < 0, ``candidates`` < 2, unknown ``norm``, bad ``bounds``.
    """
    check_batch(x, y)
    check_attack_settings(steps=steps, overshoot=overshoot, candidates=candidates, bounds=bounds)
    geo = geometry(norm)
    x0 = x.detach()
    lo, hi = as_bounds(bounds, x0)
    m = as_mask(mask, x0)
    with eval_mode(model):
        return _deepfool(model, x0, y, steps, overshoot, candidates, geo, lo, hi, m)


def _deepfool(model: Callable[[torch.Tensor], Any], x0: torch.Tensor, y: Any, steps: int, overshoot: float,
              candidates: int, geo: Any, lo: torch.Tensor, hi: torch.Tensor, m: torch.Tensor | None) -> AttackResult:
    b, nd = x0.shape[0], x0.ndim
    with torch.no_grad():
        z0 = class_logits(model_output(model, x0))
    labels = labels_or_prediction(z0, y)
    k = z0.shape[1]
    n_cand = max(2, min(int(candidates), k))
    # candidate classes: the label first, then the most likely others at the clean input
    others = z0.scatter(1, labels[:, None], float("-inf")).argsort(dim=1, descending=True)[:, : n_cand - 1]
    cls = torch.cat([labels[:, None], others], dim=1)  # (B, n_cand)

    r_tot = torch.zeros_like(x0)
    x_adv = x0.clone()
    active = torch.ones(b, dtype=torch.bool, device=x0.device)
    n_steps = torch.zeros(b, dtype=torch.long, device=x0.device)
    grads = 0
    fwd = 1
    for _ in range(steps):
        with torch.enable_grad():
            xr = x_adv.detach().requires_grad_(True)
            z = class_logits(model_output(model, xr))
            fwd += 1
            active &= margin_loss(z, labels) <= 0  # not yet strictly misclassified
            if not bool(active.any()):
                break
            zc = z.gather(1, cls)
            diffs = zc[:, 1:] - zc[:, :1]  # (B, n_cand - 1), negative while correctly classified
            ws = []
            for j in range(n_cand - 1):
                (g,) = torch.autograd.grad(diffs[:, j].sum(), xr, retain_graph=j + 2 < n_cand)
                ws.append(g if m is None else g * m)
                grads += 1
        w = torch.stack(ws, dim=1)  # (B, n_cand - 1, C, *spatial)
        f = diffs.detach()
        wflat = w.reshape(b, n_cand - 1, -1)
        dual = wflat.abs().sum(-1) if geo.name == "inf" else wflat.norm(dim=-1)
        dist = f.abs() / (dual + 1e-8)
        best = dist.argmin(dim=1)
        idx = torch.arange(b, device=x0.device)
        fb, wb = f[idx, best], w[idx, best]
        if geo.name == "inf":
            r = atleast_kd((fb.abs() + 1e-4) / (flat_norm(wb, 1) + 1e-8), nd) * wb.sign()
        else:
            r = atleast_kd((fb.abs() + 1e-4) / (flat_norm(wb, 2) ** 2 + 1e-8), nd) * wb
        r_tot = r_tot + r * atleast_kd(active, nd).to(r)
        n_steps += active.long()
        x_adv = clip_to_bounds(x0 + (1 + overshoot) * r_tot, lo, hi)
    with torch.no_grad():
        z = class_logits(model_output(model, x_adv))
    fwd += 1
    success = classification_success(z, labels, targeted=False)
    info = {
        "norm": flat_norm(x_adv - x0, geo.p),
        "loss": margin_loss(z, labels),
        "steps": n_steps,
        "grad_calls": grads,
        "forward_calls": fwd,
    }
    return AttackResult(x_adv.detach(), success, info)
