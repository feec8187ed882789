"""Contract properties every natural / MR family must have, in 2-D and 3-D, batch > 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medrobust.perturbations.mr_artifacts  # noqa: F401  (registers the MR families)
import medrobust.perturbations.natural  # noqa: F401
from medrobust.perturbations.registry import PerturbationContext, get_family

NATURAL = ["gaussian_noise", "fourier_noise", "fourier_lowpass", "fourier_highpass", "gaussian_blur"]
MR = ["mr_motion", "mr_ghosting", "mr_spike", "mr_bias_field"]
RANDOM = {"gaussian_noise", "fourier_noise", "mr_motion", "mr_ghosting", "mr_spike", "mr_bias_field"}
SHAPES = {2: (3, 1, 24, 20), 3: (2, 1, 12, 10, 8)}


def _x(dims: int, bounds=(0.0, 1.0), dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    lo, hi = bounds
    x = torch.rand(SHAPES[dims], generator=g, dtype=dtype) * (hi - lo) + lo
    x[:, :, 4:8, 4:8] = hi  # some structure, not only noise
    return x


def _ctx(n: int, base: int = 0, bounds=(0.0, 1.0)) -> PerturbationContext:
    return PerturbationContext.from_seeds([base + i for i in range(n)], bounds=bounds)


def _strong(name: str) -> float:
    sev = get_family(name).severities
    return sev[len(sev) // 2 + 1]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", NATURAL + MR)
def test_identity_shape_bounds_determinism(name: str, dims: int) -> None:
    fam = get_family(name)
    x = _x(dims)
    before = x.clone()
    rng_state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    assert torch.equal(fam.apply(x, 0.0, _ctx(x.shape[0])), x)
    s = _strong(name)
    y = fam.apply(x, s, _ctx(x.shape[0]))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert not torch.allclose(y, x, atol=1e-3), f"{name} at severity {s} changed nothing"
    assert torch.equal(x, before), "input mutated"
    assert torch.equal(fam.apply(x, s, _ctx(x.shape[0])), y), "same seeds, different output"
    assert torch.equal(torch.get_rng_state(), rng_state), "global RNG used"
    assert np.array_equal(np.random.get_state()[1], np_state), "global numpy RNG used"
    # a sample alone equals its slice of the batch (per-sample generators)
    alone = fam.apply(x[1:2], s, PerturbationContext.from_seeds([1]))
    torch.testing.assert_close(alone, y[1:2], atol=1e-5, rtol=0)
    if name in RANDOM:
        other = fam.apply(x, s, _ctx(x.shape[0], base=100))
        assert not torch.equal(other, y), "the seed has no effect"


@pytest.mark.parametrize("name", NATURAL)
def test_other_bounds_and_float64(name: str) -> None:
    bounds = (-1000.0, 3000.0)  # CT-like range: nothing may assume [0, 1]
    x = _x(2, bounds, dtype=torch.float64)
    y = get_family(name).apply(x, _strong(name), _ctx(x.shape[0], bounds=bounds))
    assert y.dtype == torch.float64
    assert float(y.min()) >= bounds[0] and float(y.max()) <= bounds[1]
    assert float((y - x).abs().max()) > 1.0


@pytest.mark.parametrize("name", NATURAL)
def test_severity_grows_effect(name: str) -> None:
    x = _x(2)
    sev = [s for s in get_family(name).severities if s > 0]
    d = [float((get_family(name).apply(x, s, _ctx(3)) - x).abs().mean()) for s in (sev[0], sev[-1])]
    assert d[1] > d[0]


@pytest.mark.parametrize("name", NATURAL + MR)
def test_bad_input_raises(name: str) -> None:
    fam = get_family(name)
    with pytest.raises(ValueError, match="severity"):
        fam.apply(_x(2), -0.5, _ctx(3))
    with pytest.raises(ValueError, match="spatial dims"):
        fam.apply(torch.rand(2, 16, 16), 0.5, _ctx(2))
    with pytest.raises(TypeError, match="floating"):
        fam.apply(torch.ones(1, 1, 8, 8, dtype=torch.int64), 0.5, _ctx(1))


def test_registry_entries() -> None:
    for name in NATURAL + MR:
        fam = get_family(name)
        assert fam.severities[0] == 0.0 and list(fam.severities) == sorted(fam.severities)
        assert "severity" in fam.description
        assert not fam.needs_model
        assert fam.modalities == (("MR",) if name in MR else None)
    assert get_family("fourier_lowpass").severities == (0.0, 0.17, 0.22, 0.33, 0.5, 0.67, 1.0, 2.0, 4.0)


@pytest.mark.parametrize("dims", [2, 3])
def test_blur_fast_cpu_path_matches_monai(dims: int) -> None:
    """The scipy path (CPU, no autograd) and MONAI's separable_filtering give the same blur."""
    x = _x(dims)
    fast = get_family("gaussian_blur").apply(x, 1.5, _ctx(x.shape[0]))
    monai_path = get_family("gaussian_blur").apply(x.clone().requires_grad_(True), 1.5, _ctx(x.shape[0]))
    assert monai_path.requires_grad  # differentiable when asked
    torch.testing.assert_close(fast, monai_path.detach(), atol=1e-6, rtol=0)
