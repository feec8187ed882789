"""PNG figures of a sensitivity run (matplotlib, Agg backend).

- :func:`plot_family_curves`: per family, flip rate / mean |delta p| / mean |delta margin| /
  AUC / KS against severity, one line per subgroup (``all`` in black, its 95 % confidence
  interval as a grey band);
- :func:`plot_cnr_curves`: ROI contrast-to-noise ratio against severity per family;
- :func:`plot_example_grid`: a grid of example perturbed images (rows: families, columns:
  severities).

Example:
    >>> paths = plot_family_curves(summary, Path("runs/demo"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["METRIC_LABELS", "plot_family_curves", "plot_cnr_curves", "plot_example_grid", "safe_name"]

METRIC_LABELS = {
    "flip_rate": "flip rate vs clean",
    "mean_abs_delta_p": "mean |delta p(positive)|",
    "mean_abs_delta_margin": "mean |delta margin| (log-odds)",
    "auc": "AUC",
    "ks": "class separability (KS)",
}


def safe_name(name: str) -> str:
    """A file-name-safe version of a family name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _severity_axis(ax, severities: Sequence[float]) -> None:
    ax.set_xticks(range(len(severities)))
    ax.set_xticklabels([f"{s:g}" for s in severities], rotation=45 if len(severities) > 6 else 0)
    ax.set_xlabel("severity")
    ax.grid(True, alpha=0.3)


def plot_family_curves(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One ``curves_<family>.png`` per family; returns the paths written."""
    paths = []
    for fam, fd in summary.groupby("family", sort=False):
        sevs = sorted(fd["severity"].unique())
        pos = {s: i for i, s in enumerate(sevs)}
        fig, axes = plt.subplots(2, 3, figsize=(14, 7), constrained_layout=True)
        axes.ravel()[-1].axis("off")
        subgroups = ["all"] + sorted(sg for sg in fd["subgroup"].unique() if sg != "all")
        for ax, (metric, label) in zip(axes.ravel(), METRIC_LABELS.items()):
            drawn = False
            for sg in subgroups:
                d = fd[fd["subgroup"] == sg].sort_values("severity")
                if metric in d and d[metric].notna().any():
                    style = dict(color="black", lw=2.2) if sg == "all" else dict(lw=1.2, alpha=0.9)
                    xs = [pos[s] for s in d["severity"]]
                    if sg == "all" and f"{metric}_lo" in d and d[f"{metric}_lo"].notna().any():
                        ax.fill_between(xs, d[f"{metric}_lo"].astype(float), d[f"{metric}_hi"].astype(float),
                                        color="grey", alpha=0.3, lw=0, label="95 % CI (all)")
                    ax.plot(xs, d[metric], marker="o", label=sg, **style)
                    drawn = True
            if not drawn:
                ax.text(0.5, 0.5, "needs labels with both classes" if metric in ("auc", "ks") else "not recorded", ha="center", va="center", transform=ax.transAxes)
            ax.set_ylabel(label)
            _severity_axis(ax, sevs)
            if metric in ("flip_rate", "auc", "ks"):
                ax.set_ylim(-0.02, 1.02)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        if len(labels) > 1 or subgroups == ["all"]:
            fig.legend(handles, labels, loc="outside right upper", title="subgroup")
        fig.suptitle(f"{fam}: sensitivity vs severity")
        path = out_dir / f"curves_{safe_name(str(fam))}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_cnr_curves(cnr_summary: pd.DataFrame, out_dir: Path) -> Path | None:
    """``curves_cnr.png``: mean ROI CNR (ratio to clean) vs severity, one panel per family."""
    if cnr_summary is None or cnr_summary.empty:
        return None
    d = cnr_summary[cnr_summary["subgroup"] == "all"]
    fams = list(dict.fromkeys(d["family"]))
    fig, axes = plt.subplots(1, len(fams), figsize=(3.6 * len(fams), 3.4), squeeze=False, constrained_layout=True)
    for ax, fam in zip(axes[0], fams):
        fd = d[d["family"] == fam].sort_values("severity")
        sevs = list(fd["severity"])
        ax.plot(range(len(sevs)), fd["mean_cnr_ratio"], marker="o", color="black")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_title(fam)
        ax.set_ylabel("ROI CNR / clean CNR")
        _severity_axis(ax, sevs)
    path = out_dir / "curves_cnr.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_example_grid(panels: list[tuple[str, list[tuple[float, np.ndarray]]]], path: Path, title: str = "") -> Path:
    """Draw ``panels`` (rows of ``(label, [(severity, image2d), ...])``) as a grid of grey images.

    Images are shown on a fixed ``[0, 1]`` grey scale (the perturbation space).
    """
    ncols = max(len(r) for _, r in panels)
    nrows = len(panels)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.7 * ncols, 1.9 * nrows), squeeze=False, constrained_layout=True)
    for r, (label, row) in enumerate(panels):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.axis("off")
                continue
            sev, img = row[c]
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(f"{sev:g}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
