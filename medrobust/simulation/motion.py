"""TRUS-probe motion of the prostate: sampled materials and loading -> FE solution -> dense DDF.

One simulation: a box of surrounding tissue holding a stiffer ellipsoidal gland (materials per
element), a cylindrical probe posterior to the gland pushed anteriorly (its nodes displaced as a
rigid body), the anterior face held (pubic arch), the other faces free; then a random rigid
motion. World frame: RAS mm (nibabel), so anterior is +y and the probe axis runs roughly along z.

The result is a registration DDF on a fixed-image grid, in MONAI ``Warp``'s convention: for a
fixed voxel at world ``y``, ``ddf(y)`` points to where the same tissue sits in the moving
(undeformed, MR) image. The FE solution is a forward map ``X -> X + u(X)``, so each grid point is
inverted by Newton's method on the exact P1 interpolant.

Example:
    >>> import numpy as np
    >>> from medrobust.data.paired import Grid
    >>> grid = Grid((16, 16, 16), np.diag([4.0, 4.0, 4.0, 1.0]))
    >>> gland = Ellipsoid(centre=(30.0, 34.0, 30.0), semi_axes=(14.0, 10.0, 12.0))
    >>> p = sample_parameters(np.random.default_rng(0), gland)
    >>> simulate_ddf(p, grid).shape
    (3, 16, 16, 16)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from medrobust.data.paired import Grid
from medrobust.simulation.fem import BoxMesh, element_jacobian_determinants, solve_linear_elasticity

__all__ = [
    "probe_frame",
    "Ellipsoid",
    "SimulationParams",
    "SimulationRanges",
    "fit_ellipsoid",
    "sample_parameters",
    "rotation_matrix",
    "simulate_displacement",
    "simulate_ddf",
]

logger = logging.getLogger(__name__)


def rotation_matrix(angles_deg: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """Rotation ``Rz @ Ry @ Rx`` from angles in degrees about x, y, z."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


_IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _axis_direction(affine: np.ndarray, spec: str, name: str) -> np.ndarray:
    spec = str(spec).strip()
    sign = -1.0 if spec.startswith("-") else 1.0
    try:
        axis = int(spec.lstrip("+-"))
    except ValueError:
        axis = -1
    if axis not in (0, 1, 2):
        raise ValueError(f"{name} must be an array axis '0', '1', '2' with an optional sign ('-2'), got {spec!r}.")
    col = np.asarray(affine, float)[:3, axis]
    return sign * col / np.linalg.norm(col)


def probe_frame(affine: np.ndarray, *, anterior_axis: str | None = None, axial_axis: str | None = None) -> np.ndarray:
    """The simulation frame ``(3, 3)``: columns lateral, anterior (probe push), probe axis, in world RAS.

    Args:
        affine: the image grid's voxel -> world (RAS mm) affine.
        anterior_axis: ``None`` takes anterior from the header (world +A, wherever the array axes
            point: a rotated or flipped affine is followed); ``"2"``, ``"-1"``, ... say that this
            signed array axis points anterior (the affine turns it into a world direction), for
            data whose header does not match the anatomy.
        axial_axis: the probe's long axis likewise (``None``: world +S made orthogonal to anterior,
            or, when anterior is nearly S/I, the array axis most orthogonal to it).

    Returns:
        An orthonormal right-handed matrix ``[lateral, anterior, axial]`` (columns).

    Example:
        >>> import numpy as np
        >>> probe_frame(np.eye(4)).round(3).tolist()
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        >>> probe_frame(np.eye(4), anterior_axis="2", axial_axis="-1")[:, 1].tolist()
        [0.0, 0.0, 1.0]
    """
    a = np.asarray(affine, float)
    if a.shape != (4, 4):
        raise ValueError(f"affine must be a 4 x 4 voxel -> world matrix, got shape {a.shape}.")
    ant = np.array([0.0, 1.0, 0.0]) if anterior_axis is None else _axis_direction(a, anterior_axis, "anterior_axis")
    if axial_axis is not None:
        candidates = [_axis_direction(a, axial_axis, "axial_axis")]
    else:
        lin = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0)
        candidates = [np.array([0.0, 0.0, 1.0])] + sorted(lin.T, key=lambda c: abs(c @ ant))
    axial = next((c for c in candidates if abs(c @ ant) < 0.9), None)
    if axial is None:
        raise ValueError(f"axial_axis {axial_axis!r} is (nearly) parallel to the anterior direction {ant.round(3).tolist()}.")
    axial = axial - (axial @ ant) * ant
    axial /= np.linalg.norm(axial)
    return np.stack([np.cross(ant, axial), ant, axial], axis=1)


