"""Average- and worst-case flatness of the robust loss in weight space (Stutz, Hein, Schiele,
ICCV 2021; davidstutz/robust-generalization-flatness).

Robust loss ``RL(w) = mean_i max_{||delta|| <= eps} CE(f_w(x_i + delta), y_i)``, the inner max by
:func:`medrobust.core.attacks.pgd` (``eps = 0`` gives the clean loss). Weight perturbations
``nu`` are *relative*: per parameter tensor ("layer") ``||nu_l||_2 <= xi ||w_l||_2``, or per
output filter of a convolution (``relative="filter"``; other tensors stay layer-wise).
Parameters of normalisation layers (BatchNorm, InstanceNorm, GroupNorm, LayerNorm) are never
perturbed. Relative perturbations make both measures invariant to rescaling consecutive ReLU
layers by ``c`` and ``1/c``.

- average-case: ``E_nu RL(w + nu) - RL(w)``, ``nu`` uniform on the relative sphere
  (``xi = 0.5``, 10 draws), adversarial examples recomputed for every ``nu``;
- worst-case: ``max_nu RL(w + nu) - RL(w)`` over the relative ball (``xi = 0.003``), by
  alternating PGD on the inputs with a normalised ascent step on the weights (each layer's step is
  its gradient rescaled to ``lr ||w_l||``, then projected), 20 iterations.

The measures run on a private copy of the model (in eval mode): the caller's weights, ``.grad``
and train/eval flags are never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medrobust.core.attacks import pgd
from medrobust.core.attacks.base import Bounds, GeneratorLike
from medrobust.core.utils import base_seed, eval_mode, model_output
from medrobust.core.validation import check_batch
from medrobust.core.attacks.losses import cross_entropy_loss

__all__ = ["NORM_LAYERS", "perturbable_parameters", "robust_loss", "FlatnessResult", "average_flatness", "worst_flatness"]

NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, InstanceNorm1d/2d/3d, SyncBatchNorm
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def perturbable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Named parameters outside normalisation layers (the ones flatness perturbs; frozen ones too)."""
    skip = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    return [(n, p) for n, p in model.named_parameters() if id(p) not in skip]


def _groups(w: torch.Tensor, relative: str) -> torch.Tensor:
    """``w`` viewed as ``(G, -1)``: one group per filter (conv weights, ``relative="filter"``) or one."""
    if relative == "filter" and w.ndim > 2:
        return w.reshape(w.shape[0], -1)
    return w.reshape(1, -1)


def _project(nu: torch.Tensor, w: torch.Tensor, xi: float, relative: str, *, sphere: bool) -> torch.Tensor:
    """Scale ``nu`` so each group has norm ``xi ||w_g||`` (sphere) or at most that (ball)."""
    g, wg = _groups(nu, relative), _groups(w, relative)
    radius = xi * wg.norm(dim=1, keepdim=True)
    n = g.norm(dim=1, keepdim=True).clamp_min(1e-30)
    factor = radius / n if sphere else torch.clamp(radius / n, max=1.0)
    return (g * factor).reshape(nu.shape)


def robust_loss(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    norm: str = "inf",
    bounds: Bounds = (0.0, 1.0),
    generator: GeneratorLike = None,
    batch_size: int = 128,
    return_adversarials: bool = False,
) -> Any:
    """Mean cross-entropy at PGD adversarial examples (``eps = 0``: the clean loss).

    Args:
        model: classifier ``(B, C, *spatial) -> (B, K)`` (single logit allowed); an
            ``nn.Module`` runs in eval mode and its train/eval flags are restored.
        x: inputs ``(N, C, H, W[, D])``; y: classes ``(N,)``.
        eps, steps, alpha, norm, bounds, generator: the PGD attack.
        batch_size: samples per attack call.
        return_adversarials: also return the adversarial inputs.

    Returns:
        The loss (float), or ``(loss, x_adv)``.
    """
    check_batch(x, y, label_name="y (labels)")
    y = torch.as_tensor(y).reshape(-1).long().to(x.device)
    gen = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator
    total, advs = 0.0, []
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i : i + batch_size].detach(), y[i : i + batch_size]
        if eps > 0:
            xb = pgd(model, xb, yb, eps=eps, alpha=alpha, steps=steps, norm=norm, bounds=bounds, generator=gen).x_adv
        with torch.no_grad(), eval_mode(model):
            total += float(cross_entropy_loss(model_output(model, xb), yb).sum())
        if return_adversarials:
            advs.append(xb)
    loss = total / x.shape[0]
    return (loss, torch.cat(advs)) if return_adversarials else loss


