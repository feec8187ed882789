"""Stable-explanation training: IG-NORM and IG-SUM-NORM (Chen et al., NeurIPS 2019; used by
Chalasani et al., ICML 2020 to relate adversarial training and attribution sparseness/stability).

With ``l(x) = loss(f(x), y)`` per sample and ``IG(x -> x')`` the Integrated Gradients of ``l``
along the straight path from ``x`` to ``x'`` (their sum is ``l(x') - l(x)``):

- IG-NORM: ``l(x) + lambda * max_{x' in B_inf(x, eps)} ||IG(x -> x')||_1``;
- IG-SUM-NORM: ``max_{x'} [ l(x') + beta * ||IG(x -> x')||_1 ]``, trained at the maximiser.

The inner maximisation is the library's PGD (:func:`medrobust.core.attacks.pgd`) on the
objective above (IG with ``attack_ig_steps`` points, differentiated w.r.t. ``x'`` through
:func:`medrobust.core.metrics.attribution_robustness.path_integrated_gradients`); the outer
term recomputes IG with ``ig_steps`` points and ``create_graph=True`` so the weights get the
gradient of the attribution norm (a double backward). Reference settings (MNIST): lambda 1,
beta 0.1, IG ~50 points outside, 10 inside, a few PGD steps.

Both are :class:`~medrobust.core.defenses.base.AdversarialTrainingStep` objects: pass one as
``monai.engines.SupervisedTrainer(..., iteration_update=step)``. The IG regulariser is computed
with the network in eval mode by default (``ig_eval_mode``), so the interpolated path images do
not enter BatchNorm's batch statistics; gradients still reach every weight.

Example:
    >>> import torch
    >>> from monai.engines import SupervisedTrainer
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    >>> data = [{"image": torch.rand(4, 1, 4, 4), "label": torch.tensor([0, 1, 0, 1])}]
    >>> step = IGNorm(eps=4 / 255, lam=1.0, steps=2, ig_steps=4, attack_ig_steps=3)
    >>> trainer = SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=data, network=net,
    ...     optimizer=torch.optim.SGD(net.parameters(), 0.1), loss_function=torch.nn.CrossEntropyLoss(),
    ...     iteration_update=step)
    >>> trainer.run()
    >>> sorted(step.last_terms)
    ['ig_norm', 'loss']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from medrobust.core.attacks import pgd
from medrobust.core.attacks.losses import per_sample, resolve_objective
from medrobust.core.defenses.base import AdversarialTrainingStep, Forward
from medrobust.core.metrics.attribution_robustness import path_integrated_gradients
from medrobust.core.utils import eval_mode
from medrobust.core.validation import check_nonnegative, check_positive

__all__ = ["IGNorm", "IGSumNorm", "ig_l1"]


def ig_l1(forward: Forward, x: torch.Tensor, x_to: torch.Tensor, y: Any, loss: Callable[[torch.Tensor, Any], torch.Tensor],
          *, steps: int, create_graph: bool) -> torch.Tensor:
    """``||IG(x -> x_to)||_1`` per sample ``(B,)`` of the per-sample loss ``loss(f(z), y)``."""
    b = x.shape[0]

    def score(z: torch.Tensor) -> torch.Tensor:
        reps = z.shape[0] // b
        yy = y.repeat(reps, *([1] * (y.ndim - 1))) if isinstance(y, torch.Tensor) else y
        return per_sample(loss(forward(z), yy), z.shape[0])

    ig = path_integrated_gradients(score, x, x_to, steps=steps, create_graph=create_graph)
    return ig.abs().reshape(b, -1).sum(1)


class _StableExplanationStep(AdversarialTrainingStep):
    """Shared settings and the inner maximisation of IG-NORM / IG-SUM-NORM."""

    #: weight of the loss at x' inside the inner objective (0 for IG-NORM, 1 for IG-SUM-NORM)
    _loss_in_attack = 0.0

    def __init__(self, *, eps: float, weight: float, steps: int = 5, alpha: float | None = None,
                 ig_steps: int = 50, attack_ig_steps: int = 10, ig_eval_mode: bool = True, **kwargs: Any) -> None:
        super().__init__(eps=eps, **kwargs)
        self.weight = float(check_nonnegative("weight", weight))
        self.steps = check_positive("steps", steps, integer=True)
        self.alpha = 2.5 * self.eps / steps if alpha is None else float(check_positive("alpha", alpha))
        self.ig_steps = check_positive("ig_steps", ig_steps, integer=True)
        self.attack_ig_steps = check_positive("attack_ig_steps", attack_ig_steps, integer=True)
        self.ig_eval_mode = bool(ig_eval_mode)
        self.objective = resolve_objective(self.attack_loss)
        self.last_terms: dict[str, float] = {}
        self._net: torch.nn.Module | None = None

    def inner_objective(self, forward: Forward, x: torch.Tensor, y: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        """``x' -> (B, 1)``: ``c * l(x') + w * ||IG(x -> x')||_1`` (differentiable w.r.t. ``x'``)."""
        w, c = self.weight, self._loss_in_attack

        def value(z: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():  # PGD evaluates the clean point under no_grad; IG needs gradients
                v = w * ig_l1(forward, x, z, y, self.objective.loss, steps=self.attack_ig_steps, create_graph=True)
                if c:
                    v = v + c * per_sample(self.objective.loss(forward(z), y), z.shape[0])
            return v[:, None]

        return value

    def make_adversarial(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, engine: Any) -> torch.Tensor:
        res = pgd(self.inner_objective(forward, x, y), x, y, loss_fn=lambda out, _: out[:, 0], eps=self.eps,
                  alpha=self.alpha, steps=self.steps, bounds=self.bounds, generator=self.sample_seed())
        return res.x_adv

    def before_loss(self, engine: Any, x: torch.Tensor, adv: Any, y: torch.Tensor, loss_fn: Callable) -> None:
        self._net = engine.network

    def ig_term(self, forward: Forward, x: torch.Tensor, adv: torch.Tensor, y: Any) -> torch.Tensor:
        """Mean ``||IG(x -> adv)||_1`` over the batch, differentiable w.r.t. the weights."""
        net = self._net if self._net is not None else torch.nn.Identity()
        with eval_mode(net, self.ig_eval_mode):
            return ig_l1(forward, x, adv.detach(), y, self.objective.loss, steps=self.ig_steps, create_graph=True).mean()

    def training_loss(self, forward: Forward, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor,
                      loss_fn: Callable) -> tuple[torch.Tensor, torch.Tensor]:
        """IG-NORM: ``loss(f(x)) + w * IG term``; IG-SUM-NORM: ``loss(f(x*)) + w * IG term``."""
        pred = forward(adv if self._loss_in_attack else x)
        base = loss_fn(pred, y)
        reg = self.ig_term(forward, x, adv, y)
        self.last_terms = {"loss": float(base.detach()), "ig_norm": float(reg.detach())}
        return base + self.weight * reg, pred

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(eps={self.eps:.6g}, weight={self.weight:g}, steps={self.steps}, "
                f"ig_steps={self.ig_steps}, attack_ig_steps={self.attack_ig_steps})")


class IGNorm(_StableExplanationStep):
    """IG-NORM: ``loss(f(x), y) + lam * ||IG(x -> x*)||_1`` with ``x* = argmax_{B_inf(x, eps)} ||IG(x -> x')||_1``.

    Args:
        eps: L-inf radius of the inner maximisation.
        lam: weight of the attribution term (1.0 in Chen et al. on MNIST).
        steps: PGD steps of the inner maximisation; ``alpha`` its step (default ``2.5 eps / steps``).
        ig_steps: IG points of the training term; ``attack_ig_steps``: inside the attack.
        ig_eval_mode: compute the IG term with the network in eval mode (BatchNorm running stats).
        **kwargs: ``bounds``, ``attack_loss`` (the per-sample loss ``l`` whose IG is taken;
            default classification cross-entropy), ``loss_fn``, ``attack_in_eval_mode``, ``seed``.

    Raises:
        ValueError, TypeError: a negative ``lam``, non-positive step counts.
    """

    name = "ig-norm"
    _loss_in_attack = 0.0

    def __init__(self, *, eps: float, lam: float = 1.0, **kwargs: Any) -> None:
        super().__init__(eps=eps, weight=lam, **kwargs)


class IGSumNorm(_StableExplanationStep):
    """IG-SUM-NORM: ``loss(f(x*), y) + beta * ||IG(x -> x*)||_1`` at ``x* = argmax [l(x') + beta ||IG(x -> x')||_1]``.

    Args:
        eps: L-inf radius.
        beta: weight of the attribution term (0.1 in Chen et al. on MNIST).
        **kwargs: as :class:`IGNorm`.
    """

    name = "ig-sum-norm"
    _loss_in_attack = 1.0

    def __init__(self, *, eps: float, beta: float = 0.1, **kwargs: Any) -> None:
        super().__init__(eps=eps, weight=beta, **kwargs)
