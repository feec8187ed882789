"""The measured sections of a robustness card, each a plain dict ready for ``card.json``.

Every section calls the library's own measure (:mod:`medrobust.core.metrics`,
:func:`medrobust.core.robustness.robust_accuracy`, :class:`~medrobust.core.detectors.NMutantDetector`)
and adds what a reader needs to trust the figure: the number of cases, a 95 % interval and the
setting it was measured with. Proportions get the exact Clopper-Pearson interval; other
statistics a percentile case bootstrap (``scipy.stats.bootstrap``, seeded).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4 * 4, 2))
    >>> x, y = torch.rand(6, 2, 4, 4, 4), torch.tensor([0, 1, 0, 1, 0, 1])  # a 3-D batch
    >>> s = clean_section(net, x, y, n_boot=50, seed=0)
    >>> sorted(s) == ['accuracy', 'auc', 'ece', 'n', 'reliability']
    True
    >>> 0.0 <= s["accuracy"]["lo"] <= s["accuracy"]["value"] <= s["accuracy"]["hi"] <= 1.0
    True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import calibration_binning
from scipy.stats import bootstrap
from torch import nn

from medrobust.core.metrics.classification import expected_calibration_error, roc_auc
from medrobust.core.metrics.probabilistic import clopper_pearson
from medrobust.core.utils import class_logits, eval_mode

__all__ = [
    "LEVEL",
    "adversarial_counts",
    "adversarial_reduce",
    "masking_reasons",
    "autoattack_counts",
    "autoattack_reduce",
    "probabilistic_cases",
    "probabilistic_reduce",
    "intrinsic_cases",
    "intrinsic_reduce",
    "nmutant_split",
    "nmutant_fit",
    "nmutant_counts",
    "nmutant_reduce",
    "proportion",
    "bootstrap_statistic",
    "predict_logits",
    "clean_section",
    "adversarial_section",
    "autoattack_section",
    "probabilistic_section",
    "intrinsic_section",
    "nmutant_section",
]

logger = logging.getLogger(__name__)

#: two-sided confidence level of every interval on the card
LEVEL = 0.95


def _f(v: float) -> float | None:
    """JSON-safe float (NaN -> None)."""
    v = float(v)
    return v if math.isfinite(v) else None


def proportion(successes: int, n: int) -> dict[str, Any]:
    """``{"value", "lo", "hi", "n", "interval"}``: ``successes / n`` with its exact Clopper-Pearson interval."""
    if n <= 0:
        return {"value": None, "lo": None, "hi": None, "n": 0, "interval": "clopper-pearson"}
    lo, hi = clopper_pearson(int(successes), int(n), 1.0 - LEVEL)
    return {"value": successes / n, "lo": lo, "hi": hi, "n": int(n), "interval": "clopper-pearson"}


def bootstrap_statistic(stat: Callable[[np.ndarray], float], n: int, *, n_boot: int, seed: int) -> dict[str, Any]:
    """``stat(all indices)`` with a percentile case-bootstrap interval (``scipy.stats.bootstrap``).

    ``stat`` takes an index array into the cases. Resamples where ``stat`` is NaN (e.g. one class
    only, for an AUC) are dropped from the interval.
    """
    value = float(stat(np.arange(n)))
    lo = hi = float("nan")
    if n >= 2 and n_boot >= 2 and math.isfinite(value):
        rng = np.random.default_rng(int(seed))

        def safe(i: np.ndarray) -> float:
            return float(stat(np.asarray(i, dtype=int)))

        vals = bootstrap((np.arange(n),), safe, n_resamples=int(n_boot), vectorized=False, method="percentile",
                         random_state=rng).bootstrap_distribution  # fmt: skip
        vals = np.asarray(vals, dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            a = (1.0 - LEVEL) / 2.0
            lo, hi = float(np.quantile(vals, a)), float(np.quantile(vals, 1.0 - a))
    return {"value": _f(value), "lo": _f(lo), "hi": _f(hi), "n": int(n), "interval": f"percentile bootstrap ({n_boot})"}


@torch.no_grad()
def predict_logits(model: Callable[[torch.Tensor], Any], x: torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
    """Class logits ``(N, K >= 2)`` of ``x`` ``(N, C, *spatial)``, on the CPU."""
    with eval_mode(model):
        dev = _device(model, x)
        return torch.cat([class_logits(model(x[i:i + batch_size].to(dev))).float().cpu()
                          for i in range(0, x.shape[0], batch_size)])  # fmt: skip


def _device(model: Any, x: torch.Tensor) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return x.device


def clean_section(model: Callable[[torch.Tensor], Any], x: torch.Tensor, y: torch.Tensor, *, n_boot: int = 1000,
                  seed: int = 0, num_bins: int = 10) -> dict[str, Any]:  # fmt: skip
    """Clean accuracy, ROC AUC and top-label ECE with 95 % intervals, and the reliability diagram's bins.

    Args:
        model: classifier ``(B, C, *spatial) -> (B, K)`` (or ``(B, 1)``).
        x: inputs ``(N, C, *spatial)``; y: labels ``(N,)``.
        n_boot: bootstrap resamples (AUC, ECE); seed: their seed.
        num_bins: equal-width confidence bins of the ECE and the diagram.
    """
    z = predict_logits(model, x)
    y = y.reshape(-1).long()
    n = int(y.numel())
    correct = int((z.argmax(1) == y).sum())
    p = torch.softmax(z, 1)
    conf, pred = p.max(1)
    mean_p, mean_gt, counts = calibration_binning(conf.reshape(1, 1, -1), (pred == y).float().reshape(1, 1, -1),
                                                  num_bins=num_bins)  # fmt: skip
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    return {
        "n": n,
        "accuracy": proportion(correct, n),
        "auc": bootstrap_statistic(lambda i: roc_auc(z[i], y[i]), n, n_boot=n_boot, seed=seed),
        "ece": {**bootstrap_statistic(lambda i: expected_calibration_error(z[i], y[i], num_bins=num_bins), n,
                                      n_boot=n_boot, seed=seed + 1), "num_bins": num_bins},  # fmt: skip
        "reliability": {
            "bin_lo": edges[:-1].tolist(), "bin_hi": edges[1:].tolist(),
            "confidence": [_f(v) for v in mean_p.reshape(-1).tolist()],
            "accuracy": [_f(v) for v in mean_gt.reshape(-1).tolist()],
            "count": [int(c) for c in counts.reshape(-1).tolist()],
        },
    }  # fmt: skip


def adversarial_counts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: Sequence[float],
                       steps: Sequence[int], restarts: int, queries: int, seed: int = 0,
                       batch_size: int = 64) -> list[dict[str, Any]]:  # fmt: skip
    """Per radius, the counts of one block: cases, correct clean, robust per attack, worst case, vanished gradients.

    One :func:`~medrobust.core.robustness.robust_accuracy` call per radius; counts (not
    fractions) so that blocks pool exactly (:func:`adversarial_reduce`).
    """
    from medrobust.core.robustness import default_attacks, robust_accuracy

    suite = default_attacks(steps=tuple(int(s) for s in steps), restarts=int(restarts), queries=int(queries))
    rows = []
    for e in eps:
        r = robust_accuracy(model, x, y, eps=float(e), attacks=suite, seed=seed, batch_size=batch_size)
        n = r.n
        rows.append({"eps": float(e), "n": n, "clean": round(r.clean_accuracy * n),
                     "attacks": {k: round(v * n) for k, v in r.accuracy.items()},
                     "worst_case": round(r.worst_case_accuracy * n),
                     "zero_gradient": {k: round(v * n) for k, v in r.zero_gradient_fraction.items()}})  # fmt: skip
    return rows


def masking_reasons(accuracy: dict[str, float], zero_gradient: dict[str, float], gradient_free: Sequence[str], *,
                    tolerance: float = 0.01) -> list[str]:  # fmt: skip
    """The masking rule of :func:`~medrobust.core.robustness.robust_accuracy`, on accuracies pooled over blocks.

    Flagged when a gradient-free attack's accuracy is more than ``tolerance`` below every gradient
    attack's, or a gradient attack failed on more than ``tolerance`` of the cases with an input
    gradient zero (or NaN) at every step. (``robust_accuracy`` applies it to one call; the card
    pools the counts of its blocks first, so it re-applies the rule to the pooled fractions.)
    """
    reasons = []
    grad = [k for k in accuracy if k not in gradient_free]
    if grad:
        best = min(accuracy[g] for g in grad)
        for name in gradient_free:
            if name in accuracy and accuracy[name] < best - tolerance:
                reasons.append(f"gradient-free {name} ({accuracy[name]:.3f}) beats every gradient attack "
                               f"(best {best:.3f}) by more than {tolerance:g}")  # fmt: skip
    for name, frac in zero_gradient.items():
        if frac > tolerance:
            reasons.append(f"{name}: input gradient zero or NaN at every step for {frac:.1%} of the samples")
    return reasons


def adversarial_reduce(parts: Sequence[list[dict[str, Any]]], *, steps: Sequence[int], restarts: int,
                       queries: int) -> dict[str, Any]:  # fmt: skip
    """The adversarial section from the :func:`adversarial_counts` of every block (pooled counts, Clopper-Pearson)."""
    from medrobust.core.robustness import default_attacks

    suite = default_attacks(steps=tuple(int(s) for s in steps), restarts=int(restarts), queries=int(queries))
    free = [a.name for a in suite if a.gradient_free]
    rows = []
    for j, first in enumerate(parts[0]):
        blk = [p[j] for p in parts]
        n = sum(b["n"] for b in blk)
        hits = {k: sum(b["attacks"][k] for b in blk) for k in first["attacks"]}
        zero = {k: sum(b["zero_gradient"][k] for b in blk) / n for k in first["zero_gradient"]}
        reasons = masking_reasons({k: v / n for k, v in hits.items()}, zero, free)
        rows.append({
            "eps": first["eps"], "n": n, "clean": proportion(sum(b["clean"] for b in blk), n),
            "attacks": {k: proportion(v, n) for k, v in hits.items()},
            "worst_case": proportion(sum(b["worst_case"] for b in blk), n),
            "gradient_masking": bool(reasons), "reasons": reasons, "zero_gradient_fraction": zero,
        })  # fmt: skip
    flagged = [row["eps"] for row in rows if row["gradient_masking"]]
    return {
        "norm": "Linf", "attacks": [{"name": a.name, "attack": a.attack, **dict(a.options)} for a in suite],
        "rows": rows, "gradient_masking": bool(flagged),
        "masking_check": ("FLAGGED at eps " + ", ".join(f"{e:g}" for e in flagged)
                          + ": a gradient-free attack beat every gradient attack or input gradients vanished; "
                          "the PGD figures at these radii cannot be trusted (see reasons)") if flagged else
                         (f"passed (Square with {int(queries)} queries"
                          + (", a weak check below 1000" if int(queries) < 1000 else "")
                          + "): the gradient-free Square attack never beat the best gradient attack by more "
                          "than 1 % of the cases and no gradient attack failed on vanishing input gradients"),
    }  # fmt: skip


def adversarial_section(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: Sequence[float],
                        steps: Sequence[int], restarts: int, queries: int, seed: int = 0,
                        batch_size: int = 64) -> dict[str, Any]:  # fmt: skip
    """Robust accuracy vs eps under PGD (one start and with restarts) and Square, with the masking check.

    One :func:`~medrobust.core.robustness.robust_accuracy` call per radius (L-inf, input units);
    each attack's accuracy and the per-sample worst case get Clopper-Pearson intervals.
    """
    counts = adversarial_counts(model, x, y, eps=eps, steps=steps, restarts=restarts, queries=queries, seed=seed,
                                batch_size=batch_size)  # fmt: skip
    return adversarial_reduce([counts], steps=steps, restarts=restarts, queries=queries)


class _Logits(nn.Module):
    """``(B, K >= 2)`` logits of any classifier (AutoAttack needs at least two outputs)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return class_logits(self.model(x))


