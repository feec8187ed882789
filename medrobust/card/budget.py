"""``CardBudget``: what a robustness card spends, the one place its defaults are written.

Standard library only, so ``medrobust card --help`` (whose flag defaults are read from
``CardBudget()``) stays cheap.

Example:
    >>> b = CardBudget(attack_cases=8, eps=(2 / 255, 8 / 255))
    >>> b.attack_cases, len(b.eps)
    (8, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CardBudget"]


@dataclass(frozen=True)
class CardBudget:
    """What the card spends; defaults finish in minutes on a CPU for the shipped bundles.

    Attributes:
        max_cases: labelled cases for the clean figures (``None``: all).
        attack_cases: cases attacked (the first ones in case-id order).
        eps: L-inf radii of the robustness curve, in ``[0, 1]`` input units.
        pgd_steps: PGD steps: the first with one start, the others with ``restarts``.
        restarts: PGD restarts; square_queries: Square attack queries.
        autoattack: ``"fast"``, ``"standard"`` or ``"off"``; autoattack_iterations: APGD iterations (fast).
        prob_cases, prob_eps, prob_delta, prob_attack_steps: the (eps, delta) estimate (cases,
            statistical accuracy/confidence, PGD steps of the safety check); its radius is the
            middle of ``eps``.
        intrinsic_steps: PGD steps of the intrinsic-robustness search (radius: middle of ``eps``).
        nmutant_cases, nmutant_mutants: cases and SPRT budget of the nMutant detector.
        families, severities: the sensitivity sweep (``None``: its defaults); ``sensitivity=False`` skips it.
        n_boot: bootstrap resamples.
    """

    max_cases: int | None = None
    attack_cases: int = 64
    eps: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255)
    pgd_steps: tuple[int, ...] = (10, 20)
    restarts: int = 2
    square_queries: int = 300
    autoattack: str = "fast"
    autoattack_iterations: int = 20
    prob_cases: int = 8
    prob_eps: float = 0.1
    prob_delta: float = 0.1
    prob_attack_steps: int = 5
    intrinsic_steps: int = 10
    nmutant_cases: int = 32
    nmutant_mutants: int = 50
    sensitivity: bool = True
    families: tuple[str, ...] | None = None
    severities: Any = None
    n_boot: int = 1000

    def __post_init__(self) -> None:
        if not self.eps or any(not 0 < e <= 1 for e in self.eps):
            raise ValueError(f"CardBudget eps should be radii in (0, 1], got {self.eps}.")
        if not self.pgd_steps or any(int(s) < 1 for s in self.pgd_steps):
            raise ValueError(f"CardBudget pgd_steps should be >= 1, got {self.pgd_steps}.")
        if self.autoattack not in ("fast", "standard", "off"):
            raise ValueError(f"CardBudget autoattack should be 'fast', 'standard' or 'off', got {self.autoattack!r}.")
        for name in ("attack_cases", "restarts", "square_queries", "prob_cases", "nmutant_cases", "nmutant_mutants"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"CardBudget {name} should be >= 1, got {getattr(self, name)}.")
