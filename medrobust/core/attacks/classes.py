"""Thin classes over the functional attacks: settings fixed at construction, checked early.

``PGD(eps=8/255, steps=20)(model, x, y)`` is ``pgd(model, x, y, eps=8/255, steps=20)``; keyword
arguments given at call time override the stored ones (and are checked at the call). Settings are
checked at construction against the same rules the functions use
(:func:`~medrobust.core.attacks.base.check_attack_settings`, plus ``norm``, ``schedule`` and
``loss_fn``): ``PGD(eps=-1)`` raises where it is written.

Example:
    >>> import torch
    >>> attack = PGD(eps=2 / 255, steps=3)
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    >>> attack(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1])).x_adv.shape
    torch.Size([2, 1, 4, 4])
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from medrobust.core.attacks.base import AttackResult, check_attack_settings
from medrobust.core.attacks.cw import cw_l2
from medrobust.core.attacks.deepfool import deepfool
from medrobust.core.attacks.gradient import fgm, fgsm, geometry, pgd, step_schedule
from medrobust.core.attacks.losses import resolve_objective
from medrobust.core.attacks.sparse import sparse_pso
from medrobust.core.attacks.square import square

__all__ = ["Attack", "FGSM", "FGM", "PGD", "CarliniWagnerL2", "DeepFool", "Square", "SparsePSO"]


class Attack:
    """Base: stores keyword settings of ``fn`` and calls it.

    Raises:
        TypeError: an unknown setting name, or a setting of the wrong type.
        ValueError: a setting out of range (e.g. ``eps < 0``, ``steps < 1``, ``bounds=(1, 0)``).
    """

    fn: ClassVar[Callable[..., AttackResult]]

    def __init__(self, **settings: Any) -> None:
        params = inspect.signature(type(self).fn).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            allowed = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
            unknown = sorted(set(settings) - allowed)
            if unknown:
                raise TypeError(f"{type(self).__name__}: unknown setting(s) {unknown}; allowed: {sorted(allowed)}.")
        check_attack_settings(**settings)
        if "norm" in settings:
            geometry(settings["norm"])
        if "schedule" in settings:
            step_schedule(settings["schedule"])
        if settings.get("loss_fn") is not None:
            resolve_objective(settings["loss_fn"])
        self.settings = settings

    def __call__(self, model: Callable[[torch.Tensor], Any], x: torch.Tensor, y: Any = None,
                 **overrides: Any) -> AttackResult:
        return type(self).fn(model, x, y, **{**self.settings, **overrides})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return f"{type(self).__name__}({args})"


class FGSM(Attack):
    """:func:`~medrobust.core.attacks.gradient.fgsm`."""

    fn = staticmethod(fgsm)


class FGM(Attack):
    """:func:`~medrobust.core.attacks.gradient.fgm` (L2)."""

    fn = staticmethod(fgm)


class PGD(Attack):
    """:func:`~medrobust.core.attacks.gradient.pgd`."""

    fn = staticmethod(pgd)


class CarliniWagnerL2(Attack):
    """:func:`~medrobust.core.attacks.cw.cw_l2`."""

    fn = staticmethod(cw_l2)


class DeepFool(Attack):
    """:func:`~medrobust.core.attacks.deepfool.deepfool`."""

    fn = staticmethod(deepfool)


class Square(Attack):
    """:func:`~medrobust.core.attacks.square.square`."""

    fn = staticmethod(square)


class SparsePSO(Attack):
    """:func:`~medrobust.core.attacks.sparse.sparse_pso` (mFI-PSO)."""

    fn = staticmethod(sparse_pso)
