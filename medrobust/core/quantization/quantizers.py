"""Uniform quantisers for fully quantised training (Chen et al., NeurIPS 2020, "A Statistical
Framework for Low-bitwidth Training of Deep Neural Networks").

Forward (QAT) quantiser: :func:`fake_quantize` rounds a tensor to ``2**bits`` uniform levels
between its min and max (one scale per tensor, deterministic rounding) and passes the gradient
straight through (identity STE: the min-max range never clips).

Gradient quantisers act on the output gradient viewed as a matrix ``(N, D)`` (one row per
sample) and always round stochastically, so ``E[Q(g)] = g``:

- :func:`ptq` per-tensor: one range for the whole matrix.
- :func:`psq` per-sample: one range per row.
- :func:`bhq` block Householder: rows sorted by range; each of the ``G`` widest rows leads a
  block of narrow rows; the leader is scaled down (cube-root rule) and a Householder reflection
  ``Q = I - 2 v v^T`` (``v ~ e1 - 1/sqrt(s)``) spreads it evenly over its block before per-row
  quantisation; both are undone after (``Q^-1 = Q``). ``G`` (0 = PSQ) is chosen per call to
  minimise the variance bound.

Hand-written because no maintained library ships unbiased stochastic gradient quantisers
(brevitas and torchao quantise the forward pass; the authors' StatQuant is research code).

Example:
    >>> import torch
    >>> g = torch.randn(8, 50)
    >>> q = bhq(g, bits=4, generator=torch.Generator().manual_seed(0))
    >>> q.shape
    torch.Size([8, 50])
    >>> bool((fake_quantize(g, bits=8) - g).abs().max() <= (g.max() - g.min()) / 255 / 2 + 1e-6)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "check_bits",
    "stochastic_round",
    "quantize_rows",
    "fake_quantize",
    "ptq",
    "psq",
    "bhq",
    "householder_blocks",
    "apply_householder_blocks",
    "leader_scales",
    "GRADIENT_QUANTIZERS",
    "gradient_quantizer",
]


def check_bits(bits: int, name: str = "bits") -> int:
    """``bits`` as an int; raises ``ValueError`` unless it is an integer in ``[2, 16]``."""
    if isinstance(bits, bool) or not isinstance(bits, (int, float)) or int(bits) != bits or not 2 <= int(bits) <= 16:
        raise ValueError(f"{name} must be an integer number of bits in [2, 16], got {bits!r}.")
    return int(bits)


def stochastic_round(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``floor(x + u)``, ``u ~ U[0, 1)``: rounds up with probability ``frac(x)``, so ``E = x``."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.floor(x + u)


def quantize_rows(x: torch.Tensor, bits: int, *, per_row: bool, stochastic: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Quantise-dequantise ``x`` ``(N, D)`` on ``2**bits`` levels between min and max, per row or per tensor.

    Constant rows (zero range) are returned exactly. Deterministic rounding errs by at most
    ``range / (2 (2**bits - 1))``; stochastic by less than ``range / (2**bits - 1)``, unbiased.
    """
    levels = 2 ** check_bits(bits) - 1
    if per_row:
        lo = x.amin(dim=1, keepdim=True)
        rng = x.amax(dim=1, keepdim=True) - lo
    else:
        lo, rng = x.min(), x.max() - x.min()
    scale = torch.where(rng > 0, levels / rng.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(rng))
    z = (x - lo) * scale
    q = stochastic_round(z, generator) if stochastic else torch.round(z)
    q = q.clamp(0, levels)
    return torch.where(scale > 0, q / scale.clamp_min(torch.finfo(x.dtype).tiny) + lo, x)


class _RoundSTE(torch.autograd.Function):
    """Per-tensor deterministic quantisation forward, identity backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bits: int) -> torch.Tensor:  # type: ignore[override]
        return quantize_rows(x.detach().reshape(1, -1), bits, per_row=False, stochastic=False).reshape(x.shape)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return g, None


def fake_quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """QAT quantiser: per-tensor min-max, deterministic rounding, straight-through gradient.

    Args:
        x: any shape.
        bits: levels ``2**bits`` (2-16).

    Returns:
        Quantised-dequantised tensor, same shape and dtype; ``d out / d x = 1``.
    """
    return _RoundSTE.apply(x, check_bits(bits))


def _as_matrix(g: torch.Tensor) -> torch.Tensor:
    if g.ndim == 0:
        return g.reshape(1, 1)
    return g.reshape(g.shape[0], -1)


def ptq(g: torch.Tensor, bits: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-tensor stochastic quantisation of ``g`` ``(N, *)`` (unbiased)."""
    return quantize_rows(_as_matrix(g), bits, per_row=False, stochastic=True, generator=generator).reshape(g.shape)


