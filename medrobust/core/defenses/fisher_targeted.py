"""Targeted adversarial training on the most vulnerable images by the Fisher-information score.

Following Shu et al. (mFI-PSO, arXiv 2006.03243; "add the successful adversarial training images
to the training set and fine-tune"): per batch, the image-level Fisher information
(:func:`medrobust.core.metrics.fisher.image_fisher_information`, ``f = log p_y`` with the true
label) ranks the images; the top ``fraction`` of the batch whose FI is at least ``min_fi`` are
attacked with the library's PGD, and the successful adversarial images (all attacked ones with
``only_successful=False``) are appended to the batch with their true labels. The step minimises
the training loss on ``cat([x, x_adv])``. Ranking is within each batch (an epoch sees every
image, so over an epoch the most vulnerable images of each batch are the ones augmented).

Classification only (the FI score needs class probabilities). For two classes the image-level FI
equals ``(1 - p_y) / p_y``, so the ranking is by low true-class confidence.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    >>> step = FisherTargetedTraining(eps=8 / 255, fraction=0.5, steps=3)
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1])
    >>> adv = step.make_adversarial(net, x, y, None)
    >>> adv.x_adv.shape[0] <= 2
    True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from medrobust.core.attacks import pgd
from medrobust.core.defenses.base import Forward
from medrobust.core.defenses.pgd_at import PGDAdversarialTraining
from medrobust.core.fisher import image_fisher_information
from medrobust.core.utils import class_logits
from medrobust.core.validation import check_class_range, check_nonnegative, check_number

__all__ = ["FisherTargetedTraining", "FisherSelection"]

logger = logging.getLogger(__name__)


class FisherSelection(NamedTuple):
    """What :meth:`FisherTargetedTraining.make_adversarial` returns.

    Attributes:
        x_adv: adversarial images to add ``(M, C, *spatial)`` (``M`` may be 0).
        y_adv: their (true) labels ``(M,)``.
        fi: the FI score of every image of the batch ``(B,)``.
        selected: indices of the attacked images ``(S,)``.
    """

    x_adv: torch.Tensor
    y_adv: torch.Tensor
    fi: torch.Tensor
    selected: torch.Tensor


class FisherTargetedTraining(PGDAdversarialTraining):
    """FI-targeted adversarial training step.

    Args:
        eps: L-inf radius of the PGD attack on the selected images.
        fraction: share of each batch attacked (the most vulnerable by FI), in ``(0, 1]``.
        min_fi: only images with FI >= this are eligible (mFI-PSO attacks FI >= 0.01).
        only_successful: add only adversarial images that fool the model (the paper's recipe).
        steps, alpha, norm, random_start: the PGD attack (10 steps, ``2.5 eps / steps``).
        sv_tol: passed to the FI computation.
        **kwargs: ``bounds``, ``attack_loss``, ``loss_fn``, ``attack_in_eval_mode``, ``seed``.

    Raises:
        ValueError: ``fraction`` outside ``(0, 1]`` or ``min_fi`` negative.
    """

    name = "fisher-at"

    def __init__(self, *, eps: float, fraction: float = 0.5, min_fi: float = 0.0, only_successful: bool = True,
                 steps: int = 10, sv_tol: float = 1e-3, **kwargs: Any) -> None:
        kwargs.pop("clean_weight", None)
        super().__init__(eps=eps, steps=steps, **kwargs)
        check_number("fraction", fraction, low=0, high=1, low_open=True)
        check_nonnegative("min_fi", min_fi)
        check_nonnegative("sv_tol", sv_tol)
        self.fraction, self.min_fi = float(fraction), float(min_fi)
        self.only_successful, self.sv_tol = bool(only_successful), float(sv_tol)

    def select(self, forward: Forward, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fi (B,), indices of the most vulnerable images)``."""
        labels = torch.as_tensor(y, device=x.device).reshape(-1).long()
        if labels.numel() != x.shape[0]:
            raise ValueError(f"FisherTargetedTraining needs one class label per image, got labels of shape "
                             f"{tuple(torch.as_tensor(y).shape)} for {x.shape[0]} images (classification only).")
        fi = image_fisher_information(forward, x, labels, sv_tol=self.sv_tol)
        k = max(1, math.ceil(self.fraction * x.shape[0]))
        order = torch.argsort(fi, descending=True)[:k]
        return fi, order[fi[order] >= self.min_fi]

    def make_adversarial(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, engine: Any) -> FisherSelection:
        with torch.no_grad():
            check_class_range(y, class_logits(forward(x), spatial=True))
        fi, idx = self.select(forward, x, y)
        labels = torch.as_tensor(y, device=x.device).reshape(-1).long()
        if idx.numel() == 0:
            return FisherSelection(x[:0].detach(), labels[:0], fi, idx)
        res = pgd(forward, x[idx], labels[idx], loss_fn=self.attack_loss, eps=self.eps, alpha=self.alpha,
                  steps=self.steps, norm=self.norm, random_start=self.random_start, bounds=self.bounds,
                  generator=self.sample_seed())
        keep = res.success.to(x.device) if self.only_successful else torch.ones_like(res.success, device=x.device)
        return FisherSelection(res.x_adv[keep].detach(), labels[idx][keep], fi, idx)

    def training_loss(
        self, forward: Forward, x: torch.Tensor, adv: FisherSelection, y: torch.Tensor, loss_fn: Callable
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        labels = torch.as_tensor(y, device=x.device).reshape(-1)
        xs = torch.cat([x, adv.x_adv.to(x)], dim=0)
        ys = torch.cat([labels, adv.y_adv.to(labels)], dim=0)
        pred = forward(xs)
        return loss_fn(pred, ys), pred[:b]

    def __repr__(self) -> str:
        return (f"FisherTargetedTraining(eps={self.eps:.6g}, fraction={self.fraction:g}, min_fi={self.min_fi:g}, "
                f"steps={self.steps}, only_successful={self.only_successful})")
