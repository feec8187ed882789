"""Small helpers shared by the metric modules: class scores for binary single-logit models,
chunked prediction, spatial dims, and figures. (``eval_mode``, ``class_logits`` and
``model_output`` live in :mod:`medrobust.core.utils`, input checks in
:mod:`medrobust.core.validation`; they are re-exported here for the metric modules.)

Binary classifiers in medrobust may return a single logit ``z`` (``sigmoid(z) = p(class 1)``).
For probabilities we use the attacks' :func:`~medrobust.core.attacks.losses.class_logits`
(``(0, z)``, whose softmax is ``(1 - sigmoid(z), sigmoid(z))``); for attributions of "the class
logit" :class:`ClassLogits` with ``log_odds=True`` gives ``(-z, z)`` so class 0's score is not a
constant.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrobust.core.utils import class_logits, eval_mode, model_output
from medrobust.core.validation import check_batch

__all__ = [
    "class_logits",
    "ClassLogits",
    "predict_logits",
    "predicted_labels",
    "eval_mode",
    "check_batch",
    "model_output",
    "spatial_dims_of",
    "pyplot",
    "save_figure",
]


class ClassLogits(nn.Module):
    """Wrap a classifier so it always returns ``(B, K >= 2)`` class scores.

    Captum and the attacks index classes with ``target``; this makes ``target=0`` meaningful for a
    single-logit binary model. With ``log_odds=False`` the scores are :func:`class_logits` (their
    softmax is the model's probabilities); with ``log_odds=True`` a single logit ``z`` becomes
    ``(-z, z)``, each class's log-odds, which is what attributions of "the class logit" should
    explain (class 1's score is the model's own logit, unscaled). ``K >= 2`` outputs pass through.

    Example:
        >>> net = ClassLogits(nn.Linear(4, 1))
        >>> net(torch.zeros(2, 4)).shape
        torch.Size([2, 2])
    """

    def __init__(self, model: Callable[[torch.Tensor], Any], *, log_odds: bool = False) -> None:
        super().__init__()
        self.model = model
        self.log_odds = log_odds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = model_output(self.model, x)
        if self.log_odds and out.ndim == 2 and out.shape[1] == 1:
            return torch.cat([-out, out], dim=1)
        return class_logits(out)


def predict_logits(model: Callable[[torch.Tensor], Any], x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Class logits ``(B, K >= 2)`` of ``x`` ``(B, C, *spatial)`` without gradients, in chunks."""
    check_batch(x)
    outs = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            outs.append(class_logits(model_output(model, x[i : i + batch_size])))
    return torch.cat(outs)


def predicted_labels(model: Callable[[torch.Tensor], Any], x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Arg-max class ``(B,)`` (long) of ``x`` ``(B, C, *spatial)``."""
    return predict_logits(model, x, batch_size=batch_size).argmax(dim=1)


def spatial_dims_of(x: torch.Tensor) -> int:
    """Number of spatial dims of ``x`` ``(B, C, *spatial)`` (checked to be 2 or 3)."""
    check_batch(x)
    n = x.ndim - 2
    if n not in (2, 3):
        raise ValueError(f"x must have 2 or 3 spatial dims (B, C, H, W[, D]), got shape {tuple(x.shape)}.")
    return n


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend (imported only when plotting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, *, dpi: int = 100) -> Path:
    """Save ``fig`` as ``path`` (parents created), close it, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
