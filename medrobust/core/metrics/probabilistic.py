"""Probabilistic robustness of Bayesian / stochastic models with statistical guarantees
(Cardelli, Kwiatkowska, Laurenti, Paoletti, Patane, Wicker, IJCAI 2019;
matthewwicker/StatisticalGuarenteesForBNNs).

A posterior sample ``w`` is *safe* at ``x`` when no ``x'`` in the threat set ``T(x)`` (an eps-ball,
searched by an attack) moves the softmax by ``>= tol`` in L2 (or, with ``criterion="label"``,
changes the predicted class). ``P_safe = Pr_w[w safe at x]`` is estimated from ``n`` i.i.d.
posterior samples:

- Chernoff-Hoeffding: ``n = ceil(ln(2 / delta) / (2 eps^2))`` gives
  ``Pr(|p_hat - P_safe| > eps) <= delta`` (``eps = delta = 0.075`` -> 292);
- sequential (Massart bound + Clopper-Pearson): after each sample a ``1 - alpha`` exact
  Clopper-Pearson interval for ``P_safe`` bounds Massart's variance-aware sample size
  ``ln(2 / (delta - alpha)) / (h(p) eps^2)``; sampling stops once ``n`` reaches it (never more
  than the Hoeffding ``n``), so the total error probability is at most ``delta``.

An attack can miss unsafe perturbations, so "safe" here means "the attack found nothing": an
attack-based ``p_hat`` estimates an *upper bound* on the true probabilistic robustness. Every
result says so in ``guarantee``.

Posterior samples come from a *sampler* ``sampler(generator) -> model``: a deterministic
network for one posterior draw. :class:`SeededStochasticPosterior` turns any model whose forward
pass draws from torch's RNG (MC dropout, parametric noise injection) into such draws by fixing
the seed of every forward pass; :class:`MCDropoutPosterior` does that with only the dropout
layers stochastic; :class:`GaussianWeightPosterior` adds ``N(0, (scale std(W))^2)`` to each weight.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from scipy.special import betaincinv
from torch import nn

from medrobust.core.attacks import pgd
from medrobust.core.attacks.base import Bounds
from medrobust.core.utils import class_logits, model_output
from medrobust.core.validation import check_batch

__all__ = [
    "hoeffding_sample_size",
    "clopper_pearson",
    "massart_sample_size",
    "softmax_shift_loss",
    "ProbabilisticRobustness",
    "probabilistic_robustness",
    "SeededStochasticPosterior",
    "MCDropoutPosterior",
    "GaussianWeightPosterior",
]

Sampler = Callable[[torch.Generator], Callable[[torch.Tensor], Any]]
AttackFn = Callable[[Callable[[torch.Tensor], Any], torch.Tensor], torch.Tensor]


def hoeffding_sample_size(eps: float, delta: float) -> int:
    """Chernoff-Hoeffding sample count ``ceil(ln(2 / delta) / (2 eps^2))``.

    Example:
        >>> hoeffding_sample_size(0.075, 0.075)
        292
    """
    if not 0 < eps < 1 or not 0 < delta < 1:
        raise ValueError(f"eps and delta must be in (0, 1), got eps={eps}, delta={delta}.")
    return math.ceil(math.log(2.0 / delta) / (2.0 * eps * eps))


def clopper_pearson(successes: int, n: int, alpha: float) -> tuple[float, float]:
    """Exact two-sided ``1 - alpha`` Clopper-Pearson interval for a binomial proportion."""
    if n <= 0:
        return 0.0, 1.0
    # Beta quantiles via scipy.special.betaincinv (the same numbers as scipy.stats.beta.ppf, ~50x faster)
    lo = 0.0 if successes == 0 else float(betaincinv(successes, n - successes + 1, alpha / 2))
    hi = 1.0 if successes == n else float(betaincinv(successes + 1, n - successes, 1 - alpha / 2))
    return lo, hi


def massart_sample_size(interval: tuple[float, float], eps: float, delta: float) -> int | None:
    """Massart's sample count ``ceil(ln(2 / delta) / (h(p) eps^2))`` for the ``p`` in ``interval``
    closest to 1/2 (the worst case); ``None`` while the interval contains 1/2 (no saving).

    ``h(p) = 9 / (2 (3p + eps)(3(1 - p) - eps))`` for ``p < 1/2``, symmetric for ``p > 1/2``.
    """
    lo, hi = interval
    if lo <= 0.5 <= hi:
        return None
    q = hi if hi < 0.5 else 1.0 - lo  # distance-to-1/2 worst case, mapped below 1/2
    den = (3 * q + eps) * (3 * (1 - q) - eps)
    if den <= 0:
        return None
    h = 4.5 / den
    return math.ceil(math.log(2.0 / delta) / (h * eps * eps))


def softmax_shift_loss(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``||softmax(out) - softmax(ref)||_2`` per sample ``(B,)`` (an attack loss; ``ref`` = clean output)."""
    return (F.softmax(class_logits(out), 1) - F.softmax(class_logits(ref.detach()), 1)).norm(dim=1)


