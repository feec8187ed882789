"""TRADES (Zhang et al., ICML 2019): ``L(f(x), y) + beta KL(f(x) || f(x'))``.

``x'`` maximises ``KL(p(x) || p(x'))`` inside the eps-ball: 10 PGD steps of the library's
:func:`medrobust.core.attacks.pgd` with the KL as its per-sample objective and the clean
probabilities as its target, model in eval mode. Deviation from the reference code: PGD starts
uniformly in the ball (the library's random start) instead of at ``x + 0.001 N(0, I)``; both only
break the zero gradient of the KL at ``x' = x``.

Works for classification logits ``(B, K)`` and segmentation logits ``(B, K, *spatial)`` (KL per
pixel, averaged); a single-logit output is read as ``[0, z]``.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    >>> t = TRADES(eps=4 / 255, beta=6.0, steps=2)
    >>> x, y = torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 1])
    >>> loss, pred = t.training_loss(net, x, t.make_adversarial(net, x, y, None), y, torch.nn.CrossEntropyLoss())
    >>> loss.ndim, pred.shape
    (0, torch.Size([3, 2]))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from medrobust.core.attacks import pgd
from medrobust.core.attacks.losses import LossIncrease
from medrobust.core.defenses.base import AdversarialTrainingStep, Forward, kl_per_sample
from medrobust.core.utils import class_logits
from medrobust.core.validation import check_class_range, check_nonnegative, check_positive

__all__ = ["TRADES", "trades_kl_objective"]


def trades_kl_objective(out: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(p_clean || softmax(out))`` ``(B,)``: the inner objective handed to PGD."""
    return kl_per_sample(p_clean, out)


class TRADES(AdversarialTrainingStep):
    """TRADES training step.

    Args:
        eps: L-inf radius of the inner maximisation.
        beta: weight of the robust KL term (6 in the paper; larger trades clean accuracy for
            robustness).
        steps: PGD steps on the KL (10).
        alpha: PGD step; default ``2.5 * eps / steps`` (``eps / 4`` at 10 steps, the reference
            0.007 for eps 0.031).
        **kwargs: ``bounds``, ``loss_fn`` (natural term; default the trainer's loss),
            ``attack_in_eval_mode``, ``seed``. ``attack_loss`` is not used: the inner objective is
            the KL.

    Raises:
        ValueError: ``beta`` or ``alpha`` negative or not finite, ``steps`` < 1 (and as
            :class:`~medrobust.core.defenses.base.AdversarialTrainingStep`).
    """

    name = "trades"

    def __init__(self, *, eps: float, beta: float = 6.0, steps: int = 10, alpha: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(eps=eps, **kwargs)
        check_nonnegative("beta", beta)
        check_positive("steps", steps, integer=True)
        if alpha is not None:
            check_nonnegative("alpha", alpha)
        self.beta = float(beta)
        self.steps = steps
        self.alpha = 2.5 * self.eps / steps if alpha is None else float(alpha)

    def make_adversarial(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, engine: Any) -> torch.Tensor:
        with torch.no_grad():
            logits = class_logits(forward(x), spatial=True)
        check_class_range(y, logits)  # the KL attack never reads y: check it here, not in the loss
        p_clean = torch.softmax(logits, dim=1)
        res = pgd(forward, x, p_clean, loss_fn=trades_kl_objective, success_fn=LossIncrease(0.0), eps=self.eps,
                  alpha=self.alpha, steps=self.steps, bounds=self.bounds, generator=self.sample_seed())
        return res.x_adv

    def training_loss(
        self, forward: Forward, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, loss_fn: Callable
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pred = forward(x)
        natural = loss_fn(pred, y)
        p_clean = torch.softmax(class_logits(pred, spatial=True), dim=1)
        robust = kl_per_sample(p_clean, forward(adv)).mean()
        return natural + self.beta * robust, pred

    def __repr__(self) -> str:
        return f"TRADES(eps={self.eps:.6g}, beta={self.beta:g}, steps={self.steps}, alpha={self.alpha:.6g})"
