"""Writing registration results: volumes and DDFs as NIfTI, DDFs as ITK displacement-field transforms.

Our DDFs are voxel-unit, channel-first ``(N, *spatial)`` on a grid whose voxel -> world affine is
RAS (nibabel). ITK works in LPS with arrays in reversed axis order; the conversion goes through
MONAI's ``monai_to_itk_ddf`` (spacing and direction applied there) after we hand it the array in
ITK's ``(z, y, x)`` order, and the image geometry is converted RAS -> LPS here. The exported
transform maps a fixed-space point ``p`` to ``p + u(p)`` in the moving space, which is what
``itk.ResampleImageFilter`` / ``sitk.Resample`` expect when resampling the moving image.

Example:
    >>> import numpy as np
    >>> tf = ddf_to_itk_transform(np.zeros((3, 4, 4, 4), np.float32), np.eye(4))   # doctest: +SKIP
    >>> tf.TransformPoint([1.0, 2.0, 3.0])                                             # doctest: +SKIP
    itkPointD3 ([1, 2, 3])
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

__all__ = [
    "ras_to_lps",
    "itk_reference_image",
    "ddf_to_itk_displacement_field",
    "ddf_to_itk_transform",
    "save_itk_transform",
    "save_ddf_nifti",
    "save_volume_nifti",
    "world_ddf",
    "native_displacement",
    "resample_native",
    "export_native",
    "RegistrationWriter",
]


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def ras_to_lps(affine: np.ndarray) -> np.ndarray:
    """Flip the first two world axes of a voxel -> world affine (RAS <-> LPS; its own inverse)."""
    a = _np(affine).astype(np.float64)
    n = a.shape[0] - 1
    flip = np.diag([-1.0, -1.0] + [1.0] * (n - 2) + [1.0])
    return flip @ a


def itk_reference_image(affine: np.ndarray, shape: tuple[int, ...]):
    """An empty ITK float image with the geometry of a RAS voxel -> world ``affine`` and array ``shape``."""
    import itk  # heavy import, only where ITK is needed

    lps = ras_to_lps(affine)
    n = len(shape)
    lin = lps[:n, :n]
    spacing = np.linalg.norm(lin, axis=0)
    image = itk.GetImageFromArray(np.zeros(tuple(reversed(shape)), np.float32))  # ITK arrays are (z, y, x)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in lps[:n, n]])
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(lin / spacing)))
    return image


def ddf_to_itk_displacement_field(ddf: np.ndarray | torch.Tensor, affine: np.ndarray):
    """Voxel-unit DDF ``(N, *spatial)`` on a RAS grid -> ITK displacement-field image (LPS, mm)."""
    from monai.data.itk_torch_bridge import monai_to_itk_ddf

    d = _np(ddf).astype(np.float64)
    n = d.ndim - 1
    if d.shape[0] != n or n not in (2, 3):
        raise ValueError(f"ddf must be (N, *spatial) with N = 2 or 3 spatial dims, got shape {d.shape}.")
    image = itk_reference_image(affine, d.shape[1:])
    # monai_to_itk_ddf wants ITK array order: spatial axes reversed, components in that same order
    itk_order = np.ascontiguousarray(d[::-1].transpose(0, *range(n, 0, -1)))
    return monai_to_itk_ddf(image, itk_order)


def ddf_to_itk_transform(ddf: np.ndarray | torch.Tensor, affine: np.ndarray):
    """Voxel-unit DDF on a RAS grid -> ``itk.DisplacementFieldTransform`` (LPS points, mm)."""
    import itk

    field = ddf_to_itk_displacement_field(ddf, affine)
    n = field.GetImageDimension()
    transform = itk.DisplacementFieldTransform[itk.F, n].New()  # matches monai_to_itk_ddf's float vectors
    transform.SetDisplacementField(field)
    return transform


def save_itk_transform(path: str | Path, ddf: np.ndarray | torch.Tensor, affine: np.ndarray) -> Path:
    """Write the DDF as an ITK displacement-field transform (``.h5``; readable by ``itk.transformread``,
    SimpleITK ``ReadTransform``, 3D Slicer, ANTs)."""
    import itk

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    itk.transformwrite([ddf_to_itk_transform(ddf, affine)], str(path))
    return path


def save_ddf_nifti(path: str | Path, ddf: np.ndarray | torch.Tensor, affine: np.ndarray) -> Path:
    """Write a voxel-unit DDF ``(N, *spatial)`` as NIfTI vectors in world (RAS) mm, shape ``(*spatial, 1, N)``
    (the NIfTI vector layout, intent ``vector``)."""
    d = _np(ddf).astype(np.float64)
    a = _np(affine).astype(np.float64)
    n = d.ndim - 1
    world = np.einsum("ij,j...->i...", a[:n, :n], d).astype(np.float32)
    data = np.moveaxis(world, 0, -1)[..., None, :]
    img = nib.Nifti1Image(data, a if n == 3 else _embed_2d(a))
    img.header.set_intent("vector", (), name="DDF RAS mm")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _embed_2d(a: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:2, :2], out[:2, 3] = a[:2, :2], a[:2, 2]
    return out


def save_volume_nifti(path: str | Path, volume: np.ndarray | torch.Tensor, affine: np.ndarray) -> Path:
    """Write a channel-first volume ``(C, *spatial)``: one channel as 3-D, several as ``(*spatial, C)``."""
    v = _np(volume).astype(np.float32)
    a = _np(affine).astype(np.float64)
    data = v[0] if v.shape[0] == 1 else np.moveaxis(v, 0, -1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, a if v.ndim == 4 else _embed_2d(a)), str(path))
    return path


def world_ddf(ddf: np.ndarray | torch.Tensor, affine: np.ndarray) -> np.ndarray:
    """Voxel-unit DDF ``(N, *spatial)`` on a grid with voxel -> world ``affine`` -> world (mm) vectors ``(N, *spatial)``."""
    d = _np(ddf).astype(np.float64)
    n = d.ndim - 1
    return np.einsum("ij,j...->i...", _np(affine).astype(np.float64)[:n, :n], d)


def _voxel_points(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"))
    n = len(shape)
    return np.einsum("ij,j...->i...", affine[:n, :n], idx) + affine[:n, n].reshape(n, *([1] * n))


def _sample(array: np.ndarray, affine: np.ndarray, points: np.ndarray, *, order: int) -> np.ndarray:
    """``array`` ``(C, *S)`` sampled at world ``points`` ``(N, *P)``: ITK's convention (edge values up to half
    a voxel outside the array, 0 beyond), interpolation ``order`` 0 (nearest) or 1 (linear)."""
    from scipy.ndimage import map_coordinates

    n = points.shape[0]
    inv = np.linalg.inv(affine)
    idx = np.einsum("ij,j...->i...", inv[:n, :n], points) + inv[:n, n].reshape(n, *([1] * n))
    shape = np.asarray(array.shape[1:]).reshape(n, *([1] * n))
    inside = np.all((idx >= -0.5) & (idx <= shape - 0.5), axis=0)
    if order == 0:
        idx = np.floor(idx + 0.5)  # ITK's nearest neighbour rounds halves up
    out = np.stack([map_coordinates(a, idx, order=order, mode="nearest") for a in array.astype(np.float64)])
    return out * inside


def native_displacement(
    ddf: np.ndarray | torch.Tensor,
    grid_affine: np.ndarray,
    fixed_affine: np.ndarray,
    fixed_shape: tuple[int, ...],
    moving_world_to_original: np.ndarray | None = None,
) -> np.ndarray:
    """The registration as a world displacement on the fixed image's own grid, to the original moving file.

    A voxel-unit DDF ``u`` on the registration grid (``grid_affine``) maps a world point ``q`` to
    ``q + A u(q)`` in the moving volume *as the pipeline placed it* (resampled, centre-aligned);
    ``moving_world_to_original`` ``M`` (4 x 4, world -> world) undoes that placement (for
    ``alignment="centre"``, a translation by minus the centring shift). The total map is
    ``T(q) = M (q + A u(q))``, and this returns ``T(q) - q`` (RAS mm, ``(N, *fixed_shape)``) at every
    voxel of the fixed image (``u`` linearly interpolated between grid voxels, edge values outside).

    Args:
        ddf: ``(N, *grid_shape)`` voxel units.
        grid_affine: registration grid voxel -> world.
        fixed_affine, fixed_shape: the fixed image file's geometry.
        moving_world_to_original: ``M`` above; ``None`` = identity (``alignment="header"``).
    """
    d = world_ddf(ddf, grid_affine)
    n = d.shape[0]
    q = _voxel_points(_np(fixed_affine).astype(np.float64), tuple(int(s) for s in fixed_shape))
    inv = np.linalg.inv(_np(grid_affine).astype(np.float64))
    idx = np.einsum("ij,j...->i...", inv[:n, :n], q) + inv[:n, n].reshape(n, *([1] * n))
    from scipy.ndimage import map_coordinates

    u = np.stack([map_coordinates(c, idx, order=1, mode="nearest") for c in d])
    p = q + u
    if moving_world_to_original is not None:
        m = _np(moving_world_to_original).astype(np.float64)
        p = np.einsum("ij,j...->i...", m[:n, :n], p) + m[:n, n].reshape(n, *([1] * n))
    return p - q


def resample_native(
    array: np.ndarray, moving_affine: np.ndarray, displacement: np.ndarray, fixed_affine: np.ndarray, *, order: int = 1
) -> np.ndarray:
    """The original moving ``array`` ``(C, *S_m)`` (voxel -> world ``moving_affine``) warped onto the fixed
    grid by a :func:`native_displacement` ``(N, *F)``: ``out(q) = moving(q + displacement(q))`` -> ``(C, *F)``.

    This is what ``sitk.Resample(moving, fixed, transform)`` computes with the exported transform.
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (linear), got {order}.")
    fa = _np(fixed_affine).astype(np.float64)
    q = _voxel_points(fa, displacement.shape[1:])
    return _sample(np.asarray(array), _np(moving_affine).astype(np.float64), q + displacement, order=order)


