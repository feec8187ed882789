"""``medrobust card``: a robustness card (one offline HTML page + card.json) for a classifier on a dataset.

Example::

    medrobust card --model bundles/lesion_classification --data my_patches/ --labels my_patches/labels.csv \\
        --out runs/card
    medrobust card --model model.ts --input-size 224 224 --data dicoms/ --labels labels.csv --out runs/card \\
        --attack-cases 500 --eps 1 2 4 8 --pgd-steps 10 50 --restarts 5 --square-queries 1000 --autoattack standard
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

from medrobust.commands._common import UserError, check_out_dir, common_parent, positive_int

__all__ = ["CardConfig", "add_parser", "run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CardConfig:
    """Typed settings of ``medrobust card`` (budgets as in :class:`medrobust.card.CardBudget`; eps in 1/255)."""

    model: str
    data: str
    out: str
    labels: str | None = None
    input_size: tuple[int, ...] | None = None
    network_config: str | None = None
    device: str = "cpu"
    seed: int = 0
    max_cases: int | None = None
    attack_cases: int = 64
    eps_255: tuple[float, ...] = (1.0, 2.0, 4.0)
    pgd_steps: tuple[int, ...] = (10, 20)
    restarts: int = 2
    square_queries: int = 300
    autoattack: str = "fast"
    autoattack_iterations: int = 20
    prob_cases: int = 8
    prob_eps: float = 0.1
    prob_delta: float = 0.1
    nmutant_cases: int = 32
    nmutant_mutants: int = 50
    families: tuple[str, ...] | None = None
    sensitivity: bool = True
    n_boot: int = 1000
    write_metadata: bool = False
    meta_schema: str | None = None
    progress: bool = True
    tracking: str = "local"
    tracking_uri: str | None = None


def _config(args: argparse.Namespace) -> CardConfig:
    return CardConfig(
        model=args.model, data=args.data, out=args.out, labels=args.labels,
        input_size=tuple(args.input_size) if args.input_size else None, network_config=args.network_config,
        device=args.device, seed=args.seed, max_cases=args.max_cases, attack_cases=args.attack_cases,
        eps_255=tuple(args.eps), pgd_steps=tuple(args.pgd_steps), restarts=args.restarts,
        square_queries=args.square_queries, autoattack=args.autoattack, autoattack_iterations=args.autoattack_iterations,
        prob_cases=args.prob_cases, prob_eps=args.prob_eps, prob_delta=args.prob_delta,
        nmutant_cases=args.nmutant_cases, nmutant_mutants=args.nmutant_mutants,
        families=tuple(args.families) if args.families else None, sensitivity=not args.no_sensitivity,
        n_boot=args.n_boot, write_metadata=args.write_metadata, meta_schema=args.meta_schema,
        progress=not args.no_progress, tracking="off" if args.no_tracking else "local", tracking_uri=args.tracking_uri,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Build the card from the parsed command line; returns the exit status."""
    cfg = _config(args)
    if any(e <= 0 or e > 255 for e in cfg.eps_255):
        raise UserError(f"--eps: radii in 1/255 units should be in (0, 255], got {list(cfg.eps_255)}")
    out = check_out_dir(cfg.out)
    from medrobust.card.builder import CardBudget, make_card
    from medrobust.distributed import dist_context

    budget = CardBudget(
        max_cases=cfg.max_cases, attack_cases=cfg.attack_cases, eps=tuple(e / 255 for e in cfg.eps_255),
        pgd_steps=cfg.pgd_steps, restarts=cfg.restarts, square_queries=cfg.square_queries, autoattack=cfg.autoattack,
        autoattack_iterations=cfg.autoattack_iterations, prob_cases=cfg.prob_cases, prob_eps=cfg.prob_eps,
        prob_delta=cfg.prob_delta, nmutant_cases=cfg.nmutant_cases, nmutant_mutants=cfg.nmutant_mutants,
        sensitivity=cfg.sensitivity, families=cfg.families, n_boot=cfg.n_boot,
    )  # fmt: skip
    ctx = dist_context()
    if ctx.world_size > 1:
        raise UserError("medrobust card under torchrun is not supported yet (run it in one process); "
                        "'medrobust sensitivity' shards under torchrun")  # fmt: skip
    result = make_card(cfg.model, cfg.data, out, labels=cfg.labels, budget=budget, seed=cfg.seed, device=cfg.device,
                       input_size=cfg.input_size, network_config=cfg.network_config,
                       write_metadata=cfg.write_metadata, meta_schema=cfg.meta_schema, progress=cfg.progress)  # fmt: skip
    if cfg.tracking != "off":
        from medrobust.tracking import log_card

        log_card(result, uri=cfg.tracking_uri, params={k: v for k, v in vars(cfg).items() if v is not None})
    logger.info("card: %s and %s", result.html, result.json)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``card`` subcommand to ``subparsers``."""
    p = subparsers.add_parser(
        "card",
        help="robustness card of a classifier: one offline HTML page + card.json",
        description="Measure a classifier on a labelled dataset: clean performance and calibration with 95%% intervals, "
        "the natural-perturbation sweep, robust accuracy vs eps under PGD (restarts), Square and AutoAttack with the "
        "gradient-masking check, the (eps, delta) probabilistic robustness bound, intrinsic robustness and nMutant "
        "detection. Writes OUT/card.html (self-contained) and OUT/card.json. Defaults finish in minutes on a CPU; "
        "the budget flags scale it up.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        parents=[common_parent()],
    )
    req = p.add_argument_group("required")
    req.add_argument("--model", required=True, help="MONAI bundle dir | TorchScript file | state dict (with --network-config)")
    req.add_argument("--data", required=True, help="dataset folder (DICOM / NIfTI / PNG)")
    req.add_argument("--out", required=True, help="output folder (card.html, card.json, sensitivity/)")
    p.add_argument("--labels", help="labels CSV: case_id (or file), label")
    p.add_argument("--input-size", type=int, nargs="+", metavar="N", help="model input spatial size (TorchScript)")
    p.add_argument("--network-config", help="JSON/YAML network config for a state dict")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--seed", type=int, default=0, help="base seed of every random choice")
    b = p.add_argument_group("budget")
    b.add_argument("--max-cases", type=positive_int, help="labelled cases for the clean figures (default: all)")
    b.add_argument("--attack-cases", type=positive_int, default=64, help="cases attacked")
    b.add_argument("--eps", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="L-inf radii in 1/255 of the [0, 1] range")
    b.add_argument("--pgd-steps", type=positive_int, nargs="+", default=[10, 20], help="PGD steps (first: one start; others: --restarts)")
    b.add_argument("--restarts", type=positive_int, default=2, help="PGD restarts")
    b.add_argument("--square-queries", type=positive_int, default=300, help="Square attack queries")
    b.add_argument("--autoattack", choices=("fast", "standard", "off"), default="fast",
                   help="AutoAttack suite: fast (APGD, few iterations), standard, or off")
    b.add_argument("--autoattack-iterations", type=positive_int, default=20, help="APGD iterations (fast)")
    b.add_argument("--prob-cases", type=positive_int, default=8, help="cases of the (eps, delta) estimate")
    b.add_argument("--prob-eps", type=float, default=0.1, help="statistical accuracy eps of the estimate")
    b.add_argument("--prob-delta", type=float, default=0.1, help="confidence delta of the estimate")
    b.add_argument("--nmutant-cases", type=positive_int, default=32, help="cases of the nMutant check")
    b.add_argument("--nmutant-mutants", type=positive_int, default=50, help="nMutant SPRT budget (mutants)")
    b.add_argument("--families", nargs="+", metavar="NAME", help="sensitivity families (default: the sweep's)")
    b.add_argument("--no-sensitivity", action="store_true", help="skip the natural-perturbation sweep")
    b.add_argument("--n-boot", type=positive_int, default=1000, help="bootstrap resamples")
    m = p.add_argument_group("bundle metadata and tracking")
    m.add_argument("--write-metadata", action="store_true", help="write the headline into the bundle's metadata.json")
    m.add_argument("--meta-schema", help="MONAI metadata schema JSON to validate the updated metadata against")
    m.add_argument("--no-tracking", action="store_true", help="do not record the run with MLflow")
    m.add_argument("--tracking-uri", help="MLflow tracking URI (default: a file store OUT/mlruns)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p
