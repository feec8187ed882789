"""Band-limited FFT convolutions (Dziedzic et al., ICML 2019), 1-D, 2-D and 3-D.

A convolution computed in the Fourier domain where only a low band of the one-sided (``rfftn``)
spectrum is kept, for the input, the filter and (in backward) the upstream gradient:

- the (already padded) input of spatial size ``L`` is transformed with ``rfftn`` at ``N = L``
  per axis (``power_of_two=True``: zero-padded to the next power of two, as the authors'
  GPU code ``conv2D_fft.py``; on CPU this only costs time, up to 8x the FFT volume in 3-D);
  the filter is zero-padded to the same ``N`` (no wrap-around: the valid output needs ``N >= L``);
- per axis, the kept frequencies are ``|k| <= n_a`` (the last, one-sided axis: ``0 <= k <= n_a``)
  with ``n_a = floor(f * (N_a // 2))`` and ``f = ((100 - c) / 100) ** (1 / d)`` for compression
  ``c`` percent and ``d`` spatial dims (``f = sqrt((100 - c) / 100)`` in 2-D: a square low band
  holding about ``100 - c`` percent of the coefficients). The band is symmetric under
  ``k -> -k``, so the mask is Hermitian-consistent and the band-limited signals stay real;
- the output is ``irfftn(sum_ci M X conj(W))`` cropped to the valid part; the backward pass uses
  the same mask on the upstream gradient's spectrum, ``grad_x = irfftn(sum_co M G W)`` and
  ``grad_w = irfftn(sum_b X conj(M G))``. Because the mask is a real orthogonal projection this
  is the exact gradient of the band-limited forward (checked by ``gradcheck``).

Only the kept coefficients are multiplied and saved for backward (gathered into a compact
block), so compression lowers the memory held for backward and the cost of the spectral product;
the FFTs themselves stay full size. With ``compression=0`` the result equals the direct
convolution up to floating-point error.

Hand-written because no maintained library provides a band-limited FFT convolution with a
masked backward pass (the authors' code is CUDA/2-D only and targets torch 1.0).

:func:`bandlimit_convs` swaps every ``nn.Conv1d/2d/3d`` of a network (MONAI nets included) for
:class:`BandLimitedConv`, sharing the original weight and bias parameters (state dicts load
unchanged). Supported: any stride, padding (ints, ``"same"``, ``"valid"``; every
``padding_mode``), groups; dilation must be 1.

Example:
    >>> import torch
    >>> conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    >>> blc = BandLimitedConv.from_conv(conv, compression=0.0)
    >>> x = torch.rand(4, 2, 8, 8)
    >>> bool(torch.allclose(blc(x), conv(x), atol=1e-5))
    True
    >>> net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.ReLU(), torch.nn.Conv3d(2, 2, 3))
    >>> net = bandlimit_convs(net, compression=50.0)
    >>> net(torch.rand(2, 1, 8, 8, 8)).shape
    torch.Size([2, 2, 4, 4, 4])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BandLimitedConv",
    "bandlimit_convs",
    "band_indices",
    "band_mask",
    "band_fraction",
    "bandlimited_conv",
    "fft_size",
]


def _check_compression(compression: float) -> float:
    c = float(compression)
    if not math.isfinite(c) or not 0.0 <= c < 100.0:
        raise ValueError(f"compression must be a percentage in [0, 100), got {compression!r}.")
    return c


def fft_size(length: int, *, power_of_two: bool = False) -> int:
    """FFT length for a padded signal of ``length`` samples: the next power of two, or ``length`` itself."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}.")
    return 1 << (length - 1).bit_length() if power_of_two else int(length)


