"""Channel importances for Torch-Pruning: the gated Taylor criterion (Molchanov et al., CVPR 2019) and baselines.

Molchanov et al. put a *gate* (a per-channel multiplier fixed at 1) after every normalisation
layer; the importance of channel ``m`` is the squared first-order Taylor estimate of the loss
change when the gate goes to 0, ``I_m = (dL/dgate_m)^2 = (sum_s g_s w_s)^2`` (the gate's gradient
equals the sum over the channel's BN-output positions of activation x output-gradient), computed
per minibatch and averaged over minibatches. The second-order variant squares
``dL/dgate_m - H_mm / 2``.

:class:`GatedTaylorImportance` implements that as a ``torch_pruning`` importance, so Torch-Pruning's
dependency graph does the surgery. Gates are forward hooks (``output * gate``, ``gate = ones``)
installed only inside :meth:`GatedTaylorImportance.gated`; their gradients come from
``torch.autograd.grad`` (``param.grad`` is never touched). A Torch-Pruning group couples all
layers whose channels must go together (a residual add, a U-Net concat): the group's gate is
shared, so its per-minibatch gradient is the *sum* of the gradients of the gates of every
normalisation layer in the group (the chain rule for one gate used at several places) before
squaring -- the paper's "one gate per stage" for skip connections. A group without a
normalisation layer gates its convolution/linear outputs instead.

Torch-Pruning's own ``GroupTaylorImportance`` scores ``|sum w g|`` of the weights of one
minibatch and drops BN terms; that is why this criterion is written here.

Example:
    >>> import torch, torch_pruning as tp
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
    ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
    >>> imp = GatedTaylorImportance()
    >>> x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 0])
    >>> with imp.gated(net):
    ...     imp.accumulate(torch.nn.functional.cross_entropy(net(x), y))
    >>> dg = tp.DependencyGraph().build_dependency(net, example_inputs=x[:1])
    >>> group = dg.get_pruning_group(net[0], tp.prune_conv_out_channels, idxs=[0, 1, 2, 3])
    >>> imp(group).shape
    torch.Size([4])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

__all__ = ["NORM_TYPES", "GatedTaylorImportance", "RandomChannelImportance", "magnitude_importance"]

#: normalisation layers that carry a gate (channel dim 1). LayerNorm normalises the last dim and is not gated.
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
                                           nn.GroupNorm)
_WEIGHTED_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)


class GatedTaylorImportance(tp.importance.Importance):
    """Molchanov et al.'s gated Taylor importance, averaged over minibatches (see the module docstring).

    Use :meth:`gated` around the forward passes whose loss you pass to :meth:`accumulate` (once
    per minibatch), then give the object to Torch-Pruning (or :class:`~medrobust.core.pruning.ChannelPruner`)
    as the importance. Call :meth:`reset` after every pruning step (channel indices change).

    Args:
        second_order: add the diagonal second-order term, ``(g - H_mm / 2)^2``. ``H_mm`` is
            estimated per minibatch with one Hutchinson probe (``v * Hv``, Rademacher ``v``; one
            extra double-backward pass); with a shared gate only the per-site diagonal is kept
            (cross-site Hessian terms are dropped).
        generator: seeds the Hutchinson probes (``int`` or ``torch.Generator``).

    Attributes:
        num_batches: minibatches accumulated since the last :meth:`reset`.
    """

    def __init__(self, *, second_order: bool = False, generator: int | torch.Generator | None = None) -> None:
        self.second_order = bool(second_order)
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        self.generator = generator
        self._live: list[tuple[nn.Module, torch.Tensor]] = []  # gates created by forwards since the last accumulate
        self._grads: dict[nn.Module, list[torch.Tensor]] = {}
        self._hess: dict[nn.Module, list[torch.Tensor]] = {}
        self.num_batches = 0

    def __repr__(self) -> str:
        return f"GatedTaylorImportance(second_order={self.second_order}, num_batches={self.num_batches})"

    # -- gates ---------------------------------------------------------------------------------
    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        if not isinstance(output, torch.Tensor) or output.ndim < 2 or not torch.is_grad_enabled():
            return None
        gate = torch.ones(output.shape[1], dtype=output.dtype, device=output.device, requires_grad=True)
        self._live.append((module, gate))
        return output * gate.view(1, -1, *([1] * (output.ndim - 2)))

    @contextlib.contextmanager
    def gated(self, model: nn.Module) -> Iterator[nn.Module]:
        """Context: gates (multipliers fixed at 1) on the outputs of every normalisation, conv and linear layer."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}.")
        handles = [m.register_forward_hook(self._hook) for m in model.modules()
                   if isinstance(m, NORM_TYPES + _WEIGHTED_TYPES)]
        try:
            yield model
        finally:
            for h in handles:
                h.remove()
            self._live.clear()

    def accumulate(self, loss: torch.Tensor) -> None:
        """Add one minibatch: the gradient of the scalar ``loss`` w.r.t. every gate used to compute it.

        The graph is kept (``retain_graph=True``) so the caller can still ``loss.backward()`` to train.

        Raises:
            ValueError: ``loss`` is not a scalar tensor.
            RuntimeError: no gate was used (call inside :meth:`gated`, with gradients enabled).
        """
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise ValueError(f"loss: expected a scalar tensor, got {getattr(loss, 'shape', type(loss).__name__)}.")
        live, self._live = self._live, []
        if not live:
            raise RuntimeError("accumulate: no gate was used; compute the loss inside `with importance.gated(model):`.")
        gates = [g for _, g in live]
        grads = torch.autograd.grad(loss, gates, retain_graph=True, allow_unused=True, create_graph=self.second_order)
        hess: Sequence[torch.Tensor | None] = [None] * len(gates)
        if self.second_order:
            used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
            probes = [torch.randint(0, 2, gates[i].shape, generator=self.generator).to(gates[i]) * 2 - 1 for i in used]
            dot = sum((grads[i] * v).sum() for i, v in zip(used, probes))
            hv = torch.autograd.grad(dot, [gates[i] for i in used], retain_graph=True, allow_unused=True)
            hess = list(hess)
            for i, v, h in zip(used, probes, hv):
                hess[i] = None if h is None else (v * h).detach()
        summed: dict[nn.Module, torch.Tensor] = {}
        summed_h: dict[nn.Module, torch.Tensor] = {}
        for (module, _), g, h in zip(live, grads, hess):
            if g is None:
                continue
            summed[module] = summed.get(module, 0) + g.detach()
            if h is not None:
                summed_h[module] = summed_h.get(module, 0) + h
        for module, g in summed.items():
            self._grads.setdefault(module, []).append(g)
            self._hess.setdefault(module, []).append(summed_h.get(module, torch.zeros_like(g)))
        self.num_batches += 1

    def reset(self) -> None:
        """Forget the accumulated minibatches (call after every pruning step)."""
        self._grads.clear()
        self._hess.clear()
        self._live.clear()
        self.num_batches = 0

    # -- torch_pruning.Importance --------------------------------------------------------------
    def _sites(self, group: Any) -> list[tuple[nn.Module, list[int], list[int]]]:
        dg = group._DG
        norms, weighted = [], []
        for i, (dep, idxs) in enumerate(group):
            layer, root_idxs = dep.layer, group[i].root_idxs
            if isinstance(layer, NORM_TYPES):
                norms.append((layer, list(idxs), list(root_idxs)))
            elif isinstance(layer, _WEIGHTED_TYPES) and dg.is_out_channel_pruning_fn(dep.handler):
                weighted.append((layer, list(idxs), list(root_idxs)))
        return norms or weighted

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        """``(len(root idxs),)`` importance of the group's channels (``None`` if it has no gate)."""
        if self.num_batches == 0:
            raise RuntimeError("GatedTaylorImportance: no minibatch accumulated; call accumulate(loss) first.")
        root_len = len(group[0].root_idxs)
        per_batch = None
        for layer, idxs, root_idxs in self._sites(group):
            if layer not in self._grads:
                continue
            g = torch.stack(self._grads[layer])  # (num_batches, C)
            h = torch.stack(self._hess[layer])
            if max(idxs, default=-1) >= g.shape[1]:
                raise RuntimeError(f"GatedTaylorImportance: {type(layer).__name__} has {g.shape[1]} accumulated "
                                   f"channels but the group asks for index {max(idxs)}; call reset() after pruning.")
            term = g[:, idxs] - 0.5 * h[:, idxs] if self.second_order else g[:, idxs]
            if per_batch is None:
                per_batch = torch.zeros(g.shape[0], root_len, dtype=g.dtype)
            per_batch.index_add_(1, torch.as_tensor(root_idxs), term.cpu())
        if per_batch is None:
            return None
        return per_batch.pow(2).mean(0)


class RandomChannelImportance(tp.importance.Importance):
    """Uniform random scores from a local generator (Torch-Pruning's ``RandomImportance`` draws from the global RNG)."""

    def __init__(self, generator: int | torch.Generator | None = 0) -> None:
        self.generator = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator

    def __call__(self, group: Any) -> torch.Tensor:
        return torch.rand(len(group[0].root_idxs), generator=self.generator)


def magnitude_importance() -> tp.importance.Importance:
    """Weight-magnitude baseline: Torch-Pruning's group L2 norm, normalised by its mean within each group."""
    return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer="mean")
