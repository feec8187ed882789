"""Robust accuracy under a strong attack suite, with a gradient-masking check.

A defense is only as good as the strongest attack it was tested against. :func:`robust_accuracy`
attacks a classifier with several attacks at one radius and reports, per attack, the fraction of
samples still classified correctly, the per-sample worst case over all of them, and whether the
numbers look like *gradient masking* (Athalye et al., 2018; Carlini et al., 2019): a gradient-free
attack (Square) doing better than every gradient attack, or input gradients that vanish or turn
NaN. A flagged model's PGD numbers cannot be trusted.

The default suite (:func:`default_attacks`) is PGD-10 (the usual table entry), PGD-50 with 5
restarts, and the score-based Square attack with 1000 queries, all L-inf, all from
:mod:`medrobust.core.attacks`.

A sample counts as robust under an attack only if it is also classified correctly clean (the
clean image lies in every eps-ball); so every attack's accuracy is at most the clean accuracy.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4 * 4, 2))
    >>> x, y = torch.rand(4, 2, 4, 4, 4), torch.tensor([0, 1, 0, 1])  # a 3-D batch
    >>> r = robust_accuracy(net, x, y, eps=0.0, attacks=default_attacks(steps=(2,), restarts=1, queries=5))
    >>> r.accuracy == {"pgd2": r.clean_accuracy, "square": r.clean_accuracy}, r.gradient_masking
    (True, False)
    >>> sorted(r.as_row())[:3]
    ['clean_accuracy', 'eps', 'gradient_masking']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from medrobust.core.attacks import pgd, square
from medrobust.core.utils import class_logits, derive_seed, eval_mode, model_output
from medrobust.core.validation import check_batch, check_nonnegative, check_number, check_positive

__all__ = ["AttackSpec", "RobustAccuracy", "default_attacks", "robust_accuracy"]

_ATTACKS: dict[str, Callable[..., Any]] = {"pgd": pgd, "square": square}
_GRADIENT_FREE = {"square"}


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the suite: a name for the results, the attack function's name and its settings.

    Args:
        name: the column name in the results (``"pgd10"``, ``"square"``).
        attack: ``"pgd"`` or ``"square"`` (:mod:`medrobust.core.attacks`).
        options: keyword settings of that function besides ``eps``, ``bounds``, ``loss_fn`` and
            ``generator`` (e.g. ``{"steps": 50, "restarts": 5}``, ``{"queries": 1000}``).

    Raises:
        ValueError: an unknown attack or an empty name.
    """

    name: str
    attack: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"AttackSpec name should be a non-empty string, got {self.name!r}.")
        if self.attack not in _ATTACKS:
            raise ValueError(f"AttackSpec attack should be one of {sorted(_ATTACKS)}, got {self.attack!r}.")
        reserved = {"eps", "bounds", "loss_fn", "generator"} & set(self.options)
        if reserved:
            raise ValueError(f"AttackSpec options: {sorted(reserved)} are set by robust_accuracy, not per attack.")

    @property
    def gradient_free(self) -> bool:
        """True for score-based attacks (no input gradients)."""
        return self.attack in _GRADIENT_FREE


def default_attacks(
    *, steps: Sequence[int] = (10, 50), restarts: int = 5, queries: int = 1000, norm: str = "inf"
) -> tuple[AttackSpec, ...]:
    """PGD-``steps[0]`` (one start), PGD-``steps[i]`` x ``restarts`` for the others, and Square.

    Square is L-inf only, so ``norm="2"`` gives the PGD attacks alone (no gradient-free check).

    Example:
        >>> [a.name for a in default_attacks()]
        ['pgd10', 'pgd50x5', 'square']
    """
    specs = [AttackSpec(f"pgd{steps[0]}", "pgd", {"steps": int(steps[0]), "norm": norm})]
    specs += [AttackSpec(f"pgd{s}x{restarts}" if restarts > 1 else f"pgd{s}", "pgd",
                         {"steps": int(s), "restarts": int(restarts), "norm": norm}) for s in steps[1:]]
    if str(norm) == "inf":
        specs.append(AttackSpec("square", "square", {"queries": int(queries)}))
    return tuple(specs)


@dataclass(frozen=True)
class RobustAccuracy:
    """What :func:`robust_accuracy` measured.

    Attributes:
        eps: the radius.
        n: samples evaluated.
        clean_accuracy: fraction correct without attack.
        accuracy: ``{attack name: fraction correct clean and under that attack}``.
        worst_case_accuracy: fraction correct clean and under every attack (per sample).
        gradient_masking: True when the numbers look like gradient masking (see ``reasons``).
        reasons: why ``gradient_masking`` is set (empty when it is not).
        zero_gradient_fraction: per gradient attack, fraction of samples that attack did not break
            whose input gradient was exactly zero (or NaN) at every step.
    """

    eps: float
    n: int
    clean_accuracy: float
    accuracy: dict[str, float]
    worst_case_accuracy: float
    gradient_masking: bool
    reasons: tuple[str, ...] = ()
    zero_gradient_fraction: dict[str, float] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        """A flat dict for a CSV row: ``eps, n, clean_accuracy, <attack>..., worst_case_accuracy,
        gradient_masking, reasons``."""
        return {"eps": self.eps, "n": self.n, "clean_accuracy": self.clean_accuracy, **self.accuracy,
                "worst_case_accuracy": self.worst_case_accuracy, "gradient_masking": self.gradient_masking,
                "reasons": "; ".join(self.reasons)}


