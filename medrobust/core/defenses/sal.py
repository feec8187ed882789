"""Stable adversarial learning, SAL (Liu, Shen, Cui et al., AAAI 2021; reference code LJSthu/StableAL).

Adversarial training whose adversary pays a *per-feature* price: with feature weights ``w_j > 0``
and ``c_w(x, x') = sum_j w_j ||x_j - x'_j||^2`` (feature ``j`` = a group of voxels, see
``features``), the model minimises the penalty-form robust loss

    ``E[ max_x' l(theta; x', y) - gamma * s * c_w(x, x') ]``,  ``gamma = 1 / min_j w_j``,

(``s`` = ``cost_scale`` sets the overall price in the units of the images), and the weights are
learned over training *environments* ``e`` to minimise

    ``R(w) = sum_e L_e(theta(w)) + alpha (max_e L_e - min_e L_e)``

by alternating updates. Features whose relation to the label is stable across environments end
with a high cost (the adversary may barely move them); unstable (spurious) ones get a low cost,
so the adversary perturbs them freely and the model stops relying on them.

Our implementation of the alternating step (the reference code has its own approximations):

- inner maximisation: ``inner_steps`` steps of gradient ascent ``x' += lr * grad[l - gamma s c_w]``
  from ``x``, clipped to ``bounds`` (:func:`penalized_attack`; the penalty replaces a radius, so
  the library's radius-projected PGD does not apply; the step is capped by :func:`stable_step`);
- every ``w_every`` iterations, the hypergradient ``dR/dw`` is taken through (a) one more ascent
  step from ``x'`` with ``w`` as a variable (earlier steps held constant, bounds ignored), whose
  explicit dependence on ``w`` is ``dx'/dw_j = -2 lr gamma s (x'_j - x_j)`` (the reference
  code's approximation), and (b) one virtual SGD step of the weights
  ``theta' = theta - lr_theta grad_theta l(theta; x')`` (a second-order term, as in DARTS), with
  ``R`` evaluated at ``theta'`` on the batch's clean samples grouped by environment; then
  ``w <- w * exp(-w_lr * g / max|g|)`` (multiplicative, so ``w`` stays positive; the reference
  clips at 0 and drops the feature);
- the real weight step is the trainer's optimiser on ``l(theta; x')``.

Environments come with the batch: ``batchdata[env_key]`` holds one environment index per sample
(MONAI dict datasets pass the key through). Pass the step as
``SupervisedTrainer(..., iteration_update=SAL(...))``; 2-D and 3-D inputs.

Example:
    >>> import torch
    >>> step = SAL(num_features=4, features=torch.arange(4).reshape(2, 2), cost_scale=1.0)
    >>> step.w.tolist(), step.gamma
    ([1.0, 1.0, 1.0, 1.0], 1.0)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.func import functional_call

from medrobust.core.attacks.losses import per_sample, resolve_objective
from medrobust.core.defenses.base import AdversarialTrainingStep, Forward, plain
from medrobust.core.utils import clip_to_bounds, eval_mode
from medrobust.core.validation import check_nonnegative, check_positive

__all__ = ["SAL", "penalized_attack", "environment_risk", "feature_cost", "stable_step"]


def feature_cost(x: torch.Tensor, x_adv: torch.Tensor, w_map: torch.Tensor) -> torch.Tensor:
    """``c_w(x, x') = sum_voxels w_map * sum_channels (x - x')^2`` per sample ``(B,)``; ``w_map`` ``(*spatial)``."""
    d2 = ((x_adv - x) ** 2).sum(1)
    return (d2 * w_map).reshape(x.shape[0], -1).sum(1)


def penalized_attack(
    forward: Forward,
    x: torch.Tensor,
    y: Any,
    loss: Callable[[torch.Tensor, Any], torch.Tensor],
    w_map: torch.Tensor,
    *,
    gamma: float,
    steps: int = 5,
    lr: float = 0.1,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Gradient ascent on ``l(f(x'), y) - gamma * c_w(x, x')`` from ``x`` (penalty form, no radius), clipped to ``bounds``.

    Args:
        forward: model ``(B, C, *spatial) -> output``.
        x: inputs ``(B, C, *spatial)``.
        y: targets for ``loss``.
        loss: per-sample loss ``(output, y) -> (B, ...)``.
        w_map: per-voxel cost weights ``(*spatial)`` (already multiplied by any scale).
        gamma: price multiplier.
        steps: ascent steps; ``lr``: step size, capped per voxel at ``0.9 / (2 gamma w)`` so the
            quadratic penalty's own iteration cannot oscillate (see :func:`stable_step`).

    Returns:
        ``x'`` ``(B, C, *spatial)``, detached.
    """
    lo, hi = bounds
    lr = stable_step(lr, gamma, w_map)
    z = x.detach().clone()
    for _ in range(steps):
        with torch.enable_grad():
            z.requires_grad_(True)
            obj = per_sample(loss(forward(z), y), x.shape[0]) - gamma * feature_cost(x, z, w_map)
            (g,) = torch.autograd.grad(obj.sum(), z)
        z = clip_to_bounds(z.detach() + lr * g, torch.as_tensor(lo, dtype=x.dtype), torch.as_tensor(hi, dtype=x.dtype))
    return z.detach()


