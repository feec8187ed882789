"""``medrobust metrics``: robustness measures of a classifier on a dataset, written as CSV + PNG.

Example::

    medrobust metrics --model bundles/lesion_classification \\
        --data ../shared/data/breastmnist/breastmnist.npz --split test --label-map 0:1,1:0 \\
        --measures classification,intrinsic,surface,ig,deepshap,fisher,occlusion --limit 64 --out runs/metrics

The command builds a :class:`medrobust.measures.MetricsConfig` and calls
:func:`medrobust.measures.run_measures` (see it for the outputs and the fixed settings).
"""

from __future__ import annotations

import argparse
import logging

from medrobust.commands._common import check_out_dir, common_parent, positive_int
from medrobust.measures.config import MEASURES, MetricsConfig, parse_label_map

__all__ = ["add_parser", "config_from_args", "run"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``metrics`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "metrics",
        help="robustness measures (intrinsic robustness, flatness, attributions, Fisher, nMutant, ...)",
        description="Compute robustness measures of a classifier on a MedMNIST .npz split or a DICOM/NIfTI/PNG "
        "folder; write per-sample and summary CSVs and plots to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        parents=[common_parent()],
    )
    d = MetricsConfig.__dataclass_fields__
    req = p.add_argument_group("required")
    req.add_argument("--model", required=True, help="MONAI bundle dir | TorchScript file | state dict (with --network-config)")
    req.add_argument("--data", required=True, help="MedMNIST-style .npz, or a dataset folder (DICOM / NIfTI / PNG)")
    req.add_argument("--out", required=True, help="output folder")
    p.add_argument("--network-config", help="JSON/YAML network config (_target_ or network_def) for a state dict")
    p.add_argument("--input-size", type=int, nargs="+", metavar="N", help="model input spatial size (TorchScript)")
    p.add_argument("--split", default=d["split"].default, help="split of a .npz file (train | val | test)")
    p.add_argument("--label-map", help="relabel a .npz file, e.g. 0:1,1:0 (BreastMNIST -> 1 = malignant)")
    p.add_argument("--labels", help="labels CSV for a folder (case_id or file, label)")
    p.add_argument("--measures", default=",".join(d["measures"].default), help=f"comma-separated, from: {', '.join(MEASURES)}")
    p.add_argument("--limit", type=positive_int, help="use only the first N images")
    p.add_argument("--eps", type=float, default=d["eps"].default, help="L-inf radius (input units, images scaled to [0, 1])")
    p.add_argument("--steps", type=positive_int, default=d["steps"].default, help="PGD steps for every inner maximisation")
    p.add_argument("--ig-steps", type=positive_int, default=d["ig_steps"].default, help="Integrated Gradients steps")
    p.add_argument("--occlusion-window", type=positive_int, default=d["occlusion_window"].default,
                   help="occlusion window (voxels per spatial dim)")  # fmt: skip
    p.add_argument("--max-detail", type=positive_int, default=d["max_detail"].default,
                   help="images used by the costly measures (occlusion, probabilistic, nmutant)")  # fmt: skip
    p.add_argument("--flatness-samples", type=positive_int, default=d["flatness_samples"].default,
                   help="weight draws for average-case flatness")  # fmt: skip
    p.add_argument("--flatness-iterations", type=positive_int, default=d["flatness_iterations"].default,
                   help="weight ascent steps for worst-case flatness")  # fmt: skip
    p.add_argument("--posterior", default=d["posterior"].default, choices=("auto", "dropout", "gaussian"),
                   help="posterior for probabilistic robustness: MC dropout or Gaussian weight noise")  # fmt: skip
    p.add_argument("--robust-model", help="adversarially fine-tuned model (purification): same architecture "
                   "(a state dict uses --network-config too)")  # fmt: skip
    p.add_argument("--seed", type=int, default=d["seed"].default, help="seed of every local generator")
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace) -> MetricsConfig:
    """The typed :class:`MetricsConfig` of a parsed ``medrobust metrics`` command line.

    Raises:
        ValueError: an unknown measure, a malformed ``--label-map`` or a setting out of range (flag names in the message).
    """
    try:
        label_map = parse_label_map(args.label_map)
    except ValueError:
        raise ValueError(f"--label-map must look like 0:1,1:0, got {args.label_map!r}.") from None
    measures = tuple(m.strip() for m in args.measures.split(",") if m.strip())
    unknown = sorted(set(measures) - set(MEASURES))
    if unknown:
        raise ValueError(f"--measures: unknown {unknown}; choose from {', '.join(MEASURES)}.")
    if "purification" in measures and not args.robust_model:
        raise ValueError("--measures purification needs --robust-model (the adversarially fine-tuned model).")
    return MetricsConfig(
        model=args.model, data=args.data, out=args.out, measures=measures, network_config=args.network_config,
        input_size=tuple(args.input_size) if args.input_size else None, split=args.split, label_map=label_map,
        labels=args.labels, limit=args.limit, eps=args.eps, steps=args.steps, ig_steps=args.ig_steps,
        occlusion_window=args.occlusion_window, max_detail=args.max_detail, flatness_samples=args.flatness_samples,
        flatness_iterations=args.flatness_iterations, posterior=args.posterior, robust_model=args.robust_model,
        seed=args.seed,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Build the config, check ``--out``, run the measures; returns the exit status."""
    cfg = config_from_args(args)
    check_out_dir(cfg.out)
    from medrobust.measures.runner import run_measures

    logger.info("wrote %s", run_measures(cfg))
    return 0
