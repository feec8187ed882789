"""Reconstruction networks: a fastMRI-style U-Net on zero-filled magnitude images (single-coil)
and MONAI's end-to-end VarNet with learned coil sensitivities (multi-coil).

Both are thin wrappers of MONAI networks, sized for a CPU by default (a few hundred thousand
parameters); every size is a keyword argument.

- :class:`ReconUNet`: ``(B, 1, *spatial)`` zero-filled magnitude -> ``(B, 1, *spatial)``
  magnitude. fastMRI's U-Net recipe (Zbontar et al. 2018, ``fastmri/models/unet.py``): per-sample
  mean/std normalisation of the input ("normalize_instance"), a 4-level U-Net (MONAI
  :class:`~monai.networks.nets.BasicUNet`, instance norm, LeakyReLU), the output mapped back to the
  input's units. ``residual=True`` adds the (normalised) input to the U-Net output, so an
  untrained network starts at the zero-filled image. Any number of spatial dims (2-D slices
  are the fastMRI case; 3-D works too). Inputs are padded to a multiple of 16 and cropped back
  (MONAI's ``divisible_pad_t``); in training mode each side must exceed 16 (instance norm
  needs more than one element at the coarsest level). VarNet's U-Nets pad the same way.
- :class:`VarNet`: ``(masked_kspace (B, C, H, W, 2), mask (1, 1, 1, W, 1)) -> (B, 1, H, W)``
  root-sum-of-squares magnitude. MONAI's
  :class:`~monai.apps.reconstruction.networks.nets.varnet.VariationalNetworkModel` with a
  :class:`~monai.apps.reconstruction.networks.nets.coil_sensitivity_model.CoilSensitivityModel`
  and :class:`~monai.apps.reconstruction.networks.nets.complex_unet.ComplexUnet` refinement;
  the coil count is free (coils are folded into the batch for the sensitivity network). MONAI
  reads the auto-calibration region from the mask, so one mask is shared by the whole batch.

Example:
    >>> import torch
    >>> net = ReconUNet()
    >>> net(torch.rand(2, 1, 40, 36)).shape
    torch.Size([2, 1, 40, 36])
    >>> vn = VarNet(num_cascades=1)
    >>> mask = torch.zeros(1, 1, 1, 32, 1); mask[..., 12:20, :] = 1
    >>> vn(torch.randn(2, 4, 32, 32, 2) * mask, mask).shape
    torch.Size([2, 1, 32, 32])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.apps.reconstruction.networks.nets.coil_sensitivity_model import CoilSensitivityModel
from monai.apps.reconstruction.networks.nets.complex_unet import ComplexUnet
from monai.apps.reconstruction.networks.nets.utils import divisible_pad_t, inverse_divisible_pad_t
from monai.apps.reconstruction.networks.nets.varnet import VariationalNetworkModel
from monai.networks.nets import BasicUNet

__all__ = ["ReconUNet", "VarNet", "count_parameters"]

_ACT = ("LeakyReLU", {"negative_slope": 0.2, "inplace": True})  # fastMRI's U-Net uses LeakyReLU(0.2)
_NORM = ("instance", {"affine": False})


def count_parameters(net: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def _check_features(features: Sequence[int], name: str) -> tuple[int, ...]:
    f = tuple(int(v) for v in features)
    if len(f) != 6 or min(f) < 1:
        raise ValueError(f"{name} must be six positive ints (BasicUNet: 5 encoder levels + the last decoder), got {features!r}.")
    return f


class ReconUNet(torch.nn.Module):
    """fastMRI-style U-Net on zero-filled magnitude images.

    Args:
        spatial_dims: 2 (slices) or 3.
        in_channels: input channels (1 for a magnitude image).
        out_channels: output channels.
        features: BasicUNet's six channel counts (four pooling levels); fastMRI's 32-channel
            U-Net is ``(32, 64, 128, 256, 512, 32)``. The default ``(8, 16, 32, 64, 128, 8)`` has
            about 0.48 M parameters.
        residual: predict a correction to the zero-filled input.
        dropout: dropout probability inside the U-Net.
        eps: added to the input's standard deviation before dividing (an all-constant input).

    Shapes: ``x`` ``(B, in_channels, *spatial)`` -> ``(B, out_channels, *spatial)``, in the units
    of ``x``.

    Raises:
        ValueError: bad ``spatial_dims``, ``features``, or an input of the wrong rank/channels.

    Example:
        >>> net = ReconUNet(spatial_dims=3, features=(4, 4, 8, 8, 16, 4))
        >>> net(torch.rand(2, 1, 20, 24, 18)).shape
        torch.Size([2, 1, 20, 24, 18])
    """

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (8, 16, 32, 64, 128, 8),
        residual: bool = True,
        dropout: float = 0.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        if residual and in_channels != out_channels:
            raise ValueError(f"residual=True needs in_channels == out_channels, got {in_channels} and {out_channels}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.residual = residual
        self.eps = float(eps)
        self.unet = BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                              features=_check_features(features, "features"), act=_ACT, norm=_NORM, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"ReconUNet expects (B, {self.in_channels}, *spatial) with {self.spatial_dims} spatial dims, "
                             f"got shape {tuple(x.shape)}.")
        dims = tuple(range(1, x.ndim))
        mean = x.mean(dim=dims, keepdim=True)
        std = x.std(dim=dims, keepdim=True, unbiased=False) + self.eps
        z = (x - mean) / std
        zp, pads = divisible_pad_t(z, k=16)
        out = inverse_divisible_pad_t(self.unet(zp), pads)
        if self.residual:
            out = out + z
        return out * std + mean


class VarNet(torch.nn.Module):
    """End-to-end VarNet (Sriram et al. 2020) from MONAI with coil-sensitivity estimation.

    Args:
        spatial_dims: 2 (k-space ``(B, C, H, W, 2)``) or 3 (``(B, C, H, W, D, 2)``).
        num_cascades: unrolled refinement + data-consistency cascades (fastMRI: 12).
        features: the refinement ComplexUnet's six BasicUNet channel counts.
        sens_features: the coil-sensitivity ComplexUnet's channel counts.

    Shapes: ``forward(masked_kspace, mask)`` with ``masked_kspace`` ``(B, C, *spatial, 2)`` (C coils,
    trailing real/imag) and ``mask`` ``(1, 1, 1, W, 1)`` (one phase-encode mask for the batch; its
    fully sampled centre is the calibration region) -> ``(B, 1, *spatial)`` root-sum-of-squares
    magnitude in the units of the k-space (orthonormal centred FFTs).

    Raises:
        ValueError: ``num_cascades`` < 1, bad feature lists, k-space of the wrong rank, or a mask
            with a batch dimension > 1.

    Example:
        >>> vn = VarNet(num_cascades=1)
        >>> mask = torch.zeros(1, 1, 1, 24, 1); mask[..., 10:14, :] = 1; mask[..., ::3, :] = 1
        >>> vn(torch.randn(3, 2, 20, 24, 2) * mask, mask).shape
        torch.Size([3, 1, 20, 24])
    """

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        num_cascades: int = 4,
        features: Sequence[int] = (8, 8, 16, 32, 64, 8),
        sens_features: Sequence[int] = (4, 4, 8, 16, 32, 4),
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        if not isinstance(num_cascades, int) or num_cascades < 1:
            raise ValueError(f"num_cascades must be a positive int, got {num_cascades!r}.")
        self.spatial_dims = spatial_dims
        sens = CoilSensitivityModel(spatial_dims=spatial_dims, features=_check_features(sens_features, "sens_features"))
        refine = ComplexUnet(spatial_dims=spatial_dims, features=_check_features(features, "features"))
        self.net = VariationalNetworkModel(sens, refine, num_cascades=num_cascades, spatial_dims=spatial_dims)

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        nd = self.spatial_dims
        if masked_kspace.ndim != nd + 3 or masked_kspace.shape[-1] != 2:
            raise ValueError(f"VarNet: masked_kspace must be (B, coils, *spatial, 2) with {nd} spatial dims, "
                             f"got shape {tuple(masked_kspace.shape)}.")
        if mask.ndim != masked_kspace.ndim or mask.shape[0] != 1:
            raise ValueError(f"VarNet: mask must be one mask for the batch, shape (1, 1, ..., W, 1) with "
                             f"{masked_kspace.ndim} dims, got {tuple(mask.shape)}.")
        # MONAI's data-consistency step needs a boolean mask (torch.where); ours are float (RECON_API)
        return self.net(masked_kspace, mask.to(masked_kspace.device) != 0).unsqueeze(1)
