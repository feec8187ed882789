"""Adversarial weight perturbation (AWP; Wu, Xia & Wang, NeurIPS 2020) on top of another defense.

Per batch, after the inner defense has built its adversarial inputs:

1. a proxy copy of the network takes one SGD ascent step (lr ``proxy_lr``) on the inner
   defense's own training loss (adversarial CE for AT, CE + beta KL for TRADES);
2. for every conv/linear weight ``w_l`` (parameters with more than one dim and ``weight`` in the
   name; normalisation layers and biases excluded) the step ``d_l`` becomes the layer-relative
   perturbation ``v_l = ||w_l|| d_l / ||d_l||``;
3. the network's weights move to ``w + gamma v``, the training step is taken there,
   and ``gamma v`` is subtracted again afterwards.

``gamma`` is 0.01 for AT-AWP and 0.005 for TRADES-AWP (the paper's settings); ``warmup_epochs``
epochs run without the weight perturbation (the reference code uses 0 for AT and 10 for TRADES
at 100+ epochs; scale it to the schedule).

Example:
    >>> from medrobust.core.defenses import AWP, TRADES
    >>> awp = AWP(TRADES(eps=2 / 255))
    >>> awp.gamma
    0.005
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch

from medrobust.core.defenses.base import AdversarialTrainingStep, Forward
from medrobust.core.defenses.trades import TRADES
from medrobust.core.validation import check_nonnegative

__all__ = ["AWP", "awp_directions"]

logger = logging.getLogger(__name__)

_EPS = 1e-20


def awp_directions(model: torch.nn.Module, proxy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``{name: ||w|| (w' - w) / ||w' - w||}`` for the conv/linear weights of ``model`` (``w``) and ``proxy`` (``w'``)."""
    proxy_params = dict(proxy.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for name, w in model.named_parameters():
        if w.ndim <= 1 or "weight" not in name or name not in proxy_params:
            continue
        d = proxy_params[name].detach() - w.detach()
        out[name] = w.detach().norm() / (d.norm() + _EPS) * d
    return out


class AWP(AdversarialTrainingStep):
    """Wrap a defense (:class:`~medrobust.core.defenses.PGDAdversarialTraining`, :class:`~medrobust.core.defenses.TRADES`,
    MART, ...) with adversarial weight perturbation.

    Args:
        inner: the defense whose adversarial inputs and training loss are used.
        gamma: size of the weight perturbation relative to each layer's weight norm; default
            0.005 when ``inner`` is TRADES, else 0.01.
        proxy_lr: learning rate of the proxy's single SGD ascent step (0.01 in the reference code).
        warmup_epochs: epochs (1-based ``engine.state.epoch <= warmup_epochs``) trained without AWP.

    Raises:
        TypeError: ``inner`` is not an :class:`~medrobust.core.defenses.base.AdversarialTrainingStep`.
        ValueError: ``gamma`` or ``proxy_lr`` negative.
    """

    name = "awp"

    def __init__(self, inner: AdversarialTrainingStep, *, gamma: float | None = None, proxy_lr: float = 0.01,
                 warmup_epochs: int = 0) -> None:
        if not isinstance(inner, AdversarialTrainingStep):
            raise TypeError(f"inner must be an AdversarialTrainingStep, got {type(inner).__name__}.")
        if gamma is None:
            gamma = 0.005 if isinstance(inner, TRADES) else 0.01
        check_nonnegative("gamma", gamma)
        check_nonnegative("proxy_lr", proxy_lr)
        check_nonnegative("warmup_epochs", warmup_epochs, integer=True)
        super().__init__(eps=inner.eps, bounds=inner.bounds, attack_loss=inner.attack_loss, loss_fn=inner.loss_fn,
                         attack_in_eval_mode=inner.attack_in_eval_mode, seed=inner.seed)
        self.inner = inner
        self.gamma = float(gamma)
        self.proxy_lr = float(proxy_lr)
        self.warmup_epochs = int(warmup_epochs)
        self._proxy: torch.nn.Module | None = None
        self._proxy_opt: torch.optim.Optimizer | None = None
        self._applied: dict[str, torch.Tensor] | None = None

    def attach(self, engine: Any) -> None:
        super().attach(engine)
        self.inner.attach(engine)

    def make_adversarial(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, engine: Any) -> Any:
        return self.inner.make_adversarial(forward, x, y, engine)

    def training_loss(
        self, forward: Forward, x: torch.Tensor, adv: Any, y: torch.Tensor, loss_fn: Callable
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.training_loss(forward, x, adv, y, loss_fn)

    def _proxy_for(self, net: torch.nn.Module) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        if self._proxy is None or self._proxy_opt is None:
            self._proxy = copy.deepcopy(net)
            self._proxy_opt = torch.optim.SGD(self._proxy.parameters(), lr=self.proxy_lr)
        self._proxy.load_state_dict(net.state_dict())
        return self._proxy, self._proxy_opt

    def weight_perturbation(self, engine: Any, x: torch.Tensor, adv: Any, y: torch.Tensor,
                            loss_fn: Callable) -> dict[str, torch.Tensor]:
        """``{name: gamma * v_l}``: one proxy ascent step on the inner loss, made layer-relative."""
        proxy, opt = self._proxy_for(engine.network)
        proxy.train()
        loss, _ = self.inner.training_loss(self.forward_fn(engine, proxy), x, adv, y, loss_fn)
        opt.zero_grad(set_to_none=True)
        (-loss).backward()
        opt.step()
        return {k: self.gamma * v for k, v in awp_directions(engine.network, proxy).items()}

    def _shift(self, net: torch.nn.Module, diff: dict[str, torch.Tensor], sign: float) -> None:
        params = dict(net.named_parameters())
        with torch.no_grad():
            for name, v in diff.items():
                params[name].add_(v, alpha=sign)

    def before_loss(self, engine: Any, x: torch.Tensor, adv: Any, y: torch.Tensor, loss_fn: Callable) -> None:
        self.inner.before_loss(engine, x, adv, y, loss_fn)
        if engine.state.epoch <= self.warmup_epochs or self.gamma == 0:
            self._applied = None
            return
        diff = self.weight_perturbation(engine, x, adv, y, loss_fn)
        self._shift(engine.network, diff, 1.0)
        self._applied = diff

    def after_step(self, engine: Any) -> None:
        if self._applied is not None:
            self._shift(engine.network, self._applied, -1.0)
            self._applied = None
        self.inner.after_step(engine)

    def __repr__(self) -> str:
        return f"AWP({self.inner!r}, gamma={self.gamma:g}, warmup_epochs={self.warmup_epochs})"
