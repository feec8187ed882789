"""Adversarial training of registration networks through :mod:`medrobust.core.defenses` (fixed-image threat).

The threat model of :mod:`medrobust.registration.robustness`: an L-inf perturbation of the fixed
(TRUS) image while the moving MR is held constant. :class:`RobustRegistrationIteration` is a
``SupervisedTrainer`` ``iteration_update`` that builds those perturbations with a core defense's
own inner maximisation (:class:`~medrobust.core.defenses.PGDAdversarialTraining`, the library's
PGD) on the network seen as a function of the fixed image, and trains with the registration loss:

- ``"pgd-at"`` (Madry): the attack maximises ``1 - soft Dice`` of the warped moving labels
  (:func:`~medrobust.core.attacks.registration_objective`); the step trains on the batch with the
  clean fixed images and the attacked ones stacked (``clean_weight`` of the defense > 0) or on the
  attacked ones alone.
- ``"trades"`` (TRADES-style, Zhang et al. 2019, for a regression output): the attack maximises
  the squared change of the DDF, ``||f(x') - f(x)||^2`` per voxel; the loss is the clean
  registration loss plus ``beta`` times that change at ``x'`` (the KL of classification TRADES
  becomes a DDF consistency term).

Only the inner maximisation comes from the defense (its eps, steps, step size, norm, random start,
seed); ``eps_ramp`` > 0 is an eps curriculum: the radius (and the PGD step with it) grows linearly
from ``eps / eps_ramp`` at the first iteration to the defense's ``eps`` at iteration ``eps_ramp``
and stays there (as the warm-up of Gowal et al. 2018 / Wong et al. 2020 for large radii); the outer
loss is the registration step of
:class:`~medrobust.registration.engine.RegistrationIteration` (label loss, regulariser, keypoints).

Example:
    >>> from medrobust.core.defenses import PGDAdversarialTraining
    >>> from medrobust.registration.losses import label_loss
    >>> it = RobustRegistrationIteration(label_loss([0, 1]), defense=PGDAdversarialTraining(eps=0.01, steps=2), mode="trades",
    ...                                  eps_ramp=4)
    >>> it.mode, it.beta, it.eps_at(1), it.eps_at(100)
    ('trades', 1.0, 0.0025, 0.01)
"""

from __future__ import annotations

from typing import Any

import torch
from monai.utils import CommonKeys as Keys

from medrobust.core.attacks import registration_objective
from medrobust.core.defenses import PGDAdversarialTraining
from medrobust.core.utils import eval_mode
from medrobust.registration.engine import BATCH_KEYS, RegistrationIteration, _get, moving_input, register

__all__ = ["ROBUST_MODES", "ddf_change", "RobustRegistrationIteration"]

ROBUST_MODES = ("pgd-at", "trades")


def ddf_change(ddf: torch.Tensor, ddf_clean: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared DDF change ``(B,)`` (voxels^2): the TRADES-style inner objective."""
    return ((ddf - ddf_clean.to(ddf)) ** 2).flatten(1).mean(1)


class RobustRegistrationIteration(RegistrationIteration):
    """:class:`RegistrationIteration` on fixed images attacked by a core defense's PGD.

    Args:
        label_loss: as :class:`RegistrationIteration`.
        defense: a :class:`~medrobust.core.defenses.PGDAdversarialTraining` (its ``attack_loss`` is
            set here: registration Dice for ``"pgd-at"``, :func:`ddf_change` for ``"trades"``).
        mode: ``"pgd-at"`` or ``"trades"``.
        beta: weight of the DDF-consistency term (``"trades"``).
        eps_ramp: iterations of the linear eps warm-up (0: the full radius from the start).
        **kwargs: :class:`RegistrationIteration` settings (regulariser, weight, adversary, moving_keys, ...).

    Raises:
        ValueError: unknown ``mode``, ``beta`` < 0, ``eps_ramp`` < 0, or ``defense`` not a PGD-AT defense.
    """

    def __init__(self, label_loss: torch.nn.Module, *, defense: PGDAdversarialTraining, mode: str = "pgd-at",
                 beta: float = 1.0, eps_ramp: int = 0, **kwargs: Any) -> None:
        super().__init__(label_loss, **kwargs)
        if mode not in ROBUST_MODES:
            raise ValueError(f"mode must be one of {ROBUST_MODES}, got {mode!r}.")
        if not isinstance(defense, PGDAdversarialTraining):
            raise ValueError(f"defense must be a medrobust.core.defenses.PGDAdversarialTraining, got {type(defense).__name__}.")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}.")
        if isinstance(eps_ramp, bool) or not isinstance(eps_ramp, int) or eps_ramp < 0:
            raise ValueError(f"eps_ramp must be an int >= 0 (iterations), got {eps_ramp!r}.")
        self.defense, self.mode, self.beta, self.eps_ramp = defense, mode, float(beta), eps_ramp
        self._eps, self._alpha = defense.eps, defense.alpha
        defense.attack_loss = registration_objective("dice") if mode == "pgd-at" else ddf_change

    def eps_at(self, iteration: int) -> float:
        """The attack radius at trainer iteration ``iteration`` (1-based, ignite's count)."""
        if self.eps_ramp <= 0:
            return self._eps
        return self._eps * min(1.0, max(int(iteration), 1) / self.eps_ramp)

    def __call__(self, engine: Any, batchdata: dict) -> dict:
        device = engine.state.device
        scale = self.eps_at(engine.state.iteration) / self._eps if self._eps > 0 else 1.0
        self.defense.eps, self.defense.alpha = self._eps * scale, self._alpha * scale
        fixed, ml, fl = (_get(batchdata, k, device) for k in BATCH_KEYS[1:])
        moving = moving_input(batchdata, self.moving_keys, device)
        net = engine.network

        def forward(f: torch.Tensor) -> torch.Tensor:
            return register(net, moving, f)

        with eval_mode(net):
            if self.mode == "pgd-at":
                fixed_adv = self.defense.make_adversarial(forward, fixed, torch.cat([ml, fl], 1), engine)
            else:
                with torch.no_grad():
                    ddf_clean = forward(fixed)
                fixed_adv = self.defense.make_adversarial(forward, fixed, ddf_clean, engine)
        fixed_adv = fixed_adv.detach()
        if self.mode == "pgd-at":
            batch = dict(batchdata)
            if self.defense.clean_weight > 0:  # clean and attacked fixed images in one batch
                for k, v in batchdata.items():
                    if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == fixed.shape[0] and k != "affine":
                        batch[k] = torch.cat([v, v], 0)
                batch["fixed_image"] = torch.cat([fixed, fixed_adv], 0)
            else:
                batch["fixed_image"] = fixed_adv
            return super().__call__(engine, batch)
        self._extra = lambda ddf: self.beta * ddf_change(register(net, moving, fixed_adv), ddf).mean()
        try:
            return super().__call__(engine, batchdata)
        finally:
            self._extra = None

    def __repr__(self) -> str:
        return (f"RobustRegistrationIteration(mode={self.mode!r}, defense={self.defense!r}, beta={self.beta:g}, "
                f"eps_ramp={self.eps_ramp})")
