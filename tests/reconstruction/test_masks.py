from __future__ import annotations

import numpy as np
import pytest
import torch

from medrobust.reconstruction.masks import FASTMRI_CENTER_FRACTIONS, ColumnMask, center_columns, undersampling_mask


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", ["random", "equispaced"])
@pytest.mark.parametrize("acc", [4, 8])
@pytest.mark.parametrize("width", [96, 128, 160, 257, 368])
def test_exact_acceleration_and_centre(kind, acc, width):
    cf = FASTMRI_CENTER_FRACTIONS[acc]
    for seed in range(5):
        m = undersampling_mask(width, acceleration=acc, kind=kind, generator=_gen(seed))
        assert m.shape == (1, 1, 1, width, 1) and m.dtype == torch.float32
        cols = m.reshape(-1)
        assert set(cols.unique().tolist()) <= {0.0, 1.0}
        assert int(cols.sum()) == round(width / acc)
        start, stop = center_columns(width, cf)
        assert stop - start == round(width * cf)
        assert bool(cols[start:stop].all())


def test_equispaced_is_evenly_spaced_outside_centre():
    m = undersampling_mask(256, acceleration=4, kind="equispaced", generator=_gen(0)).reshape(-1)
    start, stop = center_columns(256, 0.08)
    outer = torch.cat([m[:start], m[stop:]])
    gaps = np.diff(np.flatnonzero(outer.numpy()))
    assert gaps.max() - gaps.min() <= 1


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_reproducible_and_global_rng_untouched(kind, exact):
    torch.manual_seed(123)
    np.random.seed(7)
    t_state, n_state = torch.get_rng_state().clone(), np.random.get_state()[1].copy()
    a = undersampling_mask(128, acceleration=4, kind=kind, exact=exact, generator=_gen(5))
    b = undersampling_mask(128, acceleration=4, kind=kind, exact=exact, generator=_gen(5))
    assert torch.equal(a, b)
    sampler = ColumnMask(acceleration=8, kind=kind, exact=exact, seed=2)
    draws = [sampler(128) for _ in range(6)]
    again = ColumnMask(acceleration=8, kind=kind, exact=exact, seed=2)
    assert all(torch.equal(d, again(128)) for d in draws)
    if kind == "random":
        assert any(not torch.equal(draws[0], d) for d in draws[1:])  # the sampler advances
    undersampling_mask(128, acceleration=4, kind=kind, exact=exact)  # unseeded
    assert torch.equal(torch.get_rng_state(), t_state)
    assert np.array_equal(np.random.get_state()[1], n_state)


@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_monai_mode_matches_monai_transform(kind):
    from monai.apps.reconstruction.transforms.array import EquispacedKspaceMask, RandomKspaceMask

    gen = _gen(9)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=_gen(9)))
    cls = RandomKspaceMask if kind == "random" else EquispacedKspaceMask
    t = cls(center_fractions=[0.04], accelerations=[8])
    t.set_random_state(seed=seed)
    t(torch.zeros(1, 1, 1, 200, 2))
    ours = undersampling_mask(200, acceleration=8, kind=kind, exact=False, generator=gen)
    assert torch.equal(ours.reshape(-1), torch.as_tensor(t.mask).reshape(-1).float())
    start, stop = center_columns(200, 0.04)
    assert bool(ours.reshape(-1)[start:stop].all())


def test_shapes_and_broadcast():
    m3 = undersampling_mask(20, acceleration=4, center_fraction=0.1, spatial_dims=3, generator=_gen(0))
    assert m3.shape == (1, 1, 1, 1, 20, 1)
    k = torch.randn(2, 3, 8, 6, 20, 2)
    assert (k * m3).shape == k.shape
    m2 = undersampling_mask(20, acceleration=4, center_fraction=0.1, generator=_gen(0))
    assert (torch.randn(2, 3, 8, 20, 2) * m2).shape == (2, 3, 8, 20, 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(width=1, acceleration=4), "width"),
    (dict(width=64, acceleration=0.5), "acceleration"),
    (dict(width=64, acceleration=4, center_fraction=1.5), "center_fraction"),
    (dict(width=64, acceleration=4, kind="radial"), "kind"),
    (dict(width=64, acceleration=6), "no fastMRI centre fraction"),
    (dict(width=64, acceleration=8, center_fraction=0.5), "more than"),
])
def test_bad_arguments(kwargs, match):
    width = kwargs.pop("width")
    with pytest.raises(ValueError, match=match):
        undersampling_mask(width, **kwargs)