def band_indices(fft_shape: Sequence[int], compression: float) -> list[torch.Tensor]:
    """Kept frequency indices per axis of an ``rfftn`` spectrum of a real signal of size ``fft_shape``.

    Args:
        fft_shape: spatial size ``N`` of the (padded) real signal, one int per spatial dim.
        compression: percent of coefficients dropped, ``[0, 100)``.

    Returns:
        One ``int64`` index tensor per axis into the ``rfftn`` output (whose last axis has
        ``N[-1] // 2 + 1`` entries): ``[0..n, N-n..N-1]`` for the leading axes and ``[0..n]``
        for the last, ``n = floor(f * (N // 2))``, ``f = ((100 - c) / 100) ** (1 / d)``.

    Example:
        >>> [t.tolist() for t in band_indices((8, 8), 75.0)]
        [[0, 1, 2, 6, 7], [0, 1, 2]]
    """
    c = _check_compression(compression)
    shape = [int(s) for s in fft_shape]
    if not shape or min(shape) < 1:
        raise ValueError(f"fft_shape must be positive ints, got {fft_shape!r}.")
    f = ((100.0 - c) / 100.0) ** (1.0 / len(shape))
    out = []
    for i, n_ax in enumerate(shape):
        half = n_ax // 2
        n = min(half, int(math.floor(f * half + 1e-9)))
        if i == len(shape) - 1:
            out.append(torch.arange(n + 1))
        elif 2 * n + 1 >= n_ax:
            out.append(torch.arange(n_ax))
        else:
            out.append(torch.cat([torch.arange(n + 1), torch.arange(n_ax - n, n_ax)]))
    return out