@dataclass(frozen=True)
class Ellipsoid:
    """Gland model in world mm: ``centre``, ``semi_axes`` along the columns of ``rotation``."""

    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    rotation: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Bool ``(P,)`` for world points ``(P, 3)``."""
        local = (np.asarray(points, float) - np.asarray(self.centre)) @ np.asarray(self.rotation)
        return ((local / np.asarray(self.semi_axes)) ** 2).sum(axis=1) <= 1.0

    def extent(self, direction: np.ndarray) -> float:
        """Support function: distance from the centre to the surface's tangent plane along ``direction``."""
        d = np.asarray(self.rotation).T @ (np.asarray(direction, float) / np.linalg.norm(direction))
        return float(np.sqrt(((np.asarray(self.semi_axes) * d) ** 2).sum()))


def fit_ellipsoid(label: np.ndarray, affine: np.ndarray, *, threshold: float = 0.5) -> Ellipsoid:
    """Ellipsoid with the same centroid and second moments as a 3-D gland mask (a solid ellipsoid's
    covariance is ``R diag(a^2 / 5) R^T``).

    Args:
        label: ``(x, y, z)`` mask or soft label.
        affine: voxel -> world mm.

    Raises:
        ValueError: empty label or not 3-D.
    """
    if label.ndim != 3:
        raise ValueError(f"label must be 3-D (x, y, z), got shape {label.shape}.")
    idx = np.argwhere(label > threshold).astype(float)
    if len(idx) < 4:
        raise ValueError(f"label has {len(idx)} voxels above {threshold}: cannot fit a gland ellipsoid.")
    pts = idx @ affine[:3, :3].T + affine[:3, 3]
    centre = pts.mean(axis=0)
    evals, evecs = np.linalg.eigh(np.cov(pts.T))
    if np.linalg.det(evecs) < 0:
        evecs[:, 0] *= -1
    axes = np.sqrt(5.0 * np.maximum(evals, 1e-6))
    return Ellipsoid(tuple(map(float, centre)), tuple(map(float, axes)), tuple(map(tuple, evecs.tolist())))


@dataclass(frozen=True)
class SimulationParams:
    """Everything one simulation depends on (mm, kPa, degrees); hashable and JSON-serialisable."""

    gland: Ellipsoid
    young_tissue: float = 10.0
    young_gland: float = 30.0
    nu_tissue: float = 0.47
    nu_gland: float = 0.47
    probe_radius: float = 10.0
    probe_gap: float = 4.0
    probe_lateral_offset: float = 0.0
    probe_tilt_deg: tuple[float, float] = (0.0, 0.0)
    probe_displacement: tuple[float, float, float] = (0.0, 6.0, 0.0)
    rigid_rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rigid_translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    element_size: float = 8.0
    margin: float = 15.0
    min_element_det: float = 0.2
    frame: tuple[tuple[float, ...], ...] = _IDENTITY

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SimulationRanges:
    """Uniform sampling ranges ``(low, high)`` for :func:`sample_parameters`."""

    young_tissue: tuple[float, float] = (5.0, 15.0)
    stiffness_ratio: tuple[float, float] = (1.5, 5.0)
    nu: tuple[float, float] = (0.45, 0.49)
    probe_radius: tuple[float, float] = (8.0, 12.0)
    probe_gap: tuple[float, float] = (2.0, 6.0)
    probe_lateral_offset: tuple[float, float] = (-5.0, 5.0)
    probe_tilt_deg: tuple[float, float] = (-10.0, 10.0)
    probe_push: tuple[float, float] = (2.0, 10.0)
    probe_side_push: tuple[float, float] = (-2.0, 2.0)
    rotation_deg: tuple[float, float] = (-5.0, 5.0)
    translation: tuple[float, float] = (-5.0, 5.0)
    element_size: float = 8.0
    gland_scale: tuple[float, float] = field(default=(0.9, 1.1))


