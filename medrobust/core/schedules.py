"""The 13 LRBench learning-rate policies as a torch LR scheduler, selection metrics, and a resumable sweep.

LRBench (Wu, Liu et al.; git-disl/LRBench) writes every policy as a function of the iteration
``t`` (here: the scheduler's step count, one per ``scheduler.step()``; per epoch under MONAI's
``LrScheduleHandler`` default). Decaying policies: ``eta(t) = k0 * g(t)``; cyclic policies:
``eta(t) = k0 + (k1 - k0) * g(t)``.

======== ==================================================== ==========
policy   g(t)                                                 kind
======== ==================================================== ==========
FIX      1                                                    decaying
STEP     gamma^floor(t / l)                                   decaying
NSTEP    gamma^i for milestones l_{i-1} <= t < l_i            decaying
EXP      gamma^t                                              decaying
INV      (1 + gamma t)^(-p)                                   decaying
POLY     (1 - t / l)^p (0 for t >= l)                         decaying
TRI      (2 / pi) |asin(sin(pi t / (2 l)))|                   cyclic
TRI2     TRI / 2^floor(t / (2 l))                             cyclic
TRIEXP   gamma^t TRI                                          cyclic
SIN      |sin(pi t / (2 l))|                                  cyclic
SIN2     SIN / 2^floor(t / (2 l))                             cyclic
SINEXP   gamma^t SIN                                          cyclic
COS      (1 + cos(pi t / l)) / 2                              cyclic
======== ==================================================== ==========

COS uses ``pi t / l`` (LRBench's code; the paper's table writes ``2 pi t / l``): it starts at
``k1``, reaches ``k0`` at ``t = l`` and is back at ``k1`` at ``t = 2 l``, so ``l`` is a half-cycle
as for TRI and SIN. ``COS`` with ``k0 = 0``, ``k1 = base lr`` and ``l = T_max`` equals torch's
``CosineAnnealingLR`` for ``t <= T_max``.

Selection metrics (LRBench): :func:`utility` (the final validation metric), :func:`cost_to_target`
(steps until a target is first reached), :func:`robustness` (mean and spread over seeds) and
:func:`train_test_gap`, :func:`confidence` (mean and sd of the max-softmax of correctly classified
samples). :func:`sweep` runs a user function over ``policies x seeds`` writing one CSV row per run
(resumable); :func:`select_policy` picks by the mean of a *validation* column;
:func:`plot_sweep` draws the table.

Example:
    >>> import torch
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    >>> sched = LRBenchScheduler(opt, policy="step", gamma=0.5, l=2)
    >>> lrs = []
    >>> for _ in range(5):
    ...     lrs.append(round(opt.param_groups[0]["lr"], 4)); opt.step(); sched.step()
    >>> lrs
    [0.1, 0.1, 0.05, 0.05, 0.025]
    >>> round(lr_at("cos", 5, k0=0.0, k1=1.0, l=10), 4)
    0.5
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from medrobust.core.utils import append_csv_row

__all__ = [
    "POLICIES",
    "DECAYING",
    "CYCLIC",
    "lr_at",
    "LRBenchScheduler",
    "utility",
    "cost_to_target",
    "robustness",
    "train_test_gap",
    "confidence",
    "sweep",
    "select_policy",
    "plot_sweep",
]

logger = logging.getLogger(__name__)

DECAYING = ("fix", "step", "nstep", "exp", "inv", "poly")
CYCLIC = ("tri", "tri2", "triexp", "sin", "sin2", "sinexp", "cos")
#: the 13 LRBench policy names (lower case; upper case is accepted everywhere).
POLICIES = DECAYING + CYCLIC


def _need(policy: str, **values: Any) -> None:
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise ValueError(f"policy {policy.upper()} needs {', '.join(missing)}.")


def lr_at(policy: str, t: int, *, k0: float, k1: float | None = None, gamma: float | None = None,
          l: float | None = None, p: float | None = None, milestones: Sequence[int] | None = None) -> float:  # noqa: E741
    """Learning rate of an LRBench ``policy`` at step ``t`` (formulas in the module docstring).

    Args:
        policy: one of :data:`POLICIES` (case-insensitive).
        t: step, ``>= 0``.
        k0: base rate (decaying) or lower bound (cyclic).
        k1: upper bound (cyclic policies).
        gamma: decay factor (STEP, NSTEP, EXP, INV, TRIEXP, SINEXP).
        l: step size (STEP), horizon (POLY) or half-cycle length (cyclic), ``> 0``.
        p: power (INV, POLY).
        milestones: increasing steps where NSTEP multiplies by ``gamma``.

    Raises:
        ValueError: unknown policy, ``t < 0``, a missing or invalid setting.
    """
    name = str(policy).lower()
    if name not in POLICIES:
        raise ValueError(f"policy must be one of {[q.upper() for q in POLICIES]}, got {policy!r}.")
    if int(t) < 0:
        raise ValueError(f"t must be >= 0, got {t}.")
    if l is not None and float(l) <= 0:
        raise ValueError(f"l must be > 0, got {l}.")
    t = int(t)
    if name == "fix":
        return float(k0)
    if name == "step":
        _need(name, gamma=gamma, l=l)
        return k0 * gamma ** math.floor(t / l)
    if name == "nstep":
        _need(name, gamma=gamma, milestones=milestones)
        ms = [int(m) for m in milestones]
        if ms != sorted(ms):
            raise ValueError(f"milestones must be increasing, got {list(milestones)}.")
        return k0 * gamma ** sum(t >= m for m in ms)
    if name == "exp":
        _need(name, gamma=gamma)
        return k0 * gamma**t
    if name == "inv":
        _need(name, gamma=gamma, p=p)
        return k0 * (1.0 + gamma * t) ** (-p)
    if name == "poly":
        _need(name, l=l, p=p)
        return k0 * max(0.0, 1.0 - t / l) ** p
    _need(name, k1=k1, l=l)
    tri = (2.0 / math.pi) * abs(math.asin(math.sin(math.pi * t / (2.0 * l))))
    sin = abs(math.sin(math.pi * t / (2.0 * l)))
    if name in ("triexp", "sinexp"):
        _need(name, gamma=gamma)
    g = {
        "tri": lambda: tri,
        "tri2": lambda: tri / 2 ** math.floor(t / (2.0 * l)),
        "triexp": lambda: gamma**t * tri,
        "sin": lambda: sin,
        "sin2": lambda: sin / 2 ** math.floor(t / (2.0 * l)),
        "sinexp": lambda: gamma**t * sin,
        "cos": lambda: (1.0 + math.cos(math.pi * t / l)) / 2.0,
    }[name]()
    return k0 + (k1 - k0) * g


class LRBenchScheduler(LRScheduler):
    """Torch LR scheduler for any LRBench policy (usable from a MONAI bundle config via ``_target_``).

    Args:
        optimizer: the optimizer.
        policy: one of :data:`POLICIES`.
        k0: base/lower rate; default each parameter group's initial ``lr``.
        k1: upper rate of cyclic policies.
        gamma, l, p, milestones: see :func:`lr_at`.
        last_epoch: as in torch schedulers.

    Bundle config example (per-epoch steps under ``LrScheduleHandler``)::

        "lr_scheduler": {"_target_": "medrobust.core.schedules.LRBenchScheduler", "optimizer": "@optimizer",
                         "policy": "sin2", "k0": 1e-4, "k1": 3e-3, "l": 5}

    Raises:
        ValueError: as :func:`lr_at` (checked at construction).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, policy: str, *, k0: float | None = None,
                 k1: float | None = None, gamma: float | None = None, l: float | None = None,  # noqa: E741
                 p: float | None = None, milestones: Sequence[int] | None = None, last_epoch: int = -1) -> None:
        self.policy = str(policy).lower()
        self.k0, self.k1, self.gamma, self.l, self.p = k0, k1, gamma, l, p
        self.milestones = None if milestones is None else [int(m) for m in milestones]
        for group in optimizer.param_groups:  # validate now, not at the first step
            self._value(group.get("initial_lr", group["lr"]), 0)
        super().__init__(optimizer, last_epoch)

    def _value(self, base: float, t: int) -> float:
        return lr_at(self.policy, t, k0=base if self.k0 is None else self.k0, k1=self.k1, gamma=self.gamma, l=self.l,
                     p=self.p, milestones=self.milestones)

    def get_lr(self) -> list[float]:
        return [self._value(base, max(self.last_epoch, 0)) for base in self.base_lrs]

    def __repr__(self) -> str:
        opts = {k: v for k, v in dict(k0=self.k0, k1=self.k1, gamma=self.gamma, l=self.l, p=self.p,
                                      milestones=self.milestones).items() if v is not None}
        return f"LRBenchScheduler({self.policy.upper()}, {opts})"


