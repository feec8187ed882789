"""The iterative pruning schedule: train ``N`` minibatches, remove the ``k`` least important channels, repeat
until a FLOPs target, then fine-tune. Natural or robustness-aware (PGD) criterion.

Molchanov et al. accumulate the Taylor importance over the minibatches of ongoing training (every
~30 minibatches they remove the least important neurons and reset the accumulators), then
fine-tune. :func:`iterative_prune` does the same for any importance: with
:class:`~.importance.GatedTaylorImportance` the criterion comes from the same minibatches (the
gate gradients of ``criterion_loss``); magnitude and random criteria just skip that part, so
every criterion gets the same training budget. :func:`adversarial_loss` makes the criterion
(and/or the training loss) robustness-aware: the loss is evaluated on PGD examples from
:func:`medrobust.core.attacks.pgd` (HYDRA-style: a natural criterion on a robust model keeps
channels that matter for clean inputs only).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
    ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    >>> data = [(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]))] * 3
    >>> res = iterative_prune(net, data, example_inputs=torch.rand(1, 1, 8, 8), criterion="taylor",
    ...     target_flops=0.5, channels_per_step=2, batches_per_step=2, finetune_batches=2)
    >>> res.flops_ratio <= 0.5, net[0].out_channels  # stops at the first width under the target
    (True, 3)
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medrobust.core.attacks import pgd
from medrobust.core.pruning.importance import GatedTaylorImportance, RandomChannelImportance, magnitude_importance
from medrobust.core.pruning.surgery import ChannelPruner

__all__ = ["CRITERIA", "PruneResult", "iterative_prune", "make_importance", "natural_loss", "adversarial_loss"]

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

#: criterion names understood by :func:`make_importance`.
CRITERIA = ("taylor", "taylor2", "magnitude", "random")


def make_importance(criterion: str, *, seed: int = 0) -> Any:
    """Importance object for a criterion name (``taylor``, ``taylor2`` = with the second-order term, ``magnitude``, ``random``).

    Raises:
        ValueError: unknown name.
    """
    name = str(criterion).lower()
    if name == "taylor":
        return GatedTaylorImportance()
    if name == "taylor2":
        return GatedTaylorImportance(second_order=True, generator=seed)
    if name == "magnitude":
        return magnitude_importance()
    if name == "random":
        return RandomChannelImportance(seed)
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")


def natural_loss(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> LossFn:
    """``(model, x, y) -> loss(model(x), y)`` (default cross-entropy)."""
    fn = loss or nn.functional.cross_entropy

    def natural(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return fn(model(x), y)

    return natural


def adversarial_loss(*, eps: float, steps: int = 10, alpha: float | None = None, seed: int = 0,
                     loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                     attack_loss: Any = None, bounds: tuple[float, float] = (0.0, 1.0)) -> LossFn:
    """``(model, x, y) -> loss(model(x_adv), y)`` with ``x_adv`` from L-inf PGD (network in eval mode while attacking).

    Args:
        eps: L-inf radius (input units).
        steps: PGD steps; ``alpha`` defaults to ``2.5 eps / steps``.
        seed: base seed of the random starts (call ``k`` uses ``seed + k``).
        loss: training loss on the adversarial output (default cross-entropy).
        attack_loss: PGD objective (default: the library's classification objective).

    Raises:
        ValueError: ``eps < 0`` or ``steps < 1``.
    """
    if float(eps) < 0 or int(steps) < 1:
        raise ValueError(f"adversarial_loss: need eps >= 0 and steps >= 1, got eps={eps}, steps={steps}.")
    fn = loss or nn.functional.cross_entropy
    counter = itertools.count()
    a = 2.5 * float(eps) / int(steps) if alpha is None else float(alpha)

    def adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        try:
            x_adv = pgd(model, x, y, loss_fn=attack_loss, eps=float(eps), alpha=a, steps=int(steps), bounds=bounds,
                        generator=int(seed) + next(counter)).x_adv.detach()
        finally:
            model.train(was_training)
        return fn(model(x_adv), y)

    return adversarial


@dataclass
class PruneResult:
    """What :func:`iterative_prune` did.

    Attributes:
        flops_ratio: MACs after / MACs of the dense model.
        params_ratio: parameters after / before.
        flops, params: MACs and parameters after.
        history: Torch-Pruning pruning history (for :func:`~.serialization.save_pruned`).
        steps: per pruning step ``{"step", "removed", "flops_ratio", "train_loss"}``.
        train_batches: minibatches trained in total (pruning phase + fine-tuning).
    """

    flops_ratio: float
    params_ratio: float
    flops: float
    params: float
    history: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    train_batches: int = 0


def _cycle(batches: Iterable) -> Any:
    while True:
        empty = True
        for b in batches:
            empty = False
            yield b
        if empty:
            raise ValueError("batches: the iterable yielded no minibatch.")


def iterative_prune(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    example_inputs: torch.Tensor,
    criterion: str | Any = "taylor",
    target_flops: float,
    channels_per_step: int = 4,
    batches_per_step: int = 10,
    finetune_batches: int = 0,
    train_loss: LossFn | None = None,
    criterion_loss: LossFn | None = None,
    optimizer: Callable[[Any], torch.optim.Optimizer] | None = None,
    ignored_layers: tuple[nn.Module, ...] = (),
    match_target: bool = True,
    max_steps: int = 10_000,
    seed: int = 0,
) -> PruneResult:
    """Prune ``model`` in place to ``target_flops`` x its MACs (Molchanov et al.'s schedule), then fine-tune.

    Each step trains ``batches_per_step`` minibatches (``train_loss``, a fresh ``optimizer`` after
    every surgery) while a Taylor criterion accumulates gate gradients of ``criterion_loss`` on the
    same minibatches, then removes the ``channels_per_step`` globally least important channels.
    After the target is reached, ``finetune_batches`` more minibatches are trained.

    Args:
        model: network (pruned in place; left in train mode).
        batches: iterable of ``(x, y)`` minibatches (re-iterated as needed, e.g. a DataLoader).
        example_inputs: one input for tracing and FLOP counts, ``(1, C, *spatial)``.
        criterion: a name from :data:`CRITERIA` or a ``torch_pruning`` importance object.
        target_flops: MACs fraction to reach, in ``(0, 1)`` (0.5 = a 50 % reduction).
        channels_per_step: channels removed per step (at most; see ``match_target``).
        batches_per_step: minibatches between removals (0: no training, criteria from one minibatch).
        finetune_batches: minibatches trained after the last removal.
        train_loss: ``(model, x, y) -> loss`` for training (default :func:`natural_loss`).
        criterion_loss: loss whose gate gradients rank channels (default ``train_loss``; pass
            :func:`adversarial_loss` for the robustness-aware variant).
        optimizer: ``params -> optimizer`` (default SGD lr 0.01, momentum 0.9).
        ignored_layers: layers whose channels are kept.
        match_target: stop at the target so that every criterion ends at about the same MACs: a
            step that may cross the target (the previous step removed at least half the MACs still
            above it) removes its ranked channels one at a time and stops once the target is
            reached, so the final MACs undershoot the target by less than one channel's MACs
            rather than up to ``channels_per_step`` channels'. ``False``: always
            ``channels_per_step`` channels per step.
        max_steps: safety bound on pruning steps.
        seed: seed of the random criterion.

    Raises:
        ValueError: ``target_flops`` outside ``(0, 1)``, a non-positive step size, or a target the
            network cannot reach (every group at one channel).
    """
    if not 0.0 < float(target_flops) < 1.0:
        raise ValueError(f"target_flops must be a MACs fraction in (0, 1) (0.5 = 50 % reduction), got {target_flops!r}.")
    if int(channels_per_step) < 1 or int(batches_per_step) < 0 or int(finetune_batches) < 0:
        raise ValueError(f"need channels_per_step >= 1, batches_per_step >= 0, finetune_batches >= 0; got "
                         f"{channels_per_step}, {batches_per_step}, {finetune_batches}.")
    train_loss = train_loss or natural_loss()
    criterion_loss = criterion_loss or train_loss
    importance = make_importance(criterion, seed=seed) if isinstance(criterion, str) else criterion
    taylor = isinstance(importance, GatedTaylorImportance)
    make_opt = optimizer or (lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9))
    pruner = ChannelPruner(model, example_inputs, importance=importance, ignored_layers=ignored_layers)
    stream = _cycle(batches)
    trained = 0
    log: list[dict] = []

    def train(n: int, *, score: bool) -> float:
        nonlocal trained
        opt = make_opt(model.parameters())
        model.train()
        total = 0.0
        for _ in range(n):
            x, y = next(stream)
            opt.zero_grad(set_to_none=True)
            if score and taylor:
                with importance.gated(model):
                    loss = train_loss(model, x, y)
                    closs = loss if criterion_loss is train_loss else criterion_loss(model, x, y)
                    importance.accumulate(closs)
            else:
                loss = train_loss(model, x, y)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            trained += 1
        return total / max(n, 1)

    ratio, last_drop = pruner.flops_ratio(), 1.0
    for step in range(int(max_steps)):
        if ratio <= target_flops:
            break
        if taylor:
            importance.reset()
        loss = train(int(batches_per_step), score=True)
        if taylor and importance.num_batches == 0:  # no training between steps: score one minibatch
            x, y = next(stream)
            with importance.gated(model):
                importance.accumulate(criterion_loss(model, x, y))
        near = match_target and 2 * last_drop >= ratio - target_flops  # this step may cross the target
        removed = pruner.step(int(channels_per_step), stop_at=target_flops if near else None)
        before, ratio = ratio, pruner.flops_ratio()
        last_drop = before - ratio
        log.append({"step": step, "removed": removed, "flops_ratio": ratio, "train_loss": loss})
        if removed == 0:
            raise ValueError(f"target_flops={target_flops}: cannot be reached, every channel group is at its minimum "
                             f"width (MACs ratio {ratio:.3f}).")
    else:
        raise ValueError(f"target_flops={target_flops} not reached in max_steps={max_steps} steps.")
    if taylor:
        importance.reset()
    train(int(finetune_batches), score=False)
    flops, params = pruner.flops()
    return PruneResult(flops_ratio=flops / pruner.flops0, params_ratio=params / pruner.params0, flops=flops,
                       params=params, history=pruner.history, steps=log, train_batches=trained)
