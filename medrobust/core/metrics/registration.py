"""Registration metrics in physical space: TRE in mm, Jacobian determinant, folding, HD95, Dice.

Conventions (the same everywhere in medrobust):

- A dense displacement field (DDF) is ``(B, N, *spatial)`` in **voxel units along the array
  axes** (MONAI ``Warp``'s convention): ``warped_moving(i) = moving(i + ddf(i))`` for a voxel
  index ``i`` of the fixed grid. Channel ``k`` displaces along array axis ``k``.
- ``affine`` maps a voxel index to a world point in mm (``(N+1, N+1)`` or ``(B, N+1, N+1)``), so it
  carries spacing *and* direction (a NIfTI/nibabel RAS affine, or an ITK LPS one: distances agree).
- Labels are ``(B, C, *spatial)``, soft or binary.

TRE is a distance between world points, never a voxel count: DeepReg and label-reg report
voxels, which mixes units as soon as the spacing is anisotropic or the direction not identity.

Example:
    >>> import torch
    >>> ddf = torch.zeros(2, 3, 8, 8, 8)
    >>> float(folding_percentage(ddf)[0])
    0.0
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.metrics import compute_dice, compute_hausdorff_distance

__all__ = [
    "as_batched_affine",
    "voxel_to_world",
    "world_to_voxel",
    "ddf_voxel_to_world",
    "ddf_world_to_voxel",
    "sample_ddf",
    "warp_points",
    "label_centroids",
    "point_distances",
    "tre_from_labels",
    "tre_from_points",
    "jacobian_matrix",
    "jacobian_determinant",
    "folding_percentage",
    "std_log_jacobian",
    "dice_score",
    "hd95",
]


def _check_ddf(ddf: torch.Tensor, name: str = "ddf") -> int:
    if not isinstance(ddf, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(ddf).__name__}.")
    n = ddf.ndim - 2
    if n not in (2, 3) or ddf.shape[1] != n:
        raise ValueError(
            f"{name} must be (B, N, *spatial) with N = number of spatial dims (2 or 3), got shape {tuple(ddf.shape)}."
        )
    return n


def as_batched_affine(affine: torch.Tensor, batch: int, ndim: int, *, like: torch.Tensor) -> torch.Tensor:
    """Return ``affine`` as ``(B, N+1, N+1)`` float64 on ``like``'s device (a single one is repeated)."""
    a = torch.as_tensor(affine, dtype=torch.float64, device=like.device)
    if a.ndim == 2:
        a = a.unsqueeze(0).expand(batch, -1, -1)
    if a.shape[-2:] != (ndim + 1, ndim + 1) or a.shape[0] not in (batch,):
        raise ValueError(f"affine must be ({ndim + 1}, {ndim + 1}) or ({batch}, {ndim + 1}, {ndim + 1}), got {tuple(a.shape)}.")
    return a


