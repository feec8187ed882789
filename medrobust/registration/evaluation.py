"""Per-case registration metrics (TRE mm, Dice, HD95, folding, std log-J) and their CSV/JSON outputs.

Every number comes from :mod:`medrobust.core.metrics.registration`; this module only decides which
channels are landmarks (all but the gland, channel 0, by default), collects rows per case and per
landmark, and summarises them. :class:`RegistrationMetricsHandler` attaches the same thing to a
MONAI evaluator running :class:`~medrobust.registration.engine.RegistrationEvalIteration`.

Example:
    >>> import torch
    >>> lab = torch.zeros(1, 2, 16, 16, 16); lab[:, :, 4:12, 4:12, 4:12] = 1
    >>> row = case_metrics(torch.zeros(1, 3, 16, 16, 16), lab, lab, torch.eye(4))
    >>> row["dice_gland"], row["tre_mean_mm"]
    (1.0, 0.0)
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrobust.core.metrics.registration import (
    dice_score,
    folding_percentage,
    hd95,
    label_centroids,
    std_log_jacobian,
    tre_from_labels,
    tre_from_points,
)

__all__ = ["case_metrics", "summarise", "write_rows", "RegistrationMetricsHandler"]

logger = logging.getLogger(__name__)


def case_metrics(
    ddf: torch.Tensor,
    warped_label: torch.Tensor,
    fixed_label: torch.Tensor,
    affine: torch.Tensor,
    *,
    gland_channel: int = 0,
    landmark_channels: Sequence[int] | None = None,
    moving_label: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Metrics of one registered pair.

    TRE: with ``moving_label``, each fixed landmark centroid is mapped through the registration
    (``x + u(x)``) and compared with the moving landmark centroid (point-based, as in
    :func:`~medrobust.core.metrics.registration.tre_from_points`); this stays defined when the
    network pushes a warped landmark partly or wholly out of the grid, where centroids of warped
    labels are biased or undefined (a vanished landmark would otherwise drop out of the average and
    flatter a failed registration). Without it, the distance between centroids of the warped
    moving and the fixed labels is used.

    Args:
        ddf: ``(1, N, *spatial)`` voxel-unit DDF (zeros for "no registration").
        warped_label: ``(1, C, *spatial)`` moving labels warped by ``ddf``.
        fixed_label: ``(1, C, *spatial)``.
        affine: grid voxel -> world ``(N+1, N+1)``.
        moving_label: ``(1, C, *spatial)`` moving labels on the grid, before warping (recommended).
        gland_channel: channel for Dice/HD95.
        landmark_channels: TRE channels (default: every channel except ``gland_channel``; if there is
            only one channel, that one).

    Returns:
        ``tre_mean_mm``, ``tre_landmarks_mm`` (list), ``dice_gland``, ``hd95_gland_mm``, ``folding_pct``,
        ``std_log_jacobian``.
    """
    if ddf.shape[0] != 1 or warped_label.shape[0] != 1:
        raise ValueError(f"case_metrics takes one case (batch 1), got ddf {tuple(ddf.shape)}, labels {tuple(warped_label.shape)}.")
    c = fixed_label.shape[1]
    if landmark_channels is None:
        landmark_channels = [i for i in range(c) if i != gland_channel] or [gland_channel]
    aff = torch.as_tensor(affine, dtype=torch.float64).reshape(-1, *torch.as_tensor(affine).shape[-2:])[0]
    spacing = torch.linalg.vector_norm(aff[:-1, :-1], dim=0).tolist()
    if moving_label is not None:
        if moving_label.shape != fixed_label.shape:
            raise ValueError(f"moving_label {tuple(moving_label.shape)} and fixed_label {tuple(fixed_label.shape)} must match.")
        idx = list(landmark_channels)
        tre = tre_from_points(label_centroids(fixed_label[:, idx], aff), label_centroids(moving_label[:, idx], aff), ddf, aff)[0]
    else:
        tre = tre_from_labels(warped_label, fixed_label, aff, channels=landmark_channels)[0]
    g = slice(gland_channel, gland_channel + 1)
    return {
        "tre_mean_mm": float(torch.nanmean(tre)),
        "tre_landmarks_mm": [float(v) for v in tre],
        "dice_gland": float(dice_score(warped_label[:, g], fixed_label[:, g])[0, 0]),
        "hd95_gland_mm": float(hd95(warped_label[:, g], fixed_label[:, g], spacing)[0, 0]),
        "folding_pct": float(folding_percentage(ddf)[0]),
        "std_log_jacobian": float(std_log_jacobian(ddf)[0]),
    }


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Pool per-case rows: TRE median/mean/sd over all landmarks of all cases; means of the rest."""
    tre = np.array([v for r in rows for v in r["tre_landmarks_mm"]], dtype=float)
    tre = tre[np.isfinite(tre)]
    out = {
        "n_cases": len(rows),
        "n_landmarks": int(tre.size),
        "tre_median_mm": float(np.median(tre)) if tre.size else float("nan"),
        "tre_mean_mm": float(tre.mean()) if tre.size else float("nan"),
        "tre_sd_mm": float(tre.std(ddof=1)) if tre.size > 1 else float("nan"),
    }
    for key in ("dice_gland", "hd95_gland_mm", "folding_pct", "std_log_jacobian", "seconds"):
        vals = np.array([r[key] for r in rows if key in r], dtype=float)
        if vals.size:
            out[key] = float(np.nanmean(vals))
    return out


def write_rows(rows: Sequence[dict[str, Any]], out_dir: str | Path, *, prefix: str = "") -> dict[str, float]:
    """Write ``<prefix>cases.csv`` (one row per case), ``<prefix>landmarks.csv`` and ``<prefix>summary.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if rows:
        case_cols = [k for k in rows[0] if k != "tre_landmarks_mm"]
        with open(out_dir / f"{prefix}cases.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=case_cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        with open(out_dir / f"{prefix}landmarks.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["case_id", "landmark", "tre_mm"])
            for r in rows:
                for i, v in enumerate(r["tre_landmarks_mm"]):
                    w.writerow([r.get("case_id", ""), i + 1, v])
    summary = summarise(rows) if rows else {"n_cases": 0}
    (out_dir / f"{prefix}summary.json").write_text(json.dumps(summary, indent=2))
    return summary


