"""Wald's sequential probability ratio test (SPRT) for a Bernoulli rate, the fixed-sample
binomial test with the same error bounds, and nMutant's threshold calibration.

Used by :mod:`medrobust.core.detectors.nmutant` on streams of label changes, but nothing here
knows about models: a stream is a bool tensor or a callable giving the next observations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from scipy.stats import binom, norm

__all__ = ["SPRTResult", "sprt", "fixed_sample_size", "calibrate_kappa", "hypotheses", "KAPPA_FLOOR"]


@dataclass
class SPRTResult:
    """Per-input SPRT decisions.

    Attributes:
        adversarial: ``(B,)`` bool, the test accepted "adversarial" (``LCR >= p1``).
        decided: ``(B,)`` bool, the test stopped before the budget (undecided inputs count as normal).
        n_used: ``(B,)`` mutants used for each decision.
        changes: ``(B,)`` label changes among them.
        log_ratio: ``(B,)`` final log-likelihood ratio.
    """

    adversarial: torch.Tensor
    decided: torch.Tensor
    n_used: torch.Tensor
    changes: torch.Tensor
    log_ratio: torch.Tensor

    @property
    def lcr(self) -> torch.Tensor:
        """Label change rate among the mutants used ``(B,)``."""
        return self.changes.double() / self.n_used.clamp_min(1).double()


KAPPA_FLOOR = 1e-3  # a kappa of 0 (normal inputs never change label) would make p0 = p1 = 0


def hypotheses(kappa: float, indifference: float) -> tuple[float, float]:
    """``(p0, p1) = kappa (1 -+ indifference)``, kappa floored at :data:`KAPPA_FLOOR`."""
    k = max(float(kappa), KAPPA_FLOOR)
    p0, p1 = k * (1 - indifference), min(k * (1 + indifference), 1 - 1e-6)
    if not 0 < p0 < p1 < 1:
        raise ValueError(f"kappa={kappa} with indifference={indifference} leaves no room between p0 and p1 in (0, 1).")
    return p0, p1


def sprt(
    changes: torch.Tensor | Callable[[int, torch.Tensor], torch.Tensor],
    batch: int,
    *,
    p0: float,
    p1: float,
    alpha: float = 0.05,
    beta: float = 0.05,
    max_n: int = 500,
) -> SPRTResult:
    """Wald's sequential probability ratio test of ``H0: p = p0`` (normal) vs ``H1: p = p1`` (adversarial).

    Args:
        changes: a bool tensor ``(max_n, B)`` (observation ``k`` of each stream) or a callable
            ``(k, idx) -> (len(idx),) bool`` giving observation ``k`` for the still-undecided streams ``idx``.
        batch: number of streams ``B``.
        p0, p1: change probabilities under H0 and H1, ``0 < p0 < p1 < 1``.
        alpha: bound on Pr(accept H1 | H0) (false positives); beta: on Pr(accept H0 | H1).
        max_n: budget; undecided streams count as H0.

    Example:
        >>> z = torch.ones(50, 3, dtype=torch.bool)
        >>> r = sprt(z, 3, p0=0.1, p1=0.3)
        >>> bool(r.adversarial.all()), int(r.n_used[0])
        (True, 3)
    """
    if not 0 < p0 < p1 < 1:
        raise ValueError(f"need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}.")
    if not 0 < alpha < 1 or not 0 < beta < 1 or alpha + beta >= 1:
        raise ValueError(f"alpha, beta must be in (0, 1) with alpha + beta < 1, got {alpha}, {beta}.")
    if isinstance(changes, torch.Tensor):
        if changes.ndim != 2 or changes.shape[1] != batch:
            raise ValueError(f"changes must be (max_n, {batch}), got {tuple(changes.shape)}.")
        table = changes.bool().cpu()
        max_n = min(max_n, table.shape[0])

        def fetch(k: int, idx: torch.Tensor) -> torch.Tensor:
            return table[k, idx]

    else:
        fetch = changes
    up, down = math.log((1 - beta) / alpha), math.log(beta / (1 - alpha))
    a_step, b_step = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    z = torch.zeros(batch, dtype=torch.long)
    n = torch.zeros(batch, dtype=torch.long)
    adv = torch.zeros(batch, dtype=torch.bool)
    decided = torch.zeros(batch, dtype=torch.bool)
    llr = torch.zeros(batch, dtype=torch.float64)
    for k in range(max_n):
        idx = (~decided).nonzero()[:, 0]
        if not idx.numel():
            break
        c = fetch(k, idx).reshape(-1).bool().cpu()
        z[idx] += c.long()
        n[idx] += 1
        llr[idx] = z[idx].double() * a_step + (n[idx] - z[idx]).double() * b_step
        hi, lo = llr[idx] >= up, llr[idx] <= down
        adv[idx[hi]] = True
        decided[idx[hi | lo]] = True
    return SPRTResult(adv, decided, n, z, llr)


def fixed_sample_size(p0: float, p1: float, alpha: float = 0.05, beta: float = 0.05, *, max_n: int = 10**6) -> tuple[int, int]:
    """Smallest fixed-sample binomial test with the SPRT's error bounds: ``(n, c)`` such that
    "adversarial iff at least ``c`` changes in ``n``" has ``Pr(>= c | p0) <= alpha`` and
    ``Pr(< c | p1) <= beta`` (exact binomial; ``n`` found by bisection).

    Example:
        >>> fixed_sample_size(0.1, 0.3)
        (45, 9)
    """
    if not 0 < p0 < p1 < 1:
        raise ValueError(f"need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}.")

    def ok(n: int) -> int | None:
        c = int(binom.isf(alpha, n, p0)) + 1  # smallest c with Pr(X >= c | p0) <= alpha
        while c > 0 and binom.sf(c - 2, n, p0) <= alpha:
            c -= 1
        while binom.sf(c - 1, n, p0) > alpha:
            c += 1
        return c if binom.cdf(c - 1, n, p1) <= beta else None

    hi = 1
    while ok(hi) is None:
        hi *= 2
        if hi > max_n:
            raise ValueError(f"no fixed-sample test up to n={max_n} for p0={p0}, p1={p1}.")
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid) is None:
            lo = mid
        else:
            hi = mid
    return hi, int(ok(hi))  # type: ignore[arg-type]


def calibrate_kappa(lcr_normal: torch.Tensor, confidence: float = 0.99) -> float:
    """Threshold ``kappa`` = mean LCR of normal inputs + the half-width of its ``confidence`` CI."""
    v = torch.as_tensor(lcr_normal, dtype=torch.float64).reshape(-1)
    if v.numel() < 2:
        raise ValueError(f"need at least 2 normal inputs to calibrate kappa, got {v.numel()}.")
    z = float(norm.ppf(0.5 + confidence / 2))
    return float(v.mean() + z * v.std() / math.sqrt(v.numel()))
