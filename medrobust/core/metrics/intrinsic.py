"""Intrinsic robustness (Yu et al., IJCAI 2019) and the local decision/loss surface plot.

``psi(x) = max_{||delta|| <= eps} KL(p(.|x) || p(.|x + delta))``, found by PGD from a random
start (:func:`medrobust.core.attacks.pgd` with a KL loss); the model's score is the mean over
the data. Being a maximum found by an attack, it is a *lower* bound on the true ``psi``.

The surface plot evaluates the margin ``Z_y(x') - max_{i != y} Z_i(x')`` (or the CE loss) on
``x' = x + a d1 + b d2`` with ``d1 = sign(grad_x CE(x, y))`` (the adversarial direction) and
``d2`` a random sign direction: a flat, positive surface means a robust neighbourhood.

Works for ``x`` ``(B, C, H, W[, D])``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medrobust.core.attacks import pgd
from medrobust.core.attacks.base import Bounds, GeneratorLike, as_bounds, draw, input_gradient, per_sample_generators
from medrobust.core.attacks.losses import cross_entropy_loss, labels_or_prediction, margin_loss
from medrobust.core.metrics._utils import (
    check_batch,
    class_logits,
    eval_mode,
    model_output,
    predict_logits,
    pyplot,
    save_figure,
)
from medrobust.core.validation import check_nonnegative

__all__ = ["kl_loss", "intrinsic_robustness", "LossSurface", "loss_surface", "plot_loss_surface"]


def kl_loss(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(ref) || softmax(out))`` per sample ``(B,)``; both are model outputs (logits).

    A loss for :func:`~medrobust.core.attacks.pgd` (``y`` = the clean output, its default).
    """
    lp = F.log_softmax(class_logits(out), dim=1)
    lq = F.log_softmax(class_logits(ref.detach()), dim=1)
    return (lq.exp() * (lq - lp)).sum(dim=1)


def intrinsic_robustness(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    *,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    norm: str = "inf",
    restarts: int = 1,
    bounds: Bounds = (0.0, 1.0),
    generator: GeneratorLike = None,
    batch_size: int = 128,
) -> torch.Tensor:
    """Per-sample intrinsic robustness ``psi(x)`` ``(B,)`` (larger = less robust); ``.mean()`` is the score.

    Args:
        model: classifier ``(B, C, *spatial) -> (B, K)`` (single logit allowed); evaluated in
            eval mode (the caller's mode is restored).
        x: inputs ``(B, C, H, W[, D])`` inside ``bounds``.
        eps: radius of the ball (input units); ``eps = 0`` gives exactly 0.
        steps, alpha, norm, restarts, bounds, generator: passed to
            :func:`~medrobust.core.attacks.pgd` (``alpha`` default ``2.5 eps / steps``).
        batch_size: samples per PGD call.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> psi = intrinsic_robustness(net, torch.rand(4, 1, 4, 4), eps=0.05)
        >>> psi.shape, bool((psi >= 0).all())
        (torch.Size([4]), True)
    """
    check_batch(x)
    check_nonnegative("eps", eps)
    if eps == 0:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    gens = per_sample_generators(generator, x.shape[0])
    out = []
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].detach()
            res = pgd(model, xb, None, loss_fn=kl_loss, eps=eps, alpha=alpha, steps=steps, norm=norm,
                      restarts=restarts, bounds=bounds, generator=gens[i : i + batch_size])  # fmt: skip
            with torch.no_grad():  # recompute at the kept x_adv: the attack's loss is the same quantity
                out.append(kl_loss(model_output(model, res.x_adv), model_output(model, xb)).clamp_min(0.0))
    return torch.cat(out)


@dataclass
class LossSurface:
    """Values on the plane ``x + a d1 + b d2``.

    Attributes:
        a, b: grid coordinates ``(R,)`` (input units along each sign direction).
        values: ``(B, R, R)``; ``values[:, i, j]`` at ``(a[i], b[j])``.
        quantity: ``"margin"`` or ``"loss"``.
        labels: the class ``y`` used per sample ``(B,)``.
    """

    a: torch.Tensor
    b: torch.Tensor
    values: torch.Tensor
    quantity: str
    labels: torch.Tensor


