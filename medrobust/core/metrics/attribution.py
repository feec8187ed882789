"""Attributions through Captum (Integrated Gradients, DeepLIFT-SHAP, Occlusion) and the Gini
sparseness index of an attribution map (Chalasani et al., ICML 2020).

All functions take ``x`` ``(B, C, *spatial)`` (2-D or 3-D) and return maps of the same shape.
``target`` is the class whose score is explained: a class index per sample ``(B,)``, one int
for all, or ``None`` for the model's predicted class. Scores are the class logits; a binary
single-logit model's class-1 score is its logit ``z`` and class 0's is ``-z`` (see
:class:`~medrobust.core.metrics._utils.ClassLogits`).

Integrated Gradients runs the ``steps`` interpolated inputs in chunks of
``internal_batch_size``; by default the chunk holds about 2M input voxels, so 3-D volumes fit in
memory (Captum's default, one chunk of ``B * steps`` inputs, does not).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum.attr import DeepLiftShap, IntegratedGradients, Occlusion

from medrobust.core.metrics._utils import ClassLogits, check_batch, eval_mode, predict_logits
from medrobust.core.validation import check_labels

__all__ = ["integrated_gradients", "deep_lift_shap", "occlusion", "fisher_sensitivity", "gini_index", "resolve_target"]

_IG_VOXELS_PER_CHUNK = 2**21


def resolve_target(model: Callable[[torch.Tensor], Any], x: torch.Tensor, target: int | torch.Tensor | None) -> torch.Tensor:
    """Class index per sample ``(B,)``: ``target`` broadcast and checked against the model's classes
    (:func:`~medrobust.core.validation.check_labels`), or the model's prediction when ``None``."""
    with eval_mode(model):
        logits = predict_logits(model, x)
    if target is None:
        return logits.argmax(dim=1)
    return check_labels(target, batch=x.shape[0], num_classes=logits.shape[1], name="target").to(x.device).contiguous()


