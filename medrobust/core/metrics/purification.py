"""Feature-purification diagnostic on first-layer filters (Allen-Zhu & Li, arXiv 2005.10190).

The theory says a clean-trained filter ``w_i`` is its adversarially fine-tuned version ``w'_i``
plus a small "dense mixture" ``v_i``: ``w_i = beta_i w'_i + v_i``. We fit ``beta_i`` by least
squares (``beta_i = <w_i, w'_i> / ||w'_i||^2``, so ``v_i`` is orthogonal to ``w'_i``) and report
``||v_i|| / ||w_i||`` per filter (0 = the clean filter is a rescaled robust one, 1 = orthogonal).
With the initial weights, the cosine of each filter with its initialisation is reported too
(the theory predicts both are nearly uncorrelated with it).

Filters come from the first ``nn.Conv1d/2d/3d`` of a model (2-D and 3-D alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from medrobust.core.metrics._utils import pyplot, save_figure

__all__ = ["first_conv_weight", "PurificationResult", "purification_decomposition", "plot_filters"]


def first_conv_weight(model: nn.Module) -> torch.Tensor:
    """Weight ``(O, I, *kernel)`` of the first convolution in ``model.modules()`` order (detached copy).

    Raises:
        ValueError: the model has no ``nn.Conv1d/2d/3d``.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return m.weight.detach().clone()
    raise ValueError(f"model ({type(model).__name__}) has no nn.Conv1d/Conv2d/Conv3d layer to take filters from.")


@dataclass
class PurificationResult:
    """Per-filter decomposition ``w_i = beta_i w'_i + v_i``.

    Attributes:
        beta: least-squares coefficients ``(O,)``.
        residual_ratio: ``||v_i|| / ||w_i||`` ``(O,)``.
        cosine: cosine similarity of ``w_i`` and ``w'_i`` ``(O,)`` (``residual_ratio = sqrt(1 - cos^2)``).
        relative_change: ``||w_i - w'_i|| / ||w_i||`` ``(O,)``: how far the filter moved at all (a small
            residual ratio means little when this is small too).
        cos_init_clean, cos_init_robust: cosine with the initial filter ``(O,)``, or ``None``.
    """

    beta: torch.Tensor
    residual_ratio: torch.Tensor
    cosine: torch.Tensor
    relative_change: torch.Tensor
    cos_init_clean: torch.Tensor | None = None
    cos_init_robust: torch.Tensor | None = None

    def to_frame(self) -> pd.DataFrame:
        """One row per filter."""
        d = {"filter": np.arange(self.beta.numel()), "beta": self.beta.numpy(),
             "residual_ratio": self.residual_ratio.numpy(), "cosine": self.cosine.numpy(),
             "relative_change": self.relative_change.numpy()}  # fmt: skip
        if self.cos_init_clean is not None and self.cos_init_robust is not None:
            d["cos_init_clean"] = self.cos_init_clean.numpy()
            d["cos_init_robust"] = self.cos_init_robust.numpy()
        return pd.DataFrame(d)

    def summary(self) -> dict[str, float]:
        """Mean/median of the residual ratio, mean relative change, mean |cosine| with the initialisation."""
        out = {"residual_ratio_mean": float(self.residual_ratio.mean()),
               "residual_ratio_median": float(self.residual_ratio.median()),
               "relative_change_mean": float(self.relative_change.mean())}  # fmt: skip
        if self.cos_init_clean is not None and self.cos_init_robust is not None:
            out["abs_cos_init_clean_mean"] = float(self.cos_init_clean.abs().mean())
            out["abs_cos_init_robust_mean"] = float(self.cos_init_robust.abs().mean())
        return out


def _weights(w: nn.Module | torch.Tensor, name: str) -> torch.Tensor:
    t = first_conv_weight(w) if isinstance(w, nn.Module) else w
    if not isinstance(t, torch.Tensor) or t.ndim < 2:
        raise TypeError(f"{name} must be an nn.Module or a filter tensor (O, I, *kernel), got {type(w).__name__}.")
    return t.detach().reshape(t.shape[0], -1).double().cpu()


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)


