"""Linear-elastic finite elements on a structured tetrahedral box mesh (scikit-fem).

The mesh is a Kuhn (Freudenthal) triangulation of a regular node grid: every hexahedral cell is
split into 6 tetrahedra along its main diagonal. scikit-fem assembles and solves the problem
(``MeshTet``, ``ElementVector(ElementTetP1())``, ``linear_elasticity``, ``lame_parameters``,
``condense``, ``solve``); the known Kuhn structure lets us evaluate the P1 solution exactly at
millions of points with a few vectorised array operations (scikit-fem's generic
``Basis.probes`` locates points by search and took ~25 s for 18k points here).

Example:
    >>> box = BoxMesh(lo=(0, 0, 0), hi=(1, 1, 1), shape=(3, 3, 3))
    >>> box.mesh.t.shape
    (4, 48)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from skfem import Basis, ElementTetP1, ElementVector, MeshTet, asm, condense, solve
from skfem.models.elasticity import lame_parameters, linear_elasticity

__all__ = ["BoxMesh", "solve_linear_elasticity", "element_jacobian_determinants"]

_PERMS = tuple(itertools.permutations(range(3)))  # the 6 Kuhn tetrahedra of a cell


@dataclass(frozen=True)
class BoxMesh:
    """A regular ``shape`` node grid spanning ``[lo, hi]`` (mm) triangulated into Kuhn tetrahedra.

    Nodes are numbered C-order over ``(i, j, k)``; ``mesh`` is the scikit-fem ``MeshTet``.
    """

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or min(self.shape) < 2:
            raise ValueError(f"shape must be 3 node counts >= 2, got {self.shape}.")
        if any(h <= lo for lo, h in zip(self.lo, self.hi)):
            raise ValueError(f"hi must exceed lo on every axis, got lo={self.lo}, hi={self.hi}.")

    @property
    def step(self) -> np.ndarray:
        return (np.asarray(self.hi, float) - np.asarray(self.lo, float)) / (np.asarray(self.shape) - 1)

    @cached_property
    def points(self) -> np.ndarray:
        """Node coordinates ``(3, n_nodes)``."""
        axes = [np.linspace(a, b, n) for a, b, n in zip(self.lo, self.hi, self.shape)]
        return np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")])

    def _node(self, ijk: np.ndarray) -> np.ndarray:
        return np.ravel_multi_index(tuple(ijk), self.shape)

    @cached_property
    def mesh(self) -> MeshTet:
        cells = np.stack(np.meshgrid(*[np.arange(n - 1) for n in self.shape], indexing="ij")).reshape(3, -1)
        tets = []
        for perm in _PERMS:
            v = cells.copy()
            verts = [self._node(v)]
            for axis in perm:
                v = v.copy()
                v[axis] += 1
                verts.append(self._node(v))
            tets.append(np.stack(verts))
        return MeshTet(self.points, np.concatenate(tets, axis=1))

    @property
    def element_centroids(self) -> np.ndarray:
        """``(3, n_elements)`` tetrahedron centroids."""
        return self.mesh.p[:, self.mesh.t].mean(axis=1)

    def interpolate(
        self, nodal: np.ndarray, points: np.ndarray, *, gradient: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Evaluate a P1 field exactly at world points (outside the box: clamped onto its surface).

        Args:
            nodal: ``(K, n_nodes)`` nodal values.
            points: ``(P, 3)`` mm.
            gradient: also return the field's gradient ``(P, K, 3)`` (constant per tetrahedron).

        Returns:
            ``(P, K)`` values (and the gradient when asked).
        """
        shp = np.asarray(self.shape)
        s = (np.asarray(points, float) - np.asarray(self.lo, float)) / self.step
        s = np.clip(s, 0, shp - 1)
        cell = np.minimum(np.floor(s).astype(np.int64), shp - 2)
        frac = s - cell  # local coordinates in [0, 1]^3
        order = np.argsort(-frac, axis=1, kind="stable")  # the Kuhn tetrahedron holding the point
        sf = np.take_along_axis(frac, order, axis=1)
        weights = np.stack([1 - sf[:, 0], sf[:, 0] - sf[:, 1], sf[:, 1] - sf[:, 2], sf[:, 2]], axis=1)
        vals = np.zeros((len(s), nodal.shape[0]))
        corner = cell.copy()
        corner_vals = [nodal[:, self._node(corner.T)].T]
        for step in range(3):
            corner = corner.copy()
            corner[np.arange(len(s)), order[:, step]] += 1
            corner_vals.append(nodal[:, self._node(corner.T)].T)
        for w, cv in zip(weights.T, corner_vals):
            vals += w[:, None] * cv
        if not gradient:
            return vals
        grad = np.zeros((len(s), nodal.shape[0], 3))
        rows = np.arange(len(s))
        for step in range(3):  # d value / d s_{order[step]} = f_{step+1} - f_step
            grad[rows, :, order[:, step]] = (corner_vals[step + 1] - corner_vals[step]) / self.step[order[:, step]][:, None]
        return vals, grad


