"""Save and load pruned networks without pickling modules (``torch.load(..., weights_only=True)``).

Torch-Pruning's own ``tp.state_dict`` stores module ``__dict__`` copies and its users pickle
whole models. Here a pruned network is stored as plain data: the state dict, Torch-Pruning's
pruning history (module names, in/out flag, channel indices) and the example input shape used to
trace the graph. Loading rebuilds the *dense* network from its definition (a bundle config, a
constructor), replays the history with Torch-Pruning (``load_pruning_history``) so every layer
gets its pruned width, then loads the weights strictly.

Example:
    >>> import io, torch
    >>> from medrobust.core.pruning import ChannelPruner
    >>> make = lambda: torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
    ...     torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 2))
    >>> net = make()
    >>> _ = ChannelPruner(net, torch.rand(1, 1, 8, 8)).step(3)
    >>> buf = io.BytesIO(); save_pruned(net, buf, history=net_history(net), example_shape=(1, 1, 8, 8))
    >>> _ = buf.seek(0); net2 = load_pruned(buf, make())
    >>> net2[0].out_channels, torch.equal(net.eval()(torch.ones(1, 1, 8, 8)), net2.eval()(torch.ones(1, 1, 8, 8)))
    (5, True)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO, Any

import torch
from torch import nn

from medrobust.core.pruning.surgery import build_graph

__all__ = ["FORMAT", "pruned_checkpoint", "save_pruned", "load_pruned", "apply_history", "net_history"]

#: format tag stored in every file.
FORMAT = "medrobust.pruned/1"


def net_history(model: nn.Module) -> list:
    """The pruning history recorded on ``model`` by :class:`~.surgery.ChannelPruner` (``[]`` if never pruned)."""
    return list(getattr(model, "_medrobust_pruning_history", []))


def pruned_checkpoint(model: nn.Module, *, history: Sequence, example_shape: Sequence[int]) -> dict:
    """The checkpoint dict: ``{"format", "state_dict", "pruning_history", "example_shape"}`` (plain data only)."""
    hist = [[str(n), bool(o), [int(i) for i in idx]] for n, o, idx in history]
    return {"format": FORMAT, "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "pruning_history": hist, "example_shape": [int(s) for s in example_shape]}


def save_pruned(model: nn.Module, f: str | os.PathLike[str] | IO[bytes], *, history: Sequence,
                example_shape: Sequence[int]) -> None:
    """Write ``model``'s weights and pruning history to ``f`` (``torch.save`` of plain data)."""
    torch.save(pruned_checkpoint(model, history=history, example_shape=example_shape), f)


def apply_history(model: nn.Module, history: Sequence, example_shape: Sequence[int]) -> nn.Module:
    """Replay a pruning history on a dense ``model`` (in place) and return it.

    Raises:
        ValueError: the history names a module ``model`` does not have, or does not fit its widths.
    """
    names = dict(model.named_modules())
    for name, _, idx in history:
        if name not in names:
            raise ValueError(f"pruning history: module {name!r} is not in {type(model).__name__}; rebuild the network "
                             "the pruned model came from.")
    dg = build_graph(model, torch.zeros(*[int(s) for s in example_shape]))
    try:
        dg.load_pruning_history([[n, bool(o), [int(i) for i in idx]] for n, o, idx in history])
    except (IndexError, RuntimeError) as e:
        raise ValueError(f"pruning history does not fit {type(model).__name__}: {e}") from e
    return model


def load_pruned(f: str | os.PathLike[str] | IO[bytes] | dict, model: nn.Module, *,
                map_location: Any = "cpu") -> nn.Module:
    """Rebuild a pruned network: replay the stored history on the dense ``model``, then load the weights strictly.

    Args:
        f: file written by :func:`save_pruned`, or its dict.
        model: a freshly built *dense* network of the same definition.
        map_location: as in ``torch.load``.

    Raises:
        ValueError: not a pruned checkpoint, or it does not fit ``model``.
    """
    ckpt = f if isinstance(f, dict) else torch.load(f, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"not a medrobust pruned checkpoint (expected format {FORMAT!r}, got "
                         f"{ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__!r}).")
    apply_history(model, ckpt["pruning_history"], ckpt["example_shape"])
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"pruned checkpoint does not fit {type(model).__name__} after replaying its history: {e}") from e
    model._medrobust_pruning_history = list(ckpt["pruning_history"])
    return model
