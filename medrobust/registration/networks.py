"""Registration networks: a global stage (keypoints, translation or affine) then MONAI's LocalNet, composed into one DDF.

With a dozen training pairs a dense network alone memorises each pair's global offset instead of
reading it from the images (on mrus_dev it lowered training TRE and raised test TRE). The
label-driven registration of Hu et al. (MedIA 2018) therefore predicts a global transform first and
a local DDF on top; :class:`GlobalLocalNet` does the same with MONAI's networks, and keeps the
interface of a plain LocalNet: ``cat([moving, fixed])`` ``(B, 2, *spatial)`` -> DDF ``(B, N,
*spatial)`` in voxel units (MONAI ``Warp`` convention), so trainers, metrics and export are shared.

Global stages:

- ``"keypoints"`` (default): a small fully convolutional MONAI ``UNet`` per modality turns each image
  into ``K`` heatmaps; their spatial-softmax centroids are keypoints, and the translation is the mean
  moving-minus-fixed keypoint offset (KeyMorph, Yu et al., MIDL 2022, reduced to a translation).
  Shift an input and its keypoints shift with it (up to the UNet's strides and borders), so the
  stage cannot simply memorise a training pair's offset; it has to find the same anatomy in both
  images. With the keypoint loss of :class:`~medrobust.registration.engine.RegistrationIteration`
  and the MR gland mask as input it gave the lowest TRE on the mrus_dev validation split (11.4 mm
  vs 15.6 mm unregistered; the regressor below reached 12.7-17.8 mm).
- ``"translation"``: MONAI ``Regressor`` (instance norm) -> 3 numbers -> ``tanh`` bounded shift
  (``max_translation`` voxels). Bounded and low-dimensional: on 7-12 training pairs MONAI's
  ``GlobalNet`` affine head (12 unbounded numbers, rotation about the array corner, BatchNorm)
  produced a few affines that threw whole volumes kilometres off the grid.
- ``"affine"``: MONAI ``GlobalNet``.
- ``"none"``: LocalNet alone (Hu et al., MICCAI 2018).

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
from monai.networks.nets import GlobalNet, LocalNet, Regressor, UNet

from medrobust.registration.losses import label_centroids_voxels

__all__ = ["GLOBAL_STAGES", "compose_affine_ddf", "soft_centroids", "KeypointTranslationNet", "TranslationNet", "GlobalLocalNet"]

GLOBAL_STAGES = ("none", "keypoints", "translation", "affine")


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


def soft_centroids(logits: torch.Tensor) -> torch.Tensor:
    """Spatial-softmax centroid of each channel, in voxel indices: ``(B, K, *spatial)`` -> ``(B, K, N)``."""
    prob = torch.softmax(logits.flatten(2).float(), dim=-1).reshape(logits.shape)
    return label_centroids_voxels(prob)


class KeypointTranslationNet(torch.nn.Module):
    """Translation from matched keypoints: ``(B, M + 1, *image_size)`` -> constant DDF ``(B, N, *image_size)``.

    One MONAI ``UNet`` (instance norm) on the moving channels and one on the fixed image each give
    ``num_keypoints`` heatmaps; the DDF is the mean of ``centroid_moving - centroid_fixed`` (voxels),
    the sampling offset that lays each fixed keypoint onto its moving twin. Written here because
    MONAI has no keypoint registration head; the heatmap networks are MONAI's.

    Args:
        image_size: input spatial size.
        in_channels: moving channels + 1.
        num_keypoints: heatmaps per image.
        channels: UNet channels per level.
    """

    def __init__(self, image_size: Sequence[int], *, in_channels: int = 2, num_keypoints: int = 4,
                 channels: Sequence[int] = (8, 16, 32, 64)) -> None:
        super().__init__()
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}.")
        self.image_size = tuple(int(s) for s in image_size)
        n = len(self.image_size)

        def unet(c_in: int) -> torch.nn.Module:
            return UNet(spatial_dims=n, in_channels=c_in, out_channels=num_keypoints, channels=tuple(channels),
                        strides=(2,) * (len(channels) - 1), num_res_units=1)

        self.moving_net, self.fixed_net = unet(in_channels - 1), unet(1)
        self.last_keypoints: tuple[torch.Tensor, torch.Tensor] | None = None

    def keypoints(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Moving and fixed keypoints ``(B, K, N)`` in voxel indices."""
        return soft_centroids(self.moving_net(x[:, :-1])), soft_centroids(self.fixed_net(x[:, -1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        km, kf = self.keypoints(x)
        self.last_keypoints = (km, kf)  # for the training-time keypoint loss (RegistrationIteration)
        shift = (km - kf).mean(dim=1)  # (B, N)
        return shift.reshape(*shift.shape, *([1] * len(self.image_size))).expand(-1, -1, *self.image_size).to(x.dtype)


class TranslationNet(torch.nn.Module):
    """A bounded global shift from ``(B, 2, *image_size)`` -> constant DDF ``(B, N, *image_size)`` (voxels).

    Args:
        image_size: input spatial size.
        channels: MONAI ``Regressor`` channels per level (each level halves the size).
        max_translation: the shift is ``max_translation * tanh(.)`` voxels per axis.
        in_channels: input channels (moving channels + 1).
    """

    def __init__(self, image_size: Sequence[int], *, channels: Sequence[int] = (8, 16, 32, 64),
                 max_translation: float = 8.0, in_channels: int = 2) -> None:
        super().__init__()
        if max_translation <= 0:
            raise ValueError(f"max_translation must be > 0, got {max_translation}.")
        self.image_size = tuple(int(s) for s in image_size)
        self.max_translation = float(max_translation)
        self.regressor = Regressor(in_shape=(in_channels, *self.image_size), out_shape=(len(self.image_size),),
                                   channels=tuple(channels), strides=(2,) * len(channels))
        with torch.no_grad():  # start at the identity, like GlobalNet's affine head
            self.regressor.final[-1].weight.mul_(0.01)
            self.regressor.final[-1].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift = self.max_translation * torch.tanh(self.regressor(x))  # (B, N)
        return shift.reshape(*shift.shape, *([1] * len(self.image_size))).expand(-1, -1, *self.image_size)


class GlobalLocalNet(torch.nn.Module):
    """A global stage (translation or affine) then ``LocalNet`` (dense) on the globally warped moving image.

    Args:
        image_size: spatial size of the inputs (the global stage is built for it).
        spatial_dims: 2 or 3.
        num_channel_initial: channels of the first level of the networks.
        global_depth: down-sampling levels of the global stage.
        extract_levels: LocalNet's output levels.
        global_stage: ``"keypoints"``, ``"translation"``, ``"affine"`` or ``"none"`` (a plain LocalNet).
        max_translation: bound of the translation stage, voxels per axis.
        num_keypoints: heatmaps per image of the keypoint stage.
        local: ``False`` drops the dense stage: the global stage alone (a reference model).
        in_channels: moving channels + 1 (2: moving and fixed images; 3: moving image, moving gland
            mask, fixed image).

    Input ``(B, in_channels, *image_size)``: the moving channels, then the fixed image last. Output
    ``(B, N, *image_size)``.
    """

    def __init__(
        self,
        image_size: Sequence[int],
        *,
        spatial_dims: int = 3,
        num_channel_initial: int = 8,
        global_depth: int = 3,
        extract_levels: Sequence[int] = (0, 1, 2, 3),
        global_stage: str = "keypoints",
        max_translation: float = 8.0,
        num_keypoints: int = 4,
        local: bool = True,
        in_channels: int = 2,
    ) -> None:
        super().__init__()
        if in_channels < 2:
            raise ValueError(f"in_channels must be >= 2 (moving channels + fixed), got {in_channels}.")
        self.in_channels = int(in_channels)
        if global_stage not in GLOBAL_STAGES:
            raise ValueError(f"global_stage must be one of {GLOBAL_STAGES}, got {global_stage!r}.")
        if global_stage == "none" and not local:
            raise ValueError("at least one stage is needed: global_stage='none' with local=False.")
        if len(image_size) != spatial_dims:
            raise ValueError(f"image_size {tuple(image_size)} must have {spatial_dims} entries.")
        self.image_size = tuple(int(s) for s in image_size)
        self.global_stage = global_stage
        self.global_net: torch.nn.Module | None = None
        if global_stage == "affine":
            self.global_net = GlobalNet(image_size=list(self.image_size), spatial_dims=spatial_dims, in_channels=in_channels,
                                        num_channel_initial=num_channel_initial, depth=global_depth)
        elif global_stage == "keypoints":
            self.global_net = KeypointTranslationNet(self.image_size, in_channels=in_channels, num_keypoints=num_keypoints,
                                                     channels=[num_channel_initial * 2**i for i in range(global_depth + 1)])
        elif global_stage == "translation":
            self.global_net = TranslationNet(self.image_size, max_translation=max_translation, in_channels=in_channels,
                                             channels=[num_channel_initial * 2**i for i in range(global_depth + 1)])
        self.local_net = (
            LocalNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=spatial_dims,
                     num_channel_initial=num_channel_initial, extract_levels=tuple(extract_levels))
            if local else None
        )
        self.warp = Warp(mode="bilinear", padding_mode="zeros")

    def global_ddf(self, x: torch.Tensor) -> torch.Tensor:
        """The global stage's DDF alone ``(B, N, *image_size)`` (the "global only" row of a stage comparison).

        Raises:
            ValueError: the network has no global stage.
        """
        if self.global_net is None:
            raise ValueError("global_ddf: this network has no global stage (global_stage='none').")
        return self.global_net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.image_size:
            raise ValueError(f"expected (B, {self.in_channels}, {', '.join(map(str, self.image_size))}), got {tuple(x.shape)}.")
        if self.global_net is None:
            return self.local_net(x)
        moving, fixed = x[:, :-1], x[:, -1:]
        g = self.global_net(x)
        if self.local_net is None:
            return g
        l = self.local_net(torch.cat([self.warp(moving, g), fixed], dim=1))
        return compose_affine_ddf(g, l)
