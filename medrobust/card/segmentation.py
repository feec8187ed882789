"""The robustness card of a segmentation model: Dice rows instead of accuracy rows.

A model is a segmentation model when its output on an input ``(1, C, *spatial)`` is
``(1, K, *spatial)`` with the same spatial size (:func:`is_segmentation_output`). Reference masks
are files in a masks folder named by case id (the file stem of the image, e.g. ``c01.nii.gz`` or
``c01.png``): integer labels ``0..K-1`` (binary masks saved as 0/255 PNGs are read as 0/1). Masks
are resized to the model input with nearest-neighbour interpolation.

Rows: clean Dice (MONAI ``DiceMetric``, foreground classes, per case) with a percentile case
bootstrap interval; natural-perturbation sensitivity as Dice vs severity per family (the
families of :mod:`medrobust.perturbations` applied directly to the model inputs, not through the
classification sweep); robust Dice vs eps under PGD with the segmentation task loss
(:func:`medrobust.core.attacks.losses.segmentation_objective`). Square, AutoAttack, the
(eps, delta) estimate, intrinsic robustness, nMutant and calibration are classification measures
and are not computed for segmentation; the card says so.

Example:
    >>> import torch
    >>> from monai.networks.nets import UNet
    >>> net = UNet(3, 1, 2, channels=(4, 8), strides=(2,)).eval()
    >>> x = torch.rand(3, 1, 8, 8, 8); y = (x > 0.5).long()
    >>> is_segmentation_output(net, x.shape[1:])
    True
    >>> d = dice_per_case(net, x, y)
    >>> d.shape
    (3,)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot

from medrobust.card.render import band_figure, figure_png, fmt_interval
from medrobust.card.sections import bootstrap_statistic
from medrobust.core.utils import eval_mode

__all__ = [
    "SKIPPED_FOR_SEGMENTATION",
    "is_segmentation_output",
    "load_masks",
    "dice_per_case",
    "seg_clean_section",
    "seg_sensitivity_dice",
    "seg_sensitivity_reduce",
    "seg_sensitivity_section",
    "seg_adversarial_dice",
    "seg_adversarial_reduce",
    "seg_adversarial_section",
    "dice_figure",
    "segmentation_page",
]

logger = logging.getLogger(__name__)

#: default perturbation families of the segmentation card (cheap, intensity-only: masks stay aligned)
DEFAULT_FAMILIES = ("gaussian_noise", "gaussian_blur")

#: what the segmentation card does not measure, and why (written into card.json and the page)
SKIPPED_FOR_SEGMENTATION = {
    "square": "Square attack: implemented for classification margins only in this card",
    "autoattack": "AutoAttack (pyautoattack) attacks classifiers only",
    "probabilistic": "the (eps, delta) estimate's safety check is a label flip: classification only",
    "intrinsic": "intrinsic robustness is a max-KL of class probabilities: classification only",
    "nmutant": "nMutant detects label changes: classification only",
    "calibration": "ECE / reliability diagram: not computed per voxel in this card",
}


def is_segmentation_output(net: Any, input_shape: Sequence[int]) -> bool:
    """True when ``net`` maps ``(1, *input_shape)`` (``input_shape = (C, *spatial)``) to ``(1, K, *spatial)``."""
    x = torch.zeros(1, *input_shape, device=_device(net))
    with torch.no_grad(), eval_mode(net):
        out = net(x)
    return isinstance(out, torch.Tensor) and out.ndim == x.ndim and tuple(out.shape[2:]) == tuple(x.shape[2:])


def _device(net: Any) -> torch.device:
    try:
        return next(net.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def load_masks(masks: str | Path, case_ids: Sequence[str], spatial_shape: Sequence[int]) -> tuple[torch.Tensor, list[str]]:
    """Read the mask of every case id from ``masks`` as labels ``(N, 1, *spatial_shape)`` (long).

    Returns:
        ``(masks of the cases that have one, their case ids)`` in ``case_ids`` order.

    Raises:
        FileNotFoundError: ``masks`` is not a folder. ValueError: no mask matches any case id.
    """
    from medrobust.data import load_image, scan_dataset
    from medrobust.data.preprocess import match_spatial_dims

    root = Path(masks).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"masks: folder {root} does not exist or is not a folder.")
    items, _ = scan_dataset(root)
    by_id = {it.case_id: it for it in items}
    out, ids = [], []
    for cid in case_ids:
        if cid not in by_id:
            continue
        arr = torch.as_tensor(np.asarray(load_image(by_id[cid], voi=False).array, dtype=np.float32))
        arr = match_spatial_dims(arr[:1], len(spatial_shape))
        vals = torch.unique(arr)
        if vals.numel() == 2 and float(vals[0]) == 0 and float(vals[1]) > 1:  # a 0/255 binary PNG
            arr = arr / vals[1]
        if not torch.allclose(arr, arr.round()) or float(arr.min()) < 0:
            raise ValueError(f"masks: {by_id[cid].path.name} should hold integer labels >= 0, got values {vals[:5].tolist()}")
        lab = F.interpolate(arr[None], size=tuple(spatial_shape), mode="nearest")[0]
        out.append(lab.round().long())
        ids.append(cid)
    if not out:
        raise ValueError(f"masks: no file under {root} is named by a case id of the data (e.g. {list(case_ids)[:3]}).")
    return torch.stack(out), ids


def _labels(out: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Predicted labels ``(B, 1, *spatial)`` and the number of classes (a 1-channel output is sigmoid, 2 classes)."""
    if out.shape[1] == 1:
        return (out > 0).long(), 2
    return out.argmax(1, keepdim=True), int(out.shape[1])