def band_mask(fft_shape: Sequence[int], compression: float, *, onesided: bool = True) -> torch.Tensor:
    """0/1 mask of the kept band: ``rfftn`` layout ``(N_1, ..., N_d // 2 + 1)`` or the full ``fftn`` layout.

    The full mask satisfies ``M[k] == M[-k mod N]`` (Hermitian-consistent: a real signal stays real).

    Example:
        >>> m = band_mask((6, 6), 50.0, onesided=False)
        >>> bool((m == torch.roll(torch.flip(m, (0, 1)), (1, 1), (0, 1))).all())
        True
    """
    shape = [int(s) for s in fft_shape]
    idx = band_indices(shape, compression)
    if onesided:
        sizes = shape[:-1] + [shape[-1] // 2 + 1]
        m = torch.zeros(sizes, dtype=torch.bool)
        m[_grid(idx)] = True
        return m
    m = torch.zeros(shape, dtype=torch.bool)
    full = list(idx[:-1])
    last = idx[-1]
    neg = (-last) % shape[-1]
    full.append(torch.unique(torch.cat([last, neg])))
    # Hermitian completion: bin k is kept iff -k is; the leading axes' bands are symmetric already
    m[_grid(full)] = True
    return m


def band_fraction(fft_shape: Sequence[int], compression: float) -> float:
    """Share of ``rfftn`` coefficients actually kept (the nominal ``1 - c/100`` up to rounding)."""
    shape = [int(s) for s in fft_shape]
    idx = band_indices(shape, compression)
    kept = math.prod(len(i) for i in idx)
    return kept / (math.prod(shape[:-1]) * (shape[-1] // 2 + 1))


def _grid(idx: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Broadcastable index tensors selecting the outer product of per-axis indices."""
    d = len(idx)
    return tuple(t.reshape([-1 if j == i else 1 for j in range(d)]) for i, t in enumerate(idx))


def _gather(spec: torch.Tensor, idx: Sequence[torch.Tensor]) -> torch.Tensor:
    d = len(idx)
    for a, t in enumerate(idx):
        dim = spec.ndim - d + a
        if t.numel() != spec.shape[dim]:
            spec = spec.index_select(dim, t.to(spec.device))
    return spec


def _scatter(compact: torch.Tensor, idx: Sequence[torch.Tensor], spec_shape: Sequence[int]) -> torch.Tensor:
    if all(len(t) == n for t, n in zip(idx, spec_shape)):  # full band: nothing to scatter
        return compact
    full = compact.new_zeros(tuple(compact.shape[: compact.ndim - len(idx)]) + tuple(spec_shape))
    full[(Ellipsis, *_grid([t.to(compact.device) for t in idx]))] = compact
    return full


def _grouped(a: torch.Tensor, groups: int) -> torch.Tensor:
    """``(B, C, ...)`` -> ``(B, G, C/G, ...)``."""
    return a.reshape(a.shape[0], groups, a.shape[1] // groups, *a.shape[2:])


class _BandLimitedCorrelation(torch.autograd.Function):
    """Valid cross-correlation of padded ``x`` with ``w`` through masked ``rfftn`` spectra (stride 1, no bias)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, fft_shape: tuple[int, ...], compression: float,
                groups: int) -> torch.Tensor:
        d = len(fft_shape)
        dims = tuple(range(-d, 0))
        in_sz = tuple(x.shape[2:])
        k_sz = tuple(w.shape[2:])
        out_sz = tuple(i - k + 1 for i, k in zip(in_sz, k_sz))
        idx = band_indices(fft_shape, compression)
        xs = _gather(torch.fft.rfftn(x, s=fft_shape, dim=dims), idx)  # (B, Ci, *band)
        ws = _gather(torch.fft.rfftn(w, s=fft_shape, dim=dims), idx)  # (Co, Ci/G, *band)
        xg = _grouped(xs, groups)  # (B, G, Ci/G, *band)
        wg = ws.reshape(groups, ws.shape[0] // groups, *ws.shape[1:])  # (G, Co/G, Ci/G, *band)
        yb = torch.einsum("bgi...,goi...->bgo...", xg, wg.conj())
        yb = yb.reshape(yb.shape[0], -1, *yb.shape[3:])
        spec_shape = (*fft_shape[:-1], fft_shape[-1] // 2 + 1)
        y = torch.fft.irfftn(_scatter(yb, idx, spec_shape), s=fft_shape, dim=dims)
        y = y[(Ellipsis, *(slice(0, o) for o in out_sz))]
        ctx.save_for_backward(xs, ws)
        ctx.meta = (fft_shape, compression, groups, in_sz, k_sz, out_sz)
        return y.contiguous()

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xs, ws = ctx.saved_tensors
        fft_shape, compression, groups, in_sz, k_sz, out_sz = ctx.meta
        d = len(fft_shape)
        dims = tuple(range(-d, 0))
        idx = band_indices(fft_shape, compression)
        spec_shape = (*fft_shape[:-1], fft_shape[-1] // 2 + 1)
        # the same band mask on the upstream gradient's spectrum
        gs = _gather(torch.fft.rfftn(gy, s=fft_shape, dim=dims), idx)  # (B, Co, *band)
        gg = _grouped(gs, groups)  # (B, G, Co/G, *band)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            wg = ws.reshape(groups, ws.shape[0] // groups, *ws.shape[1:])
            xb = torch.einsum("bgo...,goi...->bgi...", gg, wg)
            xb = xb.reshape(xb.shape[0], -1, *xb.shape[3:])
            gx = torch.fft.irfftn(_scatter(xb, idx, spec_shape), s=fft_shape, dim=dims)
            gx = gx[(Ellipsis, *(slice(0, i) for i in in_sz))].contiguous()
        if ctx.needs_input_grad[1]:
            xg = _grouped(xs, groups)
            wb = torch.einsum("bgi...,bgo...->goi...", xg, gg.conj())
            wb = wb.reshape(-1, *wb.shape[2:])
            gw = torch.fft.irfftn(_scatter(wb, idx, spec_shape), s=fft_shape, dim=dims)
            gw = gw[(Ellipsis, *(slice(0, k) for k in k_sz))].contiguous()
        return gx, gw, None, None, None


def _as_tuple(v: int | Sequence[int], d: int, name: str) -> tuple[int, ...]:
    t = (int(v),) * d if isinstance(v, int) else tuple(int(i) for i in v)
    if len(t) != d:
        raise ValueError(f"{name} must be an int or {d} ints, got {v!r}.")
    return t


def bandlimited_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    compression: float = 0.0,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0,
    padding_mode: str = "zeros",
    groups: int = 1,
    power_of_two: bool = False,
) -> torch.Tensor:
    """Band-limited FFT convolution, the drop-in for ``F.conv{1,2,3}d`` (cross-correlation, dilation 1).

    Args:
        x: input ``(B, C_in, *spatial)`` with 1-3 spatial dims.
        weight: filters ``(C_out, C_in / groups, *kernel)``.
        bias: ``(C_out,)`` or ``None``.
        compression: percent of the one-sided spectrum dropped, ``[0, 100)``; 0 keeps the full band.
        stride: output stride (computed at stride 1, then subsampled).
        padding: ints per spatial dim, ``"same"`` (stride 1 only) or ``"valid"``.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        groups: grouped convolution.
        power_of_two: zero-pad the FFT to the next power of two per axis (the paper's GPU choice);
            default: the padded input size (smaller FFTs on CPU; same result at 0 % compression,
            a slightly different band at other rates since the band is relative to ``N``).

    Returns:
        ``(B, C_out, *out_spatial)`` as the direct convolution's shape.

    Raises:
        ValueError: mismatched shapes/channels, ``compression`` outside ``[0, 100)``, bad padding.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise TypeError(f"x and weight must be tensors, got {type(x).__name__} and {type(weight).__name__}.")
    d = x.ndim - 2
    if d not in (1, 2, 3) or weight.ndim != x.ndim:
        raise ValueError(f"x must be (B, C, *spatial) with 1-3 spatial dims and weight (C_out, C_in/groups, *kernel) "
                         f"with as many dims; got x {tuple(x.shape)}, weight {tuple(weight.shape)}.")
    if groups < 1 or x.shape[1] % groups or weight.shape[0] % groups or weight.shape[1] * groups != x.shape[1]:
        raise ValueError(f"channels: x has {x.shape[1]} channels, weight {tuple(weight.shape)} with groups={groups} "
                         "expects C_in = weight.shape[1] * groups and C_out divisible by groups.")
    c = _check_compression(compression)
    st = _as_tuple(stride, d, "stride")
    k_sz = tuple(weight.shape[2:])
    if isinstance(padding, str):
        if padding == "valid":
            pads = [(0, 0)] * d
        elif padding == "same":
            if any(s != 1 for s in st):
                raise ValueError("padding='same' needs stride 1 (as torch.nn.Conv).")
            pads = [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in k_sz]
        else:
            raise ValueError(f"padding must be ints, 'same' or 'valid', got {padding!r}.")
    else:
        pads = [(p, p) for p in _as_tuple(padding, d, "padding")]
    flat = [v for pair in reversed(pads) for v in pair]  # F.pad order: last dim first
    if any(flat):
        mode = {"zeros": "constant"}.get(padding_mode, padding_mode)
        if mode not in ("constant", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular', got {padding_mode!r}.")
        x = F.pad(x, flat, mode=mode)
    if any(i < k for i, k in zip(x.shape[2:], k_sz)):
        raise ValueError(f"padded input {tuple(x.shape[2:])} is smaller than the kernel {k_sz}.")
    fft_shape = tuple(fft_size(int(i), power_of_two=power_of_two) for i in x.shape[2:])
    y = _BandLimitedCorrelation.apply(x, weight, fft_shape, c, int(groups))
    if any(s != 1 for s in st):
        y = y[(Ellipsis, *(slice(None, None, s) for s in st))]
    if bias is not None:
        y = y + bias.reshape(1, -1, *([1] * d))
    return y


class BandLimitedConv(nn.Module):
    """A band-limited FFT convolution layer with the parameters of an ``nn.Conv{1,2,3}d``.

    Args:
        weight: filters ``(C_out, C_in / groups, *kernel)`` (an ``nn.Parameter``; shared, not copied).
        bias: ``(C_out,)`` parameter or ``None``.
        compression: percent of the one-sided spectrum dropped, ``[0, 100)``.
        stride, padding, padding_mode, groups, power_of_two: as :func:`bandlimited_conv`.

    Use :meth:`from_conv` to wrap an existing convolution; ``compression`` may be changed later
    (``layer.compression = 60.0``).
    """

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None = None, *, compression: float = 0.0,
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] | str = 0, padding_mode: str = "zeros",
                 groups: int = 1, power_of_two: bool = False) -> None:
        super().__init__()
        self.weight = weight
        self.bias = bias
        self.compression = _check_compression(compression)
        self.stride, self.padding, self.padding_mode = stride, padding, padding_mode
        self.groups, self.power_of_two = int(groups), bool(power_of_two)

    @classmethod
    def from_conv(cls, conv: nn.Module, *, compression: float = 0.0, power_of_two: bool = False) -> BandLimitedConv:
        """The band-limited twin of ``conv`` (``nn.Conv1d/2d/3d``), sharing its weight and bias.

        Raises:
            TypeError: ``conv`` is not a plain ``nn.Conv1d/2d/3d`` (transposed convs are not supported).
            ValueError: ``dilation != 1``.
        """
        if not isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            raise TypeError(f"conv must be nn.Conv1d/2d/3d, got {type(conv).__name__}.")
        if any(int(v) != 1 for v in conv.dilation):
            raise ValueError(f"band-limited convolution supports dilation 1 only, got dilation={tuple(conv.dilation)} "
                             f"in {conv!r}.")
        return cls(conv.weight, conv.bias, compression=compression, stride=tuple(conv.stride), padding=conv.padding,
                   padding_mode=conv.padding_mode, groups=conv.groups, power_of_two=power_of_two)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *spatial) -> (B, C_out, *out_spatial)``."""
        return bandlimited_conv(x, self.weight, self.bias, compression=self.compression, stride=self.stride,
                                padding=self.padding, padding_mode=self.padding_mode, groups=self.groups,
                                power_of_two=self.power_of_two)

    def extra_repr(self) -> str:
        w = self.weight.shape
        return (f"{w[1] * self.groups}, {w[0]}, kernel_size={tuple(w[2:])}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, compression={self.compression:g}")


def bandlimit_convs(model: nn.Module, *, compression: float = 0.0, power_of_two: bool = False,
                    skip: Sequence[str] = ()) -> nn.Module:
    """Replace every ``nn.Conv1d/2d/3d`` in ``model`` (in place) by a :class:`BandLimitedConv`.

    Parameters are shared with the replaced layers, so ``state_dict`` keys and values are
    unchanged and a direct-conv checkpoint loads as it is. Already band-limited layers get the
    new ``compression``.

    Args:
        model: any network (MONAI ``nets``/``blocks`` included).
        compression: percent of the spectrum dropped in every replaced layer.
        power_of_two: see :func:`bandlimited_conv`.
        skip: qualified module names (as in ``model.named_modules()``) left as direct convs.

    Returns:
        ``model`` (also modified in place). A bare conv module is returned wrapped, not modified.

    Raises:
        ValueError: a conv has ``dilation != 1`` (name given); nothing is replaced then.
    """
    c = _check_compression(compression)
    if isinstance(model, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return BandLimitedConv.from_conv(model, compression=c, power_of_two=power_of_two)
    todo = []
    for name, mod in model.named_modules():
        if name in skip:
            continue
        if isinstance(mod, BandLimitedConv):
            mod.compression = c
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            if any(int(v) != 1 for v in mod.dilation):
                raise ValueError(f"module {name!r}: band-limited convolution supports dilation 1 only, "
                                 f"got dilation={tuple(mod.dilation)}.")
            todo.append(name)
    for name in todo:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, BandLimitedConv.from_conv(getattr(parent, attr), compression=c, power_of_two=power_of_two))
    return model