def export_native(
    out_dir: str | Path,
    ddf: np.ndarray | torch.Tensor,
    grid_affine: np.ndarray,
    *,
    fixed_path: str | Path,
    moving_path: str | Path,
    moving_label_path: str | Path | None = None,
    moving_world_to_original: np.ndarray | None = None,
    itk_transform: bool = True,
) -> dict[str, Path]:
    """Write a registration in the user's own files' spaces (the fixed image's grid and world frame).

    Files in ``out_dir``: ``ddf.nii.gz`` (world RAS mm displacement on the fixed image's grid, every
    resampling and centring of the pipeline composed in: ``moving(q + ddf(q))`` is the registered
    moving image), ``ddf_itk.h5`` (the same as an ITK displacement-field transform, LPS; apply it
    to the *original* moving file with SimpleITK/ITK/Slicer, reference = the fixed image),
    ``warped_moving_image.nii.gz`` (linear), and with ``moving_label_path``
    ``warped_moving_label.nii.gz`` (every channel, each warped linearly and thresholded at 0.5:
    uint8 0/1, ``(x, y, z, C)`` when ``C > 1``) and ``warped_moving_gland.nii.gz`` (channel 0, uint8).

    Returns:
        ``name -> path`` of the files written.
    """
    from medrobust.data.paired import read_volume

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed, fixed_aff = read_volume(fixed_path)
    moving, moving_aff = read_volume(moving_path)
    disp = native_displacement(ddf, grid_affine, fixed_aff, fixed.shape[1:], moving_world_to_original)
    written = {"ddf": save_ddf_nifti(out_dir / "ddf.nii.gz", np.einsum("ij,j...->i...", np.linalg.inv(fixed_aff[:3, :3]), disp), fixed_aff)}
    if itk_transform:
        written["ddf_itk"] = save_itk_transform(out_dir / "ddf_itk.h5", np.einsum("ij,j...->i...", np.linalg.inv(fixed_aff[:3, :3]), disp), fixed_aff)
    written["warped_moving_image"] = save_volume_nifti(out_dir / "warped_moving_image.nii.gz",
                                                       resample_native(moving[:1], moving_aff, disp, fixed_aff), fixed_aff)
    if moving_label_path is not None:
        lab, lab_aff = read_volume(moving_label_path)
        warped = (resample_native(lab, lab_aff, disp, fixed_aff) >= 0.5).astype(np.uint8)
        written["warped_moving_label"] = _save_labels(out_dir / "warped_moving_label.nii.gz", warped, fixed_aff)
        written["warped_moving_gland"] = _save_labels(out_dir / "warped_moving_gland.nii.gz", warped[:1], fixed_aff)
    return written


