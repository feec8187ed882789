"""Quantisers: round-trip error bounds, unbiased stochastic rounding, exact Householder
reconstruction, variance ordering, bad settings."""

from __future__ import annotations

import pytest
import torch

from medrobust.core.quantization import (
    apply_householder_blocks,
    bhq,
    check_bits,
    fake_quantize,
    gradient_quantizer,
    householder_blocks,
    psq,
    ptq,
    quantize_rows,
    stochastic_round,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _heavy_rows(n: int = 16, d: int = 300, seed: int = 0) -> torch.Tensor:
    """Rows of very different ranges (as output gradients are): one row 100x the others."""
    g = torch.randn(n, d, generator=_gen(seed)) * torch.logspace(-2, 0, n)[:, None]
    g[3] *= 100.0
    return g


@pytest.mark.parametrize("bits", [2, 4, 5, 8, 12])
@pytest.mark.parametrize("per_row", [False, True])
def test_round_trip_error_bounds(bits, per_row):
    x = torch.randn(6, 40, generator=_gen(1)) * 3
    levels = 2**bits - 1
    rng = (x.amax(1, keepdim=True) - x.amin(1, keepdim=True)) if per_row else (x.max() - x.min())
    det = quantize_rows(x, bits, per_row=per_row, stochastic=False)
    sto = quantize_rows(x, bits, per_row=per_row, stochastic=True, generator=_gen(2))
    assert bool(((det - x).abs() <= rng / levels / 2 + 1e-5).all())
    assert bool(((sto - x).abs() < rng / levels + 1e-5).all())
    # quantised values lie on the 2**bits-level grid of each range
    lo = x.amin(1, keepdim=True) if per_row else x.min()
    for q in (det, sto):
        k = (q - lo) / rng * levels
        assert torch.allclose(k, k.round(), atol=1e-3)
        assert int(k.round().unique().numel()) <= 2**bits * (x.shape[0] if per_row else 1)


def test_fake_quantize_per_tensor_and_straight_through():
    x = torch.linspace(-1, 3, 101).reshape(1, 101).repeat(2, 1).requires_grad_(True)
    y = fake_quantize(x, 3)
    assert y.unique().numel() == 8
    w = torch.randn(2, 101)
    (y * w).sum().backward()
    assert torch.equal(x.grad, w)


def test_constant_rows_are_exact():
    x = torch.ones(3, 5) * torch.tensor([[1.0], [2.0], [-4.0]])
    for f in (ptq, psq, bhq):
        assert torch.equal(f(x[:1], 4, generator=_gen()), x[:1])
    assert torch.equal(psq(x, 4, generator=_gen()), x)


@pytest.mark.parametrize("n", [256, 4096])
def test_stochastic_rounding_unbiased(n):
    x = torch.tensor([0.1, 0.5, 2.25, -1.7, 3.0])
    draws = stochastic_round(x.expand(n, -1), _gen(1))
    # Bernoulli(frac) per entry: std <= 0.5 / sqrt(n); 5 sigma tolerance shrinks with n
    assert bool(((draws.mean(0) - x).abs() <= 5 * 0.5 / (len(draws) ** 0.5)).all())
    assert bool(((draws - torch.floor(x)).abs() <= 1).all())


@pytest.mark.parametrize("quantizer", [ptq, psq, bhq])
def test_gradient_quantizers_unbiased(quantizer):
    g = _heavy_rows(8, 40)
    gen = _gen(3)
    errs = []
    for n in (32, 512):
        mean = torch.stack([quantizer(g, 4, generator=gen) for _ in range(n)]).mean(0)
        errs.append(float((mean - g).norm() / g.norm()))
    assert errs[1] < errs[0]  # converges
    assert errs[1] < 0.05


def test_householder_reconstruction_exact():
    g = _heavy_rows(12, 50).double()
    ranges = g.amax(1) - g.amin(1)
    for groups in (1, 2, 3, 6):
        blocks = householder_blocks(ranges, groups)
        assert sorted(torch.cat(blocks).tolist()) == sorted(set(torch.cat(blocks).tolist()))  # disjoint
        rotated = apply_householder_blocks(g, blocks)
        assert torch.allclose(apply_householder_blocks(rotated, blocks), g, atol=1e-12)  # Q^-1 = Q
        assert torch.allclose(rotated.T @ rotated, g.T @ g, atol=1e-9)  # orthogonal
    # the widest row is spread: its block's rows all get a smaller range than the widest had
    blocks = householder_blocks(ranges, 1)
    rotated = apply_householder_blocks(g, blocks)
    r = rotated.amax(1) - rotated.amin(1)
    assert float(r[blocks[0]].max()) < 0.6 * float(ranges.max())


@pytest.mark.parametrize("bits", [4, 8])
def test_variance_ordering(bits):
    g = _heavy_rows(16, 300)
    gen = _gen(4)
    var = {f.__name__: float(torch.stack([(f(g, bits, generator=gen) - g).pow(2).sum() for _ in range(40)]).mean())
           for f in (ptq, psq, bhq)}
    assert var["bhq"] <= var["psq"] <= var["ptq"]
    assert var["bhq"] < 0.5 * var["psq"]  # a dominant row is what BHQ is for


def test_reproducible_with_generator():
    g = _heavy_rows(6, 20)
    for f in (ptq, psq, bhq):
        assert torch.equal(f(g, 5, generator=_gen(7)), f(g, 5, generator=_gen(7)))


def test_gradient_shapes_3d():
    g = torch.randn(3, 4, 5, 6, 7, generator=_gen())
    for f in (ptq, psq, bhq):
        assert f(g, 6, generator=_gen()).shape == g.shape


@pytest.mark.parametrize("bits", [1, 0, -3, 17, 2.5, "8", True, None])
def test_bad_bits_raise(bits):
    with pytest.raises(ValueError, match="bits must be an integer number of bits in"):
        check_bits(bits)
    with pytest.raises(ValueError, match="bits"):
        psq(torch.randn(2, 3), bits)


def test_unknown_quantizer_raises():
    with pytest.raises(ValueError, match="grad_quantizer must be one of"):
        gradient_quantizer("lsq")
