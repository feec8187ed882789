"""``CardBudget``: what a robustness card spends, the one place its defaults are written.

Standard library only, so ``medrobust card --help`` (whose flag defaults are read from
``CardBudget()``) stays cheap.

Example:
    >>> b = CardBudget(attack_cases=8, eps=(2 / 255, 8 / 255))
    >>> b.attack_cases, len(b.eps)
    (8, 2)
    >>> budget_statement(b, n_labelled=20)[0].split(";")[0]
    'Attacked cases: 8 of 20 labelled (the first in case-id order)'
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

__all__ = ["CardBudget", "PUBLICATION_HINT", "budget_statement"]

#: the flags the card names for publication-grade attack figures (``robust_accuracy``'s defaults, AutoAttack standard)
PUBLICATION_HINT = "--pgd-steps 10 50 --restarts 5 --square-queries 1000 --autoattack standard"


@dataclass(frozen=True)
class CardBudget:
    """What the card spends; defaults finish in about a minute on one CPU thread for the shipped lesion bundle.

    The defaults are a screening budget, not a publication one: 64 attacked cases give robust
    accuracies with 95 % intervals up to about +-0.13 wide, Square with 100 queries is a weak
    gradient-masking check, and the (eps, delta) estimate is at eps 0.15 (at most 67 posterior
    draws per case). :func:`budget_statement` words this for the card.

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
        block_cases: cases per unit of work (:mod:`medrobust.card.units`): the per-case sections run
            on blocks of this many consecutive cases in case-id order, each with a seed derived
            from its case ids; the unit of resuming and of sharding over torchrun ranks (the
            numbers depend on it, not on the number of processes).
        tre_tau_mm: registration cards: the (eps, delta) estimate's unsafe event is "TRE increases
            by more than this many mm".
    """

    max_cases: int | None = None
    attack_cases: int = 64
    eps: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255)
    pgd_steps: tuple[int, ...] = (10, 20)
    restarts: int = 2
    square_queries: int = 100
    autoattack: str = "fast"
    autoattack_iterations: int = 20
    prob_cases: int = 8
    prob_eps: float = 0.15
    prob_delta: float = 0.1
    prob_attack_steps: int = 5
    intrinsic_steps: int = 10
    nmutant_cases: int = 32
    nmutant_mutants: int = 50
    sensitivity: bool = True
    families: tuple[str, ...] | None = None
    severities: Any = None
    n_boot: int = 1000
    block_cases: int = 16
    tre_tau_mm: float = 2.0

    def __post_init__(self) -> None:
        if not self.eps or any(not 0 < e <= 1 for e in self.eps):
            raise ValueError(f"CardBudget eps should be radii in (0, 1], got {self.eps}.")
        if not self.pgd_steps or any(int(s) < 1 for s in self.pgd_steps):
            raise ValueError(f"CardBudget pgd_steps should be >= 1, got {self.pgd_steps}.")
        if self.autoattack not in ("fast", "standard", "off"):
            raise ValueError(f"CardBudget autoattack should be 'fast', 'standard' or 'off', got {self.autoattack!r}.")
        if not self.tre_tau_mm > 0:
            raise ValueError(f"CardBudget tre_tau_mm should be > 0 mm, got {self.tre_tau_mm}.")
        for name in ("attack_cases", "restarts", "square_queries", "prob_cases", "nmutant_cases", "nmutant_mutants",
                     "block_cases"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"CardBudget {name} should be >= 1, got {getattr(self, name)}.")


def _halfwidth(n: int) -> float:
    """Half-width of the exact 95 % Clopper-Pearson interval of a proportion near 50 % from ``n`` cases (the widest)."""
    from medrobust.core.metrics.probabilistic import clopper_pearson

    lo, hi = clopper_pearson(n // 2, n, 0.05)
    return (hi - lo) / 2


def budget_statement(budget: CardBudget, *, n_labelled: int) -> list[str]:
    """Sentences that tell a card's reader what each figure was measured with and how precise it can be.

    Args:
        budget: the budget the card ran with.
        n_labelled: labelled cases of the clean figures.

    Returns:
        one sentence per measure: attacked cases and the interval width they allow, the attacks
        per radius, the (eps, delta) estimate's draws, intrinsic / nMutant / bootstrap sizes, and
        whether this is the default budget (with the flags that scale it up).
    """
    na = min(budget.attack_cases, n_labelled)
    eps = ", ".join(f"{e * 255:g}" for e in budget.eps)
    mid = sorted(budget.eps)[len(budget.eps) // 2] * 255
    pgd = [f"PGD-{budget.pgd_steps[0]} (one start)"] + [
        f"PGD-{s} x {budget.restarts} restarts" if budget.restarts > 1 else f"PGD-{s}" for s in budget.pgd_steps[1:]]
    weak = " (below 1000 queries: a weak gradient-free check)" if budget.square_queries < 1000 else ""
    aa = f"AutoAttack {budget.autoattack}"
    if budget.autoattack == "fast":
        aa += f" ({budget.autoattack_iterations} APGD iterations)"
    from medrobust.core.metrics.probabilistic import hoeffding_sample_size

    draws = hoeffding_sample_size(budget.prob_eps, budget.prob_delta)
    default = all(getattr(budget, f.name) == f.default for f in fields(budget))
    return [
        f"Attacked cases: {na} of {n_labelled} labelled (the first in case-id order); its robust accuracies have 95 % "
        f"Clopper-Pearson intervals of up to +-{_halfwidth(na):.2f} ({na} cases, widest near 50 %).",
        f"Attacks at each radius (eps {eps} /255): {', '.join(pgd)}, Square with {budget.square_queries} queries{weak}; {aa}.",
        f"(eps, delta) estimate: eps {budget.prob_eps:g}, delta {budget.prob_delta:g} on {min(budget.prob_cases, n_labelled)} "
        f"cases at radius {mid:g}/255, at most {draws} posterior draws per case (Chernoff-Hoeffding; the sequential "
        f"test may stop earlier), PGD-{budget.prob_attack_steps} safety check.",
        f"Intrinsic robustness: PGD-{budget.intrinsic_steps} on the {na} attacked cases; nMutant: "
        f"{min(budget.nmutant_cases, n_labelled)} cases, at most {budget.nmutant_mutants} mutants; "
        f"{budget.n_boot} bootstrap resamples.",
        ("This is the default screening budget" if default else "This is a custom budget")
        + f"; for publication-grade attack figures attack every case (--attack-cases) and use at least "
        f"{PUBLICATION_HINT}; tighten the (eps, delta) estimate with --prob-eps / --prob-delta.",
    ]