def autoattack_counts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: Sequence[float],
                      version: str = "fast", iterations: int = 20, seed: int = 0,
                      batch_size: int = 64) -> dict[str, Any]:  # fmt: skip
    """AutoAttack on one block: ``{"skipped", "attacks", "rows": [{"eps", "n", "robust"}]}`` (or a skipped row saying why).

    ``version="standard"`` is AutoAttack's standard suite (APGD-CE, APGD-T, FAB-T, Square 5000;
    its binary-model checks apply); ``"fast"`` is APGD-CE (plus APGD-T for >= 3 classes) with
    ``iterations`` iterations and one restart, a budget for a CPU. AutoAttack seeds torch's global
    RNG, so it runs inside ``torch.random.fork_rng`` (the caller's RNG state is restored).
    """
    try:
        from pyautoattack import AutoAttack
    except ImportError as e:
        return {"skipped": True, "reason": f"pyautoattack not importable ({e}); install it with "
                "'pip install --no-deps pyautoattack' (it needs only torch and numpy)", "rows": []}  # fmt: skip
    net = _Logits(model).eval()
    n_classes = int(predict_logits(net, x[:1]).shape[1])
    if version == "standard":
        kwargs: dict[str, Any] = {"version": "standard"}
        attacks = ["apgd-ce", "apgd-t", "fab-t", "square"]
    elif version == "fast":
        attacks = ["apgd-ce"] + (["apgd-t"] if n_classes >= 3 else [])
        kwargs = {"version": "custom", "attacks": attacks}
    else:
        raise ValueError(f"autoattack version should be 'fast' or 'standard', got {version!r}.")
    dev = _device(model, x)
    rows = []
    for e in eps:
        with torch.random.fork_rng(devices=[dev.index] if dev.type == "cuda" and dev.index is not None else []):
            aa = AutoAttack(net, eps=float(e), norm="Linf", seed=int(seed), device=dev, **kwargs)
            aa.verbose = False
            if version == "fast":
                aa.apgd.n_iter, aa.apgd.n_restarts = int(iterations), 1
                aa.apgd_targeted.n_iter = int(iterations)
                aa.apgd_targeted.n_target_classes = max(1, min(9, n_classes - 1))
            x_adv, y_adv = aa.run_standard_evaluation(x.to(dev), y.to(dev), batch_size=batch_size)
        with torch.no_grad():
            clean_ok = predict_logits(net, x).argmax(1) == y.cpu()
            adv_ok = predict_logits(net, x_adv.detach().cpu()).argmax(1) == y.cpu()
        rows.append({"eps": float(e), "n": int(y.numel()), "robust": int((clean_ok & adv_ok).sum())})
    return {"skipped": False, "version": version, "attacks": attacks,
            "iterations": int(iterations) if version == "fast" else 100, "norm": "Linf", "rows": rows}  # fmt: skip


