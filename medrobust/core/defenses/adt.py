"""Adversarial distributional training (ADT; Dong et al., NeurIPS 2020): ADT-EXP and ADT-EXP-AM.

Instead of one worst-case perturbation per input, ADT learns a distribution over perturbations,
``min_theta mean_i max_{p(delta_i)} E_p[L(f(x_i + delta_i), y_i)] + lambda H(p)``, with
``delta = eps tanh(u)``, ``u = mu + softplus(omega) z``, ``z ~ N(0, I)`` (per pixel) and the
entropy estimated per pixel, constants dropped, as
``-log p(delta) = z^2 / 2 + log sigma + log(1 - tanh(u)^2)``. The classifier trains on the loss
of one sampled ``x_adv`` (no clean term).

- :class:`ADTEXP`: explicit per-example ``mu, omega`` (from 0), ``steps`` (7) updates of Adam
  (lr 0.3, betas (0, 0): a sign step) on ``E[L] + lambda H`` estimated with ``mc_samples`` (5)
  samples per step; lambda 0.01. The reference code never zeroes the inner optimiser's gradients,
  so they accumulate across steps; here each step uses that step's estimate, as the paper writes.
- :class:`ADTEXPAM`: amortised: a generator maps ``[x, grad L(x), grad L(x_FGSM)]`` to
  ``(mu, omega)`` and is trained jointly, maximising ``L + lambda H`` through a gradient-reversal
  on ``x_adv`` (Adam 2e-4, betas (0.5, 0.999)). The default generator is a small MONAI ``UNet``
  (the paper's is a 3-block ResNet generator with 256 filters); the two gradient maps are scaled
  per sample to unit max-abs before they enter it (the reference feeds raw batch-mean gradients).

The inner objective is ``attack_loss`` (per sample; classification CE by default, e.g.
``"dicece"`` for segmentation), averaged over the batch; the classifier's loss is ``loss_fn``.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    >>> adt = ADTEXP(eps=4 / 255, steps=2, mc_samples=2)
    >>> x = torch.rand(2, 1, 4, 4)
    >>> x_adv = adt.make_adversarial(net, x, torch.tensor([0, 1]), None)
    >>> bool((x_adv - x).abs().max() <= 4 / 255 + 1e-6)
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet

from medrobust.core.attacks import fgsm
from medrobust.core.attacks.base import input_gradient
from medrobust.core.attacks.losses import resolve_objective
from medrobust.core.defenses.base import AdversarialTrainingStep, Forward
from medrobust.core.utils import class_logits, clip_to_bounds
from medrobust.core.validation import check_class_range, check_nonnegative, check_positive

__all__ = ["ADTEXP", "ADTEXPAM", "tanh_gaussian_sample", "default_adt_generator"]

logger = logging.getLogger(__name__)


def tanh_gaussian_sample(mu: torch.Tensor, omega: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tanh(mu + softplus(omega) z), entropy estimate)``; all ``(B, C, *spatial)``, entropy a scalar.

    The entropy estimate is the mean over entries of ``z^2 / 2 + log sigma + log(1 - tanh(u)^2)``
    (``-log p`` of the tanh-Gaussian sample without constants).
    """
    sigma = F.softplus(omega)
    pert = torch.tanh(mu + sigma * z)
    neg_logp = z.pow(2) / 2 + torch.log(sigma + 1e-8) + torch.log(1 - pert.pow(2) + 1e-8)
    return pert, neg_logp.mean()