def sample_parameters(rng: np.random.Generator, gland: Ellipsoid, ranges: SimulationRanges | None = None, *,
                      frame: np.ndarray | None = None) -> SimulationParams:
    """Draw one simulation's materials, probe loading and rigid motion (gland stiffer, nu 0.45-0.49).

    ``frame``: :func:`probe_frame` of the image (default identity: anterior +y, probe axis +z in world).
    """
    r = ranges or SimulationRanges()

    def u(lohi: tuple[float, float], size: int | None = None):
        return rng.uniform(lohi[0], lohi[1], size)

    young_t = float(u(r.young_tissue))
    scale = float(u(r.gland_scale))
    return SimulationParams(
        gland=Ellipsoid(gland.centre, tuple(float(a * scale) for a in gland.semi_axes), gland.rotation),
        young_tissue=young_t,
        young_gland=young_t * float(u(r.stiffness_ratio)),
        nu_tissue=float(u(r.nu)),
        nu_gland=float(u(r.nu)),
        probe_radius=float(u(r.probe_radius)),
        probe_gap=float(u(r.probe_gap)),
        probe_lateral_offset=float(u(r.probe_lateral_offset)),
        probe_tilt_deg=tuple(float(v) for v in u(r.probe_tilt_deg, 2)),
        probe_displacement=(float(u(r.probe_side_push)), float(u(r.probe_push)), float(u(r.probe_side_push))),
        rigid_rotation_deg=tuple(float(v) for v in u(r.rotation_deg, 3)),
        rigid_translation=tuple(float(v) for v in u(r.translation, 3)),
        element_size=r.element_size,
        frame=_IDENTITY if frame is None else tuple(tuple(float(v) for v in row) for row in np.asarray(frame, float)),
    )


def _grid_world_points(grid: Grid) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape], indexing="ij"), -1).reshape(-1, 3)
    return idx @ grid.affine[:3, :3].T + grid.affine[:3, 3]


def _probe_axis(p: SimulationParams) -> tuple[np.ndarray, np.ndarray]:
    direction = rotation_matrix((p.probe_tilt_deg[0], p.probe_tilt_deg[1], 0.0)) @ np.array([0.0, 0.0, 1.0])
    posterior = np.array([0.0, -1.0, 0.0])
    dist = p.gland.extent(posterior) + p.probe_gap + p.probe_radius
    point = np.asarray(p.gland.centre) + dist * posterior + np.array([p.probe_lateral_offset, 0.0, 0.0])
    return point, direction


def _to_frame(p: SimulationParams, grid: Grid) -> tuple[SimulationParams, Grid]:
    """Express the gland and the grid in ``p.frame`` coordinates (``local = F^T world``), frame reset to identity."""
    f = np.asarray(p.frame, float)
    if np.allclose(f, np.eye(3)):
        return p, grid
    if not np.allclose(f.T @ f, np.eye(3), atol=1e-6):
        raise ValueError(f"SimulationParams.frame must be orthonormal, got {f.round(4).tolist()}.")
    gland = Ellipsoid(tuple(float(v) for v in f.T @ np.asarray(p.gland.centre)), p.gland.semi_axes,
                      tuple(tuple(float(v) for v in row) for row in f.T @ np.asarray(p.gland.rotation)))
    aff = np.eye(4)
    aff[:3, :3], aff[:3, 3] = f.T @ grid.affine[:3, :3], f.T @ grid.affine[:3, 3]
    return replace(p, gland=gland, frame=_IDENTITY), Grid(grid.shape, aff)