class RegistrationMetricsHandler:
    """Ignite handler: per-case metrics after every evaluator iteration, files and ``state.metrics`` at the end.

    Use with an evaluator whose ``iteration_update`` is ``RegistrationEvalIteration`` and batch size 1
    (pairs may have different numbers of landmark channels).

    Args:
        output_dir: where ``cases.csv``, ``landmarks.csv``, ``summary.json`` go.
        gland_channel, landmark_channels: see :func:`case_metrics`.
    """

    def __init__(self, output_dir: str | Path, *, gland_channel: int = 0, landmark_channels: Sequence[int] | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.gland_channel = gland_channel
        self.landmark_channels = landmark_channels
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._completed)

    def _reset(self, engine: Any) -> None:
        self.rows = []

    def _iteration(self, engine: Any) -> None:
        out = engine.state.output
        if "warped_label" not in out or "fixed_label" not in out:
            raise ValueError("RegistrationMetricsHandler needs labels: the evaluator's batches have no moving/fixed labels.")
        if out["affine"] is None:
            raise ValueError("RegistrationMetricsHandler needs the grid affine in the batch ('affine').")
        ids = out.get("case_id") or [f"case{engine.state.iteration}_{b}" for b in range(out["pred"].shape[0])]
        for b in range(out["pred"].shape[0]):
            row = {"case_id": ids[b]}
            row.update(case_metrics(out["pred"][b : b + 1], out["warped_label"][b : b + 1], out["fixed_label"][b : b + 1],
                                    torch.as_tensor(out["affine"])[b], gland_channel=self.gland_channel,
                                    landmark_channels=self.landmark_channels,
                                    moving_label=out["moving_label"][b : b + 1] if "moving_label" in out else None))
            row["seconds"] = float(out["seconds"]) / out["pred"].shape[0]
            self.rows.append(row)

    def _completed(self, engine: Any) -> None:
        summary = write_rows(self.rows, self.output_dir)
        engine.state.metrics.update({k: v for k, v in summary.items() if isinstance(v, float)})
        logger.info("registration metrics: %s", json.dumps(summary))