@dataclass
class ProbabilisticRobustness:
    """Estimate of ``P_safe`` per input.

    Attributes:
        estimate: ``p_hat`` per input ``(B,)``.
        n_samples: posterior samples used per input ``(B,)``.
        n_safe: safe samples per input ``(B,)``.
        eps, delta: the requested ``Pr(|p_hat - P_safe| > eps) <= delta``.
        method: ``"hoeffding"`` or ``"sequential"``.
        guarantee: a sentence stating the guarantee computed and its caveat.
    """

    estimate: torch.Tensor
    n_samples: torch.Tensor
    n_safe: torch.Tensor
    eps: float
    delta: float
    method: str
    guarantee: str


def _default_attack(input_eps: float, steps: int, bounds: Bounds, norm: str) -> AttackFn:
    def attack(model: Callable[[torch.Tensor], Any], x: torch.Tensor) -> torch.Tensor:
        return pgd(model, x, None, loss_fn=softmax_shift_loss, eps=input_eps, steps=steps, norm=norm, bounds=bounds,
                   generator=0).x_adv  # fmt: skip

    return attack


def _safe(model: Callable[[torch.Tensor], Any], x: torch.Tensor, attack: AttackFn, criterion: str, tol: float) -> torch.Tensor:
    x_adv = attack(model, x)
    with torch.no_grad():
        out, out_adv = model_output(model, x), model_output(model, x_adv)
    if criterion == "label":
        return class_logits(out).argmax(1) == class_logits(out_adv).argmax(1)
    return softmax_shift_loss(out_adv, out) < tol


def probabilistic_robustness(
    sampler: Sampler,
    x: torch.Tensor,
    *,
    input_eps: float = 0.05,
    tol: float = 0.25,
    criterion: str = "softmax",
    eps: float = 0.075,
    delta: float = 0.075,
    sequential: bool = False,
    alpha: float = 0.05,
    attack: AttackFn | None = None,
    attack_steps: int = 10,
    norm: str = "inf",
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | int | None = None,
) -> ProbabilisticRobustness:
    """Estimate ``P_safe(x)`` for every input of ``x`` with an ``(eps, delta)`` guarantee.

    Args:
        sampler: ``sampler(generator) -> model``: one posterior draw (deterministic network).
        x: inputs ``(B, C, H, W[, D])``; each gets its own estimate (the same draws are reused
            across inputs; each per-input estimate has the stated guarantee).
        input_eps: radius of the threat ball ``T(x)`` (input units).
        tol: softmax L2 shift that counts as unsafe (``criterion="softmax"``; 0.25 in the authors' code).
        criterion: ``"softmax"`` or ``"label"`` (unsafe when the predicted class changes).
        eps, delta: the statistical accuracy/confidence (0.075, 0.075 -> 292 samples).
        sequential: Massart + Clopper-Pearson early stopping (``delta`` must exceed ``alpha``).
        alpha: confidence spent on the Clopper-Pearson interval (sequential only).
        attack: ``attack(model, x) -> x_adv`` searching ``T(x)``; default PGD (``attack_steps``
            steps, ``norm``, ``bounds``) maximising the softmax shift.
        generator: ``torch.Generator`` or int seed for the posterior draws.

    Returns:
        :class:`ProbabilisticRobustness`.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> r = probabilistic_robustness(GaussianWeightPosterior(net, scale=0.1), torch.rand(1, 1, 4, 4),
        ...                              eps=0.2, delta=0.2, attack_steps=2)
        >>> int(r.n_samples[0])
        29
    """
    check_batch(x)
    if criterion not in ("softmax", "label"):
        raise ValueError(f"criterion must be 'softmax' or 'label', got {criterion!r}.")
    n_max = hoeffding_sample_size(eps, delta)
    if sequential and not 0 < alpha < delta:
        raise ValueError(f"sequential needs 0 < alpha < delta (alpha is spent on the interval), got alpha={alpha}, delta={delta}.")
    atk = attack or _default_attack(input_eps, attack_steps, bounds, norm)
    gen = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(int(generator or 0))
    b = x.shape[0]
    n_safe = torch.zeros(b, dtype=torch.long)
    n_used = torch.zeros(b, dtype=torch.long)
    active = torch.ones(b, dtype=torch.bool)
    stop_at = torch.full((b,), n_max, dtype=torch.long)
    # Massart never stops before its p = 0 count: skip the interval computations until then
    n_floor = massart_sample_size((0.0, 0.0), eps, delta - alpha) if sequential else n_max
    while bool(active.any()):
        model = sampler(gen)
        idx = active.nonzero()[:, 0]
        safe = _safe(model, x[idx.to(x.device)], atk, criterion, tol).cpu()
        n_safe[idx] += safe.long()
        n_used[idx] += 1
        for i in idx.tolist():
            if sequential and n_used[i] >= n_floor:
                ci = clopper_pearson(int(n_safe[i]), int(n_used[i]), alpha)
                m = massart_sample_size(ci, eps, delta - alpha)
                stop_at[i] = n_max if m is None else min(n_max, m)
            if n_used[i] >= stop_at[i]:
                active[i] = False
    est = n_safe.double() / n_used.double()
    how = (f"sequential Massart bound with a {1 - alpha:.3g} Clopper-Pearson interval (stops at most at the "
           f"Hoeffding count {n_max})" if sequential else f"Chernoff-Hoeffding bound, n = ceil(ln(2/delta)/(2 eps^2)) = {n_max}")  # fmt: skip
    guarantee = (
        f"Pr(|p_hat - P_safe| > {eps:g}) <= {delta:g} per input ({how}); 'safe' means the attack found no "
        f"perturbation within input_eps={input_eps:g} changing the "
        + ("predicted class" if criterion == "label" else f"softmax by >= {tol:g} (L2)")
        + ", so an attack-based estimate is an upper bound on the true probabilistic robustness."
    )
    return ProbabilisticRobustness(est, n_used, n_safe, eps, delta, "sequential" if sequential else "hoeffding", guarantee)


