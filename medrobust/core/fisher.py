"""Fisher-information (FI) sensitivity of a classifier to input perturbations (Shu & Zhu, AAAI 2019).

The one implementation in medrobust, beside (not inside) the attacks and the metrics that both
use it: the sparse mFI-PSO attack (:mod:`medrobust.core.attacks.sparse`), targeted adversarial
training and the metrics (re-exported by :mod:`medrobust.core.metrics.fisher`). An ``nn.Module``
model is evaluated in eval mode (its train/eval flags restored afterwards).

A perturbation ``omega`` is added to the input (``omega0 = 0``). With softmax probabilities
``p_k`` and ``a_k = d log p_k / d omega`` (``d``-vectors), the Fisher metric is
``G = sum_k p_k a_k a_k^T = L L^T`` with ``L = [sqrt(p_1) a_1, ..., sqrt(p_K) a_K]`` (``d x K``).
For an objective ``f`` (default ``log p_y``; ``y`` the true label on training data, the
predicted label otherwise) the FI is ``FI = grad f^T G^+ grad f``.

- :func:`image_fisher_information`: ``omega`` = the whole image. ``G`` has rank ``<= K``, so the
  pseudo-inverse is taken in the K-dimensional column space of ``L`` (thin SVD of the ``d x K``
  matrix, singular values ``<= sv_tol`` dropped as in the authors' code, and those below the
  numerical rank); the ``d x d`` matrix is never formed. For ``f = log p_y`` with all ``K - 1`` directions kept, ``FI = (1 - p_y) / p_y``.
- :func:`pixel_fisher_information`: ``omega`` = one entry ``j`` of the input:
  ``FI_j = (d_j log p_y)^2 / sum_k p_k (d_j log p_k)^2``.
- :func:`fisher_information_from_jacobian`: the column-space computation for any perturbation
  (e.g. weights), given ``a_k``, ``p`` and ``grad f``.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> x = torch.rand(2, 1, 4, 4)
    >>> image_fisher_information(net, x).shape, pixel_fisher_information(net, x).shape
    (torch.Size([2]), torch.Size([2, 1, 4, 4]))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from medrobust.core.utils import class_logits, eval_mode, model_output
from medrobust.core.validation import check_batch, check_labels

__all__ = [
    "log_prob_jacobian",
    "fisher_information_from_jacobian",
    "image_fisher_information",
    "pixel_fisher_information",
]


def log_prob_jacobian(
    model: Callable[[torch.Tensor], Any], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of every class log-probability w.r.t. the input, and the probabilities.

    A single-logit model is read as two classes ``[0, z]`` (class 1 positive). Uses ``K``
    input-gradient passes through one forward; parameters' ``.grad`` are never touched.

    Args:
        model: ``(B, C, *spatial) -> (B, K)`` logits (or ``(B, 1)``).
        x: ``(B, C, *spatial)``.

    Returns:
        ``(a, p)``: ``a`` ``(B, K, C, *spatial)`` with ``a[:, k] = d log p_k / dx``; ``p`` ``(B, K)``.
    """
    check_batch(x)
    with eval_mode(model), torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        logp = torch.log_softmax(class_logits(model_output(model, xr)), dim=1)
        k = logp.shape[1]
        grads = [
            torch.autograd.grad(logp[:, i].sum(), xr, retain_graph=i + 1 < k)[0] for i in range(k)
        ]
    return torch.stack(grads, dim=1).detach(), logp.detach().exp()


