"""BinaryDenseNet (Bethge et al., arXiv 1906.08637) in 1-D, 2-D and 3-D.

Binary dense layer: BN -> sign activation -> binary 3x3 conv (``growth_rate`` channels, sign
weights, no scaling factor, no bias) -> concatenated to its input. Everything else is full
precision: the stem (conv -> BN -> ReLU, optional max-pool), the transitions (BN -> max-pool ->
ReLU -> 1x1 conv that divides the channels by ``reduction``) and the head (BN -> ReLU -> global
average pool -> linear). Gradients: activations use the straight-through estimator clipped to
``|x| <= 1`` (:func:`sign_activation`); weights the identity STE (:func:`sign_weight`), so the
latent float weights are what the optimiser updates.

Hand-written: larq's zoo is TensorFlow-only and the PyTorch binary-network packages are small
and unmaintained; the layers are built from MONAI's ``Conv`` / ``Pool`` factories and
``get_norm_layer`` so the same code serves every spatial dimension.

Example:
    >>> import torch
    >>> net = BinaryDenseNet(spatial_dims=3, in_channels=1, out_channels=2, init_features=8, growth_rate=4,
    ...                      block_config=(2, 2))
    >>> net(torch.rand(2, 1, 16, 16, 16)).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_norm_layer

__all__ = ["BinaryDenseNet", "BinaryConv", "sign_activation", "sign_weight"]


def _sign(x: torch.Tensor) -> torch.Tensor:
    """+1 / -1 (zero maps to +1, so outputs are truly binary)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class _SignActivationSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return _sign(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


class _SignWeightSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _sign(w)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return g


def sign_activation(x: torch.Tensor) -> torch.Tensor:
    """``sign(x)`` in ``{-1, +1}``; backward passes the gradient only where ``|x| <= 1``."""
    return _SignActivationSTE.apply(x)


def sign_weight(w: torch.Tensor) -> torch.Tensor:
    """``sign(w)`` in ``{-1, +1}``; backward is the identity."""
    return _SignWeightSTE.apply(w)


class BinaryConv(torch.nn.Module):
    """Binary convolution: ``conv(sign(x), sign(W))``, no bias, no scaling factor.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels, out_channels, kernel_size, stride, padding: as ``torch.nn.ConvNd``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *, kernel_size: int = 3,
                 stride: int = 1, padding: int | None = None) -> None:
        super().__init__()
        pad = kernel_size // 2 if padding is None else padding
        self.conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size, stride=stride, padding=pad,
                                                  bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C_in, *spatial)`` -> ``(B, C_out, *spatial')``."""
        return self.conv._conv_forward(sign_activation(x), sign_weight(self.conv.weight), None)


class _BinaryDenseLayer(torch.nn.Module):
    def __init__(self, spatial_dims: int, in_channels: int, growth_rate: int, norm: str | tuple) -> None:
        super().__init__()
        self.norm = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=in_channels)
        self.conv = BinaryConv(spatial_dims, in_channels, growth_rate, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.norm(x))], dim=1)


def _check_positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


class BinaryDenseNet(torch.nn.Module):
    """BinaryDenseNet with a MONAI-style constructor (defaults sized for 28-64 pixel patches).

    The ImageNet BinaryDenseNet28 is ``init_features=64, growth_rate=64, block_config=(6, 6, 6, 5),
    reduction=(2.7, 2.7, 2.2), stem_kernel=7, stem_stride=2, stem_pool=True``.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: number of classes (logits).
        init_features: channels after the stem.
        growth_rate: channels added by each binary dense layer.
        block_config: binary layers per dense block.
        reduction: channel divisor of each transition (one float for all, or one per transition).
        stem_kernel, stem_stride, stem_pool: the full-precision stem.
        norm: MONAI norm name (``"batch"``, ``("group", {"num_groups": 4})``, ...).
        dropout_prob: dropout before the linear head.

    Input ``(B, in_channels, *spatial)``; output logits ``(B, out_channels)``. Each transition
    halves the spatial size (max-pool 2), so ``spatial >= 2 ** (len(block_config) - 1)`` (after the stem).

    Raises:
        ValueError: bad sizes (non-positive, ``spatial_dims`` not 1-3, wrong number of reductions).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *, init_features: int = 32,
                 growth_rate: int = 16, block_config: Sequence[int] = (4, 4, 4),
                 reduction: float | Sequence[float] = 2.0, stem_kernel: int = 3, stem_stride: int = 1,
                 stem_pool: bool = False, norm: str | tuple = "batch", dropout_prob: float = 0.0) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}.")
        for v, n in ((in_channels, "in_channels"), (out_channels, "out_channels"), (init_features, "init_features"),
                     (growth_rate, "growth_rate"), (stem_kernel, "stem_kernel"), (stem_stride, "stem_stride")):
            _check_positive(v, n)
        block_config = [_check_positive(int(b), "block_config entries") for b in block_config]
        if not block_config:
            raise ValueError("block_config must name at least one dense block, got [].")
        reductions = [float(reduction)] * (len(block_config) - 1) if isinstance(reduction, (int, float)) \
            else [float(r) for r in reduction]
        if len(reductions) != len(block_config) - 1 or any(r < 1 for r in reductions):
            raise ValueError(f"reduction must be one float >= 1 or {len(block_config) - 1} of them (one per "
                             f"transition), got {reduction!r}.")
        if not 0 <= dropout_prob < 1:
            raise ValueError(f"dropout_prob must be in [0, 1), got {dropout_prob!r}.")
        conv, maxpool = Conv[Conv.CONV, spatial_dims], Pool[Pool.MAX, spatial_dims]
        layers: list[tuple[str, torch.nn.Module]] = [
            ("conv0", conv(in_channels, init_features, stem_kernel, stride=stem_stride, padding=stem_kernel // 2,
                           bias=False)),
            ("norm0", get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=init_features)),
            ("relu0", torch.nn.ReLU()),
        ]
        if stem_pool:
            layers.append(("pool0", maxpool(kernel_size=3, stride=2, padding=1)))
        ch = init_features
        for i, n_layers in enumerate(block_config):
            block = torch.nn.Sequential()
            for j in range(n_layers):
                block.add_module(f"denselayer{j + 1}", _BinaryDenseLayer(spatial_dims, ch, growth_rate, norm))
                ch += growth_rate
            layers.append((f"denseblock{i + 1}", block))
            if i < len(block_config) - 1:
                out_ch = max(1, int(round(ch / reductions[i])))
                layers.append((f"transition{i + 1}", torch.nn.Sequential(
                    get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=ch),
                    maxpool(kernel_size=2, stride=2),
                    torch.nn.ReLU(),
                    conv(ch, out_ch, 1, bias=False),
                )))
                ch = out_ch
        layers += [
            ("norm5", get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=ch)),
            ("relu5", torch.nn.ReLU()),
        ]
        self.features = torch.nn.Sequential(OrderedDict(layers))
        self.class_layers = torch.nn.Sequential(
            Pool[Pool.ADAPTIVEAVG, spatial_dims](1),
            torch.nn.Flatten(1),
            torch.nn.Dropout(dropout_prob),
            torch.nn.Linear(ch, out_channels),
        )
        self.num_features = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial)`` -> ``(B, out_channels)`` logits."""
        return self.class_layers(self.features(x))
