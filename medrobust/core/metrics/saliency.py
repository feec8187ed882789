"""How much an input-perturbation saliency map depends on its "neutral" baseline
(Brunke, Agrawal, George, ECCV-W 2020, arXiv 2101.10977).

Occlusion maps are computed with four baselines (black = the lower bound, the image mean, a
Gaussian-blurred copy, uniform noise); the study reports

- the Spearman rank correlation between the maps of every pair of baselines, per sample;
- deletion scores of every map under every removal baseline: the area under the
  target-class probability as a growing fraction of voxels is replaced, most relevant first
  (MoRF, lower is better) and least relevant first (LeRF, higher is better). (Insertion, i.e.
  restoring voxels most relevant first into the baseline, traces the LeRF curve backwards and
  has the same area, so it is not reported separately.)

Everything works for ``x`` ``(B, C, H, W[, D])``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.networks.layers import GaussianFilter
from scipy.stats import spearmanr

from medrobust.core.attacks.base import Bounds, GeneratorLike, as_bounds, draw, per_sample_generators
from medrobust.core.metrics._utils import ClassLogits, check_batch, eval_mode, pyplot, save_figure, spatial_dims_of
from medrobust.core.metrics.attribution import occlusion, resolve_target

__all__ = [
    "BASELINE_KINDS",
    "occlusion_baselines",
    "rank_correlation",
    "deletion_scores",
    "BaselineStudy",
    "occlusion_baseline_study",
    "plot_baseline_study",
    "plot_maps",
]

BASELINE_KINDS = ("black", "mean", "blur", "noise")


def occlusion_baselines(
    x: torch.Tensor,
    *,
    kinds: Sequence[str] = BASELINE_KINDS,
    bounds: Bounds = (0.0, 1.0),
    blur_sigma: float | None = None,
    generator: GeneratorLike = None,
) -> dict[str, torch.Tensor]:
    """Baseline images ``(B, C, *spatial)`` for each kind.

    Args:
        x: inputs ``(B, C, H, W[, D])`` inside ``bounds``.
        kinds: any of ``"black"`` (the lower bound), ``"mean"`` (per-sample, per-channel mean),
            ``"blur"`` (Gaussian blur), ``"noise"`` (uniform noise inside the bounds).
        bounds: ``(low, high)`` of the intensity space (floats or tensors, see ``core.attacks``).
        blur_sigma: Gaussian sigma in voxels; default 10% of the smallest spatial size (>= 1).
        generator: seeds the noise baseline (per-sample generators; global RNG untouched).
    """
    sd = spatial_dims_of(x)
    lo, hi = as_bounds(bounds, x)
    out: dict[str, torch.Tensor] = {}
    for k in kinds:
        if k == "black":
            out[k] = torch.broadcast_to(lo, x.shape).clone()
        elif k == "mean":
            out[k] = x.mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x).clone()
        elif k == "blur":
            sigma = float(blur_sigma) if blur_sigma is not None else max(1.0, 0.1 * min(x.shape[2:]))
            with torch.no_grad():
                out[k] = GaussianFilter(sd, sigma=sigma)(x.detach().float()).to(x.dtype)
        elif k == "noise":
            gens = per_sample_generators(generator, x.shape[0])
            u = draw(gens, x.shape[1:], torch.rand, x)
            out[k] = lo + (hi - lo) * u
        else:
            raise ValueError(f"baseline kind must be one of {BASELINE_KINDS}, got {k!r}.")
    return out


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per sample ``(B,)`` between maps ``(B, ...)`` (ties get average ranks).

    NaN where a map is constant.
    """
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    fa = a.detach().reshape(a.shape[0], -1).double().cpu().numpy()
    fb = b.detach().reshape(b.shape[0], -1).double().cpu().numpy()
    vals = []
    for u, v in zip(fa, fb):
        if np.ptp(u) == 0 or np.ptp(v) == 0:
            vals.append(np.nan)
        else:
            vals.append(float(spearmanr(u, v).statistic))
    return torch.tensor(vals, dtype=torch.float64)


