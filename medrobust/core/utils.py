"""Small helpers every part of ``medrobust.core`` shares (attacks, defenses, metrics, detectors):
the model's train/eval mode, class scores of a classifier output, clipping to bounds, the model
call, and seed derivation. Each idea is written once, here.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.BatchNorm1d(1)).train()
    >>> with eval_mode(net):
    ...     class_logits(net(torch.rand(3, 4))).shape
    torch.Size([3, 2])
    >>> net.training
    True
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Callable, Iterator
from typing import Any, Union

import torch
from torch import nn

__all__ = ["eval_mode", "class_logits", "clip_to_bounds", "model_output", "base_seed", "derive_seed", "append_csv_row"]

_MASK63 = (1 << 63) - 1


@contextlib.contextmanager
def eval_mode(model: Any, enabled: bool = True) -> Iterator[Any]:
    """Run the block with ``model`` in eval mode, then restore every submodule's own flag.

    Restoring each submodule's flag (not just ``model.train(was_training)``) keeps mixed modes
    intact, e.g. an MC-dropout model whose dropout layers alone are in train mode. A plain
    callable (not an ``nn.Module``, e.g. a closure over a trainer's network) is left alone, and
    so is every model when ``enabled`` is False.

    Args:
        model: an ``nn.Module`` or any callable.
        enabled: switch to eval mode at all (the defenses' ``attack_in_eval_mode``).

    Yields:
        ``model`` itself.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(2, 2))
        >>> net[0].train(); net[1].eval()  # doctest: +ELLIPSIS
        Dropout(...)
        Linear(...)
        >>> with eval_mode(net):
        ...     net[0].training
        False
        >>> net[0].training, net[1].training
        (True, False)
    """
    if not enabled or not isinstance(model, nn.Module):
        yield model
        return
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training


def class_logits(out: torch.Tensor, *, spatial: bool = False) -> torch.Tensor:
    """Class scores with at least two classes on dim 1.

    A single-logit output ``z`` (``(B,)``, ``(B, 1)``, or ``(B, 1, *spatial)`` when ``spatial``)
    becomes ``[0, z]``, whose softmax is ``[1 - sigmoid(z), sigmoid(z)]`` (class 1 is the
    positive class); ``K >= 2`` outputs pass through.

    Args:
        out: classifier output ``(B, K)`` / ``(B, 1)`` / ``(B,)``; with ``spatial=True`` also
            dense outputs ``(B, K, *spatial)`` (segmentation logits).
        spatial: accept dense outputs.

    Raises:
        ValueError: ``out`` has more than 2 dims and ``spatial`` is False.

    Example:
        >>> class_logits(torch.tensor([[2.0], [-1.0]]))
        tensor([[ 0.,  2.],
                [ 0., -1.]])
        >>> class_logits(torch.zeros(2, 1, 4, 4), spatial=True).shape
        torch.Size([2, 2, 4, 4])
    """
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2 and not spatial:
        raise ValueError(
            f"classifier output must be (B, K) or (B, 1), got shape {tuple(out.shape)}; for dense "
            "(segmentation) logits use class_logits(out, spatial=True)."
        )
    if out.shape[1] == 1:
        return torch.cat([torch.zeros_like(out), out], dim=1)
    return out


def clip_to_bounds(
    v: torch.Tensor, low: Union[float, torch.Tensor], high: Union[float, torch.Tensor]
) -> torch.Tensor:
    """Element-wise clip of ``v`` to ``[low, high]`` (floats or tensors broadcastable to ``v``).

    Unlike ``torch.clamp`` with tensors, floats and tensors mix freely and are moved to ``v``'s
    dtype and device. The bounds are not checked here: use
    :func:`medrobust.core.validation.check_bounds` (or the attacks' ``as_bounds``) first.

    Example:
        >>> clip_to_bounds(torch.tensor([-1.0, 0.5, 2.0]), 0.0, torch.tensor(1.0))
        tensor([0.0000, 0.5000, 1.0000])
    """
    lo = torch.as_tensor(low, dtype=v.dtype, device=v.device)
    hi = torch.as_tensor(high, dtype=v.dtype, device=v.device)
    return torch.maximum(torch.minimum(v, hi), lo)


def model_output(model: Callable[[torch.Tensor], Any], x: torch.Tensor) -> torch.Tensor:
    """``model(x)``; a tuple/list output (deep supervision, aux heads) is reduced to its first entry.

    Raises:
        TypeError: the model returns no tensor.

    Example:
        >>> model_output(lambda x: (x * 2, "aux"), torch.ones(1)).tolist()
        [2.0]
    """
    out = model(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model must return a tensor (or a tuple whose first entry is one), got {type(out).__name__}.")
    return out


def base_seed(generator: torch.Generator | int | None) -> int:
    """An int seed from ``generator``: the int itself, 0 for ``None``, or one draw from a generator.

    A generator advances by one draw, so successive calls give fresh seeds; an int or ``None``
    always gives the same one (reproducible by default; the global RNG is never touched).

    Raises:
        TypeError: ``generator`` is none of these (a bool is refused).

    Example:
        >>> base_seed(None), base_seed(7)
        (0, 7)
        >>> g = torch.Generator().manual_seed(0)
        >>> base_seed(g) != base_seed(g)
        True
    """
    if generator is None:
        return 0
    if isinstance(generator, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    if isinstance(generator, int) and not isinstance(generator, bool):
        return int(generator)
    raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}.")


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integer ``parts`` (e.g. base seed, mutant index, sample id).

    Deterministic across runs and platforms (no ``hash``); nearby tuples give unrelated seeds,
    so ``(seed, k, i)`` streams do not overlap as ``seed + k + i`` would.

    Example:
        >>> derive_seed(0, 1) == derive_seed(0, 1), derive_seed(0, 1) == derive_seed(1, 0)
        (True, False)
    """
    s = 0x9E3779B97F4A7C15
    for p in parts:  # a small splitmix-style mix
        s = (s ^ (int(p) + 0x9E3779B97F4A7C15 + (s << 6) + (s >> 2))) & _MASK63
    return s


def append_csv_row(path: str | os.PathLike, row: dict[str, Any], fieldnames: list[str]) -> None:
    """Append one row to the CSV file ``path``, writing the header first if the file is new.

    The incremental store of long jobs: each finished item is on disk before the next starts, so a
    crash loses at most the item in progress. Keys of ``row`` not in ``fieldnames`` are ignored.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "rows.csv"
        >>> append_csv_row(p, {"a": 1, "b": 2, "extra": 0}, ["a", "b"]); append_csv_row(p, {"a": 3, "b": 4}, ["a", "b"])
        >>> p.read_text().splitlines()
        ['a,b', '1,2', '3,4']
    """
    new = not os.path.isfile(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)
