"""Run robustness measures of a classifier on a dataset and write them as CSV + PNG.

The library side of ``medrobust metrics``: :func:`run_measures` takes a :class:`MetricsConfig`.

Example:
    >>> from medrobust.measures import MetricsConfig, run_measures
    >>> cfg = MetricsConfig(model="bundles/lesion_classification", data="breastmnist.npz", out="runs/metrics",
    ...                     label_map={0: 1, 1: 0}, measures=("classification", "intrinsic", "ig"), limit=64)
    >>> run_measures(cfg)  # doctest: +SKIP
    PosixPath('runs/metrics')

Outputs in ``out``: ``per_sample.csv`` (one row per image: label, prediction and every
per-sample measure), ``summary.csv`` / ``summary.json`` (one value per measure and setting), and,
by measure, ``loss_surface.png``, ``attributions.png``, ``occlusion_baselines.png`` (+
``occlusion_spearman.csv``, ``occlusion_scores.csv``), ``purification.csv`` + ``filters.png``,
``probabilistic.csv``, ``nmutant.csv``.

Settings that are fixed here (call the functions of :mod:`medrobust.core.metrics` to change them): IG explains the labelled class
(the prediction when unlabelled) from an all-zero baseline; DeepSHAP's baselines are 16 random
images of the same data; probabilistic robustness is sequential (eps = delta = 0.075) with MC
dropout when the network has dropout, else Gaussian weight noise (0.1 std); nMutant calibrates
on the first half of the images and tests clean vs PGD inputs from the second half (NAI
mutants, gamma 0.05, at most 100 mutants).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medrobust.measures.config import MetricsConfig

__all__ = ["load_inputs", "run_measures"]

logger = logging.getLogger(__name__)

def load_inputs(cfg: MetricsConfig, model: Any) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """``(x (N, C, *spatial) in [0, 1], labels (N,) or None, case ids)`` at the model's input shape.

    Args:
        cfg: the run settings (``data``, ``split``, ``label_map``, ``labels``, ``limit`` are used).
        model: a loaded model (:func:`medrobust.models.load_model`): its ``spatial_dims``, ``spatial_shape``
            and ``in_channels`` define the input.

    Raises:
        FileNotFoundError: ``cfg.data`` does not exist.
        ValueError: ``cfg.data`` is a file that is not ``.npz``, or a folder without a loadable image.
    """
    from medrobust.data.preprocess import match_spatial_dims, normalise_image, to_model_input

    path = Path(cfg.data)
    if not path.exists():
        raise FileNotFoundError(f"data {path} not found (expected a .npz file or a dataset folder).")
    if path.is_file():
        if path.suffix != ".npz":
            raise ValueError(f"data {path}: a file must be a MedMNIST-style .npz.")
        from medrobust.data.medmnist import load_medmnist

        s = load_medmnist(path, cfg.split, label_map=cfg.label_map, spatial_dims=model.spatial_dims)
        n = len(s.case_ids) if cfg.limit is None else min(cfg.limit, len(s.case_ids))
        x = to_model_input(torch.from_numpy(s.images[:n]), model.spatial_shape, model.in_channels)
        y = torch.from_numpy(np.asarray(s.labels[:n])).long().reshape(-1) if s.labels.ndim == 1 else None
        return x, y, list(s.case_ids[:n])
    from medrobust.data import load_dataset, read_labels

    images, errors = load_dataset(path)
    for e in errors:
        logger.warning("skipped %s: %s", e.path.name, e.reason)
    images = sorted(images, key=lambda im: im.case_id)[: cfg.limit]
    if not images:
        raise ValueError(f"data {path}: no loadable image found.")
    xs = [to_model_input(match_spatial_dims(normalise_image(im.array), model.spatial_dims)[None],
                         model.spatial_shape, model.in_channels) for im in images]  # fmt: skip
    ids = [im.case_id for im in images]
    y = None
    if cfg.labels:
        table = read_labels(cfg.labels)
        labs = [table[i].label if i in table else None for i in ids]
        if all(v is not None for v in labs):
            y = torch.tensor(labs, dtype=torch.long)
        else:
            logger.warning("labels missing for %d images: label-free measures use the predictions", labs.count(None))
    return torch.cat(xs), y, ids


class _Ctx:
    """What every measure needs, plus the tables it writes to."""

    def __init__(self, cfg: MetricsConfig, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, out: Path) -> None:
        self.cfg, self.net, self.x, self.y, self.out = cfg, net, x, y, out
        self.per_sample: dict[str, Any] = {}
        self.summary: list[dict[str, Any]] = []
        self.maps: dict[str, torch.Tensor] = {}

    def add(self, measure: str, value: float, **settings: Any) -> None:
        self.summary.append({"measure": measure, "value": float(value), **settings})

    @property
    def detail(self) -> slice:
        return slice(0, min(self.cfg.max_detail, self.x.shape[0]))


def _classification(c: _Ctx) -> None:
    from medrobust.core.attacks import pgd
    from medrobust.core.metrics._utils import predict_logits
    from medrobust.core.metrics.classification import accuracy, classification_metrics

    logits = predict_logits(c.net, c.x)
    for k, v in classification_metrics(logits, c.y).items():
        c.add(k, v)
    if c.cfg.eps > 0:
        adv = torch.cat([pgd(c.net, c.x[i : i + 128], c.y[i : i + 128], eps=c.cfg.eps, steps=c.cfg.steps, generator=c.cfg.seed).x_adv
                         for i in range(0, c.x.shape[0], 128)])  # fmt: skip
        c.add("robust_accuracy", accuracy(predict_logits(c.net, adv), c.y), eps=c.cfg.eps, steps=c.cfg.steps)


def _intrinsic(c: _Ctx) -> None:
    from medrobust.core.metrics.intrinsic import intrinsic_robustness

    psi = intrinsic_robustness(c.net, c.x, eps=c.cfg.eps, steps=c.cfg.steps, generator=c.cfg.seed)
    c.per_sample["intrinsic_psi"] = psi.numpy()
    c.add("intrinsic_robustness", float(psi.mean()), eps=c.cfg.eps, steps=c.cfg.steps)


def _surface(c: _Ctx) -> None:
    from medrobust.core.metrics.intrinsic import loss_surface, plot_loss_surface

    s = loss_surface(c.net, c.x[:1], c.y[:1], span=max(4 * c.cfg.eps, 1e-3), generator=c.cfg.seed)
    plot_loss_surface(s, c.out / "loss_surface.png")


def _flatness(c: _Ctx) -> None:
    from medrobust.core.metrics.flatness import average_flatness, worst_flatness

    kw = dict(eps=c.cfg.eps, steps=c.cfg.steps, generator=c.cfg.seed)
    a = average_flatness(c.net, c.x, c.y, samples=c.cfg.flatness_samples, **kw)
    w = worst_flatness(c.net, c.x, c.y, iterations=c.cfg.flatness_iterations, **kw)
    c.add("robust_loss", a.reference_loss, eps=c.cfg.eps)
    c.add("average_flatness", a.flatness, xi=a.xi, eps=c.cfg.eps)
    c.add("worst_flatness", w.flatness, xi=w.xi, eps=c.cfg.eps)


def _ig(c: _Ctx) -> None:
    from medrobust.core.metrics.attribution import gini_index, integrated_gradients

    a = integrated_gradients(c.net, c.x, c.y, steps=c.cfg.ig_steps)
    c.maps["IG"] = a
    c.per_sample["gini_ig"] = gini_index(a).numpy()
    c.add("gini_ig", float(c.per_sample["gini_ig"].mean()), steps=c.cfg.ig_steps)


def _deepshap(c: _Ctx) -> None:
    from medrobust.core.metrics.attribution import deep_lift_shap, gini_index

    g = torch.Generator().manual_seed(c.cfg.seed)
    ref = c.x[torch.randperm(c.x.shape[0], generator=g)[: min(16, c.x.shape[0])]]
    a = torch.cat([deep_lift_shap(c.net, c.x[i : i + 16], c.y[i : i + 16], baselines=ref) for i in range(0, c.x.shape[0], 16)])
    c.maps["DeepSHAP"] = a
    c.per_sample["gini_deepshap"] = gini_index(a).numpy()
    c.add("gini_deepshap", float(c.per_sample["gini_deepshap"].mean()), baselines=ref.shape[0])


def _fisher(c: _Ctx) -> None:
    from medrobust.core.metrics.attribution import fisher_sensitivity

    score, fmap = fisher_sensitivity(c.net, c.x, c.y)
    if fmap.flatten(1).std(dim=1).max() > 1e-6 * float(fmap.abs().max()):
        c.maps["Fisher"] = fmap
    else:  # two classes: FI_j = (1 - p_y) / p_y at every pixel with a gradient, so the map carries no saliency
        logger.info("per-pixel Fisher maps are constant (a two-class model); not plotted")
    c.per_sample["fisher_information"] = score.numpy()
    c.add("fisher_information_mean", float(score.mean()))


def _occlusion(c: _Ctx) -> None:
    from medrobust.core.metrics.saliency import occlusion_baseline_study, plot_baseline_study

    xs, ys = c.x[c.detail], c.y[c.detail]
    st = occlusion_baseline_study(c.net, xs, ys, window=c.cfg.occlusion_window, generator=c.cfg.seed)
    st.spearman_table().to_csv(c.out / "occlusion_spearman.csv")
    st.scores.to_csv(c.out / "occlusion_scores.csv", index=False)
    plot_baseline_study(st, xs, c.out / "occlusion_baselines.png")
    off = st.spearman[:, ~torch.eye(len(st.kinds), dtype=torch.bool)]
    c.add("occlusion_baseline_spearman_mean", float(torch.nanmean(off)), window=c.cfg.occlusion_window)


def _probabilistic(c: _Ctx) -> None:
    from medrobust.core.metrics.probabilistic import GaussianWeightPosterior, MCDropoutPosterior, probabilistic_robustness

    has_dropout = any(isinstance(m, torch.nn.modules.dropout._DropoutNd) for m in c.net.modules())
    kind = c.cfg.posterior if c.cfg.posterior != "auto" else ("dropout" if has_dropout else "gaussian")
    sampler = MCDropoutPosterior(c.net) if kind == "dropout" else GaussianWeightPosterior(c.net, scale=0.1)
    r = probabilistic_robustness(sampler, c.x[c.detail], input_eps=c.cfg.eps, attack_steps=c.cfg.steps,
                                 sequential=True, generator=c.cfg.seed)  # fmt: skip
    pd.DataFrame({"sample": range(r.estimate.numel()), "p_safe": r.estimate.numpy(), "n_samples": r.n_samples.numpy(),
                  "n_safe": r.n_safe.numpy()}).to_csv(c.out / "probabilistic.csv", index=False)  # fmt: skip
    (c.out / "probabilistic_guarantee.txt").write_text(r.guarantee + "\n")
    c.add("probabilistic_robustness_mean", float(r.estimate.mean()), posterior=kind, eps_stat=r.eps, delta=r.delta)
    logger.info("probabilistic robustness: %s", r.guarantee)


def _purification(c: _Ctx) -> None:
    from medrobust.core.metrics.purification import plot_filters, purification_decomposition
    from medrobust.models import load_model

    if not c.cfg.robust_model:
        raise ValueError("measure 'purification' needs --robust-model (the adversarially fine-tuned model).")
    robust = load_model(c.cfg.robust_model, network_config=c.cfg.network_config, input_size=c.cfg.input_size).network
    res = purification_decomposition(c.net, robust)
    res.to_frame().to_csv(c.out / "purification.csv", index=False)
    plot_filters(c.net, robust, c.out / "filters.png", result=res)
    for k, v in res.summary().items():
        c.add(f"purification_{k}", v)


def _nmutant(c: _Ctx) -> None:
    from medrobust.core.attacks import pgd
    from medrobust.core.detectors.nmutant import NMutantDetector

    n = c.x.shape[0]
    half = n // 2
    if half < 4:
        raise ValueError(f"measure 'nmutant' needs at least 8 images (half calibrate, half test), got {n}.")
    det = NMutantDetector(c.net, c.x[:half], c.y[:half], max_mutants=100, seed=c.cfg.seed)
    kappa = det.fit(c.x[:half], n_mutants=50)
    xt, yt = c.x[half:][: c.cfg.max_detail], c.y[half:][: c.cfg.max_detail]
    adv = pgd(c.net, xt, yt, eps=max(c.cfg.eps, 1e-3), steps=c.cfg.steps, generator=c.cfg.seed).x_adv
    rows = []
    for kind, xs in (("clean", xt), ("pgd", adv)):
        r = det.detect(xs)
        rows += [{"kind": kind, "adversarial": bool(a), "decided": bool(d), "mutants": int(u)}
                 for a, d, u in zip(r.adversarial, r.decided, r.n_used)]  # fmt: skip
        c.add(f"nmutant_flagged_{kind}", float(r.adversarial.float().mean()), kappa=kappa)
        c.add(f"nmutant_mutants_per_decision_{kind}", float(r.n_used.float().mean()), kappa=kappa)
    pd.DataFrame(rows).to_csv(c.out / "nmutant.csv", index=False)


_TABLE: dict[str, Callable[[_Ctx], None]] = {
    "classification": _classification, "intrinsic": _intrinsic, "surface": _surface, "flatness": _flatness,
    "ig": _ig, "deepshap": _deepshap, "occlusion": _occlusion, "fisher": _fisher, "probabilistic": _probabilistic,
    "purification": _purification, "nmutant": _nmutant,
}  # fmt: skip


def run_measures(cfg: MetricsConfig) -> Path:
    """Load model and data, run ``cfg.measures``, write the outputs into ``cfg.out``; returns that folder.

    Raises:
        FileNotFoundError: the model or data is missing.
        ValueError: unusable data, or a measure that cannot run with these settings.
    """
    from medrobust.core.metrics._utils import predicted_labels
    from medrobust.core.metrics.saliency import plot_maps
    from medrobust.models import load_model

    measures = list(cfg.measures)
    loaded = load_model(cfg.model, network_config=cfg.network_config, input_size=cfg.input_size)
    net = loaded.network.eval()
    x, y, ids = load_inputs(cfg, loaded)
    pred = predicted_labels(net, x)
    if y is None:
        logger.warning("no labels: measures that need a class use the model's predictions")
        y = pred
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    c = _Ctx(cfg, net, x, y, out)
    for m in measures:
        logger.info("measure %s on %d images", m, x.shape[0])
        _TABLE[m](c)
    if c.maps:
        plot_maps(x, c.maps, out / "attributions.png")
    per = pd.DataFrame({"case_id": ids, "label": y.numpy(), "prediction": pred.numpy(), **c.per_sample})
    per.to_csv(out / "per_sample.csv", index=False)
    pd.DataFrame(c.summary).to_csv(out / "summary.csv", index=False)
    (out / "summary.json").write_text(json.dumps({"model": str(cfg.model), "data": str(cfg.data), "n": int(x.shape[0]),
                                                  "measures": measures, "results": c.summary}, indent=2))  # fmt: skip
    return out