@dataclass
class FlatnessResult:
    """Flatness of the robust loss.

    Attributes:
        flatness: perturbed minus reference robust loss (average over draws, or the worst found).
        reference_loss: ``RL(w)``.
        perturbed_loss: ``E_nu RL(w + nu)`` (average) or ``max_nu RL(w + nu)`` (worst).
        losses: ``RL(w + nu)`` per draw (average) or per restart (worst).
        kind: ``"average"`` or ``"worst"``; xi, relative, eps: the settings.
    """

    flatness: float
    reference_loss: float
    perturbed_loss: float
    losses: list[float] = field(default_factory=list)
    kind: str = "average"
    xi: float = 0.0
    relative: str = "layer"
    eps: float = 0.0


def _private_copy(model: nn.Module) -> tuple[nn.Module, list[tuple[str, nn.Parameter]], list[torch.Tensor]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"flatness needs an nn.Module (its weights are perturbed), got {type(model).__name__}.")
    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        p.grad = None
    params = perturbable_parameters(m)
    if not params:
        raise ValueError("model has no parameters outside normalisation layers to perturb.")
    for _, p in params:  # a loaded model may come frozen; the copy needs weight gradients
        p.requires_grad_(True)
    return m, params, [p.detach().clone() for _, p in params]


def _seed_and_generator(generator: torch.Generator | int | None) -> tuple[int, torch.Generator]:
    """An int base seed (for the PGD starts) and a CPU generator for the weight draws."""
    seed = base_seed(generator)
    return seed, torch.Generator().manual_seed(seed)


def _check_settings(xi: float, relative: str) -> None:
    if xi < 0:
        raise ValueError(f"xi must be >= 0, got {xi}.")
    if relative not in ("layer", "filter"):
        raise ValueError(f"relative must be 'layer' or 'filter', got {relative!r}.")


def average_flatness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    xi: float = 0.5,
    samples: int = 10,
    relative: str = "layer",
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    norm: str = "inf",
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | int | None = None,
    batch_size: int = 128,
) -> FlatnessResult:
    """Average-case flatness ``E_nu RL(w + nu) - RL(w)``, ``nu`` uniform on the relative sphere.

    Args:
        model: classifier (``nn.Module``); never modified.
        x: inputs ``(N, C, H, W[, D])``; y: classes ``(N,)``.
        xi: relative radius per layer/filter (0.5 in Stutz et al.).
        samples: number of weight draws (10).
        relative: ``"layer"`` or ``"filter"``.
        eps, steps, alpha, norm, bounds: PGD for the robust loss (``eps = 0``: clean loss).
        generator: ``torch.Generator`` or int seed for the weight draws and the PGD starts.
        batch_size: samples per attack call.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> r = average_flatness(net, torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1]), eps=0.0, samples=3)
        >>> r.kind, len(r.losses)
        ('average', 3)
    """
    _check_settings(xi, relative)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}.")
    m, params, w0 = _private_copy(model)
    seed, gen = _seed_and_generator(generator)
    kw = dict(eps=eps, steps=steps, alpha=alpha, norm=norm, bounds=bounds, batch_size=batch_size)
    ref = robust_loss(m, x, y, generator=seed, **kw)
    losses = []
    with torch.no_grad():
        for k in range(samples):
            for (_, p), w in zip(params, w0):
                u = torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)
                p.copy_(w + _project(u, w, xi, relative, sphere=True))
            with torch.enable_grad():
                losses.append(robust_loss(m, x, y, generator=seed + 1 + k, **kw))
    mean = sum(losses) / len(losses)
    return FlatnessResult(mean - ref, ref, mean, losses, "average", xi, relative, eps)