def stable_step(lr: float, gamma: float, w_map: torch.Tensor) -> torch.Tensor:
    """Per-voxel ascent step ``min(lr, 0.9 / (2 gamma w))`` ``(*spatial)``.

    The penalty is separable per voxel, so capping each voxel's step by its own price keeps the
    quadratic part contracting (``z -= step 2 gamma w (z - x)``) while cheap features still take
    the full step ``lr`` (one global cap would freeze them once ``w`` spreads).
    """
    return torch.clamp(0.9 / (2.0 * float(gamma) * w_map.clamp_min(1e-30)), max=float(lr))


def environment_risk(losses: torch.Tensor, env: torch.Tensor, alpha: float) -> torch.Tensor:
    """``sum_e L_e + alpha (max_e L_e - min_e L_e)`` from per-sample ``losses`` ``(B,)`` and environment ids ``env`` ``(B,)``."""
    ids = torch.unique(env)
    per_env = torch.stack([losses[env == e].mean() for e in ids])
    return per_env.sum() + alpha * (per_env.max() - per_env.min())


class SAL(AdversarialTrainingStep):
    """Stable adversarial learning as a MONAI ``iteration_update`` (see the module docstring).

    Args:
        num_features: number of cost weights ``F``.
        features: int map ``(*spatial)`` with values in ``[0, F)`` assigning every voxel to a
            feature (e.g. a grid of patches); ``None``: every voxel its own feature (``F`` must
            then equal the number of voxels).
        cost_scale: ``s``, the price of a squared unit change at ``w = min(w)``; smaller lets the
            adversary move further (e.g. 0.02 for [0, 1] images and cross-entropy).
        inner_steps, inner_lr: the penalised ascent.
        alpha: weight of the environment-spread term of ``R``.
        w_lr: largest relative change of ``w`` per update; ``w_every``: iterations between updates.
        theta_lr: step of the virtual weight update in the hypergradient.
        learn_w: ``False`` keeps ``w`` fixed (the plain penalised adversarial training).
        env_key: batch key of the environment index per sample.
        w_init: initial ``w`` (uniform 1 by default).
        **kwargs: ``bounds``, ``attack_loss`` (the per-sample loss ``l``), ``loss_fn``,
            ``attack_in_eval_mode``, ``seed``. ``eps`` is not used (the penalty replaces it).

    Attributes:
        w: the current feature weights ``(F,)``; ``history``: ``w`` after every update.

    Raises:
        ValueError: ``features`` out of range, non-positive settings, or a batch without ``env_key``
            while ``learn_w``.
    """

    name = "sal"

    def __init__(self, *, num_features: int, features: torch.Tensor | None = None, cost_scale: float = 0.02,
                 inner_steps: int = 5, inner_lr: float = 0.1, alpha: float = 1.0, w_lr: float = 0.2, w_every: int = 1,
                 theta_lr: float = 0.1, learn_w: bool = True, env_key: str = "env",
                 w_init: torch.Tensor | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("eps", 0.0)
        super().__init__(**kwargs)
        self.num_features = check_positive("num_features", num_features, integer=True)
        if features is not None:
            features = torch.as_tensor(features).long()
            if int(features.min()) < 0 or int(features.max()) >= num_features:
                raise ValueError(f"features must hold feature indices in [0, {num_features}), got "
                                 f"[{int(features.min())}, {int(features.max())}].")
        self.features = features
        self.cost_scale = float(check_positive("cost_scale", cost_scale))
        self.inner_steps = check_positive("inner_steps", inner_steps, integer=True)
        self.inner_lr = float(check_positive("inner_lr", inner_lr))
        self.alpha = float(check_nonnegative("alpha", alpha))
        self.w_lr = float(check_positive("w_lr", w_lr))
        self.w_every = check_positive("w_every", w_every, integer=True)
        self.theta_lr = float(check_positive("theta_lr", theta_lr))
        self.learn_w = bool(learn_w)
        self.env_key = env_key
        w = torch.ones(num_features) if w_init is None else torch.as_tensor(w_init, dtype=torch.float32).clone()
        if w.shape != (num_features,) or not bool((w > 0).all()):
            raise ValueError(f"w_init must be ({num_features},) positive weights, got {tuple(w.shape)}.")
        self.w = w
        self.history: list[torch.Tensor] = []
        self.objective = resolve_objective(self.attack_loss)
        self._env: torch.Tensor | None = None
        self._iteration = 0

    @property
    def gamma(self) -> float:
        """``1 / min_j w_j``."""
        return float(1.0 / self.w.min())

    def w_map(self, spatial: tuple[int, ...], w: torch.Tensor | None = None) -> torch.Tensor:
        """Per-voxel weights ``(*spatial)`` from feature weights (``self.w`` by default), differentiable in ``w``."""
        w = self.w if w is None else w
        if self.features is None:
            n = 1
            for s in spatial:
                n *= s
            if n != self.num_features:
                raise ValueError(f"features=None needs num_features = voxels ({n}), got {self.num_features}.")
            return w.reshape(spatial)
        if tuple(self.features.shape) != tuple(spatial):
            raise ValueError(f"features map {tuple(self.features.shape)} does not match the images' spatial size {spatial}.")
        return w[self.features.to(w.device)]

    def __call__(self, engine: Any, batchdata: Any) -> dict:
        env = batchdata.get(self.env_key) if isinstance(batchdata, dict) else None
        if env is None and self.learn_w:
            raise ValueError(f"SAL needs environment ids under batch key {self.env_key!r} (one per sample) to learn w; "
                             f"got keys {sorted(batchdata) if isinstance(batchdata, dict) else type(batchdata).__name__}.")
        self._env = None if env is None else torch.as_tensor(plain(env)).reshape(-1).long()
        return super().__call__(engine, batchdata)

    def make_adversarial(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, engine: Any) -> torch.Tensor:
        wm = self.w_map(tuple(x.shape[2:])).to(x)
        return penalized_attack(forward, x, y, self.objective.loss, wm * self.cost_scale, gamma=self.gamma,
                                steps=self.inner_steps, lr=self.inner_lr, bounds=self.bounds)

    def before_loss(self, engine: Any, x: torch.Tensor, adv: Any, y: torch.Tensor, loss_fn: Callable) -> None:
        self._iteration += 1
        if self.learn_w and self._env is not None and self._iteration % self.w_every == 0:
            self.update_w(engine.network, x, adv, y)

    def hypergradient(self, net: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                      env: torch.Tensor) -> torch.Tensor:
        """``dR/dw`` ``(F,)`` through the last ascent step and one virtual weight step (see the module docstring)."""
        loss = self.objective.loss
        w = self.w.detach().clone().to(x).requires_grad_(True)
        gamma, s = self.gamma, self.cost_scale
        with eval_mode(net, self.attack_in_eval_mode):
            # the last ascent step, re-taken with w as a variable (earlier steps: constants)
            prev = x_adv.detach()
            with torch.enable_grad():
                z = prev.clone().requires_grad_(True)
                (g_l,) = torch.autograd.grad(per_sample(loss(net(z), y), x.shape[0]).sum(), z)
            lr = stable_step(self.inner_lr, gamma, s * self.w_map(tuple(x.shape[2:])))
            x_w = prev + lr * (g_l - 2 * gamma * s * self.w_map(tuple(x.shape[2:]), w).unsqueeze(0).unsqueeze(0)
                                          * (prev - x).detach())
            params = {k: p for k, p in net.named_parameters()}
            buffers = {k: b for k, b in net.named_buffers()}
            train_loss = per_sample(loss(functional_call(net, (params, buffers), (x_w,)), y), x.shape[0]).mean()
            grads = torch.autograd.grad(train_loss, list(params.values()), create_graph=True, allow_unused=True)
            virtual = {k: p - self.theta_lr * g if g is not None else p for (k, p), g in zip(params.items(), grads)}
            risk = environment_risk(per_sample(loss(functional_call(net, (virtual, buffers), (x,)), y), x.shape[0]),
                                    env.to(x.device), self.alpha)
            (gw,) = torch.autograd.grad(risk, w, allow_unused=True)
        return torch.zeros_like(self.w) if gw is None else gw.detach().to(self.w)

    def update_w(self, net: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> None:
        """One multiplicative step of ``w`` against the hypergradient; recorded in :attr:`history`."""
        assert self._env is not None
        g = self.hypergradient(net, x, x_adv, y, self._env)
        m = float(g.abs().max())
        if m > 0:
            self.w = self.w * torch.exp(-self.w_lr * g / m)
        self.history.append(self.w.clone())

    def training_loss(self, forward: Forward, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor,
                      loss_fn: Callable) -> tuple[torch.Tensor, torch.Tensor]:
        pred = forward(adv)
        return loss_fn(pred, y), pred

    def __repr__(self) -> str:
        return (f"SAL(num_features={self.num_features}, cost_scale={self.cost_scale:g}, inner_steps={self.inner_steps}, "
                f"alpha={self.alpha:g}, learn_w={self.learn_w})")