def simulate_displacement(p: SimulationParams, grid: Grid) -> tuple[BoxMesh, np.ndarray]:
    """Solve the probe loading on a box covering ``grid`` (plus ``margin``) and the probe.

    Runs in the coordinates of ``p.frame`` (identity: world); :func:`simulate_ddf` does the change of frame.

    Returns the mesh and the nodal displacement ``(3, n_nodes)`` mm, scaled down if needed so that
    no element's ``det(I + grad u)`` falls below ``p.min_element_det`` (the linear model is only
    meaningful without element inversion).
    """
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in grid.shape], indexing="ij")).reshape(3, -1).T
    world = corners @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    axis_point, axis_dir = _probe_axis(p)
    lo = np.minimum(world.min(0), axis_point - p.probe_radius) - p.margin
    hi = np.maximum(world.max(0), axis_point + p.probe_radius) + p.margin
    shape = tuple(int(max(2, np.ceil((h - lo_) / p.element_size) + 1)) for lo_, h in zip(lo, hi))
    box = BoxMesh(tuple(lo), tuple(hi), shape)
    nodes = box.points.T
    in_gland = p.gland.contains(box.element_centroids.T)
    young = np.where(in_gland, p.young_gland, p.young_tissue)
    nu = np.where(in_gland, p.nu_gland, p.nu_tissue)
    rel = nodes - axis_point
    dist_axis = np.linalg.norm(rel - np.outer(rel @ axis_dir, axis_dir), axis=1)
    probe = dist_axis <= p.probe_radius
    if not probe.any():  # coarse mesh: take the nodes closest to the axis
        probe = dist_axis <= dist_axis.min() + 1e-6
    fixed = np.zeros((3, len(nodes)), bool)
    values = np.zeros((3, len(nodes)))
    anterior = np.isclose(nodes[:, 1], hi[1])
    fixed[:, anterior] = True
    fixed[:, probe] = True
    values[:, probe] = np.asarray(p.probe_displacement)[:, None]
    u = solve_linear_elasticity(box, young, nu, fixed, values)
    scale = 1.0
    if element_jacobian_determinants(box, u).min() < p.min_element_det:
        lo_s, hi_s = 0.0, 1.0  # bisection on the load factor (the problem is linear in the load)
        for _ in range(30):
            mid = (lo_s + hi_s) / 2
            if element_jacobian_determinants(box, mid * u).min() >= p.min_element_det:
                lo_s = mid
            else:
                hi_s = mid
        scale = lo_s
        logger.debug("probe load scaled by %.3f to keep elements from inverting", scale)
    return box, scale * u


def simulate_ddf(p: SimulationParams, grid: Grid, *, newton_steps: int = 20, tol: float = 1e-4) -> np.ndarray:
    """Dense registration DDF on ``grid`` for one simulation: ``(3, *grid.shape)`` float32, voxel units.

    Tissue at moving-image point ``X`` appears in the fixed image at
    ``y = R (X + u(X) - c) + c + t`` (``c`` the gland centre); for every fixed voxel ``y`` we solve
    ``X + u(X) = R^T (y - c - t) + c`` by Newton's method and return ``X - y`` in voxel units.
    All of it runs in ``p.frame`` (lateral, anterior, probe axis); the voxel DDF does not depend on
    the frame's coordinates, only on the directions it gives the probe.
    """
    p, grid = _to_frame(p, grid)
    y = _grid_world_points(grid)
    c = np.asarray(p.gland.centre)
    rot = rotation_matrix(p.rigid_rotation_deg)
    z = (y - c - np.asarray(p.rigid_translation)) @ rot + c  # row-vector form of R^T (y - c - t)
    box, u = simulate_displacement(p, grid)
    x = z.copy()
    for _ in range(newton_steps):
        val, grad = box.interpolate(u, x, gradient=True)
        resid = x + val - z
        if np.abs(resid).max() < tol:
            break
        jac = grad + np.eye(3)
        x = x - np.linalg.solve(jac, resid[..., None])[..., 0]
    ddf_world = (x - y).T.reshape(3, *grid.shape)
    lin_inv = np.linalg.inv(grid.affine[:3, :3])
    return np.einsum("ij,j...->i...", lin_inv, ddf_world).astype(np.float32)