def psq(g: torch.Tensor, bits: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample stochastic quantisation: one range per row ``g[i]`` of ``g`` ``(N, *)`` (unbiased)."""
    return quantize_rows(_as_matrix(g), bits, per_row=True, stochastic=True, generator=generator).reshape(g.shape)


def householder_blocks(ranges: torch.Tensor, groups: int) -> list[torch.Tensor]:
    """Row groups for BHQ: the ``groups`` widest rows each lead a block of narrow rows.

    The narrow rows are dealt to the blocks in proportion to the leading rows' ranges (a wider
    leading row gets more rows to spread over), every block keeping at least its leader.

    Args:
        ranges: ``(N,)`` per-row ranges (max - min).
        groups: number of blocks, ``0 <= groups <= N``.

    Returns:
        Index tensors, one per block of size >= 2, leading row first (blocks of one row are
        dropped: they need no reflection).
    """
    n = ranges.numel()
    order = torch.argsort(ranges, descending=True)
    if groups <= 0 or n < 2:
        return []
    groups = min(groups, n // 2)
    lead, rest = order[:groups], order[groups:]
    weight = ranges[lead].double().clamp_min(0)
    share = weight / weight.sum() if float(weight.sum()) > 0 else torch.full_like(weight, 1.0 / groups)
    counts = torch.floor(share * rest.numel()).long()
    # hand the remainder to the widest leaders so that every narrow row is used once
    remainder = rest.numel() - int(counts.sum())
    counts[:remainder] += 1
    blocks, start = [], 0
    for i in range(groups):
        c = int(counts[i])
        if c > 0:
            blocks.append(torch.cat([lead[i:i + 1], rest[start:start + c]]))
        start += c
    return blocks


def apply_householder_blocks(x: torch.Tensor, blocks: list[torch.Tensor]) -> torch.Tensor:
    """``Q x`` for the block-diagonal reflection: within each block ``Q = I - 2 v v^T`` with
    ``v = (e1 - 1/sqrt(s)) / ||.||`` maps the leading row onto the uniform direction. ``Q`` is
    symmetric and orthogonal, so applying it twice returns ``x`` (exactly, up to rounding).

    Args:
        x: ``(N, D)``.
        blocks: from :func:`householder_blocks`.

    Returns:
        ``(N, D)``; rows outside every block are unchanged.
    """
    if not blocks:
        return x.clone()
    n = x.shape[0]
    v = torch.zeros(n, dtype=x.dtype, device=x.device)
    block_of = torch.zeros(n, dtype=torch.long, device=x.device)
    for b, idx in enumerate(blocks):
        s = idx.numel()
        vb = torch.full((s,), -1.0 / math.sqrt(s), dtype=x.dtype, device=x.device)
        vb[0] += 1.0
        v[idx] = vb / vb.norm()
        block_of[idx] = b
    # Q x = x - 2 v (v^T x) per block, all blocks at once: block sums of v_r x_r via index_add
    sums = torch.zeros(len(blocks), x.shape[1], dtype=x.dtype, device=x.device)
    sums.index_add_(0, block_of, v[:, None] * x)
    return x - 2.0 * v[:, None] * sums[block_of]


def _row_ranges(x: torch.Tensor) -> torch.Tensor:
    return x.amax(dim=1) - x.amin(dim=1)


def leader_scales(ranges: torch.Tensor, blocks: list[torch.Tensor]) -> torch.Tensor:
    """Row scales ``a`` ``(N,)`` applied before the reflection: 1 except each block's leading row.

    With leader range ``l1``, block size ``s`` and widest follower range ``l2``, the variance bound
    ``(t l1 / sqrt(s) + l2)^2 (1 / t^2 + s - 1)`` of the block is smallest at
    ``t = (l2 sqrt(s) / (l1 (s - 1)))^(1/3)`` (the paper's cube-root rule): the leader is shrunk so
    that, once spread over its block, it no longer dominates the followers' quantisation range.
    """
    a = torch.ones_like(ranges, dtype=torch.float64)
    for idx in blocks:
        s = idx.numel()
        l1 = float(ranges[idx[0]])
        l2 = max(float(ranges[idx[1:]].max()), 1e-6 * l1)
        if l1 > 0:
            a[idx[0]] = (l2 * math.sqrt(s) / (l1 * (s - 1))) ** (1.0 / 3.0)
    return a


def _bhq_variance_bound(rotated: torch.Tensor, a: torch.Tensor, blocks: list[torch.Tensor]) -> float:
    """``sum_k range_k^2 * sum_i Q_ik^2 / a_i^2``: the per-row stochastic-rounding variance bound of
    the rotated rows carried back through ``diag(1/a) Q`` (up to the common factor ``D / (4 L^2)``)."""
    r2 = _row_ranges(rotated).double() ** 2
    back = torch.ones_like(r2)
    for idx in blocks:
        s = idx.numel()
        # Q e1 = 1/sqrt(s) and Q is symmetric, so Q_1k^2 = 1/s for every k of the block
        back[idx] = (1.0 / s) / float(a[idx[0]]) ** 2 + (1.0 - 1.0 / s)
    return float((r2 * back).sum())


def bhq(g: torch.Tensor, bits: int, *, generator: torch.Generator | None = None,
        max_groups: int | None = None) -> torch.Tensor:
    """Block Householder stochastic quantisation of ``g`` ``(N, *)`` (unbiased).

    Transform ``T = Q diag(a)``: each block's leading (widest) row is scaled by
    :func:`leader_scales` and reflected onto the uniform direction of its block; the rows of
    ``T g`` are quantised with per-row ranges and stochastic rounding; ``T^-1 = diag(1/a) Q``
    maps back. Exact before rounding, so ``E[bhq(g)] = g``.

    Args:
        g: gradient, rows = samples.
        bits: 2-16.
        generator: stochastic-rounding generator.
        max_groups: largest number of blocks tried (default ``N // 2``); of 0 (plain PSQ) and the
            powers of two up to it, the number of blocks with the smallest variance bound is used.

    Returns:
        Same shape as ``g``; its variance bound is never above PSQ's.
    """
    m = _as_matrix(g)
    n = m.shape[0]
    check_bits(bits)
    ranges = _row_ranges(m)
    best_cost = float((ranges.double() ** 2).sum())
    best: tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]] = (m, None, [])
    limit = n // 2 if max_groups is None else min(int(max_groups), n // 2)
    candidates = sorted({2**k for k in range(int(math.log2(limit)) + 1)} | {limit}) if limit >= 1 else []
    for groups in candidates:
        blocks = householder_blocks(ranges, groups)
        if not blocks:
            continue
        a = leader_scales(ranges, blocks)
        rotated = apply_householder_blocks(m * a.to(m.dtype)[:, None], blocks)
        cost = _bhq_variance_bound(rotated, a, blocks)
        if cost < best_cost:
            best_cost, best = cost, (rotated, a, blocks)
    rotated, a, blocks = best
    q = quantize_rows(rotated, bits, per_row=True, stochastic=True, generator=generator)
    if a is None:
        return q.reshape(g.shape)
    return (apply_householder_blocks(q, blocks) / a.to(m.dtype)[:, None]).reshape(g.shape)


GRADIENT_QUANTIZERS: dict[str, Callable[..., torch.Tensor]] = {"ptq": ptq, "psq": psq, "bhq": bhq}


def gradient_quantizer(name: str) -> Callable[..., torch.Tensor]:
    """The gradient quantiser called ``name`` (``"ptq"``, ``"psq"`` or ``"bhq"``)."""
    key = str(name).lower()
    if key not in GRADIENT_QUANTIZERS:
        raise ValueError(f"grad_quantizer must be one of {sorted(GRADIENT_QUANTIZERS)}, got {name!r}.")
    return GRADIENT_QUANTIZERS[key]
