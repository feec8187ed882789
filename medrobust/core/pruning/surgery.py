"""Global channel pruning with Torch-Pruning's dependency graph: rank, remove, count FLOPs, keep a replayable history.

:class:`ChannelPruner` builds the dependency graph once (Torch-Pruning couples the channels of
residual adds and U-Net concats into one group) and removes, per :meth:`ChannelPruner.step`, the
``n`` channels with the lowest importance over the *whole* network (global ranking, as in
Molchanov et al.). Torch-Pruning's ``BasePruner`` schedules by a channel *ratio* of the initial
width; the Taylor schedule removes a fixed number of channels per step until a FLOPs target,
which is why the ranking loop is written here (the surgery is Torch-Pruning's).

The layers producing the network output (no parametrised layer downstream) are never pruned,
so the output shape is kept. Every step is recorded in :attr:`ChannelPruner.history` (module
names and indices: plain data) so :mod:`.serialization` can rebuild the pruned network from its
dense definition.

Example:
    >>> import torch
    >>> from monai.networks.nets import UNet
    >>> net = UNet(3, 1, 2, channels=(4, 8, 16), strides=(2, 2), norm="batch")
    >>> pruner = ChannelPruner(net, torch.rand(1, 1, 16, 16, 16), importance=magnitude_importance())
    >>> removed = pruner.step(4)
    >>> net(torch.rand(2, 1, 16, 16, 16)).shape
    torch.Size([2, 2, 16, 16, 16])
    >>> 0 < pruner.flops_ratio() < 1
    True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from medrobust.core.pruning.importance import magnitude_importance

__all__ = ["ChannelPruner", "build_graph", "count_flops", "output_layers", "check_supported"]

logger = logging.getLogger(__name__)

_PARAMETRISED = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                 nn.modules.instancenorm._InstanceNorm, nn.LayerNorm, nn.PReLU, nn.Embedding)


class _SharedPReLUPruner(tp.pruner.function.PReLUPruner):
    """PReLU with one shared slope (MONAI's default activation) has no channel count of its own, which breaks
    Torch-Pruning 1.6.1's concat-size inference (``TypeError: int + NoneType`` on MONAI UNet skips). The widths
    seen in a forward pass are recorded and kept up to date on pruning."""

    def __init__(self, widths: dict[nn.Module, int]) -> None:
        self.widths = widths

    def prune_out_channels(self, layer: nn.PReLU, idxs: Sequence[int]) -> nn.Module:
        if layer.num_parameters == 1 and layer in self.widths:
            self.widths[layer] -= len(set(idxs))
            return layer
        return super().prune_out_channels(layer, idxs)

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.PReLU) -> int | None:
        return self.widths.get(layer) if layer.num_parameters == 1 else layer.num_parameters

    get_in_channels = get_out_channels


@torch.no_grad()
def build_graph(model: nn.Module, example_inputs: torch.Tensor) -> Any:
    """Torch-Pruning ``DependencyGraph`` of ``model`` traced on ``example_inputs`` (in eval mode), with the
    shared-slope PReLU fix."""
    widths: dict[nn.Module, int] = {}

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        widths[module] = int(output.shape[1]) if output.ndim > 1 else 1

    was_training = model.training
    model.eval()
    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.PReLU)]
    try:
        model(example_inputs)
    finally:
        for h in handles:
            h.remove()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False,
                                                         customized_pruners={nn.PReLU: _SharedPReLUPruner(widths)})
    finally:
        model.train(was_training)


def count_flops(model: nn.Module, example_inputs: torch.Tensor) -> tuple[float, float]:
    """``(MACs, parameters)`` of one forward pass on ``example_inputs``, from Torch-Pruning's op counter.

    Example:
        >>> count_flops(torch.nn.Linear(3, 2), torch.rand(1, 3))
        (8.0, 8.0)
    """
    was_training = model.training
    model.eval()
    try:
        macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    finally:
        model.train(was_training)
    return float(macs), float(params)


def check_supported(model: nn.Module, ignored_layers: Sequence[nn.Module] = ()) -> None:
    """Raise ``TypeError`` naming the first module that owns parameters Torch-Pruning cannot resize.

    Such parameters ("unwrapped parameters": a custom module's ``nn.Parameter``) would silently
    keep their old shape; pass the module in ``ignored_layers`` to leave its channels untouched.
    """
    ignored = {id(m) for layer in ignored_layers for m in layer.modules()}
    for name, module in model.named_modules():
        if id(module) in ignored or isinstance(module, _PARAMETRISED):
            continue
        own = [n for n, p in module.named_parameters(recurse=False) if p is not None]
        if own:
            raise TypeError(f"model: module {name or '<root>'!r} ({type(module).__name__}) holds parameters {own} "
                            "that channel pruning cannot resize; supported layers are conv, linear, norm, PReLU and "
                            "embedding. Pass it in ignored_layers to keep its channels.")


def output_layers(dg: Any) -> list[nn.Module]:
    """Conv/linear layers with no parametrised layer downstream in the dependency graph ``dg`` (they make the output)."""
    out = []
    for module, node in dg.module2node.items():
        if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            continue
        stack, seen, terminal = list(node.outputs), set(), True
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if isinstance(n.module, _PARAMETRISED):
                terminal = False
                break
            stack.extend(n.outputs)
        if terminal:
            out.append(module)
    return out


class ChannelPruner:
    """Iterative global channel pruner over one Torch-Pruning dependency graph.

    Args:
        model: the network (pruned in place).
        example_inputs: one input batch for tracing and FLOP counts (e.g. ``(1, C, *spatial)``).
        importance: a ``torch_pruning`` importance (:class:`~.importance.GatedTaylorImportance`,
            :func:`~.importance.magnitude_importance`, :class:`~.importance.RandomChannelImportance`, ...).
        ignored_layers: layers whose output channels are kept (the output layers are added).
        min_channels: fewest channels a group may keep.

    Raises:
        TypeError: ``model`` is not a module, or holds parameters pruning cannot resize.
        ValueError: ``min_channels < 1``, or nothing in the model can be pruned.
    """

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor, *, importance: Any = None,
                 ignored_layers: Sequence[nn.Module] = (), min_channels: int = 1) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}.")
        if int(min_channels) < 1:
            raise ValueError(f"min_channels must be >= 1, got {min_channels}.")
        check_supported(model, ignored_layers)
        self.model, self.example_inputs = model, example_inputs
        self.importance = magnitude_importance() if importance is None else importance
        self.min_channels = int(min_channels)
        self.dg = build_graph(model, example_inputs)
        self._base_history = list(getattr(model, "_medrobust_pruning_history", []))  # earlier pruners' steps
        self.ignored_layers = [*ignored_layers, *output_layers(self.dg)]
        self._ignored = {id(m) for layer in self.ignored_layers for m in layer.modules()}
        self.flops0, self.params0 = count_flops(model, example_inputs)
        if not self._groups():
            raise ValueError(f"model: no prunable channel group in {type(model).__name__} (only output layers or "
                             "ignored layers).")

    @property
    def history(self) -> list[tuple[str, bool, list[int]]]:
        """Torch-Pruning's pruning history: ``(module name, is out-channel pruning, indices)`` per removal
        (including removals by earlier pruners of the same model; also kept on the model for
        :func:`~.serialization.net_history`)."""
        return self._base_history + [(str(n), bool(o), [int(i) for i in idx]) for n, o, idx in self.dg.pruning_history()]

    def _consistent(self, group: Any) -> bool:
        """No split op and every layer's indices fit its width. Torch-Pruning 1.6.1 mis-maps some couplings
        (MONAI LocalNet's additive up-sampling splits a tensor in two and sums the halves, pairing channels
        ``i`` and ``i + C/2``): groups through a split are left unpruned rather than silently re-paired."""
        for dep, idxs in group:
            if dep.target.type == tp.ops.OPTYPE.SPLIT:
                return False
            module = dep.target.module
            if not isinstance(module, nn.Module) or not len(idxs):
                continue
            out = self.dg.is_out_channel_pruning_fn(dep.handler)
            width = self.dg.get_out_channels(module) if out else self.dg.get_in_channels(module)
            if width is not None and max(int(i) for i in idxs) >= width:
                return False
        return True

    def _groups(self) -> list[Any]:
        groups, skipped = [], []
        for g in self.dg.get_all_groups(ignored_layers=[m for m in self.model.modules() if id(m) in self._ignored],
                                        root_module_types=[tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR]):
            (groups if self._consistent(g) else skipped).append(g)
        if skipped and not getattr(self, "_warned", False):
            self._warned = True
            logger.warning("left %d channel group(s) unpruned (rooted at %s): Torch-Pruning maps their channel "
                           "coupling inconsistently.", len(skipped), ", ".join(g[0].dep.target.name for g in skipped))
        return groups

    def flops(self) -> tuple[float, float]:
        """``(MACs, parameters)`` of the model now."""
        return count_flops(self.model, self.example_inputs)

    def flops_ratio(self) -> float:
        """MACs now / MACs of the dense model."""
        return self.flops()[0] / self.flops0

    @torch.no_grad()
    def ranking(self) -> list[tuple[float, int, int]]:
        """``(score, group index, channel)`` for every removable channel, least important first."""
        rows = []
        for gi, group in enumerate(self._groups()):
            imp = self.importance(group)
            if imp is None:
                continue
            imp = torch.as_tensor(imp, dtype=torch.float64).reshape(-1)
            if not torch.isfinite(imp).all():
                raise ValueError(f"importance: non-finite scores for the group of {group[0].dep.target.name}.")
            rows.extend((float(s), gi, c) for c, s in enumerate(imp.tolist()))
        rows.sort()
        return rows

    def step(self, n: int, *, stop_at: float | None = None) -> int:
        """Remove the ``n`` globally least important channels (each group keeps ``min_channels``).

        Args:
            n: channels to remove.
            stop_at: a MACs ratio: remove the ranked channels one at a time and stop as soon as the
                MACs ratio is at or below it (one surgery and one MACs count per channel), so a
                target is undershot by less than one channel's MACs. ``None``: one surgery per group.

        Returns:
            The number of channels removed (fewer than ``n`` when groups hit ``min_channels`` or
            ``stop_at`` is reached).

        Raises:
            ValueError: ``n < 1``.
        """
        if int(n) < 1:
            raise ValueError(f"n (channels to remove) must be >= 1, got {n}.")
        groups = self._groups()
        width = {gi: len(g[0].root_idxs) for gi, g in enumerate(groups)}
        order: list[tuple[int, int]] = []
        per_group: dict[int, list[int]] = {}
        for _, gi, c in self.ranking():
            if len(order) >= n:
                break
            if width[gi] - len(per_group.get(gi, [])) > self.min_channels:
                per_group.setdefault(gi, []).append(c)
                order.append((gi, c))
        if stop_at is None:
            removed = sum(self._prune(groups[gi], sorted(idxs)) for gi, idxs in per_group.items())
        else:
            removed, done = 0, {gi: [] for gi in per_group}
            for gi, c in order:
                if self.flops_ratio() <= stop_at:
                    break
                shifted = c - sum(1 for r in done[gi] if r < c)  # indices after the earlier removals in this group
                if self._prune(groups[gi], [shifted]):
                    done[gi].append(c)
                    removed += 1
        self.model._medrobust_pruning_history = self.history
        logger.debug("pruned %d channels; MACs ratio now %.3f", removed, self.flops_ratio())
        return removed

    def _prune(self, group: Any, idxs: list[int]) -> int:
        root = group[0].dep
        sub = self.dg.get_pruning_group(root.target.module, root.handler, idxs)
        if not self.dg.check_pruning_group(sub):
            logger.warning("skipped an invalid pruning group rooted at %s", root.target.name)
            return 0
        sub.prune()
        return len(idxs)
