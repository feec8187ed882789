"""FE solver: the textbook uniaxial-compression solution, exact P1 evaluation, input checks."""

from __future__ import annotations

import numpy as np
import pytest
from skfem import Basis, ElementTetP1

from medrobust.simulation.fem import BoxMesh, element_jacobian_determinants, solve_linear_elasticity


def _uniaxial(box: BoxMesh, strain: float, young, nu):
    p = box.points
    length = box.hi[2]
    fixed = np.zeros_like(p, dtype=bool)
    values = np.zeros_like(p)
    fixed[0, np.isclose(p[0], 0)] = True  # symmetry rollers on x = 0, y = 0, z = 0
    fixed[1, np.isclose(p[1], 0)] = True
    fixed[2, np.isclose(p[2], 0)] = True
    top = np.isclose(p[2], length)
    fixed[2, top] = True
    values[2, top] = strain * length
    return solve_linear_elasticity(box, young, nu, fixed, values)


@pytest.mark.parametrize("nu", [0.3, 0.45, 0.49])
def test_uniaxial_compression_matches_analytic_displacement(nu):
    box = BoxMesh((0.0, 0.0, 0.0), (20.0, 30.0, 40.0), (4, 5, 6))
    strain = -0.05
    u = _uniaxial(box, strain, 12.0, nu)
    x, y, z = box.points
    analytic = np.stack([-nu * strain * x, -nu * strain * y, strain * z])  # u_z linear in z, lateral -nu*strain
    np.testing.assert_allclose(u, analytic, atol=1e-9)
    dets = element_jacobian_determinants(box, u)
    np.testing.assert_allclose(dets, (1 + strain) * (1 - nu * strain) ** 2, rtol=1e-9)


def test_homogeneous_answer_does_not_depend_on_stiffness_scale():
    box = BoxMesh((0.0, 0.0, 0.0), (10.0, 10.0, 10.0), (3, 3, 4))
    ne = box.mesh.t.shape[1]
    a = _uniaxial(box, -0.1, np.full(ne, 5.0), 0.45)
    b = _uniaxial(box, -0.1, np.full(ne, 500.0), 0.45)
    np.testing.assert_allclose(a, b, atol=1e-9)


def test_stiff_inclusion_deforms_less():
    box = BoxMesh((0.0, 0.0, 0.0), (40.0, 40.0, 40.0), (9, 9, 9))
    c = box.element_centroids
    inside = np.linalg.norm(c - 20.0, axis=0) < 10
    soft = _uniaxial(box, -0.1, 10.0, 0.45)
    stiff = _uniaxial(box, -0.1, np.where(inside, 100.0, 10.0), 0.45)
    strain = lambda u: np.abs(element_jacobian_determinants(box, u)[inside] - 1).mean()  # noqa: E731
    assert strain(stiff) < 0.5 * strain(soft)


def test_p1_interpolation_is_exact_and_matches_scikit_fem():
    box = BoxMesh((-5.0, 0.0, 2.0), (5.0, 8.0, 14.0), (4, 3, 5))
    rng = np.random.default_rng(0)
    nodal = rng.standard_normal((2, box.points.shape[1]))
    pts = rng.uniform([-5, 0, 2], [5, 8, 14], size=(200, 3))
    probes = Basis(box.mesh, ElementTetP1()).probes(pts.T)
    ours = box.interpolate(nodal, pts)
    np.testing.assert_allclose(ours, (probes @ nodal.T), atol=1e-12)
    # gradient of a linear field is its coefficient vector
    lin = np.array([[1.5, -2.0, 0.5]]) @ box.points
    _, grad = box.interpolate(lin, pts, gradient=True)
    np.testing.assert_allclose(grad[:, 0], np.tile([1.5, -2.0, 0.5], (200, 1)), atol=1e-12)


def test_kuhn_mesh_is_conforming_and_fills_the_box():
    box = BoxMesh((0.0, 0.0, 0.0), (2.0, 3.0, 4.0), (3, 4, 5))
    m = box.mesh
    assert m.t.shape[1] == 6 * 2 * 3 * 4
    vols = np.abs(element_jacobian_determinants(box, np.zeros_like(box.points)))
    p = m.p[:, m.t]
    edges = np.moveaxis(p[:, 1:] - p[:, :1], -1, 0)
    assert np.isclose(np.abs(np.linalg.det(edges)).sum() / 6, 24.0)
    assert np.allclose(vols, 1.0)


def test_bad_inputs_are_named():
    box = BoxMesh((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (2, 2, 2))
    free = np.zeros_like(box.points, dtype=bool)
    with pytest.raises(ValueError, match="at least one displacement"):
        solve_linear_elasticity(box, 1.0, 0.3, free, np.zeros_like(box.points))
    with pytest.raises(ValueError, match="poisson"):
        solve_linear_elasticity(box, 1.0, 0.5, ~free, np.zeros_like(box.points))
    with pytest.raises(ValueError, match="shape must be"):
        BoxMesh((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1, 2, 2))