@torch.no_grad()
def dice_per_case(net: Any, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 16) -> np.ndarray:
    """Per-case Dice ``(N,)`` of ``net`` on ``x: (N, C, *spatial)`` against labels ``y: (N, 1, *spatial)``.

    MONAI ``DiceMetric`` over the foreground classes (mean over classes); a case whose reference
    and prediction are both empty scores 1 (``ignore_empty=False``).
    """
    metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=False)
    res = []
    with eval_mode(net):
        dev = _device(net)
        for i in range(0, x.shape[0], batch_size):
            pred, k = _labels(net(x[i:i + batch_size].to(dev)).float().cpu())
            yy = y[i:i + batch_size].cpu()
            if int(yy.max()) >= k:
                raise ValueError(f"masks: label {int(yy.max())} found but the model predicts {k} classes.")
            d = metric(one_hot(pred, k), one_hot(yy, k))  # (B, K - 1)
            res.append(torch.nanmean(d.float(), dim=1))
    return torch.cat(res).numpy()


def _mean(d: np.ndarray, *, n_boot: int, seed: int) -> dict[str, Any]:
    return bootstrap_statistic(lambda i: float(np.mean(d[i])), len(d), n_boot=n_boot, seed=seed)


def seg_clean_section(net: Any, x: torch.Tensor, y: torch.Tensor, *, n_boot: int, seed: int) -> dict[str, Any]:
    """``{"n", "dice": mean Dice with bootstrap CI, "per_case": [...]}``."""
    d = dice_per_case(net, x, y)
    return {"n": int(len(d)), "dice": _mean(d, n_boot=n_boot, seed=seed), "per_case": [float(v) for v in d]}


