"""nMutant: adversarial-input detection by mutation testing (Wang, Sun, et al., ICSE 2019;
code dgl-prc/m_testing_adversatial_sample).

Adversarial inputs sit close to a decision boundary, so small mutations of the model (or of the
input) change their label far more often than a normal input's. The *label change rate*
``LCR(x)`` is the fraction of mutants whose label differs from the original model's label.

- Model mutation operators (rate ``gamma``; on conv/linear layers, 2-D and 3-D alike):
  ``"gf"`` Gaussian fuzzing (a fraction ``gamma`` of all weights resampled from their tensor's
  ``N(mean, std)``), ``"ws"`` weight shuffling (the incoming weights of a fraction ``gamma`` of
  neurons permuted), ``"ns"`` neuron switch (a fraction ``gamma`` of the neurons, in layers of
  >= 10 neurons, switched with each other within their layer), ``"nai"`` neuron activation inverse (weights
  and bias of a fraction ``gamma`` of neurons negated). A mutant is kept only if its validation
  accuracy is ``>= acc_ratio`` (0.9) x the original's.
- Input mutation (the earlier version): uniform noise of amplitude ``step`` in a random box.
- Wald's SPRT on the stream of label changes: ``kappa`` = normal inputs' mean LCR + the
  half-width of its 99% confidence interval; ``p0 = kappa - sigma``, ``p1 = kappa + sigma``,
  ``sigma = indifference * kappa`` (kappa floored at 0.001); after ``n`` mutants with ``z`` changes the log-likelihood
  ratio is ``z ln(p1/p0) + (n - z) ln((1-p1)/(1-p0))``; adversarial once it is
  ``>= ln((1-beta)/alpha)``, normal once ``<= ln(beta/(1-alpha))``; at most ``max_mutants``
  (500), after which the input counts as normal (undecided). Each decision reports the number of
  mutants it used.

The SPRT itself lives in :mod:`medrobust.core.detectors.sequential`. Mutants are regenerated from
their seeds on a private copy of the model, so the caller's model
is never changed; all randomness comes from local generators.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from medrobust.core.attacks.base import Bounds, as_bounds
from medrobust.core.detectors.sequential import KAPPA_FLOOR, SPRTResult, calibrate_kappa, hypotheses, sprt
from medrobust.core.metrics._utils import predicted_labels
from medrobust.core.utils import clip_to_bounds, derive_seed, eval_mode
from medrobust.core.validation import check_batch, check_bounds, check_number

__all__ = [
    "MODEL_OPERATORS",
    "mutable_layers",
    "mutate_",
    "ModelMutants",
    "InputMutants",
    "label_change_rate",
    "NMutantDetector",
]

logger = logging.getLogger(__name__)

MODEL_OPERATORS = ("gf", "ws", "ns", "nai")
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def mutable_layers(model: nn.Module) -> list[nn.Module]:
    """Convolution and linear layers (the ones mutation operators change), in module order."""
    return [m for m in model.modules() if isinstance(m, _LAYERS) and getattr(m, "weight", None) is not None]


def _choose(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=g)[: max(0, min(n, k))]


def _count(total: int, gamma: float) -> int:
    return max(1, int(total * gamma))  # at least one unit, or tiny nets would never mutate


@torch.no_grad()
def mutate_(model: nn.Module, operator: str, gamma: float, generator: torch.Generator) -> nn.Module:
    """Apply one model mutation **in place** (call it on a copy) and return the model.

    Args:
        model: the network to mutate (its conv/linear layers).
        operator: ``"gf"``, ``"ws"``, ``"ns"`` or ``"nai"`` (see the module docstring).
        gamma: mutation rate in (0, 1] (nMutant: 0.05 on MNIST, 0.005 on CIFAR-10).
        generator: CPU ``torch.Generator`` (the mutant is a function of its state).
    """
    if operator not in MODEL_OPERATORS:
        raise ValueError(f"operator must be one of {MODEL_OPERATORS}, got {operator!r}.")
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}.")
    layers = mutable_layers(model)
    if not layers:
        raise ValueError(f"model ({type(model).__name__}) has no conv/linear layer to mutate.")
    # "neurons" = output units: dim 0 of Conv/Linear weights, dim 1 of ConvTranspose weights
    def rows(m: nn.Module) -> torch.Tensor:
        w = m.weight
        return w.transpose(0, 1) if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else w

    if operator == "gf":
        tensors = [t for m in layers for t in (m.weight, m.bias) if t is not None]
        sizes = [t.numel() for t in tensors]
        chosen = _choose(sum(sizes), _count(sum(sizes), gamma), generator)
        start = 0
        for t, s in zip(tensors, sizes):
            sel = chosen[(chosen >= start) & (chosen < start + s)] - start
            start += s
            if sel.numel():
                flat = t.view(-1)
                mean, std = float(flat.mean()), float(flat.std()) if s > 1 else 0.0
                new = mean + std * torch.randn(sel.numel(), generator=generator)
                flat[sel.to(flat.device)] = new.to(flat)
        return model
    # a fraction gamma of all neurons; "ns" only switches within layers of >= 10 neurons (as the authors)
    counts = [rows(m).shape[0] if operator != "ns" or rows(m).shape[0] >= 10 else 0 for m in layers]
    if not sum(counts):
        raise ValueError("operator 'ns' needs a conv/linear layer with at least 10 neurons.")
    chosen = _choose(sum(counts), _count(sum(counts), gamma), generator)
    start = 0
    for m, c in zip(layers, counts):
        sel = chosen[(chosen >= start) & (chosen < start + c)] - start
        start += c
        if not sel.numel():
            continue
        w = rows(m)
        if operator == "ns":
            if sel.numel() == 1:  # a switch needs two neurons: pair it with another one of the layer
                other = (sel + 1 + torch.randint(0, c - 1, (1,), generator=generator)) % c
                sel = torch.cat([sel, other])
            perm = sel.roll(1)  # sel is in random order: rolling it moves every chosen neuron
            w[sel.to(w.device)] = w[perm.to(w.device)].clone()
            if m.bias is not None:
                m.bias[sel.to(w.device)] = m.bias[perm.to(w.device)].clone()
        elif operator == "nai":
            w[sel.to(w.device)] *= -1
            if m.bias is not None:
                m.bias[sel.to(w.device)] *= -1
        else:  # "ws": permute each chosen neuron's incoming weights
            for i in sel.tolist():
                row = w[i].reshape(-1)
                w[i] = row[torch.randperm(row.numel(), generator=generator).to(row.device)].reshape(w[i].shape)
    return model


class ModelMutants:
    """Accepted model mutants of ``model``, regenerated from their seeds on a private copy.

    Args:
        model: the original classifier (never modified).
        x_val, y_val: validation data for the acceptance test ``acc(mutant) >= acc_ratio * acc(model)``.
        operator: ``"gf"``, ``"ws"``, ``"ns"`` or ``"nai"``.
        gamma: mutation rate.
        acc_ratio: acceptance ratio (0.9).
        seed: base seed.
        max_tries: candidate mutants tried per accepted one before giving up.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
        >>> x = torch.rand(20, 1, 4, 4); y = net(x).argmax(1)
        >>> mut = ModelMutants(net, x, y, operator="gf", gamma=0.01, acc_ratio=0.5)
        >>> mut.generate(3)
        3
    """

    def __init__(
        self,
        model: nn.Module,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
        *,
        operator: str = "nai",
        gamma: float = 0.05,
        acc_ratio: float = 0.9,
        seed: int = 0,
        max_tries: int = 20,
    ) -> None:
        if operator not in MODEL_OPERATORS:
            raise ValueError(f"operator must be one of {MODEL_OPERATORS}, got {operator!r}.")
        check_number("gamma", gamma, low=0, high=1, low_open=True)
        check_number("acc_ratio", acc_ratio, low=0, high=1)
        check_batch(x_val, y_val, name="x_val", label_name="y_val")
        self.work = copy.deepcopy(model).eval()
        for p in self.work.parameters():
            p.requires_grad_(False)
        self._w0 = {k: v.clone() for k, v in self.work.state_dict().items()}
        self.operator, self.gamma, self.acc_ratio, self.seed, self.max_tries = operator, gamma, acc_ratio, seed, max_tries
        self.x_val, self.y_val = x_val.detach(), y_val.reshape(-1).long().to(x_val.device)
        self.original_accuracy = self._accuracy()
        self.seeds: list[int] = []
        self.accuracies: list[float] = []
        self._next = 0

    def _accuracy(self) -> float:
        return float((predicted_labels(self.work, self.x_val) == self.y_val).float().mean())

    @contextlib.contextmanager
    def _applied(self, seed: int) -> Iterator[nn.Module]:
        try:
            mutate_(self.work, self.operator, self.gamma, torch.Generator().manual_seed(seed))
            yield self.work
        finally:
            self.work.load_state_dict(self._w0)

    def generate(self, n: int) -> int:
        """Extend the accepted mutants to ``n`` (candidates tried in a fixed seed order); returns the count.

        Raises:
            RuntimeError: fewer than ``n`` candidates pass after ``max_tries * n`` tries
                (lower ``gamma`` or ``acc_ratio``).
        """
        limit = self.max_tries * max(n, 1)
        thr = self.acc_ratio * self.original_accuracy
        while len(self.seeds) < n:
            if self._next >= limit:
                raise RuntimeError(
                    f"only {len(self.seeds)} of {self._next} '{self.operator}' mutants (gamma={self.gamma}) kept "
                    f"accuracy >= {self.acc_ratio} x {self.original_accuracy:.3f}; lower gamma or acc_ratio."
                )
            s = derive_seed(self.seed, self._next)
            self._next += 1
            with self._applied(s):
                acc = self._accuracy()
            if acc >= thr:
                self.seeds.append(s)
                self.accuracies.append(acc)
        return len(self.seeds)

    def labels(self, k: int, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Labels ``(B,)`` of mutant ``k`` on ``x`` (generated on demand)."""
        self.generate(k + 1)
        with self._applied(self.seeds[k]) as m:
            return predicted_labels(m, x)


