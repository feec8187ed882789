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


class RegistrationWriter:
    """Ignite handler writing each case's registration outputs under ``output_dir/<case_id>/``.

    Files: ``warped_moving_image.nii.gz``, ``warped_moving_label.nii.gz`` (when labels are present),
    ``fixed_image.nii.gz`` (the fixed image on the registration grid, for overlays), ``ddf.nii.gz``
    (world RAS mm vectors) and ``ddf_itk.h5`` (ITK displacement-field transform, LPS), all on the
    grid given by the batch's ``affine``. Use with ``RegistrationEvalIteration``.

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
        for b in range(ddf.shape[0]):
            folder = self.output_dir / str(ids[b])
            affine = _np(torch.as_tensor(out["affine"])[b])
            save_volume_nifti(folder / "warped_moving_image.nii.gz", out["warped_image"][b], affine)
            save_volume_nifti(folder / "fixed_image.nii.gz", out["fixed_image"][b], affine)
            if "warped_label" in out:
                save_volume_nifti(folder / "warped_moving_label.nii.gz", out["warped_label"][b], affine)
            save_ddf_nifti(folder / "ddf.nii.gz", ddf[b], affine)
            if self.itk_transform:
                save_itk_transform(folder / "ddf_itk.h5", ddf[b], affine)
            self.written.append(folder)
