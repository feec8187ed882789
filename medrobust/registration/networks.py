"""Registration networks: MONAI's GlobalNet (affine) followed by LocalNet (dense), composed into one DDF.

With a dozen training pairs a dense network alone memorises each pair's global offset instead of
reading it from the images (on mrus_dev it lowered training TRE and raised test TRE). The
label-driven registration of Hu et al. (MedIA 2018) therefore predicts a global affine first and a
local DDF on top; :class:`GlobalLocalNet` does the same with MONAI's networks, and keeps the
interface of a plain LocalNet: ``cat([moving, fixed])`` ``(B, 2, *spatial)`` -> DDF ``(B, N,
*spatial)`` in voxel units (MONAI ``Warp`` convention), so trainers, metrics and export are shared.

Composition: the local network sees the moving image warped by the affine DDF ``g`` and predicts
``l``; the moving image is sampled at ``x + l(x) + g(x + l(x))``. ``g`` is affine, ``g(y) = (A - I) y
+ t``, so ``g(x + l) = g(x) + (A - I) l`` exactly and the total is ``g + A l``; no second
interpolation (and its border error) is needed. ``A - I`` is read off ``g`` by one finite
difference per axis, which is exact for an affine field and keeps the gradient.

Example:
    >>> import torch
    >>> net = GlobalLocalNet(image_size=(16, 16, 16), num_channel_initial=2, global_depth=2,
    ...                      extract_levels=(0, 1, 2))
    >>> net(torch.rand(1, 2, 16, 16, 16)).shape
    torch.Size([1, 3, 16, 16, 16])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Warp
from monai.networks.nets import GlobalNet, LocalNet

__all__ = ["compose_affine_ddf", "GlobalLocalNet"]


def compose_affine_ddf(global_ddf: torch.Tensor, local_ddf: torch.Tensor) -> torch.Tensor:
    """DDF of "first ``local``, then the affine ``global``": ``u(x) = l(x) + g(x + l(x)) = g + A l``.

    Args:
        global_ddf: ``(B, N, *spatial)`` DDF of an affine map (voxel units), at least 2 voxels a side.
        local_ddf: ``(B, N, *spatial)`` voxel units.

    Returns:
        ``(B, N, *spatial)`` composed DDF.
    """
    if global_ddf.shape != local_ddf.shape:
        raise ValueError(f"DDFs must have the same shape, got {tuple(global_ddf.shape)} and {tuple(local_ddf.shape)}.")
    n = global_ddf.ndim - 2
    origin = (slice(None), slice(None)) + (0,) * n
    # column k of A - I: the change of g along array axis k (exact for an affine field)
    cols = []
    for k in range(n):
        step = list(origin)
        step[2 + k] = 1
        cols.append(global_ddf[tuple(step)] - global_ddf[origin])  # (B, N)
    a_minus_i = torch.stack(cols, dim=-1)  # (B, N, N)
    return global_ddf + local_ddf + torch.einsum("bik,bk...->bi...", a_minus_i, local_ddf)


class GlobalLocalNet(torch.nn.Module):
    """MONAI ``GlobalNet`` (affine) then ``LocalNet`` (dense) on the affinely warped moving image.

    Args:
        image_size: spatial size of the inputs (GlobalNet's affine head is built for it).
        spatial_dims: 2 or 3.
        num_channel_initial: channels of the first level of both networks.
        global_depth: GlobalNet's number of down-sampling levels.
        extract_levels: LocalNet's output levels.
        global_stage: ``False`` drops the affine stage: a plain LocalNet (Hu et al., MICCAI 2018).
        local: ``False`` drops the dense stage: the affine stage alone (a reference model).

    Input ``(B, 2, *image_size)``: channel 0 moving, channel 1 fixed. Output ``(B, N, *image_size)``.
    """

    def __init__(
        self,
        image_size: Sequence[int],
        *,
        spatial_dims: int = 3,
        num_channel_initial: int = 8,
        global_depth: int = 3,
        extract_levels: Sequence[int] = (0, 1, 2, 3),
        global_stage: bool = True,
        local: bool = True,
    ) -> None:
        super().__init__()
        if not (global_stage or local):
            raise ValueError("at least one of global_stage and local must be True.")
        if len(image_size) != spatial_dims:
            raise ValueError(f"image_size {tuple(image_size)} must have {spatial_dims} entries.")
        self.image_size = tuple(int(s) for s in image_size)
        self.global_net = (
            GlobalNet(image_size=list(self.image_size), spatial_dims=spatial_dims, in_channels=2,
                      num_channel_initial=num_channel_initial, depth=global_depth)
            if global_stage else None
        )
        self.local_net = (
            LocalNet(spatial_dims=spatial_dims, in_channels=2, out_channels=spatial_dims,
                     num_channel_initial=num_channel_initial, extract_levels=tuple(extract_levels))
            if local else None
        )
        self.warp = Warp(mode="bilinear", padding_mode="zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 2 or tuple(x.shape[2:]) != self.image_size:
            raise ValueError(f"expected (B, 2, {', '.join(map(str, self.image_size))}), got {tuple(x.shape)}.")
        if self.global_net is None:
            return self.local_net(x)
        moving, fixed = x[:, :1], x[:, 1:]
        g = self.global_net(x)
        if self.local_net is None:
            return g
        l = self.local_net(torch.cat([self.warp(moving, g), fixed], dim=1))
        return compose_affine_ddf(g, l)