def solve_linear_elasticity(
    box: BoxMesh,
    young: np.ndarray,
    poisson: np.ndarray,
    fixed: np.ndarray,
    values: np.ndarray,
) -> np.ndarray:
    """Small-strain linear elasticity with prescribed displacements and zero body force.

    Args:
        box: the mesh.
        young: Young's modulus per element ``(n_elements,)`` (any consistent unit, e.g. kPa).
        poisson: Poisson's ratio per element ``(n_elements,)``, in (-1, 0.5).
        fixed: bool ``(3, n_nodes)``: which displacement components are prescribed.
        values: ``(3, n_nodes)`` prescribed values (mm) where ``fixed``.

    Returns:
        Nodal displacement ``(3, n_nodes)`` in mm.

    Raises:
        ValueError: bad shapes or material values, or no prescribed component (rigid modes free).
    """
    m = box.mesh
    ne, nn = m.t.shape[1], m.p.shape[1]
    young = np.broadcast_to(np.asarray(young, float), (ne,))
    poisson = np.broadcast_to(np.asarray(poisson, float), (ne,))
    if (young <= 0).any() or (poisson <= -1).any() or (poisson >= 0.5).any():
        raise ValueError("young must be > 0 and poisson in (-1, 0.5) for every element.")
    if fixed.shape != (3, nn) or values.shape != (3, nn):
        raise ValueError(f"fixed and values must be (3, {nn}), got {fixed.shape} and {values.shape}.")
    if not fixed.any():
        raise ValueError("fixed: at least one displacement must be prescribed (otherwise rigid motion is free).")
    element = ElementVector(ElementTetP1())
    stiffness = None
    # one assembly per distinct material (gland, surrounding tissue, ...), summed
    materials = np.stack([young, poisson], axis=1)
    for e_val, nu_val in np.unique(materials, axis=0):
        idx = np.nonzero((materials[:, 0] == e_val) & (materials[:, 1] == nu_val))[0]
        part = asm(linear_elasticity(*lame_parameters(e_val, nu_val)), Basis(m, element, elements=idx))
        stiffness = part if stiffness is None else stiffness + part
    basis = Basis(m, element)
    u = basis.zeros()
    dofs = basis.nodal_dofs  # (3, n_nodes): dof index of each component at each node
    u[dofs[fixed]] = values[fixed]
    u = solve(*condense(stiffness, x=u, D=dofs[fixed]))
    return u[dofs]


def element_jacobian_determinants(box: BoxMesh, nodal_displacement: np.ndarray) -> np.ndarray:
    """``det(I + grad u)`` on every tetrahedron (P1: constant per element) -> ``(n_elements,)``."""
    m = box.mesh
    p = m.p[:, m.t]  # (3, 4, ne)
    x = p + nodal_displacement[:, m.t]
    e_ref = p[:, 1:] - p[:, :1]  # (3, 3, ne) edge vectors
    e_def = x[:, 1:] - x[:, :1]
    return np.linalg.det(np.moveaxis(e_def, -1, 0)) / np.linalg.det(np.moveaxis(e_ref, -1, 0))