class ADTEXP(AdversarialTrainingStep):
    """ADT-EXP: explicit per-example perturbation distributions.

    Args:
        eps: L-inf radius (``delta = eps tanh(u)``).
        lam: entropy weight lambda (0.01).
        steps: inner Adam steps (7).
        mc_samples: Monte Carlo samples per step (5).
        inner_lr: inner Adam learning rate (0.3, betas (0, 0)).
        **kwargs: ``bounds``, ``attack_loss``, ``loss_fn``, ``attack_in_eval_mode``, ``seed``.

    Raises:
        ValueError: ``steps`` or ``mc_samples`` < 1, ``lam`` or ``inner_lr`` negative.
    """

    name = "adt-exp"

    def __init__(self, *, eps: float, lam: float = 0.01, steps: int = 7, mc_samples: int = 5,
                 inner_lr: float = 0.3, **kwargs: Any) -> None:
        super().__init__(eps=eps, **kwargs)
        check_positive("steps", steps, integer=True)
        check_positive("mc_samples", mc_samples, integer=True)
        check_nonnegative("lam", lam)
        check_nonnegative("inner_lr", inner_lr)
        self.lam, self.steps, self.mc_samples, self.inner_lr = float(lam), steps, mc_samples, float(inner_lr)

    def sample(self, x: torch.Tensor, mu: torch.Tensor, omega: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_adv, entropy)`` for one draw ``z`` from this defense's generator."""
        pert, ent = tanh_gaussian_sample(mu, omega, self.randn_like(x))
        return clip_to_bounds(x + self.eps * pert, *self.bounds), ent

    def make_adversarial(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, engine: Any) -> torch.Tensor:
        obj = resolve_objective(self.attack_loss)
        x = x.detach()
        with torch.no_grad():  # one forward per step (the inner loop takes steps x mc_samples)
            check_class_range(y, class_logits(forward(x), spatial=True))
        # plain leaf tensors (zeros_like would keep a MetaTensor subclass, which is not a leaf)
        mu = torch.zeros(x.shape, dtype=x.dtype, device=x.device, requires_grad=True)
        omega = torch.zeros(x.shape, dtype=x.dtype, device=x.device, requires_grad=True)
        opt = torch.optim.Adam([mu, omega], lr=self.inner_lr, betas=(0.0, 0.0))
        with torch.enable_grad():
            for _ in range(self.steps):
                g_mu, g_om = torch.zeros_like(x), torch.zeros_like(x)
                for _ in range(self.mc_samples):
                    x_adv, ent = self.sample(x, mu, omega)
                    # ascend E[L] + lambda H: descend its negative (gradients w.r.t. mu, omega only)
                    objective = -obj.loss(forward(x_adv), y).mean() - self.lam * ent
                    gm, go = torch.autograd.grad(objective, [mu, omega])
                    g_mu += gm
                    g_om += go
                mu.grad, omega.grad = g_mu, g_om
                opt.step()
        with torch.no_grad():
            x_adv, _ = self.sample(x, mu, omega)
        return x_adv.detach()

    def training_loss(
        self, forward: Forward, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, loss_fn: Callable
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pred = forward(adv)
        return loss_fn(pred, y), pred

    def __repr__(self) -> str:
        return f"ADTEXP(eps={self.eps:.6g}, lam={self.lam:g}, steps={self.steps}, mc_samples={self.mc_samples})"


def default_adt_generator(spatial_dims: int, channels: int) -> torch.nn.Module:
    """A small MONAI ``UNet``: ``3 C`` input channels (x and two gradients) -> ``2 C`` (mu, omega)."""
    return UNet(spatial_dims=spatial_dims, in_channels=3 * channels, out_channels=2 * channels,
                channels=(16, 32), strides=(2,), num_res_units=1, norm="batch")


class _ReverseGrad(torch.autograd.Function):
    """Identity forward, negated gradient backward (the generator ascends what the classifier descends)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return -grad


def _unit_max(g: torch.Tensor) -> torch.Tensor:
    m = g.reshape(g.shape[0], -1).abs().amax(dim=1).clamp_min(1e-12)
    return g / m.reshape((-1,) + (1,) * (g.ndim - 1))


class ADTEXPAM(AdversarialTrainingStep):
    """ADT-EXP-AM: a generator amortises the per-example distribution.

    Args:
        eps: L-inf radius.
        lam: entropy weight (0.01).
        generator: module ``(B, 3C, *spatial) -> (B, 2C, *spatial)``; default
            :func:`default_adt_generator`, built on the first batch (same device as the input).
        generator_lr: Adam learning rate of the generator (2e-4, betas (0.5, 0.999)).
        **kwargs: ``bounds``, ``attack_loss``, ``loss_fn``, ``attack_in_eval_mode``, ``seed``.

    Attributes:
        net_g: the generator (``None`` until the first batch when built by default).
    """

    name = "adt-exp-am"

    def __init__(self, *, eps: float, lam: float = 0.01, generator: torch.nn.Module | None = None,
                 generator_lr: float = 2e-4, **kwargs: Any) -> None:
        super().__init__(eps=eps, **kwargs)
        check_nonnegative("lam", lam)
        check_positive("generator_lr", generator_lr)
        self.lam, self.generator_lr = float(lam), float(generator_lr)
        self.net_g = generator
        self.opt_g: torch.optim.Optimizer | None = None

    def _generator(self, x: torch.Tensor) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        if self.net_g is None:
            with torch.random.fork_rng(devices=[]):  # initialise reproducibly without advancing the global RNG
                torch.manual_seed(self.seed)
                self.net_g = default_adt_generator(x.ndim - 2, x.shape[1])
            self.net_g.to(x.device)
        if self.opt_g is None:
            self.opt_g = torch.optim.Adam(self.net_g.parameters(), lr=self.generator_lr, betas=(0.5, 0.999))
        return self.net_g, self.opt_g

    def make_adversarial(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, engine: Any) -> torch.Tensor:
        """The generator input ``cat([x, grad L(x), grad L(x_FGSM)], dim=1)`` ``(B, 3C, *spatial)``."""
        obj = resolve_objective(self.attack_loss)
        with torch.no_grad():
            check_class_range(y, class_logits(forward(x), spatial=True))
        _, g1, _ = input_gradient(forward, x, lambda out: obj.loss(out, y))
        x_fgsm = fgsm(forward, x, y, loss_fn=self.attack_loss, eps=self.eps, bounds=self.bounds).x_adv
        _, g2, _ = input_gradient(forward, x_fgsm, lambda out: obj.loss(out, y))
        return torch.cat([x.detach(), _unit_max(g1), _unit_max(g2)], dim=1)

    def before_loss(self, engine: Any, x: torch.Tensor, adv: Any, y: torch.Tensor, loss_fn: Callable) -> None:
        _, opt = self._generator(x)
        opt.zero_grad(set_to_none=True)

    def training_loss(
        self, forward: Forward, x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, loss_fn: Callable
    ) -> tuple[torch.Tensor, torch.Tensor]:
        net_g, _ = self._generator(x)
        net_g.train()
        mu, omega = net_g(adv).split(x.shape[1], dim=1)
        pert, ent = tanh_gaussian_sample(mu, omega, self.randn_like(mu))
        x_adv = _ReverseGrad.apply(clip_to_bounds(x.detach() + self.eps * pert, *self.bounds))
        pred = forward(x_adv)
        # classifier: descends L; generator (through the reversal): ascends L + lambda H
        return loss_fn(pred, y) - self.lam * ent, pred

    def after_step(self, engine: Any) -> None:
        if self.opt_g is not None:
            self.opt_g.step()

    def __repr__(self) -> str:
        return f"ADTEXPAM(eps={self.eps:.6g}, lam={self.lam:g}, generator_lr={self.generator_lr:g})"
