"""``medrobust metrics``: robustness measures of a classifier on a dataset, written as CSV + PNG.

Example:
    medrobust metrics --model bundles/lesion_classification \\
        --data ../shared/data/breastmnist/breastmnist.npz --split test --label-map 0:1,1:0 \\
        --measures classification,intrinsic,surface,ig,deepshap,fisher,occlusion --limit 64 --out runs/metrics

Outputs in ``--out``: ``per_sample.csv`` (one row per image: label, prediction and every
per-sample measure), ``summary.csv`` / ``summary.json`` (one value per measure and setting), and,
by measure, ``loss_surface.png``, ``attributions.png``, ``occlusion_baselines.png`` (+
``occlusion_spearman.csv``, ``occlusion_scores.csv``), ``purification.csv`` + ``filters.png``,
``probabilistic.csv``, ``nmutant.csv``.

Settings that are fixed here (use the Python API to change them): IG explains the labelled class
(the prediction when unlabelled) from an all-zero baseline; DeepSHAP's baselines are 16 random
images of the same data; probabilistic robustness is sequential (eps = delta = 0.075) with MC
dropout when the network has dropout, else Gaussian weight noise (0.1 std); nMutant calibrates
on the first half of the images and tests clean vs PGD inputs from the second half (NAI
mutants, gamma 0.05, at most 100 mutants).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["MEASURES", "add_parser", "main", "load_inputs", "run_measures"]

logger = logging.getLogger(__name__)

MEASURES = ("classification", "intrinsic", "surface", "flatness", "ig", "deepshap", "occlusion", "fisher",
            "probabilistic", "purification", "nmutant")  # fmt: skip


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``metrics`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "metrics",
        help="robustness measures (intrinsic robustness, flatness, attributions, Fisher, nMutant, ...)",
        description="Compute robustness measures of a classifier on a MedMNIST .npz split or a DICOM/NIfTI/PNG "
        "folder; write per-sample and summary CSVs and plots to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="MONAI bundle dir | TorchScript file | state dict (with --network-config)")
    p.add_argument("--network-config", help="JSON/YAML network config for a state dict")
    p.add_argument("--input-size", type=int, nargs="+", metavar="N", help="model input spatial size (TorchScript)")
    p.add_argument("--data", required=True, help="MedMNIST-style .npz, or a dataset folder (DICOM / NIfTI / PNG)")
    p.add_argument("--split", default="test", help="split of a .npz file (train | val | test)")
    p.add_argument("--label-map", help="relabel a .npz file, e.g. 0:1,1:0 (BreastMNIST -> 1 = malignant)")
    p.add_argument("--labels", help="labels CSV for a folder (case_id or file, label)")
    p.add_argument("--measures", default="classification,intrinsic,ig",
                   help=f"comma-separated, from: {', '.join(MEASURES)}")  # fmt: skip
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--eps", type=float, default=2 / 255, help="L-inf radius (input units, images scaled to [0, 1])")
    p.add_argument("--steps", type=int, default=10, help="PGD steps for every inner maximisation")
    p.add_argument("--ig-steps", type=int, default=100, help="Integrated Gradients steps")
    p.add_argument("--occlusion-window", type=int, default=4, help="occlusion window (voxels per spatial dim)")
    p.add_argument("--max-detail", type=int, default=8, help="images used by the costly measures (occlusion, probabilistic, nmutant)")
    p.add_argument("--flatness-samples", type=int, default=10, help="weight draws for average-case flatness")
    p.add_argument("--flatness-iterations", type=int, default=20, help="weight ascent steps for worst-case flatness")
    p.add_argument("--posterior", default="auto", choices=("auto", "dropout", "gaussian"),
                   help="posterior for probabilistic robustness: MC dropout or Gaussian weight noise")  # fmt: skip
    p.add_argument("--robust-model", help="adversarially fine-tuned model (purification): same architecture "
                   "(a state dict uses --network-config too)")
    p.add_argument("--seed", type=int, default=0, help="seed of every local generator")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_run)
    return p


def _parse_label_map(text: str | None) -> dict[int, int] | None:
    if not text:
        return None
    try:
        return {int(a): int(b) for a, b in (kv.split(":") for kv in text.split(","))}
    except ValueError:
        raise ValueError(f"--label-map must look like 0:1,1:0, got {text!r}.") from None


def load_inputs(args: argparse.Namespace, model: Any) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """``(x (N, C, *spatial) in [0, 1], labels (N,) or None, case ids)`` at the model's input shape."""
    from medrobust.data.preprocess import match_spatial_dims, normalise_image, to_model_input

    path = Path(args.data)
    if not path.exists():
        raise FileNotFoundError(f"--data {path} not found (expected a .npz file or a dataset folder).")
    if path.is_file():
        if path.suffix != ".npz":
            raise ValueError(f"--data {path}: a file must be a MedMNIST-style .npz.")
        from medrobust.data.medmnist import load_medmnist

        s = load_medmnist(path, args.split, label_map=_parse_label_map(args.label_map), spatial_dims=model.spatial_dims)
        n = len(s.case_ids) if args.limit is None else min(args.limit, len(s.case_ids))
        x = to_model_input(torch.from_numpy(s.images[:n]), model.spatial_shape, model.in_channels)
        y = torch.from_numpy(np.asarray(s.labels[:n])).long().reshape(-1) if s.labels.ndim == 1 else None
        return x, y, list(s.case_ids[:n])
    from medrobust.data import load_dataset, read_labels

    images, errors = load_dataset(path)
    for e in errors:
        logger.warning("skipped %s: %s", e.path.name, e.reason)
    images = sorted(images, key=lambda im: im.case_id)[: args.limit]
    if not images:
        raise ValueError(f"--data {path}: no loadable image found.")
    xs = [to_model_input(match_spatial_dims(normalise_image(im.array), model.spatial_dims)[None],
                         model.spatial_shape, model.in_channels) for im in images]  # fmt: skip
    ids = [im.case_id for im in images]
    y = None
    if args.labels:
        table = read_labels(args.labels)
        labs = [table[i].label if i in table else None for i in ids]
        if all(v is not None for v in labs):
            y = torch.tensor(labs, dtype=torch.long)
        else:
            logger.warning("labels missing for %d images: label-free measures use the predictions", labs.count(None))
    return torch.cat(xs), y, ids