def _save_labels(path: Path, labels: np.ndarray, affine: np.ndarray) -> Path:
    data = labels[0] if labels.shape[0] == 1 else np.moveaxis(labels, 0, -1)
    img = nib.Nifti1Image(data.astype(np.uint8), affine)
    img.set_data_dtype(np.uint8)
    nib.save(img, str(path))
    return path


class RegistrationWriter:
    """Ignite handler writing each case's registration outputs under ``output_dir/<case_id>/``.

    With the file paths that :func:`medrobust.data.paired.load_pair` puts in every batch
    (``fixed_path``, ``moving_path``, ``moving_label_path``, ``moving_world_to_original``), the
    outputs are in the user's own fixed image space (:func:`export_native`): ``ddf.nii.gz``,
    ``ddf_itk.h5`` (apply it to the original moving file), ``warped_moving_image.nii.gz`` and, when
    the moving label file exists, ``warped_moving_label.nii.gz`` / ``warped_moving_gland.nii.gz``
    (uint8). Without them (tensors from elsewhere) the same files are written on the registration
    grid given by the batch's ``affine`` (labels thresholded at 0.5 likewise). Use with
    ``RegistrationEvalIteration``.

    Args:
        output_dir: output folder.
        itk_transform: also write the ITK transform (needs ``itk``).
    """

    def __init__(self, output_dir: str | Path, *, itk_transform: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.itk_transform = itk_transform
        self.written: list[Path] = []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine) -> None:
        out = engine.state.output
        if out.get("affine") is None:
            raise ValueError("RegistrationWriter needs the grid affine in the batch ('affine').")
        ddf = out["pred"]
        ids = out.get("case_id") or [f"case{engine.state.iteration:04d}_{b}" for b in range(ddf.shape[0])]
        native = out.get("native") or {}
        for b in range(ddf.shape[0]):
            folder = self.output_dir / str(ids[b])
            affine = _np(torch.as_tensor(out["affine"])[b])
            if native.get("fixed_path"):
                label = native["moving_label_path"][b] if native.get("moving_label_path") else ""
                export_native(folder, ddf[b], affine, fixed_path=native["fixed_path"][b], moving_path=native["moving_path"][b],
                              moving_label_path=label or None,
                              moving_world_to_original=_np(torch.as_tensor(native["moving_world_to_original"])[b]),
                              itk_transform=self.itk_transform)
            else:
                save_volume_nifti(folder / "warped_moving_image.nii.gz", out["warped_image"][b], affine)
                if "warped_label" in out:
                    lab = (_np(out["warped_label"][b]) >= 0.5).astype(np.uint8)
                    _save_labels(folder / "warped_moving_label.nii.gz", lab, affine)
                    _save_labels(folder / "warped_moving_gland.nii.gz", lab[:1], affine)
                save_ddf_nifti(folder / "ddf.nii.gz", ddf[b], affine)
                if self.itk_transform:
                    save_itk_transform(folder / "ddf_itk.h5", ddf[b], affine)
            self.written.append(folder)
