"""``medrobust card``: a robustness card (one offline HTML page + card.json) for a classifier, segmentation model or
registration bundle on a dataset; resumable, sharded under torchrun.

Example::

    medrobust card --model bundles/lesion_classification --data my_patches/ --labels my_patches/labels.csv \\
        --out runs/card
    medrobust card --model model.ts --input-size 224 224 --data dicoms/ --labels labels.csv --out runs/card \\
        --attack-cases 500 --eps 1 2 4 8 --pgd-steps 10 50 --restarts 5 --square-queries 1000 --autoattack standard
    medrobust card --model bundles/mrus_registration --data paired_pairs/ --out runs/reg_card
    torchrun --nproc_per_node 2 -m medrobust card --model M --data D --labels L --out runs/card
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import asdict, dataclass, field

from medrobust.card.budget import CardBudget
from medrobust.commands._common import UserError, check_out_dir, common_parent, positive_int

__all__ = ["CardConfig", "add_parser", "run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CardConfig:
    """Typed settings of ``medrobust card``; the budget is a :class:`medrobust.card.CardBudget`."""

    model: str
    data: str
    out: str
    budget: CardBudget = field(default_factory=CardBudget)
    labels: str | None = None
    input_size: tuple[int, ...] | None = None
    network_config: str | None = None
    device: str = "cpu"
    seed: int = 0
    num_threads: int | None = None
    write_metadata: bool = False
    meta_schema: str | None = None
    progress: bool = True
    tracking: str = "local"
    tracking_uri: str | None = None
    task: str = "auto"
    masks: str | None = None


#: ``--flag`` -> (CardBudget field, help); every default shown by ``--help`` is read from ``CardBudget()``
_BUDGET_FLAGS: dict[str, tuple[str, str]] = {
    "--max-cases": ("max_cases", "labelled cases for the clean figures (None: all)"),
    "--attack-cases": ("attack_cases", "cases attacked (the first in case-id order)"),
    "--eps": ("eps", "L-inf radii in 1/255 of the [0, 1] range"),
    "--pgd-steps": ("pgd_steps", "PGD steps (first: one start; others: --restarts)"),
    "--restarts": ("restarts", "PGD restarts"),
    "--square-queries": ("square_queries", "Square attack queries"),
    "--autoattack": ("autoattack", "AutoAttack suite: fast (APGD, few iterations), standard, or off"),
    "--autoattack-iterations": ("autoattack_iterations", "APGD iterations (fast)"),
    "--prob-cases": ("prob_cases", "cases of the (eps, delta) estimate"),
    "--prob-eps": ("prob_eps", "statistical accuracy eps of the estimate"),
    "--prob-delta": ("prob_delta", "confidence delta of the estimate"),
    "--prob-attack-steps": ("prob_attack_steps", "PGD steps of the estimate's safety check"),
    "--intrinsic-steps": ("intrinsic_steps", "PGD steps of the intrinsic-robustness search"),
    "--nmutant-cases": ("nmutant_cases", "cases of the nMutant check"),
    "--nmutant-mutants": ("nmutant_mutants", "nMutant SPRT budget (mutants)"),
    "--families": ("families", "sensitivity families (None: the sweep's)"),
    "--n-boot": ("n_boot", "bootstrap resamples"),
    "--block-cases": ("block_cases", "cases per unit of work (resume and torchrun sharding; numbers depend on it)"),
    "--tre-tau": ("tre_tau_mm", "registration: the (eps, delta) estimate's event is a TRE increase above this (mm)"),
}


def _budget(args: argparse.Namespace) -> CardBudget:
    values = {name: getattr(args, name) for name, _ in _BUDGET_FLAGS.values()}
    values["eps"] = tuple(e / 255 for e in values["eps"])
    values.update({k: tuple(values[k]) for k in ("pgd_steps", "families") if values[k] is not None})
    return CardBudget(**values, sensitivity=not args.no_sensitivity)


def _config(args: argparse.Namespace) -> CardConfig:
    return CardConfig(
        model=args.model, data=args.data, out=args.out, budget=_budget(args), labels=args.labels,
        input_size=tuple(args.input_size) if args.input_size else None, network_config=args.network_config,
        device=args.device, seed=args.seed, num_threads=args.num_threads, write_metadata=args.write_metadata,
        meta_schema=args.meta_schema, task=args.task, masks=args.masks,
        progress=not args.no_progress, tracking="off" if args.no_tracking else "local", tracking_uri=args.tracking_uri,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Build the card from the parsed command line; returns the exit status."""
    if any(e <= 0 or e > 255 for e in args.eps):
        raise UserError(f"--eps: radii in 1/255 units should be in (0, 255], got {list(args.eps)}")
    cfg = _config(args)
    out = check_out_dir(cfg.out)
    threads = _threads(cfg.num_threads)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    from medrobust.card.builder import make_card
    from medrobust.distributed import dist_context

    ctx = dist_context()  # under torchrun each rank measures a share of the cases; rank 0 merges and writes the card
    result = make_card(cfg.model, cfg.data, out, labels=cfg.labels, budget=cfg.budget, seed=cfg.seed, device=cfg.device,
                       input_size=cfg.input_size, network_config=cfg.network_config,
                       write_metadata=cfg.write_metadata, meta_schema=cfg.meta_schema, progress=cfg.progress,
                       task=cfg.task, masks=cfg.masks)  # fmt: skip
    if not result.written:
        logger.info("card: rank %d of %d stored its share; rank 0 writes the card", ctx.rank, ctx.world_size)
        return 0
    if cfg.tracking != "off":
        from medrobust.tracking import log_card

        settings = {k: v for k, v in vars(cfg).items() if k != "budget"}
        params = {**settings, **asdict(cfg.budget), "eps_255": [round(e * 255, 6) for e in cfg.budget.eps],
                  "world_size": ctx.world_size}  # fmt: skip
        log_card(result, uri=cfg.tracking_uri, params={k: v for k, v in params.items() if v is not None})
    logger.info("card: %s and %s", result.html, result.json)
    return 0


