"""Structured (channel) pruning of 2-D and 3-D networks: Molchanov et al.'s gated Taylor criterion on
Torch-Pruning's dependency graph, natural or robustness-aware, with weights-only save/load.

- :class:`GatedTaylorImportance` (first/second order), :class:`RandomChannelImportance`,
  :func:`magnitude_importance` -- :mod:`.importance`
- :class:`ChannelPruner` (global ranking, surgery, history), :func:`count_flops`, :func:`build_graph` -- :mod:`.surgery`
- :func:`iterative_prune` (prune every N minibatches to a FLOPs target, fine-tune),
  :func:`natural_loss`, :func:`adversarial_loss` (PGD criterion) -- :mod:`.schedule`
- :func:`save_pruned`, :func:`load_pruned` (no module pickling) -- :mod:`.serialization`

Example:
    >>> import torch
    >>> from monai.networks.nets import UNet
    >>> from medrobust.core.pruning import ChannelPruner, GatedTaylorImportance
    >>> net, x = UNet(2, 1, 2, channels=(4, 8), strides=(2,), norm="batch"), torch.rand(2, 1, 16, 16)
    >>> imp = GatedTaylorImportance()
    >>> with imp.gated(net):
    ...     imp.accumulate(net(x).pow(2).mean())
    >>> _ = ChannelPruner(net, x[:1], importance=imp).step(2)
    >>> net(x).shape
    torch.Size([2, 2, 16, 16])
"""

from medrobust.core.pruning.importance import NORM_TYPES, GatedTaylorImportance, RandomChannelImportance, magnitude_importance
from medrobust.core.pruning.schedule import (
    CRITERIA,
    PruneResult,
    adversarial_loss,
    iterative_prune,
    make_importance,
    natural_loss,
)
from medrobust.core.pruning.serialization import FORMAT, apply_history, load_pruned, net_history, pruned_checkpoint, save_pruned
from medrobust.core.pruning.surgery import ChannelPruner, build_graph, check_supported, count_flops, output_layers

__all__ = [
    "NORM_TYPES",
    "GatedTaylorImportance",
    "RandomChannelImportance",
    "magnitude_importance",
    "ChannelPruner",
    "build_graph",
    "check_supported",
    "count_flops",
    "output_layers",
    "CRITERIA",
    "PruneResult",
    "iterative_prune",
    "make_importance",
    "natural_loss",
    "adversarial_loss",
    "FORMAT",
    "save_pruned",
    "load_pruned",
    "apply_history",
    "pruned_checkpoint",
    "net_history",
]
