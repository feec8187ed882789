"""Adversarial perturbation families ``"fgsm"`` and ``"pgd"`` for the sensitivity sweep.

Both are L-inf attacks from :mod:`medrobust.core.attacks`. The severity is ``eps`` as a
fraction of the intensity range ``ctx.bounds`` (the "[0, 1] perturbation space"): severity
``4/255`` on a 12-bit mammogram in ``(0, 4095)`` is ``eps = 4/255 * 4095``. Severity 0 returns
``x`` unchanged. The attack moves away from ``ctx.target`` (true labels, or the clean prediction
when ``None``), uses ``ctx.model``, and draws PGD's random start from ``ctx.generators``, so a
sample's result does not depend on the batch it is in.

Optional settings in ``ctx.extras``: ``"loss_fn"`` (any attack objective, default
classification cross-entropy), ``"pgd_steps"`` (default 10), ``"pgd_restarts"`` (default 1),
``"mask"`` (ROI).

Example:
    >>> import torch
    >>> from medrobust.perturbations.registry import PerturbationContext, get_family
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    >>> ctx = PerturbationContext.from_seeds([0, 1], model=net, target=torch.tensor([0, 1]))
    >>> get_family("pgd").apply(torch.rand(2, 1, 4, 4), 2 / 255, ctx).shape
    torch.Size([2, 1, 4, 4])
"""

from __future__ import annotations

import torch

from medrobust.core.attacks import fgsm, pgd
from medrobust.perturbations.registry import PerturbationContext, PerturbationFamily, register

__all__ = ["apply_fgsm", "apply_pgd", "ADVERSARIAL_SEVERITIES"]

ADVERSARIAL_SEVERITIES: tuple[float, ...] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)


def _eps(severity: float, ctx: PerturbationContext) -> float:
    if severity < 0:
        raise ValueError(f"severity (eps as a fraction of the intensity range) must be >= 0, got {severity}.")
    if ctx.model is None:
        raise ValueError("adversarial families need ctx.model (a differentiable model in the input space).")
    lo, hi = ctx.bounds
    return float(severity) * (float(hi) - float(lo))


def apply_fgsm(x: torch.Tensor, severity: float, ctx: PerturbationContext) -> torch.Tensor:
    """FGSM with ``eps = severity * (high - low)``; ``(B, C, *spatial)`` in, same out."""
    eps = _eps(severity, ctx)
    if eps == 0:
        return x.clone()
    res = fgsm(ctx.model, x, ctx.target, loss_fn=ctx.extras.get("loss_fn"), eps=eps, bounds=ctx.bounds,
               mask=ctx.extras.get("mask"))
    return res.x_adv


def apply_pgd(x: torch.Tensor, severity: float, ctx: PerturbationContext) -> torch.Tensor:
    """PGD (random start, ``alpha = 2.5 eps / steps``) with ``eps = severity * (high - low)``."""
    eps = _eps(severity, ctx)
    if eps == 0:
        return x.clone()
    if len(ctx.generators) != x.shape[0]:
        raise ValueError(f"context has {len(ctx.generators)} generators for a batch of {x.shape[0]}.")
    res = pgd(ctx.model, x, ctx.target, loss_fn=ctx.extras.get("loss_fn"), eps=eps,
              steps=int(ctx.extras.get("pgd_steps", 10)), restarts=int(ctx.extras.get("pgd_restarts", 1)),
              bounds=ctx.bounds, mask=ctx.extras.get("mask"), generator=list(ctx.generators))
    return res.x_adv


register(PerturbationFamily(
    name="fgsm",
    apply=apply_fgsm,
    severities=ADVERSARIAL_SEVERITIES,
    description="FGSM (L-inf, one signed-gradient step); severity = eps as a fraction of the intensity range.",
    needs_model=True,
), overwrite=True)

register(PerturbationFamily(
    name="pgd",
    apply=apply_pgd,
    severities=ADVERSARIAL_SEVERITIES,
    description="PGD-10 (L-inf, random start); severity = eps as a fraction of the intensity range.",
    needs_model=True,
), overwrite=True)