def _correct(model: Callable[[torch.Tensor], Any], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return class_logits(model_output(model, x)).argmax(1) == y


def robust_accuracy(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    attacks: Sequence[AttackSpec] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    loss_fn: Any = None,
    batch_size: int = 128,
    seed: int = 0,
    tolerance: float = 0.01,
) -> RobustAccuracy:
    """Accuracy of a classifier under each attack of a suite at radius ``eps``, and the masking check.

    Args:
        model: classifier ``(B, C, *spatial) -> (B, K)`` logits (``(B, 1)``: binary); an
            ``nn.Module`` runs in eval mode and its train/eval flags are restored.
        x: inputs ``(N, C, *spatial)`` (2-D or 3-D) inside ``bounds``.
        y: class indices ``(N,)``.
        eps: the radius, in input units (e.g. ``2 / 255``).
        attacks: the suite; default :func:`default_attacks` (PGD-10, PGD-50 x 5, Square 1000).
        bounds: valid input range.
        loss_fn: the attacks' objective (default classification cross-entropy; Square uses the
            margin for classification objectives).
        batch_size: samples per attack call; results do not depend on it (every sample has its
            own random stream, derived from ``seed``, the attack's position and the sample index).
        seed: base seed.
        tolerance: the masking check's margin, as a fraction of samples: flagged when a
            gradient-free attack's accuracy is more than ``tolerance`` below every gradient
            attack's, or when a gradient attack failed on more than ``tolerance`` of the samples
            with an input gradient that was zero (or NaN) at every step.

    Returns:
        :class:`RobustAccuracy`.

    Raises:
        TypeError, ValueError: a bad batch or labels (see :mod:`medrobust.core.validation`),
            ``eps`` negative or not finite, ``batch_size`` < 1, ``tolerance`` outside ``[0, 1)``,
            an empty suite or duplicate attack names.
    """
    check_batch(x, y)
    y = torch.as_tensor(y, device=x.device).reshape(-1).long()
    eps = float(check_nonnegative("eps", eps))
    batch_size = int(check_positive("batch_size", batch_size, integer=True))
    tolerance = float(check_number("tolerance", tolerance, low=0.0, high=1.0, high_open=True))
    suite = tuple(default_attacks() if attacks is None else attacks)
    if not suite or not all(isinstance(a, AttackSpec) for a in suite):
        raise ValueError(f"attacks should be a non-empty sequence of AttackSpec, got {attacks!r}.")
    names = [a.name for a in suite]
    if len(set(names)) != len(names):
        raise ValueError(f"attacks: names must be unique, got {names}.")

    n = x.shape[0]
    clean = torch.zeros(n, dtype=torch.bool)
    robust = {a.name: torch.zeros(n, dtype=torch.bool) for a in suite}
    dead_grad = {a.name: torch.zeros(n, dtype=torch.bool) for a in suite if not a.gradient_free}
    with eval_mode(model):
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            sl = slice(start, start + xb.shape[0])
            clean[sl] = _correct(model, xb, yb).cpu()
            for k, spec in enumerate(suite):
                # int seed s: sample i of this call gets seed s + i, so start + i is its global stream
                res = _ATTACKS[spec.attack](model, xb, yb, eps=eps, bounds=bounds, loss_fn=loss_fn,
                                            generator=derive_seed(seed, k) + start, **dict(spec.options))
                robust[spec.name][sl] = _correct(model, res.x_adv, yb).cpu()
                if spec.name in dead_grad:
                    dead = torch.zeros(xb.shape[0], dtype=torch.bool)
                    for key in ("zero_grad", "nan_grad"):
                        if key in res.info:
                            dead |= torch.as_tensor(res.info[key]).reshape(-1).bool().cpu()
                    dead_grad[spec.name][sl] = dead
    acc = {name: float((r & clean).float().mean()) for name, r in robust.items()}
    worst = clean.clone()
    for r in robust.values():
        worst &= r
    # a vanished gradient matters only where the attack then failed
    zero_frac = {name: float((d & robust[name] & clean).float().mean()) for name, d in dead_grad.items()}
    reasons = []
    grad_names = [a.name for a in suite if not a.gradient_free]
    if grad_names:
        best_grad = min(acc[g] for g in grad_names)
        for a in suite:
            if a.gradient_free and acc[a.name] < best_grad - tolerance:
                reasons.append(f"gradient-free {a.name} ({acc[a.name]:.3f}) beats every gradient attack "
                               f"(best {best_grad:.3f}) by more than {tolerance:g}")
    for name, frac in zero_frac.items():
        if frac > tolerance:
            reasons.append(f"{name}: input gradient zero or NaN at every step for {frac:.1%} of the samples")
    return RobustAccuracy(eps=eps, n=n, clean_accuracy=float(clean.float().mean()) if n else math.nan,
                          accuracy=acc, worst_case_accuracy=float(worst.float().mean()), gradient_masking=bool(reasons),
                          reasons=tuple(reasons), zero_gradient_fraction=zero_frac)
