"""MART (Wang et al., ICLR 2020): misclassification-aware adversarial training.

``loss = BCE(p(x'), y) + beta * KL(p(x) || p(x')) * (1 - p_y(x))`` with
``BCE = CE(f(x'), y) - log(1.0001 - p_{y'}(x'))``, ``y'`` the most probable wrong class at
``x'``; ``x'`` from PGD on the cross-entropy (the library's :func:`medrobust.core.attacks.pgd`,
model in eval mode; uniform random start instead of the reference ``0.001 N(0, I)``).

N-dimensional: for segmentation logits ``(B, K, *spatial)`` every term is per pixel and
averaged; the first term uses the training loss (``loss_fn``, e.g. Dice-CE) in place of CE.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> m = MART(eps=4 / 255, steps=2)
    >>> x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 2])
    >>> loss, _ = m.training_loss(net, x, m.make_adversarial(net, x, y, None), y, torch.nn.CrossEntropyLoss())
    >>> bool(loss > 0)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from medrobust.core.defenses.base import Forward, class_indices
from medrobust.core.defenses.pgd_at import PGDAdversarialTraining
from medrobust.core.utils import class_logits
from medrobust.core.validation import check_nonnegative

__all__ = ["MART", "mart_loss"]


def mart_loss(
    logits_clean: torch.Tensor,
    logits_adv: torch.Tensor,
    y: torch.Tensor,
    *,
    beta: float,
    adv_loss: torch.Tensor | None = None,
) -> torch.Tensor:
    """The MART objective (scalar) from clean and adversarial logits.

    Args:
        logits_clean, logits_adv: ``(B, K[, *spatial])`` (a single channel is read as ``[0, z]``).
        y: labels as accepted by :func:`~medrobust.core.defenses.base.class_indices`.
        beta: weight of the misclassification-weighted KL term.
        adv_loss: replaces ``CE(f(x'), y)`` (e.g. a segmentation loss); default the CE.
    """
    za, zc = class_logits(logits_adv, spatial=True), class_logits(logits_clean, spatial=True)
    t = class_indices(y, za)
    p_adv = torch.softmax(za, dim=1)
    # most probable wrong class y' at x'
    wrong = p_adv.masked_fill(F.one_hot(t, za.shape[1]).movedim(-1, 1).bool(), float("-inf"))
    y_wrong = wrong.argmax(dim=1)
    ce = F.cross_entropy(za, t) if adv_loss is None else adv_loss
    margin = F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), y_wrong)
    p_clean = torch.softmax(zc, dim=1)
    kl = (p_clean * (torch.log(p_clean + 1e-12) - torch.log(p_adv + 1e-12))).sum(dim=1)
    p_true = p_clean.gather(1, t.unsqueeze(1)).squeeze(1)
    robust = (kl * (1.0000001 - p_true)).mean()
    return ce + margin + beta * robust


class MART(PGDAdversarialTraining):
    """MART training step.

    Args:
        eps: L-inf radius.
        beta: weight of the KL term (5-6 in the paper; 6 in the reference code).
        steps: PGD steps on the CE (10).
        alpha: PGD step; default ``2.5 * eps / steps``.
        use_loss_fn: the first term is the training ``loss_fn`` on the adversarial logits (the
            trainer's CE for classification, Dice-CE etc. for segmentation); ``False`` forces
            plain CE.
        **kwargs: ``bounds``, ``attack_loss``, ``loss_fn``, ``attack_in_eval_mode``, ``seed``.
    """

    name = "mart"

    def __init__(self, *, eps: float, beta: float = 6.0, steps: int = 10, alpha: float | None = None,
                 use_loss_fn: bool = True, **kwargs: Any) -> None:
        kwargs.pop("clean_weight", None)
        super().__init__(eps=eps, steps=steps, alpha=alpha, **kwargs)
        check_nonnegative("beta", beta)
        self.beta = float(beta)
        self.use_loss_fn = use_loss_fn

    def training_loss(
        self, forward: Forward, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, loss_fn: Callable
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = forward(x)
        logits_adv = forward(adv)
        first = loss_fn(logits_adv, y) if self.use_loss_fn else None
        return mart_loss(logits, logits_adv, y, beta=self.beta, adv_loss=first), logits

    def __repr__(self) -> str:
        return f"MART(eps={self.eps:.6g}, beta={self.beta:g}, steps={self.steps}, alpha={self.alpha:.6g})"