def _curve_auc(p: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of curves ``(B, steps + 1)`` sampled on [0, 1]."""
    return ((p[:, 1:] + p[:, :-1]) / 2).mean(dim=1)


def deletion_scores(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    target: int | torch.Tensor | None,
    saliency: torch.Tensor,
    *,
    replacement: torch.Tensor | float = 0.0,
    steps: int = 20,
    chunk: int = 128,
) -> dict[str, torch.Tensor]:
    """MoRF / LeRF deletion scores per sample.

    Voxels are ranked by the saliency summed over channels; at fraction ``k / steps`` the top
    (MoRF) or bottom (LeRF) fraction is replaced by ``replacement`` in all channels, and the
    target-class probability is recorded.

    Args:
        model: classifier ``(B, C, *spatial) -> (B, K)``.
        x: inputs ``(B, C, H, W[, D])``.
        target: class per sample, int, or ``None`` (predicted).
        saliency: maps ``(B, C, ...)`` or ``(B, 1, ...)`` of ``x``'s spatial shape.
        replacement: values that "remove" a voxel (scalar or tensor broadcastable to ``x``).
        steps: number of fractions (curve has ``steps + 1`` points).
        chunk: images per forward pass.

    Returns:
        ``{"morf", "lerf"}``: areas under the curves ``(B,)`` (in [0, 1]), and
        ``"curves_morf"``, ``"curves_lerf"`` ``(B, steps + 1)``.
    """
    check_batch(x)
    if saliency.ndim != x.ndim or saliency.shape[0] != x.shape[0] or saliency.shape[2:] != x.shape[2:]:
        raise ValueError(f"saliency must be (B, C|1, *spatial) matching x {tuple(x.shape)}, got {tuple(saliency.shape)}.")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    t = resolve_target(model, x, target)
    rep = torch.broadcast_to(torch.as_tensor(replacement, dtype=x.dtype, device=x.device), x.shape)
    b, n = x.shape[0], int(np.prod(x.shape[2:]))
    score = saliency.detach().sum(dim=1).reshape(b, n)
    order_desc = torch.argsort(score, dim=1, descending=True, stable=True)
    rank_desc = torch.empty_like(order_desc)
    rank_desc.scatter_(1, order_desc, torch.arange(n, device=x.device).expand(b, n))
    counts = [round(k * n / steps) for k in range(steps + 1)]
    wrapped = ClassLogits(model)

    def curve(removed_mask_fn: Callable[[int], torch.Tensor]) -> torch.Tensor:
        imgs = []
        for c in counts:
            m = removed_mask_fn(c).reshape(b, 1, *x.shape[2:]).to(x.dtype)
            imgs.append(x * (1 - m) + rep * m)
        stack = torch.stack(imgs, dim=1).reshape(b * len(counts), *x.shape[1:])
        tt = t.repeat_interleave(len(counts))
        probs = []
        with eval_mode(model), torch.no_grad():
            for i in range(0, stack.shape[0], chunk):
                p = torch.softmax(wrapped(stack[i : i + chunk]), dim=1)
                probs.append(p.gather(1, tt[i : i + chunk, None])[:, 0])
        return torch.cat(probs).reshape(b, len(counts)).double()

    morf = curve(lambda c: rank_desc < c)
    lerf = curve(lambda c: rank_desc >= n - c)
    return {"morf": _curve_auc(morf), "lerf": _curve_auc(lerf), "curves_morf": morf, "curves_lerf": lerf}


@dataclass
class BaselineStudy:
    """Result of :func:`occlusion_baseline_study`.

    Attributes:
        maps: occlusion map per baseline kind, ``(B, C, *spatial)`` each.
        spearman: ``(B, K, K)`` rank correlation between the maps of kinds ``i`` and ``j``.
        kinds: the K baseline kinds, in order.
        scores: one row per (sample, map_baseline, removal_baseline) with ``morf`` and ``lerf``.
    """

    maps: dict[str, torch.Tensor]
    spearman: torch.Tensor
    kinds: tuple[str, ...]
    scores: pd.DataFrame

    def spearman_table(self) -> pd.DataFrame:
        """Mean (over samples, NaN-aware) Spearman correlation between baseline kinds, ``K x K``."""
        m = torch.nanmean(self.spearman, dim=0).numpy()
        return pd.DataFrame(m, index=list(self.kinds), columns=list(self.kinds))

    def score_table(self) -> pd.DataFrame:
        """Mean scores per (map_baseline, removal_baseline)."""
        cols = ["morf", "lerf"]
        return self.scores.groupby(["map_baseline", "removal_baseline"])[cols].mean()


def occlusion_baseline_study(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    target: int | torch.Tensor | None = None,
    *,
    window: int | Sequence[int] = 4,
    stride: int | Sequence[int] | None = None,
    kinds: Sequence[str] = BASELINE_KINDS,
    bounds: Bounds = (0.0, 1.0),
    blur_sigma: float | None = None,
    steps: int = 20,
    generator: GeneratorLike = None,
) -> BaselineStudy:
    """Occlusion maps under each baseline, their rank agreement, and MoRF/LeRF deletion scores.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
        >>> s = occlusion_baseline_study(net, torch.rand(2, 1, 8, 8), window=2, steps=4)
        >>> s.spearman.shape
        torch.Size([2, 4, 4])
    """
    check_batch(x)
    t = resolve_target(model, x, target)
    bases = occlusion_baselines(x, kinds=kinds, bounds=bounds, blur_sigma=blur_sigma, generator=generator)
    ks = tuple(bases)
    maps = {k: occlusion(model, x, t, window=window, stride=stride, baseline=bases[k]) for k in ks}
    sp = torch.full((x.shape[0], len(ks), len(ks)), float("nan"), dtype=torch.float64)
    for i, a in enumerate(ks):
        for j, c in enumerate(ks):
            sp[:, i, j] = 1.0 if i == j else (sp[:, j, i] if j < i else rank_correlation(maps[a], maps[c]))
    rows = []
    for a in ks:
        for r in ks:
            s = deletion_scores(model, x, t, maps[a], replacement=bases[r], steps=steps)
            for i in range(x.shape[0]):
                rows.append({"sample": i, "map_baseline": a, "removal_baseline": r,
                             "morf": float(s["morf"][i]), "lerf": float(s["lerf"][i])})  # fmt: skip
    return BaselineStudy(maps=maps, spearman=sp, kinds=ks, scores=pd.DataFrame(rows))


def _display(t: torch.Tensor) -> np.ndarray:
    """(C, *spatial) -> a 2-D array: channel-mean, middle slice of the last axis for 3-D."""
    a = t.detach().float().mean(dim=0)
    if a.ndim == 3:
        a = a[..., a.shape[-1] // 2]
    return a.cpu().numpy()


def plot_maps(x: torch.Tensor, maps: dict[str, torch.Tensor], path: str | Path, *, max_samples: int = 4) -> Path:
    """PNG grid: for each of up to ``max_samples`` inputs ``(B, C, *spatial)``, the image and each map.

    Maps are shown with a symmetric diverging colour scale; 3-D inputs show the middle slice of
    the last spatial axis, multi-channel inputs the channel mean.
    """
    plt = pyplot()
    n = min(max_samples, x.shape[0])
    names = list(maps)
    fig, axes = plt.subplots(n, len(names) + 1, figsize=(2.2 * (len(names) + 1), 2.2 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(_display(x[i]), cmap="gray")
        axes[i, 0].set_title("input" if i == 0 else "")
        for j, name in enumerate(names):
            m = _display(maps[name][i])
            v = float(np.abs(m).max()) or 1.0
            axes[i, j + 1].imshow(m, cmap="RdBu_r", vmin=-v, vmax=v)
            if i == 0:
                axes[i, j + 1].set_title(name, fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_baseline_study(study: BaselineStudy, x: torch.Tensor, path: str | Path, *, max_samples: int = 4) -> Path:
    """PNG: for each of up to ``max_samples`` inputs, the image and its occlusion map per baseline."""
    return plot_maps(x, study.maps, path, max_samples=max_samples)
