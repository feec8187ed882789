"""Reconstruction metrics with fastMRI's definitions, plus masked NMSE for small features (FNAF).

fastMRI (``fastmri/evaluate.py``) evaluates one *volume* at a time, a stack of slices
``(S, H, W)``:

- NMSE = ``||gt - pred||^2 / ||gt||^2`` over the volume;
- PSNR = ``10 log10(data_range^2 / MSE)`` with ``data_range = gt.max()`` of the volume;
- SSIM = scikit-image's ``structural_similarity`` with its defaults (7x7 uniform window,
  K1 = 0.01, K2 = 0.03, sample covariance) and ``data_range = gt.max()``, per slice, averaged.

PSNR is MONAI's :class:`~monai.metrics.PSNRMetric`. SSIM reuses MONAI's
:func:`~monai.metrics.compute_ssim_and_cs` with a uniform 7x7 kernel; MONAI uses the population
(co)variance while scikit-image uses the sample one (factor ``c = N/(N-1)``, N = 49), and
``(2 c s_xy + C2)/(c s_x + c s_y + C2) = (2 s_xy + C2/c)/(s_x + s_y + C2/c)``, so passing
``k2 / sqrt(c)`` to MONAI gives scikit-image's value exactly.

A 2-D image ``(H, W)`` is a one-slice volume; a 3-D volume stored ``(H, W, D)`` is passed as
``vol.permute(2, 0, 1)`` (slices first).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.metrics import PSNRMetric, compute_ssim_and_cs

__all__ = ["nmse", "psnr", "ssim", "masked_nmse", "reconstruction_metrics"]

ArrayLike = torch.Tensor | np.ndarray


def _volume(a: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).detach().to(torch.float64)
    if t.is_complex():
        raise TypeError(f"{name} must be real (take the magnitude first), got a complex tensor.")
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"{name} must be a volume (S, H, W) or an image (H, W), got shape {tuple(t.shape)}.")
    return t


def _pair(gt: ArrayLike, pred: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    g, p = _volume(gt, "gt"), _volume(pred, "pred")
    if g.shape != p.shape:
        raise ValueError(f"gt and pred must have the same shape, got {tuple(g.shape)} and {tuple(p.shape)}.")
    return g, p.to(g.device)


def _data_range(g: torch.Tensor, data_range: float | None) -> float:
    dr = float(g.max()) if data_range is None else float(data_range)
    if not dr > 0:
        raise ValueError(f"data_range must be > 0 (default: the volume max of gt), got {dr}.")
    return dr


def nmse(gt: ArrayLike, pred: ArrayLike) -> float:
    """Normalised MSE of a volume: ``||gt - pred||^2 / ||gt||^2``.

    Example:
        >>> nmse(torch.ones(2, 4, 4), torch.zeros(2, 4, 4))
        1.0
    """
    g, p = _pair(gt, pred)
    den = float((g**2).sum())
    if den == 0.0:
        raise ValueError("nmse: gt is all zeros, so ||gt||^2 = 0 and NMSE is undefined.")
    return float(((g - p) ** 2).sum()) / den


def psnr(gt: ArrayLike, pred: ArrayLike, *, data_range: float | None = None) -> float:
    """PSNR in dB of a volume with ``data_range = gt.max()`` by default (fastMRI); MONAI's PSNRMetric.

    Returns ``inf`` when ``pred == gt``.
    """
    g, p = _pair(gt, pred)
    dr = _data_range(g, data_range)
    if torch.equal(g, p):
        return math.inf
    return float(PSNRMetric(max_val=dr, reduction="none")(p[None, None], g[None, None]).reshape(()))


def ssim(
    gt: ArrayLike,
    pred: ArrayLike,
    *,
    data_range: float | None = None,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean over slices of scikit-image-default SSIM, ``data_range = gt.max()`` of the volume (fastMRI).

    Args:
        gt, pred: volumes ``(S, H, W)`` (or one image ``(H, W)``); ``H, W >= win_size``.
        data_range: intensity range; default ``gt.max()`` over the whole volume.
        win_size: odd uniform window size (scikit-image default 7).
        k1, k2: SSIM stability constants.

    Example:
        >>> x = torch.rand(3, 16, 16)
        >>> ssim(x, x)
        1.0
    """
    g, p = _pair(gt, pred)
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be odd and >= 3, got {win_size}.")
    if min(g.shape[-2:]) < win_size:
        raise ValueError(f"ssim: each slice must be at least {win_size}x{win_size}, got {tuple(g.shape[-2:])}.")
    dr = _data_range(g, data_range)
    n = win_size * win_size
    k2_pop = k2 / math.sqrt(n / (n - 1))  # sample -> population covariance (see module docstring)
    s, _ = compute_ssim_and_cs(
        p[:, None], g[:, None], spatial_dims=2, kernel_size=[win_size] * 2, kernel_sigma=[1.5, 1.5],
        data_range=dr, kernel_type="uniform", k1=k1, k2=k2_pop,
    )  # fmt: skip
    return float(s.reshape(s.shape[0], -1).mean(dim=1).mean())


def masked_nmse(gt: ArrayLike, pred: ArrayLike, mask: ArrayLike) -> float:
    """NMSE restricted to a (small-feature) mask: ``||m (gt - pred)||^2 / ||m gt||^2``.

    FNAF counts a feature as missed (a false negative) when this is >= 0.001. Any shape; ``mask``
    broadcasts to ``gt`` and may be soft (weights in [0, 1]).

    Example:
        >>> gt = torch.zeros(8, 8); gt[2:4, 2:4] = 1.0
        >>> m = gt > 0
        >>> masked_nmse(gt, gt * 0.9, m)
        0.01...
    """
    g = torch.as_tensor(gt).detach().to(torch.float64)
    p = torch.as_tensor(pred).detach().to(torch.float64)
    m = torch.as_tensor(mask).detach().to(torch.float64)
    if g.shape != p.shape:
        raise ValueError(f"gt and pred must have the same shape, got {tuple(g.shape)} and {tuple(p.shape)}.")
    try:
        m = torch.broadcast_to(m, g.shape)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(m.shape)} does not broadcast to gt {tuple(g.shape)}.") from None
    if float(((m * g) ** 2).sum()) == 0.0:
        raise ValueError("masked_nmse: gt is zero everywhere inside the mask (or the mask is empty).")
    # one definition of the measure: the FNAF attack's loss (metrics may use attacks, not the reverse)
    from medrobust.core.attacks.fnaf import fnaf_loss

    return float(fnaf_loss(p[None], g[None], m[None], kind="nmse")[0])


def reconstruction_metrics(gt: ArrayLike, pred: ArrayLike) -> dict[str, float]:
    """``{"nmse", "psnr", "ssim"}`` of one volume with fastMRI's definitions."""
    return {"nmse": nmse(gt, pred), "psnr": psnr(gt, pred), "ssim": ssim(gt, pred)}