def voxel_to_world(points: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Voxel indices ``(B, P, N)`` -> world points in mm ``(B, P, N)`` through ``affine`` ``(B, N+1, N+1)``."""
    a = affine.to(points.dtype)
    return points @ a[:, :-1, :-1].transpose(1, 2) + a[:, None, :-1, -1]


def world_to_voxel(points: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """World points ``(B, P, N)`` in mm -> (fractional) voxel indices ``(B, P, N)``."""
    return voxel_to_world(points, torch.linalg.inv(affine.to(points.dtype)))


def ddf_voxel_to_world(ddf: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Voxel-unit DDF ``(B, N, *spatial)`` -> the same displacement as a world vector in mm."""
    n = _check_ddf(ddf)
    m = as_batched_affine(affine, ddf.shape[0], n, like=ddf)[:, :-1, :-1].to(ddf.dtype)
    return torch.einsum("bij,bj...->bi...", m, ddf)


def ddf_world_to_voxel(ddf_mm: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """World DDF in mm ``(B, N, *spatial)`` -> voxel units along the array axes (inverse of the above)."""
    n = _check_ddf(ddf_mm, "ddf_mm")
    m = as_batched_affine(affine, ddf_mm.shape[0], n, like=ddf_mm)[:, :-1, :-1]
    return torch.einsum("bij,bj...->bi...", torch.linalg.inv(m).to(ddf_mm.dtype), ddf_mm)


def sample_ddf(ddf: torch.Tensor, voxels: torch.Tensor) -> torch.Tensor:
    """Linearly interpolate a DDF ``(B, N, *spatial)`` at fractional voxel indices ``(B, P, N)``.

    Returns ``(B, P, N)`` (the DDF's units). Points outside the grid take the nearest border value.
    """
    n = _check_ddf(ddf)
    size = torch.tensor(ddf.shape[2:], dtype=voxels.dtype, device=voxels.device)
    norm = 2.0 * voxels / (size - 1).clamp(min=1) - 1.0  # align_corners=True: index 0 -> -1, n-1 -> +1
    grid = norm.flip(-1).reshape(ddf.shape[0], -1, *([1] * (n - 1)), n)  # grid_sample wants (W, H[, D]) order
    out = F.grid_sample(ddf.to(voxels.dtype), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(ddf.shape[0], n, -1).transpose(1, 2)


def warp_points(points: torch.Tensor, ddf: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Map fixed-space world points through ``x -> x + u(x)`` into the moving space.

    Args:
        points: world points in mm on the fixed side, ``(B, P, N)``.
        ddf: voxel-unit DDF on the fixed grid ``(B, N, *spatial)``.
        affine: the fixed grid's voxel -> world affine, ``(N+1, N+1)`` or ``(B, N+1, N+1)``.

    Returns:
        ``(B, P, N)`` world points in mm (where the fixed points sample the moving image).
    """
    n = _check_ddf(ddf)
    a = as_batched_affine(affine, ddf.shape[0], n, like=ddf)
    pts = points.to(torch.float64)
    vox = world_to_voxel(pts, a)
    disp_vox = sample_ddf(ddf.to(torch.float64), vox)
    return voxel_to_world(vox + disp_vox, a)


def label_centroids(labels: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centroid of each label channel, in world mm.

    Soft labels (linearly resampled or warped) keep their centroid; a binarised one would move by up
    to half a voxel, which at 3 mm voxels is most of the error we want to measure.

    Args:
        labels: ``(B, C, *spatial)``, non-negative weights.
        affine: voxel -> world ``(N+1, N+1)`` or ``(B, N+1, N+1)``.

    Returns:
        ``(B, C, N)`` float64; NaN for an empty channel.
    """
    if labels.ndim not in (4, 5):
        raise ValueError(f"labels must be (B, C, *spatial) with 2 or 3 spatial dims, got shape {tuple(labels.shape)}.")
    n = labels.ndim - 2
    a = as_batched_affine(affine, labels.shape[0], n, like=labels)
    w = labels.to(torch.float64).clamp(min=0)
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float64, device=labels.device) for s in labels.shape[2:]], indexing="ij")
    mass = w.flatten(2).sum(-1)  # (B, C)
    cents = torch.stack([(w * g).flatten(2).sum(-1) for g in grids], dim=-1) / mass[..., None]
    cents = torch.where(mass[..., None] > 0, cents, torch.full_like(cents, float("nan")))
    return voxel_to_world(cents, a)


def point_distances(points_a: torch.Tensor, points_b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between corresponding world points ``(B, P, N)`` -> ``(B, P)`` (mm)."""
    if points_a.shape != points_b.shape:
        raise ValueError(f"point lists must match in shape, got {tuple(points_a.shape)} and {tuple(points_b.shape)}.")
    return torch.linalg.vector_norm(points_a.to(torch.float64) - points_b.to(torch.float64), dim=-1)


def tre_from_labels(
    warped_moving_labels: torch.Tensor,
    fixed_labels: torch.Tensor,
    affine: torch.Tensor,
    *,
    channels: Sequence[int] | None = None,
) -> torch.Tensor:
    """TRE in mm between centroids of warped moving and fixed landmark labels on one grid.

    Args:
        warped_moving_labels: ``(B, C, *spatial)`` moving labels warped onto the fixed grid.
        fixed_labels: ``(B, C, *spatial)``.
        affine: the shared grid's voxel -> world affine (spacing and direction).
        channels: landmark channels to use (default: all).

    Returns:
        ``(B, len(channels))`` distances in mm; NaN where a label is empty on either side.

    Example:
        >>> lab = torch.zeros(1, 1, 9, 9, 9); lab[..., 4, 4, 4] = 1
        >>> float(tre_from_labels(lab.roll(2, 2), lab, torch.diag(torch.tensor([2.0, 1, 1, 1])))[0, 0])
        4.0
    """
    if warped_moving_labels.shape != fixed_labels.shape:
        raise ValueError(
            f"warped_moving_labels and fixed_labels must have the same shape, got {tuple(warped_moving_labels.shape)} "
            f"and {tuple(fixed_labels.shape)}."
        )
    idx = list(range(fixed_labels.shape[1])) if channels is None else list(channels)
    cm = label_centroids(warped_moving_labels[:, idx], affine)
    cf = label_centroids(fixed_labels[:, idx], affine)
    return point_distances(cm, cf)


def tre_from_points(
    fixed_points: torch.Tensor, moving_points: torch.Tensor, ddf: torch.Tensor, affine: torch.Tensor
) -> torch.Tensor:
    """TRE in mm from corresponding landmark point lists in world space.

    The fixed points are mapped by the registration (``x + u(x)``) into the moving space and
    compared with their moving counterparts: ``||T(p_fixed) - p_moving||``.

    Args:
        fixed_points: ``(B, P, N)`` world mm.
        moving_points: ``(B, P, N)`` world mm.
        ddf: ``(B, N, *spatial)`` voxel-unit DDF on the fixed grid (zeros = no registration).
        affine: fixed grid voxel -> world.

    Returns:
        ``(B, P)`` mm.
    """
    return point_distances(warp_points(fixed_points, ddf, affine), moving_points)


def jacobian_matrix(ddf: torch.Tensor) -> torch.Tensor:
    """Jacobian of the map ``i -> i + u(i)`` by central differences (one-sided at the border).

    ``(B, N, *spatial)`` -> ``(B, N, N, *spatial)`` with ``J[:, r, c] = d(i_r + u_r) / d i_c``.
    The determinant is the same in voxel and world coordinates (``A J A^-1``), so spacing and
    direction need not be given.
    """
    n = _check_ddf(ddf)
    grads = torch.gradient(ddf.to(torch.float64), dim=tuple(range(2, 2 + n)))  # N tensors, d/d axis c
    jac = torch.stack(grads, dim=2)  # (B, N(r), N(c), *spatial)
    eye = torch.eye(n, dtype=jac.dtype, device=jac.device).reshape(1, n, n, *([1] * n))
    return jac + eye


def jacobian_determinant(ddf: torch.Tensor) -> torch.Tensor:
    """Determinant of the Jacobian of ``x + u(x)`` at every voxel: ``(B, N, *spatial)`` -> ``(B, *spatial)``."""
    n = _check_ddf(ddf)
    jac = jacobian_matrix(ddf)
    perm = (0, *range(3, 3 + n), 1, 2)
    return torch.linalg.det(jac.permute(perm))


def _masked(values: torch.Tensor, mask: torch.Tensor | None) -> list[torch.Tensor]:
    flat = values.flatten(1)
    if mask is None:
        return list(flat)
    m = mask.reshape(values.shape[0], -1).bool()
    return [v[k] for v, k in zip(flat, m)]


def folding_percentage(ddf: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``100 * #{det J <= 0} / #voxels`` per sample, optionally inside ``mask`` ``(B, *spatial)``: -> ``(B,)``."""
    det = jacobian_determinant(ddf)
    return torch.stack([100.0 * (d <= 0).to(torch.float64).mean() for d in _masked(det, mask)])


def std_log_jacobian(ddf: torch.Tensor, mask: torch.Tensor | None = None, *, eps: float = 1e-9) -> torch.Tensor:
    """Standard deviation of ``log(max(det J, eps))`` per sample (folded voxels clipped to ``eps``): -> ``(B,)``."""
    det = jacobian_determinant(ddf).clamp(min=eps).log()
    return torch.stack([d.std(unbiased=False) for d in _masked(det, mask)])


def dice_score(pred: torch.Tensor, target: torch.Tensor, *, threshold: float = 0.5) -> torch.Tensor:
    """Dice per sample and channel of binarised labels ``(B, C, *spatial)`` -> ``(B, C)`` (MONAI ``compute_dice``)."""
    return compute_dice((pred > threshold).float(), (target > threshold).float(), include_background=True, ignore_empty=True)


def hd95(
    pred: torch.Tensor,
    target: torch.Tensor,
    spacing: Sequence[float] | float,
    *,
    threshold: float = 0.5,
) -> torch.Tensor:
    """95th-percentile Hausdorff distance in mm (MONAI) per sample and channel: ``(B, C, *spatial)`` -> ``(B, C)``.

    ``spacing`` is the grid's voxel size in mm (direction does not change distances). Empty labels give NaN/inf.
    """
    return compute_hausdorff_distance(
        (pred > threshold).float(), (target > threshold).float(), include_background=True, percentile=95, spacing=spacing
    )
