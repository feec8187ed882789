"""From classifier outputs to p(positive) and a predicted class.

Conventions (docs/ARCHITECTURE.md, Models): a single-logit model's sigmoid is p(positive);
a 2-logit model's softmax[:, 1]; a K-class model's softmax[:, positive_class]. Outputs that
already are probabilities (a network ending in softmax/sigmoid) use ``activation="none"``.

Example:
    >>> import torch
    >>> probability_from_logits(torch.tensor([[0.0, 0.0], [0.0, 10.0]]))
    tensor([0.5000, 1.0000])
    >>> predicted_class(torch.tensor([[2.0], [-1.0]]))
    tensor([1, 0])
"""

from __future__ import annotations

import torch

__all__ = ["ACTIVATIONS", "probability_from_logits", "predicted_class", "check_logits"]

#: ``auto``: sigmoid for one output, softmax otherwise; ``none``: outputs are probabilities.
ACTIVATIONS = ("auto", "sigmoid", "softmax", "none")


def check_logits(logits: torch.Tensor) -> torch.Tensor:
    """Return ``logits`` as ``(B, K)``; a ``(B,)`` vector is read as one logit per sample."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model output should be a tensor of logits (B, K), got {type(logits).__name__}.")
    if logits.ndim == 1:
        return logits.unsqueeze(1)
    if logits.ndim != 2:
        raise ValueError(
            f"model output should be logits of shape (B, K) for a classifier, got {tuple(logits.shape)}; "
            "segmentation/regression outputs are not supported by the sensitivity sweep."
        )
    return logits


def probability_from_logits(
    logits: torch.Tensor, *, activation: str = "auto", positive_class: int = 1
) -> torch.Tensor:
    """p(positive) per sample.

    Args:
        logits: ``(B, K)`` (or ``(B,)`` for one logit).
        activation: one of :data:`ACTIVATIONS`.
        positive_class: class index of the positive class when ``K >= 2`` (ignored for K = 1).

    Returns:
        ``(B,)`` float tensor in [0, 1].

    Raises:
        ValueError: unknown activation, or ``positive_class`` out of range.
    """
    logits = check_logits(logits).float()
    k = logits.shape[1]
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation should be one of {ACTIVATIONS}, got {activation!r}.")
    if k == 1:
        if activation == "softmax":
            raise ValueError("activation='softmax' needs >= 2 outputs, the model has 1.")
        return logits[:, 0] if activation == "none" else torch.sigmoid(logits[:, 0])
    if not 0 <= positive_class < k:
        raise ValueError(f"positive_class should be in [0, {k - 1}] for a model with {k} outputs, got {positive_class}.")
    if activation == "none":
        return logits[:, positive_class]
    if activation == "sigmoid":  # multi-label heads: independent sigmoids
        return torch.sigmoid(logits[:, positive_class])
    return torch.softmax(logits, dim=1)[:, positive_class]


def predicted_class(logits: torch.Tensor, *, activation: str = "auto") -> torch.Tensor:
    """Predicted class index per sample: ``p >= 0.5`` for one output, argmax otherwise.

    Args:
        logits: ``(B, K)`` (or ``(B,)``).
        activation: as in :func:`probability_from_logits` (decides the 0.5 threshold's scale
            for one output: logit 0 or probability 0.5).
    """
    logits = check_logits(logits)
    if logits.shape[1] == 1:
        threshold = 0.5 if activation == "none" else 0.0
        return (logits[:, 0] >= threshold).long()
    return logits.argmax(dim=1)
