"""Classification task metrics: accuracy, ROC AUC and expected calibration error (ECE).

AUC is MONAI's :func:`monai.metrics.compute_roc_auc`; ECE bins with MONAI's
:func:`monai.metrics.calibration_binning`. MONAI's ``CalibrationErrorMetric`` is class-wise
(one ECE per channel); the usual classification ECE (Guo et al., 2017) bins the *top-label*
confidence against correctness, so we bin that with the same MONAI function.

Inputs are model outputs ``(B, K)`` (logits; a single logit ``(B, 1)`` for binary models, where
``sigmoid`` is ``p(class 1)``) and integer labels ``(B,)``.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import calibration_binning, compute_roc_auc
from numpy.typing import ArrayLike

from medrobust.core.utils import class_logits

__all__ = [
    "class_probabilities",
    "accuracy",
    "binary_auc",
    "roc_auc",
    "expected_calibration_error",
    "classification_metrics",
]


def _check(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(logits, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("logits and y must be torch.Tensors.")
    z = class_logits(logits.detach().float())
    y = y.detach().reshape(-1).long().to(z.device)
    if y.shape[0] != z.shape[0]:
        raise ValueError(f"y has {y.shape[0]} labels for {z.shape[0]} predictions.")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= z.shape[1]):
        raise ValueError(f"y must hold class indices in [0, {z.shape[1] - 1}], got [{int(y.min())}, {int(y.max())}].")
    return z, y


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities ``(B, K >= 2)``; a single logit gives ``(1 - sigmoid, sigmoid)``."""
    return torch.softmax(class_logits(logits.detach().float()), dim=1)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of arg-max predictions equal to ``y``.

    Example:
        >>> accuracy(torch.tensor([[2.0], [-1.0]]), torch.tensor([1, 1]))
        0.5
    """
    z, y = _check(logits, y)
    return float((z.argmax(1) == y).float().mean()) if y.numel() else float("nan")


def binary_auc(scores: ArrayLike, positive: ArrayLike) -> float:
    """ROC AUC of ``scores`` ``(N,)`` against binary labels ``positive`` ``(N,)`` (MONAI; ties count 1/2).

    The one array-level AUC of the package (score -> AUC of a detector, p(positive) -> AUC of a
    classifier); NaN when only one class is present.

    Raises:
        ValueError: ``scores`` and ``positive`` differ in length, or ``positive`` holds values
            other than 0/1 (or False/True).

    Example:
        >>> binary_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        0.75
    """
    s, y = (torch.as_tensor(v.detach().cpu() if isinstance(v, torch.Tensor) else np.asarray(v, dtype=np.float64))
            .double().reshape(-1) for v in (scores, positive))
    if s.shape != y.shape:
        raise ValueError(f"scores has {s.numel()} values for {y.numel()} labels (positive); they must match.")
    if y.numel() and not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"positive must hold binary labels (0/1), got values {sorted(set(y.unique().tolist()))[:5]}.")
    if y.numel() == 0 or bool((y == y[0]).all()):
        return float("nan")
    return float(compute_roc_auc(s, y))


def roc_auc(logits: torch.Tensor, y: torch.Tensor) -> float:
    """ROC AUC: binary uses ``p(class 1)``; multi-class is the macro one-vs-rest mean (MONAI).

    Returns NaN when ``y`` holds a single class (AUC is undefined).
    """
    z, y = _check(logits, y)
    if y.unique().numel() < 2:
        return float("nan")
    p = torch.softmax(z, dim=1)
    if p.shape[1] == 2:
        return binary_auc(p[:, 1], y)
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).float()
    present = onehot.sum(0) > 0  # MONAI returns NaN-free macro only over classes that occur
    return float(compute_roc_auc(p[:, present], onehot[:, present]))


def expected_calibration_error(logits: torch.Tensor, y: torch.Tensor, *, num_bins: int = 15) -> float:
    """Top-label ECE: ``sum_b n_b / N * |acc_b - conf_b|`` over ``num_bins`` equal-width bins.

    Example:
        >>> round(expected_calibration_error(torch.tensor([[0.0, 10.0]] * 4), torch.tensor([1, 1, 0, 0])), 3)
        0.5
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
    z, y = _check(logits, y)
    if not y.numel():
        return float("nan")
    p = torch.softmax(z, dim=1)
    conf, pred = p.max(dim=1)
    correct = (pred == y).float()
    mean_p, mean_gt, counts = calibration_binning(conf.reshape(1, 1, -1), correct.reshape(1, 1, -1), num_bins=num_bins)
    gap = (mean_p - mean_gt).abs().nan_to_num(0.0)
    return float((counts * gap).sum() / counts.sum())


def classification_metrics(logits: torch.Tensor, y: torch.Tensor, *, num_bins: int = 15) -> dict[str, float]:
    """``{"n", "accuracy", "auc", "ece"}`` for one set of predictions."""
    return {
        "n": float(y.numel()),
        "accuracy": accuracy(logits, y),
        "auc": roc_auc(logits, y),
        "ece": expected_calibration_error(logits, y, num_bins=num_bins),
    }