class SeededStochasticPosterior:
    """Posterior draws of a stochastic model (one whose forward pass samples from torch's RNG).

    Each call returns a deterministic function: the wrapped model's forward pass run under a
    fixed seed (``torch.random.fork_rng``, so the global RNG state is restored afterwards). The
    noise shape may depend on the batch, so use the same batch for the attack and the check (the
    estimator does).

    Args:
        model: the stochastic model, in the mode in which it is stochastic (e.g. PNI layers).
    """

    def __init__(self, model: Callable[[torch.Tensor], Any]) -> None:
        self.model = model

    def __call__(self, generator: torch.Generator) -> Callable[[torch.Tensor], Any]:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        model = self.model

        def draw(x: torch.Tensor) -> Any:
            devices = [x.device.index] if x.device.type == "cuda" and x.device.index is not None else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)  # inside fork_rng: the caller's RNG state is restored on exit
                return model(x)

        return draw


class MCDropoutPosterior(SeededStochasticPosterior):
    """MC-dropout posterior draws: a private copy of ``model`` in eval mode except its dropout layers.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 2))
        >>> f = MCDropoutPosterior(net)(torch.Generator().manual_seed(0))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> torch.equal(f(x), f(x))
        True
    """

    def __init__(self, model: nn.Module) -> None:
        m = copy.deepcopy(model).eval()
        drops = [mod for mod in m.modules() if isinstance(mod, nn.modules.dropout._DropoutNd)]
        if not drops:
            raise ValueError("MCDropoutPosterior: the model has no dropout layer (nn.Dropout*).")
        for mod in drops:
            mod.train()
        super().__init__(m)


class GaussianWeightPosterior:
    """Gaussian weight-noise draws (noise injection): ``W + scale * std(W) * N(0, I)`` per weight tensor.

    Normalisation-layer parameters are left as they are. Works on a private copy; each call
    overwrites the copy's weights, so use one draw at a time.

    Args:
        model: the mean network.
        scale: noise standard deviation relative to each tensor's standard deviation.
    """

    def __init__(self, model: nn.Module, *, scale: float = 0.1) -> None:
        from medrobust.core.metrics.flatness import perturbable_parameters

        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}.")
        self.model = copy.deepcopy(model).eval()
        self.params = [p for _, p in perturbable_parameters(self.model)]
        self.mean = [p.detach().clone() for p in self.params]
        self.scale = float(scale)

    def __call__(self, generator: torch.Generator) -> nn.Module:
        with torch.no_grad():
            for p, w in zip(self.params, self.mean):
                sd = w.std() if w.numel() > 1 else w.abs()
                p.copy_(w + self.scale * sd * torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device))
        return self.model