def fisher_information_from_jacobian(
    a: torch.Tensor, p: torch.Tensor, grad_f: torch.Tensor, *, sv_tol: float = 1e-3, rtol: float | None = None
) -> torch.Tensor:
    """``grad_f^T G^+ grad_f`` with ``G = sum_k p_k a_k a_k^T``, in the column space of ``L``.

    Args:
        a: ``(B, K, ...)``: ``a[:, k]`` is ``d log p_k / d omega`` (flattened internally to ``d``).
        p: ``(B, K)`` probabilities.
        grad_f: ``(B, ...)``: gradient of the objective, same ``d`` entries as ``a[:, k]``.
        sv_tol: singular values of ``L`` at or below this are dropped (the authors' ``1e-3``;
            ``G``'s eigenvalues are their squares). Note it is absolute, in the units of the
            gradients.
        rtol: singular values at or below ``rtol * s_max`` are dropped too (numerical rank: the
            exact null direction ``sqrt(p)`` of ``L`` comes out at ``~eps * s_max`` in floating
            point); default ``sqrt(eps)`` of ``a``'s dtype (3e-4 for float32, 1.5e-8 for float64).

    Returns:
        FI ``(B,)`` (in ``a``'s dtype; computed in float64).
    """
    b, k = p.shape
    if a.shape[:2] != (b, k):
        raise ValueError(f"a must be (B, K, ...) = ({b}, {k}, ...), got {tuple(a.shape)}.")
    lt = a.reshape(b, k, -1).double() * p.double().sqrt()[:, :, None]  # L^T: (B, K, d)
    g = grad_f.reshape(b, -1).double()
    if g.shape[1] != lt.shape[2]:
        raise ValueError(f"grad_f has {g.shape[1]} entries per sample, a has {lt.shape[2]}.")
    # Thin SVD of the d x K matrix L = U S V^T (never the d x d G): G^+ = U_r S_r^-2 U_r^T.
    u, s, _ = torch.linalg.svd(lt.transpose(1, 2), full_matrices=False)  # u: (B, d, K)
    rel = torch.finfo(a.dtype).eps ** 0.5 if rtol is None else rtol
    keep = (s > sv_tol) & (s > rel * s[:, :1])
    proj = torch.einsum("bdk,bd->bk", u, g)
    fi = torch.where(keep, proj / s.clamp_min(1e-300), torch.zeros_like(proj)).pow(2).sum(1)
    return fi.to(a.dtype)


def _resolve_target(target: torch.Tensor | int | None, p: torch.Tensor) -> torch.Tensor:
    if target is None:
        return p.argmax(dim=1)
    return check_labels(target, batch=p.shape[0], num_classes=p.shape[1], name="target").to(p.device)


def image_fisher_information(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    target: torch.Tensor | int | None = None,
    *,
    sv_tol: float = 1e-3,
    rtol: float | None = None,
) -> torch.Tensor:
    """Image-level FI vulnerability score ``(B,)`` for ``f = log p_target`` (``omega`` = whole image).

    Args:
        model: classifier ``(B, C, *spatial) -> (B, K)`` (or a single logit).
        x: ``(B, C, *spatial)``, 2-D or 3-D.
        target: the class of the objective: true labels on training data, ``None`` = predicted.
        sv_tol, rtol: see :func:`fisher_information_from_jacobian`.

    Returns:
        ``(B,)``; larger is more vulnerable (the mFI-PSO paper attacks images with FI >= 0.01).
    """
    check_batch(x, target, label_name="target")
    a, p = log_prob_jacobian(model, x)
    t = _resolve_target(target, p)
    grad_f = a[torch.arange(a.shape[0], device=a.device), t]
    return fisher_information_from_jacobian(a, p, grad_f, sv_tol=sv_tol, rtol=rtol)


def pixel_fisher_information(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    target: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Per-entry FI map ``FI_j = (d_j log p_t)^2 / sum_k p_k (d_j log p_k)^2`` ``(B, C, *spatial)``.

    Args:
        model: classifier ``(B, C, *spatial) -> (B, K)`` (or a single logit).
        x: ``(B, C, *spatial)``.
        target: class ``t`` per sample (``None``: predicted class).

    Returns:
        Map shaped like ``x``; entries where the denominator vanishes are 0. Each entry is at
        most ``(1 - p_t) / p_t`` (Cauchy-Schwarz, since ``sum_k p_k d_j log p_k = 0``).
    """
    check_batch(x, target, label_name="target")
    a, p = log_prob_jacobian(model, x)
    t = _resolve_target(target, p)
    num = a[torch.arange(a.shape[0], device=a.device), t].pow(2)
    pk = p.reshape(p.shape + (1,) * (a.ndim - 2))
    den = (pk * a.pow(2)).sum(dim=1)
    tiny = torch.finfo(den.dtype).tiny
    return torch.where(den > tiny, num / den.clamp_min(tiny), torch.zeros_like(num))
