"""Adversarial training on attack examples: Madry PGD-AT, fast FGSM (Wong et al., 2020) and FGM.

All three train on ``loss(f(x_adv), y)`` (optionally mixed with the clean loss) where ``x_adv``
comes from the one PGD implementation, :func:`medrobust.core.attacks.pgd` (FGSM and FGM are its
one-step cases):

- :class:`PGDAdversarialTraining`: ``steps``-step L-inf PGD from a uniform random start, step
  ``alpha = 2.5 eps / steps`` (Madry et al., 2018).
- :class:`FastFGSMTraining`: one sign step of ``alpha = 1.25 eps`` from ``delta0 ~ U(-eps, eps)``,
  projected back to the ball; early stop on catastrophic overfitting (:class:`CatastrophicOverfittingStop`:
  PGD accuracy on a training batch checked after every epoch; if it falls by more than ``drop``,
  the previous epoch's weights are restored and training ends), as in Wong, Rice & Kolter (2020).
- :class:`FGMTraining`: one L2-normalised gradient step of length ``eps`` (the "empirical attack"
  of Allen-Zhu & Li's feature-purification experiments); ``eps`` is an L2 radius here.

Example:
    >>> import torch
    >>> step = FastFGSMTraining(eps=2 / 255)
    >>> step.alpha == 1.25 * 2 / 255
    True
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Events

from medrobust.core.attacks import fgm, pgd
from medrobust.core.attacks.gradient import geometry
from medrobust.core.defenses.base import AdversarialTrainingStep, Forward
from medrobust.core.utils import eval_mode
from medrobust.core.validation import check_bounds, check_nonnegative, check_number, check_positive

__all__ = ["PGDAdversarialTraining", "FastFGSMTraining", "FGMTraining", "CatastrophicOverfittingStop"]

logger = logging.getLogger(__name__)


class PGDAdversarialTraining(AdversarialTrainingStep):
    """Madry PGD adversarial training: minimise ``(1 - w) L(f(x_adv), y) + w L(f(x), y)``.

    Args:
        eps: L-inf (or L2, with ``norm="2"``) radius.
        steps: PGD steps of the inner maximisation (``k``; a training step costs about
            ``k + 1`` forward/backward passes).
        alpha: PGD step size; default ``2.5 * eps / steps``.
        norm: ``"inf"`` or ``"2"``.
        random_start: start PGD uniformly inside the ball.
        clean_weight: ``w`` above; 0 (default) trains on adversarial examples only, as Madry et al.
        **kwargs: ``bounds``, ``attack_loss``, ``loss_fn``, ``attack_in_eval_mode``, ``seed``
            (see :class:`~medrobust.core.defenses.base.AdversarialTrainingStep`).

    Raises:
        ValueError: ``steps`` < 1, ``alpha`` negative, ``clean_weight`` outside ``[0, 1]``, unknown
            ``norm`` (and as :class:`~medrobust.core.defenses.base.AdversarialTrainingStep`:
            ``eps``, ``bounds``).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> step = PGDAdversarialTraining(eps=4 / 255, steps=3)
        >>> x_adv = step.make_adversarial(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), None)
        >>> x_adv.shape
        torch.Size([2, 1, 4, 4])
    """

    name = "pgd-at"

    def __init__(
        self,
        *,
        eps: float,
        steps: int = 10,
        alpha: float | None = None,
        norm: str = "inf",
        random_start: bool = True,
        clean_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(eps=eps, **kwargs)
        check_positive("steps", steps, integer=True)
        if alpha is not None:
            check_nonnegative("alpha", alpha)
        check_number("clean_weight", clean_weight, low=0, high=1)
        geometry(norm)  # raises on an unknown norm
        self.steps = steps
        self.alpha = 2.5 * self.eps / steps if alpha is None else float(alpha)
        self.norm = norm
        self.random_start = random_start
        self.clean_weight = float(clean_weight)

    def attack(self, forward: Forward, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x_adv`` by the library's PGD with this defense's settings."""
        res = pgd(forward, x, y, loss_fn=self.attack_loss, eps=self.eps, alpha=self.alpha, steps=self.steps,
                  norm=self.norm, random_start=self.random_start, bounds=self.bounds,
                  generator=self.sample_seed())
        return res.x_adv

    def make_adversarial(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, engine: Any) -> torch.Tensor:
        return self.attack(forward, x, y)

    def training_loss(
        self, forward: Forward, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, loss_fn: Callable
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pred_adv = forward(adv)
        loss = loss_fn(pred_adv, y)
        if self.clean_weight > 0:
            pred = forward(x)
            loss = (1.0 - self.clean_weight) * loss + self.clean_weight * loss_fn(pred, y)
            return loss, pred
        return loss, pred_adv

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:.6g}, steps={self.steps}, alpha={self.alpha:.6g}, norm={self.norm})"