def _baseline(baseline: float | torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if baseline is None:
        return torch.zeros_like(x)
    b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    try:
        return torch.broadcast_to(b, x.shape).contiguous()
    except RuntimeError:
        raise ValueError(f"baseline of shape {tuple(b.shape)} does not broadcast to x {tuple(x.shape)}.") from None


def integrated_gradients(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    target: int | torch.Tensor | None = None,
    *,
    baseline: float | torch.Tensor | None = None,
    steps: int = 100,
    internal_batch_size: int | None = None,
    method: str = "gausslegendre",
) -> torch.Tensor:
    """Integrated Gradients of the target-class score from ``baseline`` (default all-zero) to ``x``.

    Args:
        model: classifier ``(B, C, *spatial) -> (B, K)``; run in eval mode (restored afterwards).
        x: inputs ``(B, C, H, W[, D])``.
        target: class per sample ``(B,)``, an int, or ``None`` (predicted class).
        baseline: scalar or tensor broadcastable to ``x``; ``None`` = zeros (Chalasani et al.).
        steps: Riemann/Gauss-Legendre steps (100 in Chalasani et al.).
        internal_batch_size: interpolated inputs per forward; default about 2M voxels per chunk.
        method: Captum integration rule.

    Returns:
        Attributions ``(B, C, H, W[, D])``; they sum to ``score(x) - score(baseline)`` (completeness).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> integrated_gradients(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1])).shape
        torch.Size([2, 1, 4, 4])
    """
    check_batch(x, target, label_name="target")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    t = resolve_target(model, x, target)
    if internal_batch_size is None:
        per = max(1, x[0].numel())
        internal_batch_size = max(x.shape[0], min(steps * x.shape[0], _IG_VOXELS_PER_CHUNK // per))
    if internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be >= 1, got {internal_batch_size}.")
    wrapped = ClassLogits(model, log_odds=True)
    with eval_mode(model):
        attr = IntegratedGradients(wrapped).attribute(
            x.detach(), baselines=_baseline(baseline, x), target=t, n_steps=steps,
            method=method, internal_batch_size=internal_batch_size,
        )  # fmt: skip
    return attr.detach()


def deep_lift_shap(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor | None = None,
    *,
    baselines: torch.Tensor,
) -> torch.Tensor:
    """DeepLIFT-SHAP (Captum ``DeepLiftShap``): DeepLIFT averaged over a baseline distribution.

    Args:
        model: an ``nn.Module`` whose non-linearities are ``nn.Module`` instances used once each
            (DeepLIFT's rescale rule replaces their gradients; functional or re-used activations
            fall back to plain gradients, Captum warns).
        x: inputs ``(B, C, H, W[, D])``.
        target: as in :func:`integrated_gradients`.
        baselines: reference inputs ``(M, C, H, W[, D])``, ``M >= 2`` (e.g. training images).

    Returns:
        Attributions ``(B, C, H, W[, D])``.
    """
    check_batch(x, target, label_name="target")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"deep_lift_shap needs an nn.Module (DeepLIFT hooks its layers), got {type(model).__name__}.")
    if not isinstance(baselines, torch.Tensor) or baselines.ndim != x.ndim or baselines.shape[1:] != x.shape[1:]:
        shape = tuple(baselines.shape) if isinstance(baselines, torch.Tensor) else type(baselines).__name__
        raise ValueError(f"baselines must be a tensor (M, {', '.join(map(str, x.shape[1:]))}), got {shape}.")
    if baselines.shape[0] < 2:
        raise ValueError(f"baselines needs at least 2 reference inputs (M >= 2), got {baselines.shape[0]}.")
    t = resolve_target(model, x, target)
    wrapped = ClassLogits(model, log_odds=True)
    with eval_mode(model), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks")  # Captum's notice on every call
        attr = DeepLiftShap(wrapped).attribute(x.detach(), baselines=baselines.to(x).detach(), target=t)
    return attr.detach()


def _window(window: int | Sequence[int], x: torch.Tensor, name: str) -> tuple[int, ...]:
    n = x.ndim - 2
    w = (int(window),) * n if isinstance(window, int) else tuple(int(v) for v in window)
    if len(w) != n or min(w) < 1:
        raise ValueError(f"{name} must be a positive int or {n} positive ints (one per spatial dim), got {window!r}.")
    return w


def occlusion(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    target: int | torch.Tensor | None = None,
    *,
    window: int | Sequence[int] = 4,
    stride: int | Sequence[int] | None = None,
    baseline: float | torch.Tensor = 0.0,
    perturbations_per_eval: int = 16,
) -> torch.Tensor:
    """Occlusion sensitivity (Captum ``Occlusion``): score drop when a window is set to ``baseline``.

    Args:
        model: classifier ``(B, C, *spatial) -> (B, K)``.
        x: inputs ``(B, C, H, W[, D])``.
        target: as in :func:`integrated_gradients`.
        window: occluding patch size per spatial dim (all channels are occluded together).
        stride: step per spatial dim; default ``window // 2`` (at least 1).
        baseline: the "neutral" value: a scalar or a tensor broadcastable to ``x`` (black, mean,
            blurred or noise image: see :mod:`medrobust.core.metrics.saliency`).
        perturbations_per_eval: occluded copies per forward pass.

    Returns:
        Attributions ``(B, C, H, W[, D])`` (the mean score drop of the windows covering a voxel).
    """
    check_batch(x, target, label_name="target")
    w = _window(window, x, "window")
    s = tuple(max(1, v // 2) for v in w) if stride is None else _window(stride, x, "stride")
    t = resolve_target(model, x, target)
    c = x.shape[1]
    wrapped = ClassLogits(model, log_odds=True)
    with eval_mode(model), torch.no_grad():
        attr = Occlusion(wrapped).attribute(
            x.detach(), sliding_window_shapes=(c, *w), strides=(c, *s), baselines=_baseline(baseline, x),
            target=t, perturbations_per_eval=max(1, int(perturbations_per_eval)),
        )  # fmt: skip
    return attr.detach()


def fisher_sensitivity(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    target: int | torch.Tensor | None = None,
    *,
    batch_size: int = 32,
    sv_tol: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fisher-information vulnerability scores ``(B,)`` and per-pixel FI maps ``(B, C, *spatial)``.

    A batched, eval-mode wrapper of :func:`medrobust.core.metrics.fisher.image_fisher_information`
    and :func:`~medrobust.core.metrics.fisher.pixel_fisher_information` (Shu & Zhu, AAAI 2019):
    ``target`` is the true class on training data, ``None`` (predicted class) otherwise.

    With two classes the Fisher metric has rank one and the per-pixel map is the constant
    ``(1 - p_y) / p_y`` (the image score) wherever the gradient is non-zero: it is a saliency
    map only for ``K >= 3`` classes.
    """
    from medrobust.core.metrics.fisher import image_fisher_information, pixel_fisher_information

    check_batch(x, target, label_name="target")
    t = resolve_target(model, x, target)
    scores, maps = [], []
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            xb, tb = x[i : i + batch_size], t[i : i + batch_size]
            scores.append(image_fisher_information(model, xb, tb, sv_tol=sv_tol))
            maps.append(pixel_fisher_information(model, xb, tb))
    return torch.cat(scores), torch.cat(maps)


def gini_index(attributions: torch.Tensor, *, offset: float = 1e-7) -> torch.Tensor:
    """Gini sparseness index per sample ``(B,)`` of attribution maps ``(B, ...)``.

    ``G = sum_i (2i - n - 1) a_i / (n sum_i a_i)`` over ``a = sort(|attr| + offset)`` ascending,
    ``i = 1..n`` (Chalasani et al.). 0 for a constant map, ``(n - 1) / n`` for a one-hot map
    (up to the offset).

    Example:
        >>> a = torch.zeros(1, 1000); a[0, 3] = 1.0
        >>> round(float(gini_index(a)[0]), 3)
        0.999
    """
    if not isinstance(attributions, torch.Tensor) or attributions.ndim < 1:
        raise TypeError("attributions must be a tensor (B, ...).")
    a = attributions.detach().reshape(attributions.shape[0], -1).double().abs() + offset
    n = a.shape[1]
    a, _ = torch.sort(a, dim=1)
    i = torch.arange(1, n + 1, dtype=a.dtype, device=a.device)
    return ((2 * i - n - 1) * a).sum(dim=1) / (n * a.sum(dim=1))