def _threads(flag: int | None) -> int | None:
    """Torch CPU threads: ``--num-threads``, else ``MEDROBUST_NUM_THREADS``, else ``None`` (torch's default, which
    follows ``OMP_NUM_THREADS``; torchrun sets that to 1 per process when it starts several)."""
    if flag is not None:
        return flag
    env = os.environ.get("MEDROBUST_NUM_THREADS")
    if env is None:
        return None
    try:
        n = int(env)
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"MEDROBUST_NUM_THREADS: expected a positive integer, got {env!r}")
    return n


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``card`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "card",
        help="robustness card of a classifier, segmentation model or registration bundle: one offline HTML page + card.json",
        description="Measure a classifier on a labelled dataset: clean performance and calibration with 95%% intervals, "
        "the natural-perturbation sweep, robust accuracy vs eps under PGD (restarts), Square and AutoAttack with the "
        "gradient-masking check, the (eps, delta) probabilistic robustness bound, intrinsic robustness and nMutant "
        "detection. Writes OUT/card.html (self-contained) and OUT/card.json. Defaults finish in minutes on a CPU; "
        "the budget flags scale it up. Segmentation models (--masks) get Dice rows: clean, per perturbation family, "
        "and under PGD with the Dice loss. Registration bundles (--data: a paired folder) get TRE rows: clean with "
        "bootstrap CIs, per fixed-image perturbation, under PGD with noise and Square checks, and the (eps, delta) "
        "bound on a TRE increase above --tre-tau. Per-case work is stored in OUT/units as it finishes (an interrupted card "
        "resumes) and runs unchanged under torchrun --nproc_per_node N (rank 0 merges and writes the card).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        parents=[common_parent()],
    )
    req = p.add_argument_group("required")
    req.add_argument("--model", required=True, help="MONAI bundle dir | TorchScript file | state dict (with --network-config)")
    req.add_argument("--data", required=True, help="dataset folder (DICOM / NIfTI / PNG)")
    req.add_argument("--out", required=True, help="output folder (card.html, card.json, sensitivity/)")
    p.add_argument("--labels", help="labels CSV: case_id (or file), label")
    p.add_argument("--task", default="auto", choices=("auto", "classification", "segmentation", "registration"),
                   help="auto: registration for a bundle whose inference config defines moving_keys (--data: paired "
                   "folder), segmentation when the model's output is (B, K, *spatial) with the input's spatial size")
    p.add_argument("--masks", help="segmentation: folder of reference masks (NIfTI / PNG) named by case id")
    p.add_argument("--input-size", type=int, nargs="+", metavar="N", help="model input spatial size (TorchScript)")
    p.add_argument("--network-config", help="JSON/YAML network config for a state dict")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--seed", type=int, default=0, help="base seed of every random choice")
    p.add_argument("--num-threads", type=positive_int,
                   help="torch CPU threads (default: $MEDROBUST_NUM_THREADS, else torch's default, which follows "
                   "$OMP_NUM_THREADS); 1 on a machine shared with other jobs")
    b = p.add_argument_group("budget (defaults: medrobust.card.CardBudget)")
    default = CardBudget()
    kinds = {"eps": float, "prob_eps": float, "prob_delta": float, "families": str, "tre_tau_mm": float}
    for flag, (name, text) in _BUDGET_FLAGS.items():
        value = getattr(default, name)
        if name == "eps":
            value = [round(e * 255, 6) for e in value]
        kw: dict = {"dest": name, "help": text, "type": kinds.get(name, positive_int),
                    "default": list(value) if isinstance(value, tuple) else value}  # fmt: skip
        if name in ("eps", "pgd_steps", "families"):
            kw.update(nargs="+", metavar="NAME" if name == "families" else "N")
        if name == "autoattack":
            kw.update(type=str, choices=("fast", "standard", "off"))
        b.add_argument(flag, **kw)
    b.add_argument("--no-sensitivity", action="store_true", help="skip the natural-perturbation sweep")
    m = p.add_argument_group("bundle metadata and tracking")
    m.add_argument("--write-metadata", action="store_true", help="write the headline into the bundle's metadata.json")
    m.add_argument("--meta-schema", help="MONAI metadata schema JSON to validate the updated metadata against")
    m.add_argument("--no-tracking", action="store_true", help="do not record the run with MLflow")
    m.add_argument("--tracking-uri", help="MLflow tracking URI (default: an SQLite store OUT/mlflow.db)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p
