"""Honest evaluation of a randomised classifier: clean, one-draw PGD, EOT PGD, PGD on the
predictive mean, Square, and transfer attacks, all judged by the predictive mean.

A randomised defense (noise injection, a Bayesian last layer) predicts with the mean over its
draws (:class:`~medrobust.core.attacks.eot.PredictiveMean`). Its robust accuracy is only as
trustworthy as the strongest attack, so :func:`randomized_robustness` reports, for one radius:

- ``pgd``: PGD on single draws (one draw per gradient, no EOT: the number a naive evaluation gives);
- ``pgd_eot``: PGD whose every step averages the gradient over ``eot_samples`` draws;
- ``pgd_mean`` and ``square``: PGD on the predictive mean itself and the gradient-free Square
  attack on it, through :func:`medrobust.core.robustness.robust_accuracy` (whose masking check
  is returned too);
- ``transfer_<name>``: PGD crafted on another (deterministic) model, e.g. the same network with
  its noise off (:func:`~medrobust.core.defenses.noise_injection.noise_disabled`) or the network
  a Bayesian head replaced;
- ``worst_attack``: the lowest accuracy over all attacks (an upper bound on the per-sample worst case).

Every adversarial input is judged by the predictive mean; a sample counts as robust only if it
is also classified correctly clean.

Example:
    >>> import torch
    >>> from medrobust.core.defenses.noise_injection import inject_noise
    >>> net = inject_noise(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4 * 4, 2)))
    >>> x, y = torch.rand(4, 2, 4, 4, 4), torch.tensor([0, 1, 0, 1])  # a 3-D batch
    >>> r = randomized_robustness(net, x, y, eps=2 / 255, steps=2, eot_samples=2, predict_samples=2, queries=5)
    >>> sorted(k for k in r if k.startswith("pgd"))
    ['pgd', 'pgd_eot', 'pgd_mean']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from medrobust.core.attacks import pgd
from medrobust.core.attacks.eot import PredictiveMean
from medrobust.core.metrics.classification import roc_auc
from medrobust.core.robustness import AttackSpec, robust_accuracy
from medrobust.core.utils import class_logits, derive_seed, eval_mode, model_output
from medrobust.core.validation import check_batch, check_nonnegative, check_positive

__all__ = ["randomized_robustness"]


def randomized_robustness(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 10,
    eot_samples: int = 16,
    predict_samples: int = 16,
    queries: int = 300,
    stochastic: bool = True,
    transfer_from: Mapping[str, Callable[[torch.Tensor], Any]] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    return_probabilities: bool = False,
) -> dict[str, Any]:
    """Clean and robust accuracy of a (randomised) classifier under one-draw, EOT and transfer attacks.

    Args:
        model: classifier ``(B, C, *spatial) -> (B, K)``; each call is one draw of its randomness.
        x: inputs ``(N, C, *spatial)`` (2-D or 3-D) inside ``bounds``; y: labels ``(N,)``.
        eps: L-inf radius (input units).
        steps: PGD steps (one random start).
        eot_samples: draws averaged per gradient in ``pgd_eot``.
        predict_samples: draws in the predictive mean (judging every input, and attacked by
            ``pgd_mean`` and ``square``).
        queries: Square's query budget.
        stochastic: False for a deterministic model: the predictor is the model itself and
            ``pgd_eot`` / ``pgd_mean`` are left out (they equal ``pgd``).
        transfer_from: ``{name: source model}``: PGD crafted on each source.
        bounds: valid input range.
        seed: base seed of the attacks' random starts (the model's own draws use its generators
            or torch's global RNG).
        return_probabilities: also return ``"clean_probabilities"``: the predictor's class
            probabilities ``(N, K)`` on clean ``x`` (the ones ``clean_accuracy`` and
            ``clean_auc`` come from; for per-case statistics such as bootstrap intervals).

    Returns:
        ``{"n", "eps", "clean_accuracy", "clean_auc", "pgd", ["pgd_eot", "pgd_mean"], "square",
        "transfer_<name>"..., "worst_attack", "gradient_masking", "reasons"[, "clean_probabilities"]}``
        (accuracies in [0, 1]).

    Raises:
        TypeError, ValueError: a bad batch or labels, ``eps`` < 0, ``steps``/``eot_samples``/
            ``predict_samples``/``queries`` not positive ints.
    """
    check_batch(x, y)
    y = torch.as_tensor(y, device=x.device).reshape(-1).long()
    check_nonnegative("eps", eps)
    for name, v in (("steps", steps), ("eot_samples", eot_samples), ("predict_samples", predict_samples),
                    ("queries", queries)):
        check_positive(name, v, integer=True)
    predictor = PredictiveMean(model, samples=predict_samples) if stochastic else model

    def correct(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), eval_mode(predictor):
            return class_logits(model_output(predictor, inputs)).argmax(1) == y

    with torch.no_grad(), eval_mode(predictor):
        logits_clean = class_logits(model_output(predictor, x))
    clean = logits_clean.argmax(1) == y
    suite = [AttackSpec("square", "square", {"queries": int(queries)})]
    if stochastic:
        suite.insert(0, AttackSpec("pgd_mean", "pgd", {"steps": int(steps)}))
    else:
        suite.insert(0, AttackSpec("pgd", "pgd", {"steps": int(steps)}))
    ra = robust_accuracy(predictor, x, y, eps=float(eps), attacks=suite, bounds=bounds, batch_size=x.shape[0],
                         seed=seed)
    robust: dict[str, torch.Tensor] = {}
    attacks: dict[str, tuple[Callable[[torch.Tensor], Any], int]] = {}
    if stochastic:
        attacks = {"pgd": (model, 1), "pgd_eot": (model, eot_samples)}
    for name, src in (transfer_from or {}).items():
        attacks[f"transfer_{name}"] = (src, 1)
    for k, (name, (src, samples)) in enumerate(attacks.items()):
        res = pgd(src, x, y, eps=float(eps), steps=steps, bounds=bounds, eot_samples=samples,
                  generator=derive_seed(seed, 100 + k))
        robust[name] = correct(res.x_adv) & clean
    out: dict[str, Any] = {"n": int(x.shape[0]), "eps": float(eps), "clean_accuracy": float(clean.float().mean()),
                           "clean_auc": roc_auc(logits_clean, y) if logits_clean.shape[1] == 2 else float("nan")}
    for name in ("pgd", "pgd_eot", "pgd_mean"):
        if name in robust:
            out[name] = float(robust[name].float().mean())
        elif name in ra.accuracy:
            out[name] = ra.accuracy[name]
    out["square"] = ra.accuracy["square"]
    out.update({name: float(r.float().mean()) for name, r in robust.items() if name.startswith("transfer_")})
    attack_keys = [k for k in out if k.startswith(("pgd", "square", "transfer_"))]
    out["worst_attack"] = min(out[k] for k in attack_keys + ["clean_accuracy"])
    out["gradient_masking"] = ra.gradient_masking
    out["reasons"] = "; ".join(ra.reasons)
    if return_probabilities:
        out["clean_probabilities"] = torch.softmax(logits_clean, 1).detach()
    return out
