"""Choose a defense by name with flat options: what a bundle config or a CLI passes.

``build_defense("trades", eps=2/255, beta=6)`` returns a :class:`~medrobust.core.defenses.TRADES`
training step; ``"none"`` returns ``None`` (MONAI's default supervised iteration). Options a
method does not take are dropped with a warning when they were set (``None`` means "the method's
default", so a config can pass the same option set for every method).

Names: ``none``, ``pgd-at``, ``fast-fgsm``, ``fgm``, ``trades``, ``mart``, ``at-awp``,
``trades-awp``, ``mart-awp``, ``adt-exp``, ``adt-exp-am``, ``fisher-at``, ``pni-w``, ``pni-c``,
``cni``, ``sidp``, ``ig-norm``, ``ig-sum-norm`` (``_`` and ``-`` are interchangeable, case-insensitive). ``pni-w``/``pni-c``/``cni``
make the trainer's network noisy at the first iteration
(:class:`~medrobust.core.defenses.NoiseInjectionTraining` ``inject=``); ``sidp`` makes its
normalisation non-affine (:class:`~medrobust.core.defenses.SIDPTraining`
``convert_normalization=True``; ``max_grad_norm``/``noise_multiplier`` default to 1, no ``eps``
needed); both change the checkpoint's keys.

Example:
    >>> d = build_defense("trades-awp", eps=2 / 255, beta=6.0, awp_gamma=None, steps=10)
    >>> type(d).__name__, type(d.inner).__name__, d.gamma
    ('AWP', 'TRADES', 0.005)
    >>> build_defense("none", eps=2 / 255) is None
    True
"""

from __future__ import annotations

import inspect
import logging
import warnings
from typing import Any

from medrobust.core.defenses.adt import ADTEXP, ADTEXPAM
from medrobust.core.defenses.awp import AWP
from medrobust.core.defenses.base import AdversarialTrainingStep
from medrobust.core.defenses.fisher_targeted import FisherTargetedTraining
from medrobust.core.defenses.mart import MART
from medrobust.core.defenses.noise_injection import NoiseInjectionTraining
from medrobust.core.defenses.pgd_at import FastFGSMTraining, FGMTraining, PGDAdversarialTraining
from medrobust.core.defenses.sidp import SIDPTraining
from medrobust.core.defenses.stable_explanations import IGNorm, IGSumNorm
from medrobust.core.defenses.trades import TRADES

__all__ = ["DEFENSES", "defense_names", "build_defense"]

logger = logging.getLogger(__name__)

DEFENSES: dict[str, type[AdversarialTrainingStep] | type[SIDPTraining]] = {
    "pgd-at": PGDAdversarialTraining,
    "fast-fgsm": FastFGSMTraining,
    "fgm": FGMTraining,
    "trades": TRADES,
    "mart": MART,
    "adt-exp": ADTEXP,
    "adt-exp-am": ADTEXPAM,
    "fisher-at": FisherTargetedTraining,
    "pni-w": NoiseInjectionTraining,
    "pni-c": NoiseInjectionTraining,
    "cni": NoiseInjectionTraining,
    "sidp": SIDPTraining,
    "ig-norm": IGNorm,
    "ig-sum-norm": IGSumNorm,
}
# Settings a name fixes (the same class under several names).
_PRESETS: dict[str, dict[str, Any]] = {
    "pni-w": {"inject": "pni", "per_channel": False},
    "pni-c": {"inject": "pni", "per_channel": True},
    "cni": {"inject": "cni", "per_channel": False},
    "sidp": {"convert_normalization": True},
}
_AWP_INNER = {"at-awp": "pgd-at", "trades-awp": "trades", "mart-awp": "mart"}
_AWP_OPTIONS = {"awp_gamma": "gamma", "awp_proxy_lr": "proxy_lr", "awp_warmup_epochs": "warmup_epochs"}
_BASE_OPTIONS = {"eps", "bounds", "attack_loss", "loss_fn", "attack_in_eval_mode", "seed"}


def defense_names() -> list[str]:
    """All names :func:`build_defense` accepts."""
    return ["none", *DEFENSES, *_AWP_INNER]


def _options(cls: type) -> set[str]:
    """Keyword options of ``cls`` and, through ``**kwargs``, of its bases."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object:
            break
        sig = inspect.signature(klass.__init__)
        names |= {p.name for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY}
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return names | _BASE_OPTIONS


# Options a subclass fixes itself (accepted by a base, ignored by the method).
_FIXED = {
    FastFGSMTraining: {"steps", "random_start", "norm"},
    FGMTraining: {"steps", "norm", "random_start", "alpha"},
    MART: {"clean_weight"},
    FisherTargetedTraining: {"clean_weight"},
    NoiseInjectionTraining: {"inject", "per_channel"},
    SIDPTraining: _BASE_OPTIONS - {"seed"} | {"steps", "alpha", "norm", "random_start", "convert_normalization"},
}


def build_defense(name: str | None, **options: Any) -> AdversarialTrainingStep | SIDPTraining | None:
    """The training step for ``name`` with ``options`` (``None`` values = method defaults).

    Args:
        name: a defense name (see the module docstring), or ``None``/``"none"`` for natural training.
        **options: method options (``eps``, ``steps``, ``alpha``, ``beta``, ``lam``, ``fraction``,
            ...); AWP variants also take ``awp_gamma``, ``awp_proxy_lr``, ``awp_warmup_epochs``;
            ``sidp`` takes ``max_grad_norm``, ``noise_multiplier``, ``batch_size``, ``seed``.

    Returns:
        An :class:`~medrobust.core.defenses.base.AdversarialTrainingStep` (usable as
        ``SupervisedTrainer(iteration_update=...)``), or ``None`` for natural training.

    Raises:
        ValueError: unknown name, or ``eps`` missing for a defense (other than ``sidp``).
    """
    key = "none" if name is None else str(name).strip().lower().replace("_", "-")
    given = {k: v for k, v in options.items() if v is not None}
    if key in ("none", "natural", ""):
        return None
    if key not in DEFENSES and key not in _AWP_INNER:
        raise ValueError(f"defense: unknown name {name!r}; choose one of {defense_names()}.")
    if "eps" not in given and key != "sidp":
        raise ValueError(f"defense {key!r} needs eps (the perturbation radius), got none.")
    awp_kwargs = {_AWP_OPTIONS[k]: given.pop(k) for k in list(given) if k in _AWP_OPTIONS}
    cls = DEFENSES[_AWP_INNER.get(key, key)]
    fixed = _FIXED.get(cls, set())
    accepted = _options(cls) - fixed
    ignored = sorted(set(given) - accepted - fixed)
    if ignored:
        warnings.warn(f"defense {key!r} ignores options {ignored}.", stacklevel=2)
    if set(given) & fixed:
        logger.info("defense %r fixes %s itself; the given values are not used.", key, sorted(set(given) & fixed))
    if awp_kwargs and key not in _AWP_INNER:
        warnings.warn(f"defense {key!r} is not an AWP variant; ignores {sorted(awp_kwargs)}.", stacklevel=2)
    step = cls(**{k: v for k, v in given.items() if k in accepted}, **_PRESETS.get(key, {}))
    if key in _AWP_INNER:
        step = AWP(step, **awp_kwargs)
    logger.info("defense: %r", step)
    return step
