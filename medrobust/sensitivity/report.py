"""Write the run's summary files, figures and ``report.md``.

Everything here reads what the sweep stored (predictions, errors, CNR rows, manifest) and
never a DICOM header: the only per-case text in any output is the de-identified case id.

What the report dwells on (which case illustrates the families, which families get
native-resolution crops, which families the CNR table lists) is a :class:`ReportOptions`: the
library has no favourite dataset; a bundle passes its own (the mammogram bundle's
``configs/sensitivity.json`` prefers a calcification case and the Fourier filters).

Example:
    >>> ReportOptions.from_any({"example_subgroup": "calc", "crop_families": ["fourier_lowpass"]})
    ReportOptions(example_subgroup='calc', crop_families=('fourier_lowpass',), cnr_families=None)
    >>> write_outputs(Path("runs/demo"), predictions=..., summary=..., ...)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from medrobust.markdown import markdown_table
from medrobust.models import LoadedModel
from medrobust.perturbations.registry import get_family, sample_seed
from medrobust.sensitivity.plots import plot_cnr_curves, plot_example_grid, plot_family_curves
from medrobust.sensitivity.summary import summarise_cnr

__all__ = ["ReportOptions", "write_outputs", "example_panels"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportOptions:
    """What the report illustrates; the defaults favour no dataset and no family.

    Args:
        example_subgroup: the example grid shows a labelled-positive case whose subgroup contains
            this text (case-insensitive) when there is one; ``None``: any positive case first.
        crop_families: families also drawn as native-resolution crops (fine detail that a
            downsampled panel hides, e.g. Fourier filters on a large mammogram); 2-D only.
        cnr_families: families listed in the report's CNR table (``None``: all; the rest stay in
            ``summary.json`` and the figure).
    """

    example_subgroup: str | None = None
    crop_families: tuple[str, ...] = ()
    cnr_families: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_families", _names(self.crop_families, "crop_families"))
        if self.cnr_families is not None:
            object.__setattr__(self, "cnr_families", _names(self.cnr_families, "cnr_families"))
        if self.example_subgroup is not None and not isinstance(self.example_subgroup, str):
            raise TypeError(f"example_subgroup should be a string or None, got {type(self.example_subgroup).__name__}.")

    @classmethod
    def from_any(cls, options: ReportOptions | Mapping[str, Any] | None) -> ReportOptions:
        """``None`` -> defaults; a mapping (a bundle config entry) -> options, unknown keys refused.

        Raises:
            ValueError: a mapping key that is not an option.
            TypeError: neither None, a mapping nor :class:`ReportOptions`.
        """
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        if isinstance(options, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(options) - known)
            if unknown:
                raise ValueError(f"report_options: unknown keys {unknown}; expected some of {sorted(known)}.")
            return cls(**dict(options))
        raise TypeError(f"report_options should be a ReportOptions, a mapping or None, got {type(options).__name__}.")


def _names(value: Sequence[str] | str, arg: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not all(isinstance(v, str) for v in value):
        raise TypeError(f"{arg} should be family names (strings), got {list(value)!r}.")
    return tuple(value)


def _display(x: torch.Tensor, size: int) -> np.ndarray:
    """``(C, *spatial)`` -> a 2-D grey image at most ``size`` pixels on its longest side."""
    img = x.float().mean(dim=0)
    if img.ndim == 3:
        img = img[..., img.shape[-1] // 2]
    h, w = img.shape
    scale = size / max(h, w)
    if scale < 1:
        img = F.interpolate(img[None, None], size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear", antialias=True)[0, 0]
    return img.clamp(0, 1).cpu().numpy()


def foreground_mask(x: torch.Tensor) -> torch.Tensor:
    """Foreground of ``x: (C, H, W)`` in ``[0, 1]``: smoothed intensity above Otsu's threshold,
    so a crop lands in tissue, not in the air around it.

    Otsu on a 256-bin histogram, written out here (a few lines) because scikit-image, which has
    it, is not a dependency of the package.
    """
    grey = x.float().mean(0)[None, None]
    smooth = F.avg_pool2d(grey, 9, stride=1, padding=4, count_include_pad=False)[0, 0]
    lo, hi = float(smooth.min()), float(smooth.max())
    if hi <= lo:
        return torch.ones_like(smooth, dtype=torch.bool)
    hist = torch.histc(smooth.double(), bins=256, min=lo, max=hi)
    centres = torch.linspace(lo, hi, 257, dtype=torch.float64)[:-1] + (hi - lo) / 512
    w0 = hist.cumsum(0)
    w1 = hist.sum() - w0
    m0 = (hist * centres).cumsum(0) / w0.clamp_min(1e-12)
    m1 = ((hist * centres).sum() - (hist * centres).cumsum(0)) / w1.clamp_min(1e-12)
    between = w0 * w1 * (m0 - m1) ** 2
    t = float(centres[int(between[:-1].argmax())]) + (hi - lo) / 512
    return smooth > t


def _crop_box(x: torch.Tensor, size: int, centre: tuple[int, int] | None = None) -> tuple[slice, slice] | None:
    """A native-resolution window (2-D images larger than 2 x size) around ``centre``.

    Without a centre (no ROI mask), the window lies inside the foreground (:func:`foreground_mask`;
    at least 95 % of its pixels when such a window exists, so not on burned-in markers in the
    background), where small bright specks are densest among those windows (the local mean of the
    positive part of ``x - 3x3 box mean``).
    """
    if x.ndim != 3 or min(x.shape[1:]) < 2 * size:
        return None
    if centre is None:
        grey = x.float().mean(0)[None, None]
        specks = (grey - F.avg_pool2d(grey, 3, stride=1, padding=1, count_include_pad=False)).clamp(min=0)
        specks = F.avg_pool2d(specks, 15, stride=1, padding=7, count_include_pad=False)[0, 0]
        fg = foreground_mask(x).float()[None, None]
        # fraction of foreground in the size x size window centred on each pixel (zero outside the image)
        inside = F.avg_pool2d(fg, size + 1 - size % 2, stride=1, padding=size // 2, count_include_pad=True)[0, 0]
        ok = inside >= 0.95
        if not bool(ok.any()):
            ok = inside >= inside.max() - 1e-6
        score = torch.where(ok, specks, torch.full_like(specks, -1.0))
        centre = divmod(int(score.argmax()), specks.shape[1])
    r, c = centre
    r0 = min(max(0, r - size // 2), x.shape[1] - size)
    c0 = min(max(0, c - size // 2), x.shape[2] - size)
    return slice(r0, r0 + size), slice(c0, c0 + size)


def example_panels(
    model: LoadedModel, x: torch.Tensor, case_id: str, plan: dict[str, tuple[float, ...]], seed: int,
    *, display_size: int = 320, crop_size: int = 160, crop_centre: tuple[int, int] | None = None,
    crop_families: Sequence[str] = (),
) -> list[tuple[str, list[tuple[float, np.ndarray]]]]:
    """Rows of example images: one per family (whole image), plus native-resolution crops for
    ``crop_families`` (centred on ``crop_centre``, e.g. the ROI, when given). ``x: (C, *native)``
    in ``[0, 1]``; same seeds as the sweep."""
    from medrobust.sensitivity.batching import perturb_for_model
    from medrobust.data.preprocess import to_model_input

    xb = x[None].to(model.device)
    with torch.inference_mode():
        clean = model.logits(to_model_input(xb, model.spatial_shape, model.in_channels))
    target = model.predicted_class(clean)
    box = _crop_box(x, crop_size, crop_centre)
    panels = []
    for name, grid in plan.items():
        fam = get_family(name)
        row, crops = [], []
        for sev in grid:
            xp = xb if sev == 0 else perturb_for_model(fam, xb, sev, [sample_seed(case_id, name, sev, base_seed=seed)], model, target)
            row.append((sev, _display(xp[0], display_size)))
            if box is not None and name in crop_families:
                crops.append((sev, xp[0].float().mean(0)[box].clamp(0, 1).cpu().numpy()))
        panels.append((name, row))
        if crops:
            panels.append((f"{name} (native crop)", crops))
    return panels


def _first_example(predictions: pd.DataFrame, data_root: Path, model: LoadedModel, roi_dir: Path | None = None,
                   subgroup: str | None = None):
    """``(case_id, x, roi_centre)`` of the case to illustrate: a labelled positive first, one whose
    subgroup contains ``subgroup`` (case-insensitive) before the others."""
    from medrobust.data import load_image, scan_dataset
    from medrobust.sensitivity.cnr import find_mask, load_roi_mask
    from medrobust.data.preprocess import match_spatial_dims

    cases = predictions.drop_duplicates("case_id")
    if cases.empty:
        return None
    label = pd.to_numeric(cases["label"], errors="coerce")
    sub = cases["subgroup"].fillna("").astype(str).str.lower()
    preferred = sub.str.contains(subgroup.lower(), regex=False) if subgroup else pd.Series(True, index=sub.index)
    rank = (label != 1).astype(int) * 2 + (~preferred).astype(int)
    wanted = list(cases.assign(rank=rank.to_numpy()).sort_values(["rank", "case_id"])["case_id"].astype(str))
    items, _ = scan_dataset(data_root)
    by_id = {it.case_id: it for it in items}
    for cid in wanted[:5]:
        it = by_id.get(cid)
        if it is None:
            continue
        try:
            x = match_spatial_dims(model.preprocessing.to_unit(load_image(it).array), model.spatial_dims)
        except (ValueError, OSError) as e:
            logger.debug("example image %s unusable: %s", cid, e)
            continue
        centre = None
        mask_path = find_mask(roi_dir, cid) if roi_dir is not None and x.ndim == 3 else None
        if mask_path is not None:
            try:
                mask = load_roi_mask(mask_path, tuple(x.shape[1:]))
                if mask is not None:
                    centre = tuple(int(v) for v in mask.nonzero().float().mean(0).round())
            except ValueError:
                pass
        return cid, x, centre
    return None


def _with_ci(d: pd.DataFrame, metrics: Sequence[str], digits: int = 3) -> pd.DataFrame:
    """``value [lo, hi]`` text columns for ``metrics`` (``-`` where not computed)."""
    out = d.copy()
    for m in metrics:
        def fmt(row, m=m):
            v = row[m]
            if v is None or (isinstance(v, float) and np.isnan(v)):
                return "-"
            lo, hi = row.get(f"{m}_lo"), row.get(f"{m}_hi")
            if lo is None or hi is None or np.isnan(lo) or np.isnan(hi):
                return f"{v:.{digits}f}"
            return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"

        out[m] = [fmt(r) for _, r in d.iterrows()]
    return out


def _file_links(out: Path, names: Sequence[str]) -> str:
    """Markdown links to those of ``names`` that exist in ``out`` (never a link to a missing file)."""
    return ", ".join(f"[{n}]({n})" for n in names if (out / n).is_file())


def write_outputs(
    out: Path,
    *,
    predictions: pd.DataFrame,
    summary: pd.DataFrame,
    errors: pd.DataFrame,
    cnr: pd.DataFrame,
    manifest: dict,
    plan: dict[str, tuple[float, ...]],
    model: LoadedModel,
    data_root: Path,
    seed: int,
    examples: bool = True,
    options: ReportOptions | Mapping[str, Any] | None = None,
    findings: Sequence[Any] = (),
    labels: Mapping[str, int] | None = None,
) -> Path:
    """Write ``summary.csv``, ``summary.json``, the PNG figures and ``report.md`` into ``out``.

    ``options`` (:class:`ReportOptions` or a mapping of its fields) chooses the example case,
    the cropped families and the CNR table's families. ``findings``
    (:class:`~medrobust.sensitivity.diagnostics.Finding`) are stated at the top of the report and
    in ``summary.json`` (``warnings``); ``labels`` are the matched / unmatched label counts.
    """
    from medrobust.sensitivity.diagnostics import findings_to_json

    out = Path(out)
    options = ReportOptions.from_any(options)
    summary.to_csv(out / "summary.csv", index=False)
    cnr_summary = summarise_cnr(cnr)
    n_cases = int(predictions["case_id"].nunique()) if not predictions.empty else 0
    n_labelled = int(pd.to_numeric(predictions.drop_duplicates("case_id")["label"], errors="coerce").notna().sum()) if n_cases else 0
    ident = manifest.get("identity", {})
    info = {
        "model": manifest.get("model", {}),
        "identity": ident,
        "preprocessing": ident.get("normalisation"),
        "warnings": findings_to_json(findings),
        "labels": dict(labels) if labels is not None else None,
        "n_cases": n_cases,
        "n_labelled": n_labelled,
        "n_predictions": int(len(predictions)),
        "n_errors": int(len(errors)),
        "confidence_intervals": "95 %: Clopper-Pearson for flip_rate and accuracy; percentile bootstrap over cases "
        f"(1000 resamples, seeded from seed {seed}) for the others",
        "summary": json.loads(summary.to_json(orient="records")),
        "cnr_summary": json.loads(cnr_summary.to_json(orient="records")),
    }
    (out / "summary.json").write_text(json.dumps(info, indent=2))

    figures = plot_family_curves(summary, out) if not summary.empty else []
    cnr_fig = plot_cnr_curves(cnr_summary, out)
    example_fig = None
    if examples and not predictions.empty:
        try:
            roi = ident.get("roi_masks")
            first = _first_example(predictions, data_root, model, Path(roi) if roi else None, options.example_subgroup)
            if first is not None:
                panels = example_panels(model, first[1], first[0], plan, seed, crop_centre=first[2],
                                        crop_families=options.crop_families)
                crops = any(label.endswith("(native crop)") for label, _ in panels)
                where = f"; native crops inside the {'ROI' if first[2] is not None else 'foreground'}" if crops else ""
                example_fig = plot_example_grid(
                    panels, out / "examples.png", title=f"case {first[0]}: example perturbations (columns: severity{where})",
                )
        except Exception as e:  # a figure must not lose a finished sweep
            logger.warning("example grid not drawn: %s: %s", type(e).__name__, e)

    lines = ["# Perturbation sensitivity report", ""]
    warn = [f for f in findings if getattr(f, "level", "") == "warning"]
    notes = [f for f in findings if getattr(f, "level", "") != "warning"]
    if warn or notes:
        lines += ["## Read this first", ""]
        lines += [f"- **{f.code.replace('_', ' ')}**: {f.message}" for f in warn]
        lines += [f"- {f.code.replace('_', ' ')}: {f.message}" for f in notes]
        lines += [""]
    m = manifest.get("model", {})
    lab = ""
    if labels is not None:
        lab = (f"; labels matched {labels.get('matched', 0)} images ({labels.get('images_without_labels', 0)} images "
               f"without a label, {labels.get('labels_without_images', 0)} label rows without an image, "
               f"{labels.get('ambiguous', 0)} ambiguous)")
    errors_link = f" ({_file_links(out, ['errors.csv'])})" if len(errors) and (out / "errors.csv").is_file() else ""
    lines += [
        f"- Model: `{m.get('name', '')}` ({m.get('source', '')}), sha256 `{str(m.get('sha256', ''))[:16]}`, "
        f"input (C, spatial) = {tuple(ident.get('input_shape', []))}, positive class {ident.get('positive_class')}",
        f"- Cases with predictions: {n_cases} ({n_labelled} labelled){lab}; predictions: {len(predictions)}; "
        f"skipped files: {len(errors)}{errors_link}",
        f"- Preprocessing: {ident.get('normalisation', 'per-image min-max to [0, 1]')}; then resized to the model input.",
        f"- Seed {seed}. Intervals are 95 %: Clopper-Pearson for flip rate, percentile bootstrap over cases (1000 "
        "resamples, seeded) for the rest.",
        "- Files: " + _file_links(out, ["predictions.csv", "summary.csv", "summary.json", "manifest.json", "inputs.csv", "cnr.csv"]),
        "",
        "## Families",
        "",
        markdown_table(
            pd.DataFrame(
                [{"family": n, "severities": ", ".join(f"{s:g}" for s in g), "meaning": get_family(n).description} for n, g in plan.items()]
            )
        ),
        "",
        "## Results (all cases)",
        "",
        "Flip rate, mean |delta p| and mean |delta margin| are relative to the same case at severity 0; the "
        "margin is the log-odds of the positive class against its strongest competitor, which keeps moving "
        "when p(positive) is saturated at 0 or 1. AUC and KS (class separability of p(positive) between "
        "positives and negatives) need labels of both classes. Brackets: 95 % confidence intervals; the "
        "figures draw them as bands.",
        "",
    ]
    metric_cols = ["flip_rate", "mean_abs_delta_p", "mean_abs_delta_margin", "auc", "ks"]
    for fam in plan:
        d = summary[(summary["family"] == fam) & (summary["subgroup"] == "all")]
        if d.empty:
            continue
        table = _with_ci(d, metric_cols)[["severity", "n", *metric_cols]]
        lines += [f"### {fam}", "", markdown_table(table), ""]
        fig = out / f"curves_{fam}.png"
        if fig in figures and fig.is_file():
            lines += [f"![{fam}]({fig.name})", ""]
    subgroups = sorted(sg for sg in summary["subgroup"].unique() if sg != "all") if not summary.empty else []
    if subgroups:
        lines += [
            "## By subgroup",
            "",
            f"Subgroups: {', '.join(subgroups)}. Per-subgroup rows are in [summary.csv](summary.csv); the curves "
            "above draw one line per subgroup.",
            "",
        ]
        top = summary[(summary["subgroup"] != "all")]
        top = top.loc[top.groupby(["family", "subgroup"])["severity"].idxmax()]
        top = _with_ci(top, metric_cols)[["family", "subgroup", "severity", "n", *metric_cols]]
        lines += ["At each family's highest severity:", "", markdown_table(top), ""]
    if not cnr_summary.empty:
        lines += [
            "## ROI contrast-to-noise ratio",
            "",
            "CNR = (mean_roi - mean_ring) / std_ring, ring = ROI dilated by "
            f"{ident.get('ring_width')} px minus the ROI, on the perturbed native image.",
            "",
        ]
        shown = cnr_summary[cnr_summary["subgroup"] == "all"]
        if options.cnr_families is not None and set(options.cnr_families) & set(shown["family"]):
            shown = shown[shown["family"].isin(options.cnr_families)]
            lines += [f"{', '.join(options.cnr_families)} (other families: summary.json and the figure):", ""]
        lines += [markdown_table(shown[["family", "severity", "n", "mean_cnr", "mean_cnr_ratio"]]), ""]
        if cnr_fig is not None and cnr_fig.is_file():
            lines += [f"![CNR]({cnr_fig.name})", ""]
    if example_fig is not None and example_fig.is_file():
        lines += ["## Example perturbations", "", f"![examples]({example_fig.name})", ""]
    if len(errors):
        lines += ["## Skipped files", "", markdown_table(errors.head(20)), ""]
        if len(errors) > 20:
            lines += [f"... and {len(errors) - 20} more in errors.csv", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
