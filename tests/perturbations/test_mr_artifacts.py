"""What each MR artefact family does beyond the shared contract (tests/perturbations/test_family_properties.py)."""

from __future__ import annotations

import torch

from medrobust.perturbations.mr_artifacts import mr_bias_field, mr_ghosting, mr_motion, mr_spike
from medrobust.perturbations.registry import PerturbationContext


def _phantom(shape=(2, 1, 32, 32, 12)) -> torch.Tensor:
    x = torch.zeros(shape)
    depth = (slice(3, 9),) if len(shape) == 5 else ()
    inner = (slice(4, 8),) if len(shape) == 5 else ()
    x[(slice(None), slice(None), slice(8, 24), slice(10, 22), *depth)] = 0.6
    x[(slice(None), slice(None), slice(14, 18), slice(14, 18), *inner)] = 0.9
    return x


def _ctx(n: int) -> PerturbationContext:
    return PerturbationContext.from_seeds(list(range(n)))


def test_bias_field_is_smooth_and_multiplicative() -> None:
    x = _phantom()
    y = mr_bias_field(x, 0.3, _ctx(2))
    inside = x > 0
    ratio = y[inside] / x[inside]
    assert float(ratio.min()) > 0.2 and float(ratio.std()) > 1e-3
    assert torch.equal(y[~inside], x[~inside])  # zero stays zero under a multiplicative field


def test_ghosting_moves_signal_outside_the_object() -> None:
    x = _phantom((2, 1, 32, 32)) + 0.3  # grey background: TorchIO's ghosts here are darker copies
    y = mr_ghosting(x, 0.8, _ctx(2))
    outside = x == 0.3
    assert float(((y - x)[outside].abs() > 0.01).float().mean()) > 0.05


def test_spike_adds_a_periodic_pattern() -> None:
    x = _phantom((2, 1, 32, 32))
    y = mr_spike(x, 0.5, _ctx(2))
    diff = (y - x)[0, 0]
    spec = torch.fft.fft2(diff).abs()
    spec[0, 0] = 0
    assert float(spec.max()) > 5 * float(spec.mean())  # energy concentrated at the spike frequency


def test_motion_2d_stays_in_plane_and_is_seeded() -> None:
    x = _phantom((2, 1, 32, 32))
    a = mr_motion(x, 1.0, _ctx(2))
    b = mr_motion(x, 1.0, PerturbationContext.from_seeds([5, 6]))
    assert a.shape == x.shape and not torch.equal(a, b)
    assert float((a - x).abs().mean()) > 1e-3
