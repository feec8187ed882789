"""Probe-motion simulations: plausible, invertible (no folding), seeded, cached."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medrobust.core.metrics.registration import folding_percentage, jacobian_determinant
from medrobust.data.paired import Grid
from medrobust.simulation.bank import cache_key, fe_bank, simulate_many
from medrobust.simulation.motion import (
    Ellipsoid,
    SimulationParams,
    SimulationRanges,
    fit_ellipsoid,
    probe_frame,
    rotation_matrix,
    sample_parameters,
    simulate_ddf,
    simulate_displacement,
)

GRID = Grid((14, 16, 12), np.array([[-4.0, 0, 0, 30], [0, -4.0, 0, 30], [0, 0, 4.5, -25], [0, 0, 0, 1]]))  # flipped axes
GLAND = Ellipsoid((2.0, -1.0, 0.0), (14.0, 10.0, 12.0), tuple(map(tuple, rotation_matrix((10, 0, 20)).tolist())))
RANGES = SimulationRanges(element_size=10.0)


def _world(grid: Grid) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape], indexing="ij"), -1).reshape(-1, 3)
    return idx @ grid.affine[:3, :3].T + grid.affine[:3, 3]


@pytest.fixture(scope="module")
def sims():
    params = [sample_parameters(np.random.default_rng([3, i]), GLAND, RANGES) for i in range(3)]
    return params, np.stack([simulate_ddf(p, GRID) for p in params])


def test_simulated_ddfs_do_not_fold_and_move_tissue(sims):
    _, ddfs = sims
    ddf = torch.from_numpy(ddfs)
    assert ddf.shape == (3, 3, *GRID.shape)
    assert torch.equal(folding_percentage(ddf), torch.zeros(3, dtype=torch.float64))
    assert float(jacobian_determinant(ddf).min()) > 0.3
    mm = np.linalg.norm(np.einsum("ij,bj...->bi...", GRID.affine[:3, :3], ddfs), axis=1)
    assert (mm.max(axis=(1, 2, 3)) > 1.0).all() and (mm.max() < 40.0)


def test_ddf_inverts_the_forward_simulation(sims):
    params, ddfs = sims
    p = dataclasses.replace(params[0], rigid_rotation_deg=(0.0, 0.0, 0.0), rigid_translation=(0.0, 0.0, 0.0))
    ddf = simulate_ddf(p, GRID)
    box, u = simulate_displacement(p, GRID)
    y = _world(GRID)
    x = y + (np.einsum("ij,j...->i...", GRID.affine[:3, :3], ddf).reshape(3, -1).T)
    forward = x + box.interpolate(u, x)  # tissue at x moves to x + u(x): must land back on y
    assert np.abs(forward - y).max() < 1e-2


def test_probe_pushes_anteriorly_without_rigid_motion():
    p = SimulationParams(gland=GLAND, probe_displacement=(0.0, 6.0, 0.0), element_size=10.0)
    box, u = simulate_displacement(p, GRID)
    posterior_gland = np.asarray(GLAND.centre) - np.array([0.0, 0.8 * GLAND.extent(np.array([0.0, -1.0, 0.0])), 0.0])
    disp = box.interpolate(u, posterior_gland[None])[0]
    assert disp[1] > 1.0 and abs(disp[1]) > abs(disp[0]) and abs(disp[1]) > abs(disp[2])


def test_sampling_is_seeded_and_within_ranges():
    a = sample_parameters(np.random.default_rng(5), GLAND)
    b = sample_parameters(np.random.default_rng(5), GLAND)
    c = sample_parameters(np.random.default_rng(6), GLAND)
    assert a == b and a != c
    r = SimulationRanges()
    for p in (a, c):
        assert r.nu[0] <= p.nu_gland <= r.nu[1] and r.nu[0] <= p.nu_tissue <= r.nu[1]
        assert p.young_gland > p.young_tissue  # the gland is stiffer
        assert r.probe_push[0] <= p.probe_displacement[1] <= r.probe_push[1]


def test_fit_ellipsoid_recovers_axes():
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    idx = np.stack(np.meshgrid(*[np.arange(60)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(float)
    truth = Ellipsoid((30.0, 28.0, 31.0), (20.0, 12.0, 15.0), tuple(map(tuple, rotation_matrix((0, 0, 30)).tolist())))
    label = truth.contains(idx).reshape(60, 60, 60).astype(np.float32)
    fit = fit_ellipsoid(label, affine)
    np.testing.assert_allclose(fit.centre, truth.centre, atol=0.1)
    np.testing.assert_allclose(sorted(fit.semi_axes), sorted(truth.semi_axes), rtol=0.03)
    with pytest.raises(ValueError, match="cannot fit"):
        fit_ellipsoid(np.zeros((5, 5, 5)), affine)


def test_cache_and_prefix_consistency(tmp_path, sims):
    params, ddfs = sims
    first, p1 = simulate_many(GRID, [GLAND], n=1, seed=3, cache_dir=tmp_path, ranges=RANGES, progress=False)
    np.testing.assert_array_equal(first[0], ddfs[0])  # simulation i depends on (seed, i) only
    assert p1[0] == params[0]
    files = list(tmp_path.glob("*.npz"))
    assert [f.stem for f in files] == [cache_key(params[0], GRID)]
    again, _ = simulate_many(GRID, [GLAND], n=1, seed=3, cache_dir=tmp_path, ranges=RANGES, progress=False)
    np.testing.assert_array_equal(again, first)
    assert cache_key(params[0], GRID) != cache_key(params[1], GRID)


def test_fe_bank_per_case(tmp_path):
    lab = torch.from_numpy(GLAND.contains(_world(GRID)).reshape(1, *GRID.shape).astype(np.float32))
    items = [{"case_id": "a", "moving_label": lab, "affine": torch.from_numpy(GRID.affine)}]
    bank = fe_bank(items, n_per_case=2, seed=1, cache_dir=tmp_path, ranges=RANGES, progress=False)
    assert list(bank) == ["a"] and bank["a"].shape == (2, 3, *GRID.shape)
    with pytest.raises(ValueError, match="moving_label"):
        fe_bank([{"case_id": "b"}], n_per_case=1, seed=0, cache_dir=None, progress=False)
    with pytest.raises(ValueError, match="n must be"):
        simulate_many(GRID, [GLAND], n=0, seed=0, cache_dir=None)


def _push_ddf(grid: Grid, frame: np.ndarray) -> np.ndarray:
    centre = tuple(float(v) for v in _world(grid).mean(0))
    p = SimulationParams(gland=Ellipsoid(centre, (12.0, 9.0, 10.0)), probe_displacement=(0.0, 6.0, 0.0), element_size=10.0,
                         frame=tuple(map(tuple, frame.tolist())))
    return simulate_ddf(p, grid)


@pytest.mark.parametrize("anterior_axis", [None, "2"])
def test_probe_direction_follows_the_affine(anterior_axis):
    # a rotated header: array axis 2 runs world-anterior (+y), array axis 1 world-inferior (-z)
    rot = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    aff = np.eye(4)
    aff[:3, :3], aff[:3, 3] = rot * 4.0, (-30.0, -30.0, 30.0)
    grid = Grid((16, 14, 16), aff)
    frame = probe_frame(aff, anterior_axis=anterior_axis)
    np.testing.assert_allclose(frame[:, 1], [0.0, 1.0, 0.0], atol=1e-12)  # both say: anterior is world +y
    vox = _push_ddf(grid, frame)
    mean_abs = np.abs(vox).reshape(3, -1).mean(1)
    assert mean_abs.argmax() == 2  # the push runs along array axis 2, not axis 1
    world = np.einsum("ij,j...->i...", aff[:3, :3], vox)
    assert world[1].mean() < 0  # tissue moved anteriorly: fixed points map back posteriorly into the MR


def test_anterior_axis_overrides_an_identity_header():
    grid = Grid((16, 16, 16), np.diag([4.0, 4.0, 4.0, 1.0]))
    default = np.abs(_push_ddf(grid, probe_frame(grid.affine))).reshape(3, -1).mean(1)
    told = np.abs(_push_ddf(grid, probe_frame(grid.affine, anterior_axis="2"))).reshape(3, -1).mean(1)
    assert default.argmax() == 1 and told.argmax() == 2
    with pytest.raises(ValueError, match="anterior_axis must be"):
        probe_frame(grid.affine, anterior_axis="y")
    with pytest.raises(ValueError, match="parallel"):
        probe_frame(grid.affine, anterior_axis="2", axial_axis="-2")