class _Ctx:
    """What every measure needs, plus the tables it writes to."""

    def __init__(self, args: argparse.Namespace, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, out: Path) -> None:
        self.args, self.net, self.x, self.y, self.out = args, net, x, y, out
        self.per_sample: dict[str, Any] = {}
        self.summary: list[dict[str, Any]] = []
        self.maps: dict[str, torch.Tensor] = {}

    def add(self, measure: str, value: float, **settings: Any) -> None:
        self.summary.append({"measure": measure, "value": float(value), **settings})

    @property
    def detail(self) -> slice:
        return slice(0, min(self.args.max_detail, self.x.shape[0]))


def _classification(c: _Ctx) -> None:
    from medrobust.core.attacks import pgd
    from medrobust.core.metrics._utils import predict_logits
    from medrobust.core.metrics.classification import accuracy, classification_metrics

    logits = predict_logits(c.net, c.x)
    for k, v in classification_metrics(logits, c.y).items():
        c.add(k, v)
    if c.args.eps > 0:
        adv = torch.cat([pgd(c.net, c.x[i : i + 128], c.y[i : i + 128], eps=c.args.eps, steps=c.args.steps, generator=c.args.seed).x_adv
                         for i in range(0, c.x.shape[0], 128)])  # fmt: skip
        c.add("robust_accuracy", accuracy(predict_logits(c.net, adv), c.y), eps=c.args.eps, steps=c.args.steps)


def _intrinsic(c: _Ctx) -> None:
    from medrobust.core.metrics.intrinsic import intrinsic_robustness

    psi = intrinsic_robustness(c.net, c.x, eps=c.args.eps, steps=c.args.steps, generator=c.args.seed)
    c.per_sample["intrinsic_psi"] = psi.numpy()
    c.add("intrinsic_robustness", float(psi.mean()), eps=c.args.eps, steps=c.args.steps)


def _surface(c: _Ctx) -> None:
    from medrobust.core.metrics.intrinsic import loss_surface, plot_loss_surface

    s = loss_surface(c.net, c.x[:1], c.y[:1], span=max(4 * c.args.eps, 1e-3), generator=c.args.seed)
    plot_loss_surface(s, c.out / "loss_surface.png")


def _flatness(c: _Ctx) -> None:
    from medrobust.core.metrics.flatness import average_flatness, worst_flatness

    kw = dict(eps=c.args.eps, steps=c.args.steps, generator=c.args.seed)
    a = average_flatness(c.net, c.x, c.y, samples=c.args.flatness_samples, **kw)
    w = worst_flatness(c.net, c.x, c.y, iterations=c.args.flatness_iterations, **kw)
    c.add("robust_loss", a.reference_loss, eps=c.args.eps)
    c.add("average_flatness", a.flatness, xi=a.xi, eps=c.args.eps)
    c.add("worst_flatness", w.flatness, xi=w.xi, eps=c.args.eps)


def _ig(c: _Ctx) -> None:
    from medrobust.core.metrics.attribution import gini_index, integrated_gradients

    a = integrated_gradients(c.net, c.x, c.y, steps=c.args.ig_steps)
    c.maps["IG"] = a
    c.per_sample["gini_ig"] = gini_index(a).numpy()
    c.add("gini_ig", float(c.per_sample["gini_ig"].mean()), steps=c.args.ig_steps)