# -- selection metrics ---------------------------------------------------------------------------
def utility(curve: Sequence[float]) -> float:
    """LRBench utility: the metric at the end of training (last value of a per-step validation curve)."""
    if len(curve) == 0:
        raise ValueError("curve: empty.")
    return float(curve[-1])


def cost_to_target(curve: Sequence[float], target: float) -> int | None:
    """Steps (1-based) until ``curve`` first reaches ``target`` (higher is better); ``None`` if never."""
    for i, v in enumerate(curve):
        if float(v) >= target:
            return i + 1
    return None


def robustness(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, sample sd)`` of a final metric over repeated runs (sd 0 for one run)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("values: empty.")
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd


def train_test_gap(train_loss: float, test_loss: float) -> float:
    """LRBench's generalisation term: ``test_loss - train_loss``."""
    return float(test_loss) - float(train_loss)


def confidence(probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """``(mean, sd)`` of the max class probability over correctly classified samples (``nan`` if none).

    Args:
        probs: ``(N, K)`` class probabilities.
        labels: ``(N,)`` integer labels.
    """
    probs, labels = torch.as_tensor(probs), torch.as_tensor(labels).reshape(-1)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs must be (N, K) matching labels (N,), got {tuple(probs.shape)} and {tuple(labels.shape)}.")
    pmax, pred = probs.max(dim=1)
    ok = pmax[pred == labels]
    if ok.numel() == 0:
        return float("nan"), float("nan")
    return float(ok.mean()), float(ok.std()) if ok.numel() > 1 else 0.0


# -- sweep ---------------------------------------------------------------------------------------
def sweep(run: Callable[[str, Mapping[str, Any], int], Mapping[str, float]], policies: Mapping[str, Mapping[str, Any]],
          seeds: Iterable[int], out_csv: str | os.PathLike[str], *, progress: bool = True) -> list[dict]:
    """Run ``run(name, settings, seed) -> metrics`` for every policy and seed; one CSV row per run, resumable.

    Rows already in ``out_csv`` (same ``name`` and ``seed``) are kept and not rerun. Columns:
    ``name, seed, policy, settings`` then the metric keys of the first row.

    Returns:
        All rows (old and new) as dicts.
    """
    import json

    from tqdm.auto import tqdm

    out = Path(out_csv)
    rows: list[dict] = []
    if out.is_file():
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
    done = {(r["name"], str(r["seed"])) for r in rows}
    todo = [(n, s) for n in policies for s in seeds if (n, str(s)) not in done]
    fields = list(rows[0]) if rows else None
    for name, seed in tqdm(todo, desc="lr sweep", disable=not progress):
        metrics = dict(run(name, policies[name], int(seed)))
        row = {"name": name, "seed": int(seed), "policy": str(policies[name].get("policy", name)).upper(),
               "settings": json.dumps({k: v for k, v in policies[name].items() if k != "policy"}, sort_keys=True),
               **metrics}
        if fields is None:
            fields = list(row)
        append_csv_row(out, row, fields)
        rows.append(row)
        logger.info("lr sweep %s seed %s: %s", name, seed, metrics)
    return rows


def select_policy(rows: Sequence[Mapping[str, Any]], *, metric: str, higher_is_better: bool = True) -> str:
    """Name whose mean ``metric`` over seeds is best (ties: smaller sd). Pass a *validation* column.

    Raises:
        ValueError: no row has ``metric``.
    """
    by: dict[str, list[float]] = {}
    for r in rows:
        if metric in r and r[metric] not in ("", None):
            by.setdefault(str(r["name"]), []).append(float(r[metric]))
    if not by:
        raise ValueError(f"metric: no row has a value for {metric!r}.")
    sign = 1.0 if higher_is_better else -1.0
    return max(by, key=lambda n: (sign * robustness(by[n])[0], -robustness(by[n])[1]))


def plot_sweep(rows: Sequence[Mapping[str, Any]], png: str | os.PathLike[str], *, metric: str,
               title: str = "") -> Path:
    """Bar chart (mean +- sd over seeds) of ``metric`` per policy name, written to ``png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by: dict[str, list[float]] = {}
    for r in rows:
        if r.get(metric) not in ("", None):
            by.setdefault(str(r["name"]), []).append(float(r[metric]))
    names = list(by)
    stats = [robustness(by[n]) for n in names]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(names) + 2), 3.5))
    ax.bar(range(len(names)), [m for m, _ in stats], yerr=[s for _, s in stats], color="tab:blue", capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    lo = min(m - s for m, s in stats)
    ax.set_ylim(max(0.0, lo - 0.05), None)
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per LR policy (mean +- sd over seeds)")
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