def purification_decomposition(
    clean: nn.Module | torch.Tensor,
    robust: nn.Module | torch.Tensor,
    init: nn.Module | torch.Tensor | None = None,
) -> PurificationResult:
    """Decompose clean first-layer filters on their adversarially fine-tuned counterparts.

    Args:
        clean: the clean-trained model, or its filters ``(O, I, *kernel)``.
        robust: the adversarially fine-tuned model (same architecture), or its filters.
        init: optional initial model/filters, for the correlation-with-initialisation check.

    Example:
        >>> w = torch.randn(8, 1, 3, 3)
        >>> r = purification_decomposition(2.0 * w, w)
        >>> float(r.residual_ratio.max()) < 1e-6 and abs(float(r.beta[0]) - 2.0) < 1e-6
        True
    """
    w, wp = _weights(clean, "clean"), _weights(robust, "robust")
    if w.shape != wp.shape:
        raise ValueError(f"clean and robust filters differ in shape: {tuple(w.shape)} vs {tuple(wp.shape)}.")
    beta = (w * wp).sum(1) / (wp * wp).sum(1).clamp_min(1e-300)
    v = w - beta[:, None] * wp
    wn = w.norm(dim=1).clamp_min(1e-300)
    res = PurificationResult(beta=beta.float(), residual_ratio=(v.norm(dim=1) / wn).float(), cosine=_cos(w, wp).float(),
                             relative_change=((w - wp).norm(dim=1) / wn).float())  # fmt: skip
    if init is not None:
        w0 = _weights(init, "init")
        if w0.shape != w.shape:
            raise ValueError(f"init filters differ in shape from clean: {tuple(w0.shape)} vs {tuple(w.shape)}.")
        res.cos_init_clean = _cos(w, w0).float()
        res.cos_init_robust = _cos(wp, w0).float()
    return res


def _filter_image(f: torch.Tensor) -> np.ndarray:
    """(I, *kernel) -> 2-D (or RGB) image: RGB for 3 input channels, else channel 0; middle depth slice in 3-D."""
    f = f.detach().float().cpu()
    if f.ndim == 4:  # 3-D kernel (I, kh, kw, kd)
        f = f[..., f.shape[-1] // 2]
    if f.ndim == 2:  # 1-D kernel (I, k)
        f = f[:, None, :]
    if f.shape[0] == 3:
        img = f.permute(1, 2, 0)
        return ((img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)).numpy()
    return f[0].numpy()


def plot_filters(
    clean: nn.Module | torch.Tensor,
    robust: nn.Module | torch.Tensor,
    path: str | Path,
    *,
    result: PurificationResult | None = None,
    max_filters: int = 32,
) -> Path:
    """PNG: clean filters (top row of each pair), robust filters (bottom), titled with ``||v||/||w||``."""
    plt = pyplot()
    wc = first_conv_weight(clean) if isinstance(clean, nn.Module) else clean.detach()
    wr = first_conv_weight(robust) if isinstance(robust, nn.Module) else robust.detach()
    result = result or purification_decomposition(wc, wr)
    n = min(max_filters, wc.shape[0])
    cols = min(n, 8)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(2 * rows, cols, figsize=(1.4 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        r, c = 2 * (i // cols), i % cols
        for k, (w, label) in enumerate(((wc, "clean"), (wr, "AT"))):
            img = _filter_image(w[i])
            v = float(np.abs(img).max()) or 1.0
            kw = {} if img.ndim == 3 else {"cmap": "RdBu_r", "vmin": -v, "vmax": v}
            axes[r + k, c].imshow(img, **kw)
            axes[r + k, c].set_title(f"{label} {i}" + (f" r={float(result.residual_ratio[i]):.2f}" if k == 0 else ""),
                                     fontsize=7)  # fmt: skip
    fig.suptitle("first-layer filters: clean (upper) vs adversarially fine-tuned (lower); r = ||v||/||w||", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