def worst_flatness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    xi: float = 0.003,
    iterations: int = 20,
    lr: float | None = None,
    restarts: int = 1,
    relative: str = "layer",
    eps: float,
    steps: int = 10,
    alpha: float | None = None,
    norm: str = "inf",
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | int | None = None,
    batch_size: int = 128,
) -> FlatnessResult:
    """Worst-case flatness ``max_{||nu_l|| <= xi ||w_l||} RL(w + nu) - RL(w)``.

    Each iteration recomputes the adversarial inputs at ``w + nu`` with PGD, then takes one
    ascent step on ``nu``: per layer (or filter) the gradient is rescaled to ``lr ||w_l||`` and
    the result projected back into the relative ball. ``nu`` starts uniformly inside the ball.

    Args:
        model: classifier (``nn.Module``); never modified.
        x: inputs ``(N, C, H, W[, D])``; y: classes ``(N,)``.
        xi: relative radius (0.003 in Stutz et al.).
        iterations: weight ascent steps (20).
        lr: relative step size; default ``xi``.
        restarts: independent starts; the worst (largest) loss is kept.
        relative, eps, steps, alpha, norm, bounds, generator, batch_size: as in :func:`average_flatness`.
    """
    _check_settings(xi, relative)
    if iterations < 1 or restarts < 1:
        raise ValueError(f"iterations and restarts must be >= 1, got {iterations} and {restarts}.")
    step = xi if lr is None else float(lr)
    m, params, w0 = _private_copy(model)
    seed, gen = _seed_and_generator(generator)
    kw = dict(eps=eps, steps=steps, alpha=alpha, norm=norm, bounds=bounds, batch_size=batch_size)
    ref = robust_loss(m, x, y, generator=seed, **kw)
    yy = y.reshape(-1).long().to(x.device)
    losses = []
    for r in range(restarts):
        with torch.no_grad():
            nus = []
            for w in w0:  # uniform in the ball: a sphere direction times radius U^(1/n) per group
                u = _project(torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device), w, xi, relative,
                             sphere=True)  # fmt: skip
                g = _groups(u, relative)
                s = torch.rand(g.shape[0], 1, generator=gen, dtype=w.dtype).to(w.device) ** (1.0 / g.shape[1])
                nus.append((g * s).reshape(w.shape))
        for t in range(iterations):
            with torch.no_grad():
                for (_, p), w, nu in zip(params, w0, nus):
                    p.copy_(w + nu)
            _, x_adv = robust_loss(m, x, yy, generator=seed + 1000 * (r + 1) + t, return_adversarials=True, **kw)
            grads = [torch.zeros_like(w) for w in w0]
            for i in range(0, x.shape[0], batch_size):
                loss = cross_entropy_loss(model_output(m, x_adv[i : i + batch_size]), yy[i : i + batch_size]).sum()
                gs = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
                for acc, g in zip(grads, gs):
                    if g is not None:
                        acc += g
            with torch.no_grad():
                for j, (w, g) in enumerate(zip(w0, grads)):
                    gg, wg = _groups(g, relative), _groups(w, relative)
                    d = gg / gg.norm(dim=1, keepdim=True).clamp_min(1e-30) * wg.norm(dim=1, keepdim=True) * step
                    nus[j] = _project(nus[j] + d.reshape(w.shape), w, xi, relative, sphere=False)
        with torch.no_grad():
            for (_, p), w, nu in zip(params, w0, nus):
                p.copy_(w + nu)
        losses.append(robust_loss(m, x, yy, generator=seed + 7, **kw))
    worst = max(losses)
    return FlatnessResult(worst - ref, ref, worst, losses, "worst", xi, relative, eps)