def loss_surface(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    span: float,
    resolution: int = 21,
    quantity: str = "margin",
    bounds: Bounds | None = None,
    generator: GeneratorLike = None,
    chunk: int = 256,
) -> LossSurface:
    """Margin (or CE loss) on the plane of the adversarial sign direction and a random sign direction.

    Args:
        model: classifier ``(B, C, *spatial) -> (B, K)``.
        x: inputs ``(B, C, H, W[, D])``.
        y: classes ``(B,)``; default the model's prediction.
        span: the grid covers ``[-span, span]`` along each direction (input units, L-inf radius).
        resolution: grid points per direction.
        quantity: ``"margin"`` (``Z_y - max_{i != y} Z_i``) or ``"loss"`` (cross-entropy).
        bounds: clip ``x'`` to these bounds; ``None`` (default) does not clip.
        generator: seeds the random sign direction.
        chunk: images per forward pass.
    """
    check_batch(x, y)
    if quantity not in ("margin", "loss"):
        raise ValueError(f"quantity must be 'margin' or 'loss', got {quantity!r}.")
    if resolution < 2 or span <= 0:
        raise ValueError(f"resolution must be >= 2 and span > 0, got {resolution} and {span}.")
    with eval_mode(model):
        y = labels_or_prediction(predict_logits(model, x), y)
        _, g, _ = input_gradient(model, x, lambda out: cross_entropy_loss(out, y))
        d1 = g.sign()
        gens = per_sample_generators(generator, x.shape[0])
        d2 = torch.where(draw(gens, x.shape[1:], torch.rand, x) < 0.5, -1.0, 1.0).to(x.dtype)
        grid = torch.linspace(-span, span, resolution, dtype=x.dtype, device=x.device)
        aa, bb = torch.meshgrid(grid, grid, indexing="ij")
        coef_a, coef_b = aa.reshape(-1), bb.reshape(-1)
        if bounds is not None:
            lo, hi = (t.expand_as(x) for t in as_bounds(bounds, x))
        vals = []
        with torch.no_grad():
            for i in range(x.shape[0]):
                pts = []
                for j in range(0, coef_a.numel(), chunk):
                    ca = coef_a[j : j + chunk].reshape(-1, *([1] * (x.ndim - 1)))
                    cb = coef_b[j : j + chunk].reshape(-1, *([1] * (x.ndim - 1)))
                    xp = x[i : i + 1] + ca * d1[i : i + 1] + cb * d2[i : i + 1]
                    if bounds is not None:
                        xp = torch.maximum(torch.minimum(xp, hi[i : i + 1]), lo[i : i + 1])
                    out = model_output(model, xp)
                    yy = y[i].expand(xp.shape[0])
                    pts.append(-margin_loss(out, yy) if quantity == "margin" else cross_entropy_loss(out, yy))
                vals.append(torch.cat(pts).reshape(resolution, resolution))
    return LossSurface(a=grid.cpu(), b=grid.cpu(), values=torch.stack(vals).cpu(), quantity=quantity, labels=y.cpu())


def plot_loss_surface(surface: LossSurface, path: str | Path, *, index: int = 0, title: str | None = None) -> Path:
    """PNG of one sample's surface: a 3-D plot and a contour map (the zero-margin line is the boundary)."""
    plt = pyplot()
    if not 0 <= index < surface.values.shape[0]:
        raise ValueError(f"index must be in [0, {surface.values.shape[0] - 1}], got {index}.")
    a, b = np.meshgrid(surface.a.numpy(), surface.b.numpy(), indexing="ij")
    z = surface.values[index].numpy()
    fig = plt.figure(figsize=(10, 4.2))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    ax.plot_surface(a, b, z, cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel("a (adversarial sign dir.)")
    ax.set_ylabel("b (random sign dir.)")
    ax.set_zlabel(surface.quantity)
    ax2 = fig.add_subplot(1, 2, 2)
    cs = ax2.contourf(a, b, z, levels=20, cmap="viridis")
    fig.colorbar(cs, ax=ax2, label=surface.quantity)
    if surface.quantity == "margin" and z.min() < 0 < z.max():
        ax2.contour(a, b, z, levels=[0.0], colors="red", linewidths=1.5)
    ax2.set_xlabel("a (adversarial sign dir.)")
    ax2.set_ylabel("b (random sign dir.)")
    fig.suptitle(title or f"{surface.quantity} around sample {index} (class {int(surface.labels[index])})")
    fig.tight_layout()
    return save_figure(fig, path)