class InputMutants:
    """Input mutants: uniform noise ``U(-step, step)`` in a random box, clipped to the bounds.

    Args:
        model: the classifier (used as is, in eval mode).
        step: noise amplitude (input units).
        box: box side as a fraction of each spatial dim.
        bounds: intensity bounds to clip to.
        seed: base seed; mutant ``k`` of sample id ``i`` is a fixed function of ``(seed, k, i)``.
    """

    def __init__(self, model: Callable[[torch.Tensor], Any], *, step: float = 0.05, box: float = 0.25,
                 bounds: Bounds = (0.0, 1.0), seed: int = 0) -> None:  # fmt: skip
        check_number("step", step, low=0, low_open=True)
        check_number("box", box, low=0, high=1, low_open=True)
        check_bounds(bounds)
        self.model, self.step, self.box, self.bounds, self.seed = model, step, box, bounds, seed

    def mutate(self, k: int, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Mutant ``k`` of ``x`` ``(B, C, *spatial)``; ``ids`` ``(B,)`` identify samples (default ``arange(B)``)."""
        check_batch(x)
        ids = torch.arange(x.shape[0]) if ids is None else ids.reshape(-1).cpu()
        lo, hi = as_bounds(self.bounds, x)
        spatial = x.shape[2:]
        size = [max(1, round(self.box * s)) for s in spatial]
        noise = torch.zeros_like(x)
        for b, i in enumerate(ids.tolist()):
            g = torch.Generator().manual_seed(derive_seed(self.seed, k, i))
            sl = [slice(None)] + [slice(o, o + w) for o, w in
                                  ((int(torch.randint(0, s - w + 1, (1,), generator=g)), w) for s, w in zip(spatial, size))]  # fmt: skip
            region = noise[b][tuple(sl)]
            noise[b][tuple(sl)] = (2 * torch.rand(region.shape, generator=g) - 1).to(x) * self.step
        return clip_to_bounds(x + noise, lo, hi)

    def labels(self, k: int, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        with eval_mode(self.model):
            return predicted_labels(self.model, self.mutate(k, x, ids))


Mutants = ModelMutants | InputMutants


def label_change_rate(model: Callable[[torch.Tensor], Any], mutants: Mutants, x: torch.Tensor, n: int) -> torch.Tensor:
    """LCR ``(B,)`` of ``x`` over the first ``n`` mutants (labels compared with ``model``'s)."""
    check_batch(x)
    with eval_mode(model):
        ref = predicted_labels(model, x)
    ids = torch.arange(x.shape[0])
    changes = torch.zeros(x.shape[0], dtype=torch.float64)
    for k in range(n):
        changes += (mutants.labels(k, x, ids).cpu() != ref.cpu()).double()
    return changes / n


class NMutantDetector:
    """nMutant detector: mutants + a calibrated SPRT.

    Args:
        model: the classifier under test (never modified).
        x_val, y_val: validation data for the mutant acceptance test (model mutation).
        mutation: ``"model"`` or ``"input"``.
        operator, gamma, acc_ratio: model mutation settings (:class:`ModelMutants`).
        input_step, input_box, bounds: input mutation settings (:class:`InputMutants`).
        max_mutants: SPRT budget (500).
        alpha, beta: SPRT error bounds (0.05); indifference: ``sigma / kappa`` (0.1).
        seed: base seed.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
        >>> x = torch.rand(30, 1, 4, 4); y = net(x).argmax(1)
        >>> det = NMutantDetector(net, x, y, operator="gf", gamma=0.01, acc_ratio=0.5, max_mutants=20)
        >>> kappa = det.fit(x, n_mutants=10)
        >>> det.detect(x[:4]).n_used.shape
        torch.Size([4])
    """

    def __init__(
        self,
        model: nn.Module,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
        *,
        mutation: str = "model",
        operator: str = "nai",
        gamma: float = 0.05,
        acc_ratio: float = 0.9,
        input_step: float = 0.05,
        input_box: float = 0.25,
        bounds: Bounds = (0.0, 1.0),
        max_mutants: int = 500,
        alpha: float = 0.05,
        beta: float = 0.05,
        indifference: float = 0.1,
        seed: int = 0,
    ) -> None:
        if mutation == "model":
            self.mutants: Mutants = ModelMutants(model, x_val, y_val, operator=operator, gamma=gamma,
                                                 acc_ratio=acc_ratio, seed=seed)  # fmt: skip
        elif mutation == "input":
            self.mutants = InputMutants(model, step=input_step, box=input_box, bounds=bounds, seed=seed)
        else:
            raise ValueError(f"mutation must be 'model' or 'input', got {mutation!r}.")
        check_number("alpha", alpha, low=0, high=1, low_open=True, high_open=True)
        check_number("beta", beta, low=0, high=1, low_open=True, high_open=True)
        if max_mutants < 1 or not 0 < indifference < 1:
            raise ValueError(f"max_mutants must be >= 1 and indifference in (0, 1), got {max_mutants}, {indifference}.")
        self.model, self.max_mutants = model, max_mutants
        self.alpha, self.beta, self.indifference = alpha, beta, indifference
        self.kappa: float | None = None

    def lcr(self, x: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """Label change rate ``(B,)`` over ``n`` mutants (default ``max_mutants``): a continuous score."""
        return label_change_rate(self.model, self.mutants, x, n or self.max_mutants)

    def fit(self, x_normal: torch.Tensor, *, n_mutants: int | None = None, confidence: float = 0.99) -> float:
        """Calibrate ``kappa`` on normal inputs ``(B, C, *spatial)``; returns it."""
        self.kappa = calibrate_kappa(self.lcr(x_normal, n_mutants), confidence)
        if self.kappa < KAPPA_FLOOR:
            logger.warning("nmutant: normal inputs almost never change label (kappa=%.2g); the SPRT uses kappa=%g.",
                           self.kappa, KAPPA_FLOOR)  # fmt: skip
        return self.kappa

    @property
    def hypotheses(self) -> tuple[float, float]:
        """``(p0, p1)`` of the SPRT."""
        if self.kappa is None:
            raise RuntimeError("call fit(x_normal) (or set .kappa) before detecting.")
        return hypotheses(self.kappa, self.indifference)

    def detect(self, x: torch.Tensor) -> SPRTResult:
        """SPRT decision per input of ``x`` ``(B, C, *spatial)``, with the number of mutants used."""
        check_batch(x)
        p0, p1 = self.hypotheses
        with eval_mode(self.model):
            ref = predicted_labels(self.model, x).cpu()

        def fetch(k: int, idx: torch.Tensor) -> torch.Tensor:
            return self.mutants.labels(k, x[idx.to(x.device)], idx).cpu() != ref[idx]

        return sprt(fetch, x.shape[0], p0=p0, p1=p1, alpha=self.alpha, beta=self.beta, max_n=self.max_mutants)