class CatastrophicOverfittingStop:
    """Ignite handler: stop fast-FGSM training when PGD accuracy on a training batch collapses.

    After every epoch, PGD (``steps`` steps, step ``alpha``) is run on the first batch of that
    epoch; if its robust accuracy fell by more than ``drop`` since the last check, the weights of
    the last good epoch are restored and the trainer terminates (Wong et al., 2020, Sec. 5).
    Classification only (accuracy of the arg-max).

    Args:
        eps: attack radius (L-inf).
        steps: PGD steps of the check (5 in the reference code).
        alpha: PGD step; default ``2.5 * eps / steps``.
        drop: largest tolerated fall of robust accuracy between consecutive epochs.
        bounds, attack_loss: as the attack's.
        seed: seed of the check's random starts.

    Attributes:
        history: robust accuracy per epoch; ``stopped_epoch``: the epoch of the collapse or ``None``.
    """

    def __init__(self, *, eps: float, steps: int = 5, alpha: float | None = None, drop: float = 0.2,
                 bounds: Any = (0.0, 1.0), attack_loss: Any = None, seed: int = 0) -> None:
        check_number("drop", drop, low=0, high=1, low_open=True)
        check_nonnegative("eps", eps)
        check_positive("steps", steps, integer=True)
        check_bounds(bounds)
        self.eps, self.steps, self.drop = float(eps), int(steps), float(drop)
        self.alpha = alpha
        self.bounds, self.attack_loss, self.seed = bounds, attack_loss, int(seed)
        self.history: list[float] = []
        self.stopped_epoch: int | None = None
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._good_state: dict[str, torch.Tensor] | None = None

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._keep_first_batch)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _keep_first_batch(self, engine: Any) -> None:
        epoch_length = engine.state.epoch_length or 1
        if (engine.state.iteration - 1) % epoch_length == 0:
            out = engine.state.output
            self._batch = (out["image"].detach(), out["label"].detach())

    def robust_accuracy(self, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """Share of ``(x, y)`` on which PGD fails (net in eval mode during the check)."""
        with eval_mode(net):
            res = pgd(net, x, y, loss_fn=self.attack_loss, eps=self.eps, alpha=self.alpha, steps=self.steps,
                      bounds=self.bounds, generator=self.seed + len(self.history))
        return 1.0 - float(res.success.float().mean())

    def __call__(self, engine: Any) -> None:
        if self._batch is None:
            return
        acc = self.robust_accuracy(engine.network, *self._batch)
        prev = self.history[-1] if self.history else None
        self.history.append(acc)
        if prev is not None and acc < prev - self.drop and self._good_state is not None:
            self.stopped_epoch = engine.state.epoch
            logger.warning("fast FGSM: PGD accuracy on a training batch fell %.3f -> %.3f at epoch %d "
                           "(catastrophic overfitting); restoring epoch %d weights and stopping.",
                           prev, acc, engine.state.epoch, engine.state.epoch - 1)
            engine.network.load_state_dict(self._good_state)
            engine.terminate()
            return
        self._good_state = copy.deepcopy(engine.network.state_dict())


class FastFGSMTraining(PGDAdversarialTraining):
    """Fast FGSM adversarial training ("Fast is better than free", Wong et al., 2020).

    One FGSM step of ``alpha = 1.25 eps`` from ``delta0 ~ U(-eps, eps)`` (projected back to the
    eps-ball and bounds), with early stopping on catastrophic overfitting.

    Args:
        eps: L-inf radius.
        alpha: step; default ``1.25 * eps``.
        early_stop: attach :class:`CatastrophicOverfittingStop` to the trainer.
        early_stop_drop: its ``drop`` (0.2 in the reference code).
        early_stop_steps: its PGD steps (5).
        **kwargs: as :class:`PGDAdversarialTraining` (``clean_weight``, ``bounds``, ``attack_loss``, ...).
    """

    name = "fast-fgsm"

    def __init__(self, *, eps: float, alpha: float | None = None, early_stop: bool = True,
                 early_stop_drop: float = 0.2, early_stop_steps: int = 5, **kwargs: Any) -> None:
        for k in ("steps", "random_start", "norm"):
            if kwargs.pop(k, None) is not None:
                logger.debug("FastFGSMTraining: option %r is fixed by the method and ignored.", k)
        super().__init__(eps=eps, steps=1, alpha=1.25 * float(eps) if alpha is None else alpha,
                         random_start=True, **kwargs)
        self.early_stop = early_stop
        self.stopper = CatastrophicOverfittingStop(
            eps=self.eps, steps=early_stop_steps, drop=early_stop_drop, bounds=self.bounds,
            attack_loss=self.attack_loss, seed=self.seed + 1) if early_stop else None

    def attach(self, engine: Any) -> None:
        super().attach(engine)
        if self.stopper is not None:
            self.stopper.attach(engine)


class FGMTraining(PGDAdversarialTraining):
    """FGM adversarial training: one L2-normalised gradient step ``x + r g / ||g||_2`` (no random start).

    Args:
        eps: L-inf-equivalent radius: the L2 step length is ``r = eps * sqrt(d)`` for a
            ``d``-entry input (the L2 length of an L-inf sign step of size ``eps``), so ``eps`` is
            comparable across defenses.
        l2_eps: the L2 step length ``r`` itself; overrides ``eps`` when given.
        **kwargs: as :class:`PGDAdversarialTraining` (``clean_weight``, ``bounds``, ...).
    """

    name = "fgm"

    def __init__(self, *, eps: float, l2_eps: float | None = None, **kwargs: Any) -> None:
        for k in ("steps", "norm", "random_start", "alpha"):
            if kwargs.pop(k, None) is not None:
                logger.debug("FGMTraining: option %r is fixed by the method and ignored.", k)
        super().__init__(eps=eps, steps=1, norm="2", random_start=False, **kwargs)
        if l2_eps is not None:
            check_nonnegative("l2_eps", l2_eps)
        self.l2_eps = None if l2_eps is None else float(l2_eps)

    def step_length(self, x: torch.Tensor) -> float:
        """The L2 step ``r`` for inputs like ``x`` ``(B, C, *spatial)``."""
        return self.l2_eps if self.l2_eps is not None else self.eps * float(x[0].numel()) ** 0.5

    def attack(self, forward: Forward, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r = self.step_length(x)
        return fgm(forward, x, y, loss_fn=self.attack_loss, eps=r, alpha=r, bounds=self.bounds).x_adv