def _deepshap(c: _Ctx) -> None:
    from medrobust.core.metrics.attribution import deep_lift_shap, gini_index

    g = torch.Generator().manual_seed(c.args.seed)
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
    st = occlusion_baseline_study(c.net, xs, ys, window=c.args.occlusion_window, generator=c.args.seed)
    st.spearman_table().to_csv(c.out / "occlusion_spearman.csv")
    st.scores.to_csv(c.out / "occlusion_scores.csv", index=False)
    plot_baseline_study(st, xs, c.out / "occlusion_baselines.png")
    off = st.spearman[:, ~torch.eye(len(st.kinds), dtype=torch.bool)]
    c.add("occlusion_baseline_spearman_mean", float(torch.nanmean(off)), window=c.args.occlusion_window)


def _probabilistic(c: _Ctx) -> None:
    from medrobust.core.metrics.probabilistic import GaussianWeightPosterior, MCDropoutPosterior, probabilistic_robustness

    has_dropout = any(isinstance(m, torch.nn.modules.dropout._DropoutNd) for m in c.net.modules())
    kind = c.args.posterior if c.args.posterior != "auto" else ("dropout" if has_dropout else "gaussian")
    sampler = MCDropoutPosterior(c.net) if kind == "dropout" else GaussianWeightPosterior(c.net, scale=0.1)
    r = probabilistic_robustness(sampler, c.x[c.detail], input_eps=c.args.eps, attack_steps=c.args.steps,
                                 sequential=True, generator=c.args.seed)  # fmt: skip
    pd.DataFrame({"sample": range(r.estimate.numel()), "p_safe": r.estimate.numpy(), "n_samples": r.n_samples.numpy(),
                  "n_safe": r.n_safe.numpy()}).to_csv(c.out / "probabilistic.csv", index=False)  # fmt: skip
    (c.out / "probabilistic_guarantee.txt").write_text(r.guarantee + "\n")
    c.add("probabilistic_robustness_mean", float(r.estimate.mean()), posterior=kind, eps_stat=r.eps, delta=r.delta)
    logger.info("probabilistic robustness: %s", r.guarantee)


def _purification(c: _Ctx) -> None:
    from medrobust.core.metrics.purification import plot_filters, purification_decomposition
    from medrobust.models import load_model

    if not c.args.robust_model:
        raise ValueError("measure 'purification' needs --robust-model (the adversarially fine-tuned model).")
    robust = load_model(c.args.robust_model, network_config=c.args.network_config, input_size=c.args.input_size).network
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
    det = NMutantDetector(c.net, c.x[:half], c.y[:half], max_mutants=100, seed=c.args.seed)
    kappa = det.fit(c.x[:half], n_mutants=50)
    xt, yt = c.x[half:][: c.args.max_detail], c.y[half:][: c.args.max_detail]
    adv = pgd(c.net, xt, yt, eps=max(c.args.eps, 1e-3), steps=c.args.steps, generator=c.args.seed).x_adv
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


def run_measures(args: argparse.Namespace) -> Path:
    """Load model and data, run ``args.measures``, write the outputs; returns the output folder."""
    from medrobust.core.metrics._utils import predicted_labels
    from medrobust.core.metrics.saliency import plot_maps
    from medrobust.models import load_model

    measures = [m.strip() for m in args.measures.split(",") if m.strip()]
    unknown = sorted(set(measures) - set(MEASURES))
    if unknown:
        raise ValueError(f"--measures: unknown {unknown}; choose from {', '.join(MEASURES)}.")
    loaded = load_model(args.model, network_config=args.network_config, input_size=args.input_size)
    net = loaded.network.eval()
    x, y, ids = load_inputs(args, loaded)
    pred = predicted_labels(net, x)
    if y is None:
        logger.warning("no labels: measures that need a class use the model's predictions")
        y = pred
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    c = _Ctx(args, net, x, y, out)
    for m in measures:
        logger.info("measure %s on %d images", m, x.shape[0])
        _TABLE[m](c)
    if c.maps:
        plot_maps(x, c.maps, out / "attributions.png")
    per = pd.DataFrame({"case_id": ids, "label": y.numpy(), "prediction": pred.numpy(), **c.per_sample})
    per.to_csv(out / "per_sample.csv", index=False)
    pd.DataFrame(c.summary).to_csv(out / "summary.csv", index=False)
    (out / "summary.json").write_text(json.dumps({"model": str(args.model), "data": str(args.data), "n": int(x.shape[0]),
                                                  "measures": measures, "results": c.summary}, indent=2))  # fmt: skip
    return out


def _run(args: argparse.Namespace) -> int:
    try:
        out = run_measures(args)
    except (FileNotFoundError, ValueError) as e:
        logger.error("%s", e)
        return 2
    logger.info("wrote %s", out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand standalone (``python -m medrobust.core.metrics.cli ...``)."""
    parser = argparse.ArgumentParser(prog="medrobust")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["metrics", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