def autoattack_reduce(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The AutoAttack section from the :func:`autoattack_counts` of every block (pooled, Clopper-Pearson)."""
    if parts[0]["skipped"]:
        return dict(parts[0])
    rows = []
    for j, first in enumerate(parts[0]["rows"]):
        n = sum(p["rows"][j]["n"] for p in parts)
        rows.append({"eps": first["eps"], "n": n, "accuracy": proportion(sum(p["rows"][j]["robust"] for p in parts), n)})
    return {**{k: v for k, v in parts[0].items() if k != "rows"}, "rows": rows}


def autoattack_section(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: Sequence[float],
                       version: str = "fast", iterations: int = 20, seed: int = 0,
                       batch_size: int = 64) -> dict[str, Any]:  # fmt: skip
    """Robust accuracy under AutoAttack (the ``pyautoattack`` package), or a skipped row saying why (:func:`autoattack_counts`)."""
    return autoattack_reduce([autoattack_counts(model, x, y, eps=eps, version=version, iterations=iterations,
                                                seed=seed, batch_size=batch_size)])  # fmt: skip


def _posterior(model: nn.Module, weight_scale: float) -> tuple[Any, str]:
    from medrobust.core.metrics.probabilistic import GaussianWeightPosterior, MCDropoutPosterior

    if any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()):
        return MCDropoutPosterior(model), "MC dropout"
    return GaussianWeightPosterior(model, scale=weight_scale), f"Gaussian weight noise (scale {weight_scale:g} x std per tensor)"


def probabilistic_cases(model: nn.Module, x: torch.Tensor, *, input_eps: float, eps: float, delta: float,
                        attack_steps: int, weight_scale: float = 0.05, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """``P_safe`` estimates and posterior draws of the cases of one block (see :func:`probabilistic_section`)."""
    from medrobust.core.metrics.probabilistic import probabilistic_robustness

    sampler, _ = _posterior(model, weight_scale)
    r = probabilistic_robustness(sampler, x, input_eps=float(input_eps), criterion="label", eps=float(eps),
                                 delta=float(delta), sequential=True, alpha=min(0.05, delta / 2),
                                 attack_steps=int(attack_steps), generator=int(seed))  # fmt: skip
    return {"p_safe": [float(v) for v in r.estimate.double().tolist()],
            "posterior_samples": [int(v) for v in r.n_samples.tolist()], "guarantee": r.guarantee}  # fmt: skip


def probabilistic_reduce(model: nn.Module, parts: Sequence[dict[str, Any]], *, input_eps: float, eps: float,
                         delta: float, weight_scale: float = 0.05) -> dict[str, Any]:  # fmt: skip
    """The (eps, delta) section from the :func:`probabilistic_cases` of every block, worded as an upper bound."""
    from medrobust.core.metrics.probabilistic import hoeffding_sample_size

    est = [v for p in parts for v in p["p_safe"]]
    _, posterior = _posterior(model, weight_scale)
    draws = hoeffding_sample_size(float(eps), float(delta))
    return {
        "posterior": posterior, "input_eps": float(input_eps), "eps": float(eps), "delta": float(delta),
        "n_cases": len(est), "mean_p_safe": float(np.mean(est)),
        "per_case_p_safe": est,
        "posterior_samples": [v for p in parts for v in p["posterior_samples"]],
        "max_posterior_draws": draws,
        "guarantee": parts[0]["guarantee"],
        "statement": (f"Upper bound on robustness: for each case, P_safe (the probability over {posterior} draws that "
                      f"no perturbation within L-inf eps={input_eps * 255:g}/255 changes the label) is at most the estimate + {eps:g}, "
                      f"with probability >= {1 - delta:g} "
                      f"(at most {draws} posterior draws per case); the attack can miss unsafe perturbations, so the true "
                      f"robustness may be lower still."),
    }  # fmt: skip


def probabilistic_section(model: nn.Module, x: torch.Tensor, *, input_eps: float, eps: float, delta: float,
                          attack_steps: int, weight_scale: float = 0.05, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """The (eps, delta) probabilistic robustness estimate ``P_safe`` per case, an *upper bound* on robustness.

    The posterior is MC dropout when the model has dropout layers, else Gaussian weight noise of
    ``weight_scale`` x each tensor's standard deviation; "safe" = PGD (``attack_steps``) found no
    label change within ``input_eps`` (:func:`~medrobust.core.metrics.probabilistic_robustness`,
    sequential Massart / Clopper-Pearson stopping).
    """
    part = probabilistic_cases(model, x, input_eps=input_eps, eps=eps, delta=delta, attack_steps=attack_steps,
                               weight_scale=weight_scale, seed=seed)  # fmt: skip
    return probabilistic_reduce(model, [part], input_eps=input_eps, eps=eps, delta=delta, weight_scale=weight_scale)


def intrinsic_cases(model: nn.Module, x: torch.Tensor, *, eps: float, steps: int, seed: int = 0) -> list[float]:
    """Per-case max-KL ``psi`` within the L-inf ball, found by PGD (one block)."""
    from medrobust.core.metrics.intrinsic import intrinsic_robustness

    return [float(v) for v in intrinsic_robustness(model, x, eps=float(eps), steps=int(steps), generator=int(seed)).double().cpu()]


def intrinsic_reduce(psi: Sequence[float], *, eps: float, steps: int, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The intrinsic-robustness section from the per-case scores of every case (bootstrap over cases)."""
    v = np.asarray(psi, dtype=float)
    return {"eps": float(eps), "steps": int(steps),
            "score": bootstrap_statistic(lambda i: float(v[i].mean()), v.size, n_boot=n_boot, seed=seed),
            "note": "mean max-KL found by PGD: a lower bound on the true intrinsic score (larger = less robust)"}  # fmt: skip


def intrinsic_section(model: nn.Module, x: torch.Tensor, *, eps: float, steps: int, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Intrinsic robustness ``psi = max KL`` in an L-inf ball (mean over cases, bootstrap interval); larger = less robust."""
    return intrinsic_reduce(intrinsic_cases(model, x, eps=eps, steps=steps, seed=seed), eps=eps, steps=steps,
                            n_boot=n_boot, seed=seed)  # fmt: skip


def nmutant_split(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the correctly classified cases split in two (even / odd positions): ``(fit, test)``."""
    ok = (predict_logits(model, x).argmax(1) == y.reshape(-1).cpu()).nonzero()[:, 0]
    return ok[0::2], ok[1::2]


def nmutant_fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, max_mutants: int = 50, alpha: float = 0.05,
                operator: str = "nai", gamma: float = 0.05, acc_ratio: float = 0.9,
                seed: int = 0) -> tuple[Any, float] | str:  # fmt: skip
    """The nMutant detector fitted on ``x`` (accepted mutants, ``kappa``): ``(detector, kappa)``, or why it failed."""
    from medrobust.core.detectors.nmutant import NMutantDetector

    if x.shape[0] < 2:
        return f"only {x.shape[0]} fitting cases (need >= 2)"
    dev = _device(model, x)
    xf, yf = x.to(dev), y.to(dev)
    try:
        det = NMutantDetector(model, xf, yf, operator=operator, gamma=gamma, acc_ratio=acc_ratio,
                              max_mutants=int(max_mutants), alpha=alpha, beta=alpha, seed=int(seed))  # fmt: skip
        return det, float(det.fit(xf, n_mutants=int(max_mutants)))
    except (RuntimeError, ValueError) as e:  # e.g. no mutant keeps the accuracy (reported, not hidden)
        return f"{type(e).__name__}: {e}"


def nmutant_counts(model: nn.Module, det: Any, x: torch.Tensor, y: torch.Tensor, *, eps: float, attack_steps: int,
                   seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """nMutant on held-out clean cases of one block and on their PGD examples that changed the label (counts)."""
    from medrobust.core.attacks import pgd

    dev = _device(model, x)
    xt, yt = x.to(dev), y.to(dev)
    try:
        clean = det.detect(xt)
        with eval_mode(model):
            adv = pgd(model, xt, yt, eps=float(eps), steps=int(attack_steps), generator=int(seed)).x_adv.detach()
        flipped = (predict_logits(model, adv).argmax(1) != yt.cpu()).nonzero()[:, 0]
        det_adv = det.detect(adv[flipped.to(adv.device)]) if flipped.numel() else None
    except (RuntimeError, ValueError) as e:
        return {"skipped": True, "reason": f"{type(e).__name__}: {e}"}
    return {"skipped": False, "n": int(xt.shape[0]), "false_positives": int(clean.adversarial.sum()),
            "flipped": int(flipped.numel()), "detected": int(det_adv.adversarial.sum()) if det_adv is not None else 0,
            "mutants_clean": [int(v) for v in clean.n_used.tolist()],
            "mutants_adversarial": [int(v) for v in det_adv.n_used.tolist()] if det_adv is not None else []}  # fmt: skip


def nmutant_reduce(parts: Sequence[dict[str, Any]], *, kappa: float, eps: float, attack_steps: int, max_mutants: int = 50,
                   alpha: float = 0.05, operator: str = "nai", gamma: float = 0.05) -> dict[str, Any]:  # fmt: skip
    """The nMutant section from the :func:`nmutant_counts` of every block of held-out cases."""
    bad = [p for p in parts if p["skipped"]]
    if bad:
        return {"skipped": True, "reason": bad[0]["reason"]}
    used_c = [v for p in parts for v in p["mutants_clean"]]
    used_a = [v for p in parts for v in p["mutants_adversarial"]]
    return {
        "skipped": False, "operator": operator, "gamma": gamma, "max_mutants": int(max_mutants), "kappa": kappa,
        "sprt_alpha": alpha, "attack": f"PGD-{attack_steps} Linf eps={eps:g}",
        "false_positive_rate": proportion(sum(p["false_positives"] for p in parts), sum(p["n"] for p in parts)),
        "detection_rate": proportion(sum(p["detected"] for p in parts), sum(p["flipped"] for p in parts)),
        "mean_mutants_clean": float(np.mean(used_c)),
        "mean_mutants_adversarial": float(np.mean(used_a)) if used_a else None,
    }  # fmt: skip


def nmutant_section(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, attack_steps: int,
                    max_mutants: int = 50, alpha: float = 0.05, operator: str = "nai", gamma: float = 0.05,
                    acc_ratio: float = 0.9, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """nMutant detection rate of PGD adversarial inputs, at the false-positive rate measured on held-out clean inputs.

    The correctly classified cases are split in two (even / odd positions, :func:`nmutant_split`):
    the first half accepts mutants and calibrates ``kappa``; on the second half the detector runs
    on the clean inputs (false positives) and on PGD examples at ``eps`` that changed the label (detections).
    """
    fit_idx, test_idx = nmutant_split(model, x, y)
    if fit_idx.numel() < 2 or test_idx.numel() < 1:
        return {"skipped": True, "reason": f"only {fit_idx.numel() + test_idx.numel()} correctly classified cases (need >= 3)"}
    fitted = nmutant_fit(model, x[fit_idx], y[fit_idx], max_mutants=max_mutants, alpha=alpha, operator=operator,
                         gamma=gamma, acc_ratio=acc_ratio, seed=seed)  # fmt: skip
    if isinstance(fitted, str):
        return {"skipped": True, "reason": fitted}
    det, kappa = fitted
    part = nmutant_counts(model, det, x[test_idx], y[test_idx], eps=eps, attack_steps=attack_steps, seed=seed)
    return nmutant_reduce([part], kappa=kappa, eps=eps, attack_steps=attack_steps, max_mutants=max_mutants, alpha=alpha,
                          operator=operator, gamma=gamma)  # fmt: skip
