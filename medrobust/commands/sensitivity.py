"""``medrobust sensitivity``: perturbation sensitivity of a classifier on a dataset.

Example::

    medrobust sensitivity --model bundles/mammogram_perturbation_sensitivity \\
        --data sample_data/generated/mammo --labels sample_data/generated/mammo/labels.csv --out runs/demo
    medrobust sensitivity --list-families
    medrobust sensitivity --model model.ts --input-size 256 256 --data dicoms/ --out runs/x \\
        --families fourier_lowpass gaussian_noise --severities fourier_lowpass=0,1,4
"""

from __future__ import annotations

import argparse
import logging

from medrobust.commands._common import UserError, check_out_dir, common_parent, positive_int

__all__ = ["add_parser", "parse_severities", "run"]

logger = logging.getLogger(__name__)


def parse_severities(values: list[str] | None) -> list[float] | dict[str, list[float]] | None:
    """``["0", "0.5", "1"]`` -> one grid for every family; ``["fam=0,1,2", ...]`` -> per family.

    Raises:
        ValueError: mixed forms or values that are not numbers.
    """
    if not values:
        return None
    tokens = [t for v in values for t in v.replace(";", " ").split()]
    per_family = [t for t in tokens if "=" in t]
    if per_family and len(per_family) != len(tokens):
        raise ValueError(f"--severities: use either plain numbers or FAMILY=S1,S2,... entries, not both: {tokens}")
    try:
        if per_family:
            out: dict[str, list[float]] = {}
            for t in per_family:
                name, _, grid = t.partition("=")
                out[name.strip()] = [float(s) for s in grid.split(",") if s.strip()]
            return out
        return [float(s) for t in tokens for s in t.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--severities: expected numbers, got {tokens}") from None


def _list_families() -> int:
    from medrobust.perturbations.registry import family_names, get_family
    from medrobust.sensitivity.engine import DEFAULT_FAMILIES

    for name in family_names():
        fam = get_family(name)
        flags = []
        if name in DEFAULT_FAMILIES:
            flags.append("default")
        if fam.needs_model:
            flags.append("needs model")
        if fam.modalities:
            flags.append("for " + "/".join(fam.modalities))
        dims = "/".join(f"{d}-D" for d in fam.spatial_dims)
        print(f"{name:20s} [{', '.join(flags + [dims])}]")
        print(f"    {fam.description}")
        print(f"    default severities: {', '.join(f'{s:g}' for s in fam.severities)}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the sweep (or list the families) from the parsed command line; returns the exit status."""
    if args.list_families:
        return _list_families()
    missing = [flag for flag, value in (("--model", args.model), ("--data", args.data), ("--out", args.out)) if not value]
    if missing:
        raise UserError(f"{', '.join(missing)} required (or --list-families)")
    severities = parse_severities(args.severities)
    out = check_out_dir(args.out)
    from medrobust.sensitivity.engine import run_sensitivity
    from medrobust.sensitivity.store import RunLockedError
    from medrobust.distributed import dist_context, run_sensitivity_distributed

    if dist_context().world_size > 1:  # under torchrun: each rank sweeps its shard, rank 0 merges
        run_sensitivity = run_sensitivity_distributed
    try:
        result = _run(args, out, severities, run_sensitivity)
    except RunLockedError as e:
        raise UserError(str(e)) from None
    logger.info(
        "%d predictions (%d computed now) for %d cases; %d skipped files; report: %s",
        len(result.predictions), result.n_computed, result.predictions["case_id"].nunique(), len(result.errors), result.report,
    )
    if (args.track or args.tracking_uri) and dist_context().rank == 0:
        from medrobust.tracking import log_sensitivity

        log_sensitivity(result, uri=args.tracking_uri, params={k: v for k, v in vars(args).items() if k != "func" and v is not None})
    return 0


def _run(args: argparse.Namespace, out, severities, run_sensitivity):
    return run_sensitivity(
        args.model,
        args.data,
        out,
        labels=args.labels,
        families=args.families,
        severities=severities,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        network_config=args.network_config,
        input_size=args.input_size,
        in_channels=args.in_channels,
        positive_class=args.positive_class,
        activation=args.activation,
        roi_masks=None if str(args.roi_masks).lower() == "none" else args.roi_masks,
        ring_width=args.ring_width,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        examples=not args.no_examples,
        strict=args.strict,
        wait=args.wait,
        output=args.output,
        preprocessing=_preprocessing(args),
    )


def _preprocessing(args: argparse.Namespace) -> dict | None:
    """Command-line preprocessing overrides (None where not given: the bundle's declaration stays)."""
    given = {
        "intensity": args.intensity,
        "window": args.window,
        "value_range": args.value_range,
        "percentiles": args.percentiles,
        "mean": args.input_mean_std[0] if args.input_mean_std else None,
        "std": args.input_mean_std[1] if args.input_mean_std else None,
    }
    given = {k: v for k, v in given.items() if v is not None}
    return given or None


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``sensitivity`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "sensitivity",
        help="perturbation sensitivity of a classifier (noise, Fourier filters, blur, MR artefacts, attacks)",
        description="Sweep perturbation families x severities over a DICOM/NIfTI/PNG dataset; write predictions, "
        "summary metrics (flip rate, mean |delta p|, AUC, KS), plots and report.md. Resumable: run again with "
        "the same arguments to finish an interrupted run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        parents=[common_parent()],
    )
    req = p.add_argument_group("required (unless --list-families)")
    req.add_argument(
        "--model",
        help="MONAI bundle dir | TorchScript file (.ts/.pt) | state dict (with --network-config) | ONNX file (.onnx, "
        "needs the deploy extra) | Python entry point package.module:factory (with --input-size)",
    )
    p.add_argument("--output", help="for a model with several outputs: index or key of the classifier logits")
    p.add_argument("--intensity", choices=("minmax", "percentile", "window", "fixed"),
                   help="image -> [0, 1] mapping (default: the bundle's declaration, else per-image min-max)")
    p.add_argument("--window", type=float, nargs=2, metavar=("CENTRE", "WIDTH"), help="fixed intensity window (implies --intensity window)")
    p.add_argument("--value-range", type=float, nargs=2, metavar=("LOW", "HIGH"), help="fixed range for --intensity fixed")
    p.add_argument("--percentiles", type=float, nargs=2, metavar=("LOW", "HIGH"), help="for --intensity percentile (default 0.5 99.5)")
    p.add_argument("--input-mean-std", type=float, nargs=2, metavar=("MEAN", "STD"),
                   help="standardise the model input (x - MEAN) / STD after resizing")
    p.add_argument("--network-config", help="JSON/YAML network config (_target_ or network_def) for a state dict")
    p.add_argument("--input-size", type=int, nargs="+", metavar="N", help="model input spatial size, e.g. 256 256 (TorchScript)")
    p.add_argument("--in-channels", type=int, help="model input channels (default: bundle metadata or first conv)")
    req.add_argument("--data", help="dataset folder (DICOM / NIfTI / PNG)")
    req.add_argument("--out", help="run folder (resumed when it holds the same run)")
    p.add_argument("--labels", help="labels CSV: case_id (or file), label, optional subgroup")
    p.add_argument("--families", nargs="+", metavar="NAME", help="perturbation families (default: noise, Fourier noise/low/high-pass, blur)")
    p.add_argument("--severities", nargs="+", metavar="S", help="severities for all families (0 0.5 1) or per family (fourier_lowpass=0,1,4)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per batch (does not change results)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the per-sample generators")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--positive-class", type=int, default=1, help="class index of the positive class (K >= 2 outputs)")
    p.add_argument("--activation", default="auto", choices=("auto", "sigmoid", "softmax", "none"), help="model outputs -> probabilities")
    p.add_argument(
        "--roi-masks",
        default="auto",
        help="folder of ROI masks <case_id>[_calc|_roi].npy/.png/.nii.gz for contrast-to-noise ratios; "
        "auto: DATA/masks when present; none: off",
    )
    p.add_argument("--ring-width", type=int, default=5, help="background ring width (pixels) for the ROI CNR")
    p.add_argument("--overwrite", action="store_true", help="replace a run with different settings in --out")
    p.add_argument("--strict", action="store_true",
                   help="exit non-zero when any label does not match an image or any file is skipped")
    p.add_argument("--wait", action="store_true", help="when another run is using --out, wait for it instead of failing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--track", action="store_true", help="record the run with MLflow (an SQLite store OUT/mlflow.db unless --tracking-uri)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (implies --track)")
    p.add_argument("--no-examples", action="store_true", help="skip the example-perturbation figure")
    p.add_argument("--list-families", action="store_true", help="list the perturbation families and exit")
    p.set_defaults(func=run)
    return p
