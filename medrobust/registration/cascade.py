"""Image-only registration from a mask-input network: segment the moving gland, then register.

:class:`SegmentThenRegister` wraps a gland segmenter (moving image -> gland logit, e.g.
:func:`~medrobust.registration.segmenter.gland_segmenter`) and a registration network that takes
``cat([moving image, moving gland mask, fixed image])`` (a
:class:`~medrobust.registration.networks.GlobalLocalNet` with ``in_channels=3``) as ONE module whose
input is the two images only: ``(B, 2, *S)`` (moving, fixed) -> DDF ``(B, N, *S)`` in voxels. To
everything downstream (inference, export, attacks, TorchScript tracing) it is an image-only
network with ``in_channels == 2``; the gland labels are used only to train its two parts.

The mask fed to the registration network is ``"hard"`` (``sigmoid(logit) >= threshold``, what a
mask-input network trained on binary masks expects) or ``"soft"`` (the probability). The hard
mask passes gradients straight through to the probability (``hard + p - p.detach()``), so an
attack or a fine-tune on the moving image still sees a gradient through the segmenter instead of a
masked zero.

Example:
    >>> import torch
    >>> from medrobust.registration.networks import GlobalLocalNet
    >>> from medrobust.registration.segmenter import gland_segmenter
    >>> reg = GlobalLocalNet(image_size=(16, 16, 16), num_channel_initial=2, global_depth=2,
    ...                      extract_levels=(0, 1, 2), in_channels=3)
    >>> net = SegmentThenRegister(gland_segmenter(channels=(4, 8)), reg)
    >>> net.in_channels, net(torch.rand(2, 2, 16, 16, 16)).shape
    (2, torch.Size([2, 3, 16, 16, 16]))
"""

from __future__ import annotations

import torch

__all__ = ["MASK_MODES", "STAGES", "SegmentThenRegister"]

MASK_MODES = ("hard", "soft")
STAGES = ("all", "global")


class SegmentThenRegister(torch.nn.Module):
    """``(B, 2, *S)`` (moving image, fixed image) -> DDF: ``registration(cat([moving, mask(moving), fixed]))``.

    Args:
        segmenter: ``(B, 1, *S)`` moving image -> ``(B, 1, *S)`` gland logits.
        registration: ``(B, 3, *S)`` -> ``(B, N, *S)`` DDF; its ``global_ddf`` (if any) is exposed too.
        mask_mode: ``"hard"`` (thresholded, straight-through gradient) or ``"soft"`` (probability).
        threshold: probability threshold of the hard mask, in (0, 1).
        stage: ``"all"`` (the registration network's output) or ``"global"`` (its ``global_ddf``
            alone: the forward then returns the global stage's DDF, e.g. where the dense stage did
            not help in validation).

    Raises:
        ValueError: unknown ``mask_mode`` or ``stage``, ``threshold`` outside (0, 1), or a
            registration network whose ``in_channels`` is not 3.
    """

    def __init__(self, segmenter: torch.nn.Module, registration: torch.nn.Module, *, mask_mode: str = "hard",
                 threshold: float = 0.5, stage: str = "all") -> None:
        super().__init__()
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}.")
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}.")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}.")
        if getattr(registration, "in_channels", 3) != 3:
            raise ValueError("registration must take 3 input channels (moving image, moving mask, fixed image), "
                             f"got in_channels={registration.in_channels}.")
        self.segmenter, self.registration = segmenter, registration
        self.mask_mode, self.threshold, self.stage = mask_mode, float(threshold), stage
        self.in_channels = 2
        self.image_size = getattr(registration, "image_size", None)

    def moving_mask(self, moving: torch.Tensor) -> torch.Tensor:
        """The gland mask fed to the registration network: ``(B, 1, *S)`` moving image -> ``(B, 1, *S)`` in [0, 1]."""
        p = torch.sigmoid(self.segmenter(moving))
        if self.mask_mode == "soft":
            return p
        return (p >= self.threshold).to(p.dtype) + (p - p.detach())  # forward: exactly the hard mask; backward: d p

    def registration_input(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2, *S)`` -> ``(B, 3, *S)``: moving image, predicted moving gland mask, fixed image."""
        if x.ndim < 4 or x.shape[1] != 2:
            raise ValueError(f"expected (B, 2, *spatial) (moving image, fixed image), got {tuple(x.shape)}.")
        moving = x[:, :1]
        return torch.cat([moving, self.moving_mask(moving), x[:, 1:]], dim=1)

    def global_ddf(self, x: torch.Tensor) -> torch.Tensor:
        """The registration network's global stage alone on the cascade's input (stage comparisons)."""
        return self.registration.global_ddf(self.registration_input(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp = self.registration_input(x)
        return self.registration.global_ddf(inp) if self.stage == "global" else self.registration(inp)