def seg_sensitivity_dice(net: Any, x: torch.Tensor, y: torch.Tensor, *, families: Sequence[str] | None,
                         severities: Sequence[float] | None, seed: int,
                         case_ids: Sequence[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Per-case Dice under every family and severity for one block: ``{"families": {name: [{"severity", "dice": [...]}]}, "skipped"}``.

    Case ``c`` of family ``f`` at severity ``s`` is perturbed with the sweep's seed
    ``sample_seed(c, f, s, base_seed=seed)`` (case ids default to the positions ``"0", "1", ...``),
    so a case's result does not depend on the block or process it runs in. Adversarial families
    (``needs_model``) and families not made for ``x``'s number of spatial dims are skipped.
    """
    from medrobust.perturbations.registry import PerturbationContext, get_family, sample_seed

    ids = [str(c) for c in case_ids] if case_ids is not None else [str(i) for i in range(x.shape[0])]
    fams: dict[str, list[dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    for name in families or DEFAULT_FAMILIES:
        fam = get_family(name)
        if fam.needs_model or (x.ndim - 2) not in fam.spatial_dims:
            skipped[name] = "adversarial family" if fam.needs_model else f"not defined for {x.ndim - 2}-D"
            continue
        rows = []
        for sev in severities if severities is not None else fam.severities:
            seeds = [sample_seed(c, name, float(sev), base_seed=seed) for c in ids]
            ctx = PerturbationContext.from_seeds(seeds, device=x.device, bounds=(0.0, 1.0))
            with torch.no_grad():
                xp = fam.apply(x, float(sev), ctx)
            rows.append({"severity": float(sev), "dice": [float(v) for v in dice_per_case(net, xp, y)]})
        fams[name] = rows
    return {"n": int(x.shape[0]), "families": fams, "skipped": skipped}


def seg_sensitivity_reduce(parts: Sequence[dict[str, Any]], *, n_boot: int, seed: int) -> dict[str, Any]:
    """The sensitivity section from the :func:`seg_sensitivity_dice` of every block (bootstrap over all cases)."""
    fams: dict[str, list[dict[str, Any]]] = {}
    for name, rows in parts[0]["families"].items():
        fams[name] = [{"severity": r["severity"], "dice": _mean(np.asarray([v for p in parts for v in p["families"][name][j]["dice"]]),
                                                                n_boot=n_boot, seed=seed)}
                      for j, r in enumerate(rows)]  # fmt: skip
    return {"n_cases": sum(int(p["n"]) for p in parts),
            "families": fams, "skipped": parts[0]["skipped"],
            "method": "registry families applied to the model inputs in [0, 1]; Dice per case, bootstrap over cases"}  # fmt: skip


def seg_sensitivity_section(net: Any, x: torch.Tensor, y: torch.Tensor, *, families: Sequence[str] | None,
                            severities: Sequence[float] | None, n_boot: int, seed: int,
                            case_ids: Sequence[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Mean Dice vs severity per perturbation family (registry families applied to the model inputs; :func:`seg_sensitivity_dice`)."""
    part = seg_sensitivity_dice(net, x, y, families=families, severities=severities, seed=seed, case_ids=case_ids)
    return seg_sensitivity_reduce([part], n_boot=n_boot, seed=seed)


def seg_adversarial_dice(net: Any, x: torch.Tensor, y: torch.Tensor, *, eps: Sequence[float], steps: Sequence[int],
                         restarts: int, seed: int) -> dict[str, Any]:  # fmt: skip
    """Per-case Dice of one block: clean and under each PGD setting per radius (Dice task loss)."""
    from medrobust.core.attacks.gradient import pgd
    from medrobust.core.attacks.losses import segmentation_objective

    obj = segmentation_objective("dice")
    clean = dice_per_case(net, x, y)
    rows = []
    for e in eps:
        attacks: dict[str, list[float]] = {}
        for k, s in enumerate(steps):
            r = 1 if k == 0 else int(restarts)
            g = torch.Generator(device=x.device).manual_seed(int(seed) + 1000 * k)
            adv = pgd(net, x, y, loss_fn=obj, eps=float(e), steps=int(s), restarts=r, generator=g).x_adv
            attacks[f"PGD-{s}" + (f" x {r}" if r > 1 else "")] = [float(v) for v in dice_per_case(net, adv, y)]
        rows.append({"eps": float(e), "attacks": attacks})
    return {"clean": [float(v) for v in clean], "rows": rows}


def seg_adversarial_reduce(parts: Sequence[dict[str, Any]], *, n_boot: int, seed: int) -> dict[str, Any]:
    """The adversarial section from the :func:`seg_adversarial_dice` of every block; worst case per case."""
    clean = np.asarray([v for p in parts for v in p["clean"]])
    rows = []
    for j, first in enumerate(parts[0]["rows"]):
        attacks, worst = {}, clean.copy()
        for name in first["attacks"]:
            d = np.asarray([v for p in parts for v in p["rows"][j]["attacks"][name]])
            worst = np.minimum(worst, d)
            attacks[name] = _mean(d, n_boot=n_boot, seed=seed)
        rows.append({"eps": first["eps"], "attacks": attacks, "worst_case": _mean(worst, n_boot=n_boot, seed=seed)})
    return {"n": int(clean.size), "loss": "MONAI DiceLoss (softmax / sigmoid), untargeted, against the reference masks",
            "clean": _mean(clean, n_boot=n_boot, seed=seed), "rows": rows}  # fmt: skip


def seg_adversarial_section(net: Any, x: torch.Tensor, y: torch.Tensor, *, eps: Sequence[float], steps: Sequence[int],
                            restarts: int, n_boot: int, seed: int) -> dict[str, Any]:  # fmt: skip
    """Robust Dice vs eps (L-inf, ``[0, 1]`` inputs) under PGD with the Dice task loss; worst case per case."""
    part = seg_adversarial_dice(net, x, y, eps=eps, steps=steps, restarts=restarts, seed=seed)
    return seg_adversarial_reduce([part], n_boot=n_boot, seed=seed)


def dice_figure(series: dict[str, list[tuple[float, dict[str, Any]]]], *, xlabel: str, title: str = "") -> Figure:
    """Mean Dice (with 95 % bands) vs a parameter, one line per series ``{name: [(x, entry), ...]}``."""
    return band_figure(series, xlabel=xlabel, ylabel="mean Dice", ylim=(-0.02, 1.02), title=title)


def segmentation_page(card: dict[str, Any]) -> dict[str, Any]:
    """The page dict of a segmentation card (for :func:`medrobust.card.render.render_html`)."""
    task, prov, clean = card["task"], card["provenance"], card["clean"]
    head = {"clean Dice [95% CI]": fmt_interval(clean["dice"])}
    adv = card.get("adversarial")
    for r in (adv or {}).get("rows", []):
        head[f"worst-case robust Dice, eps {r['eps'] * 255:g}/255"] = fmt_interval(r["worst_case"])
    secs: list[dict[str, Any]] = [{"title": "Task, data and model provenance", "table": (("item", "value"), [
        ("task", "segmentation"), ("model", f"{task['model']} ({task['source']})"),
        ("input shape", str(task["input_shape"])), ("model SHA-256", prov["model_sha256"]),
        ("data SHA-256 (files evaluated)", prov["data_sha256"]), ("cases", f"{clean['n']} with a mask"),
        ("seed", prov["seed"]), ("versions", ", ".join(f"{k} {v}" for k, v in prov["versions"].items())),
    ])}]  # fmt: skip
    secs.append({"title": "Clean performance", "text": [
        f"Mean Dice over foreground classes {fmt_interval(clean['dice'])} (MONAI DiceMetric per case, percentile case bootstrap)."]})  # fmt: skip
    sens = card.get("sensitivity")
    if sens and sens["families"]:
        fams = sens["families"]
        fig = Figure(figsize=(3.4 * min(3, len(fams)), 2.8 * ((len(fams) + 2) // 3)))
        for k, (name, rows) in enumerate(fams.items()):
            ax = fig.add_subplot((len(fams) + 2) // 3, min(3, len(fams)), k + 1)
            sev = [r["severity"] for r in rows]
            ax.plot(sev, [r["dice"]["value"] for r in rows], marker="o", ms=3)
            if all(r["dice"]["lo"] is not None for r in rows):
                ax.fill_between(sev, [r["dice"]["lo"] for r in rows], [r["dice"]["hi"] for r in rows], alpha=0.15)
            ax.set(title=name, ylim=(-0.02, 1.02), xlabel="severity", ylabel="mean Dice")
        fig.tight_layout()
        secs.append({"title": "Natural perturbation sensitivity", "text": [sens["method"]],
                     "figure": figure_png(fig), "caption": "Dice vs severity per family",
                     "notes": [f"skipped {k}: {v}" for k, v in sens["skipped"].items()]})  # fmt: skip
    if adv:
        series = {name: [(r["eps"] * 255, r["attacks"][name]) for r in adv["rows"]] for name in adv["rows"][0]["attacks"]}
        series["worst case"] = [(r["eps"] * 255, r["worst_case"]) for r in adv["rows"]]
        secs.append({"title": "Adversarial robustness", "text": [f"PGD (L-inf), loss: {adv['loss']}; {adv['n']} cases."],
                     "figure": figure_png(dice_figure(series, xlabel="eps (x 1/255 of the [0, 1] input range)")),
                     "caption": "robust Dice vs eps"})  # fmt: skip
    secs.append({"title": "Not measured for segmentation",
                 "text": [f"SKIPPED {k}: {v}" for k, v in card["not_measured"].items()]})  # fmt: skip
    if card.get("budget_notes"):
        secs.append({"title": "Budget and precision", "text": list(card["budget_notes"])})
    return {"title": f"Robustness card: {task['model']} (segmentation)", "headline": head, "sections": secs,
            "subtitle": "Every figure with its 95 % interval and the number of cases it rests on. Generated by medrobust card."}  # fmt: skip
