"""``medrobust lr-sweep``: train a classification bundle under LRBench learning-rate policies, select on validation.

Example::

    medrobust lr-sweep --bundle bundles/lesion_classification --out runs/lr --seeds 0 \\
        --policies default fix sin2 cos --epochs 40

Each (policy, seed) trains the bundle's ``configs/train.json`` with its ``lr_scheduler`` replaced
by :class:`medrobust.core.schedules.LRBenchScheduler` (``default`` keeps the bundle's own), then
scores the final network on the training and validation splits (and the test split only with
``--test``, with a case-bootstrap 95 % CI of its AUC and the per-case probabilities in
``OUT/test_predictions/``; selection never looks at it). Writes ``OUT/sweep.csv`` (one row per run, resumable),
``OUT/sweep.png`` and logs the policy with the best mean validation AUC.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

from medrobust.commands._common import UserError, check_out_dir, common_parent, positive_int

__all__ = ["LRSweepConfig", "PRESETS", "add_parser", "run", "run_sweep"]

logger = logging.getLogger(__name__)

#: policy settings for a run of E epochs (scheduler stepped once per epoch), base rate k = the bundle's learning_rate.
#: ``{E}`` and ``{k}`` are filled in per run. Cyclic policies span [k/10, 3k] with half-cycle E/8.
PRESETS: dict[str, dict] = {
    "default": {},
    "fix": {"policy": "fix"},
    "step": {"policy": "step", "gamma": 0.5, "l": "E/4"},
    "nstep": {"policy": "nstep", "gamma": 0.1, "milestones": ["E/2", "3E/4"]},
    "exp": {"policy": "exp", "gamma": 0.95},
    "inv": {"policy": "inv", "gamma": 0.1, "p": 0.75},
    "poly": {"policy": "poly", "l": "E", "p": 1.2},
    "tri": {"policy": "tri", "k0": "k/10", "k1": "3k", "l": "E/8"},
    "tri2": {"policy": "tri2", "k0": "k/10", "k1": "3k", "l": "E/8"},
    "triexp": {"policy": "triexp", "k0": "k/10", "k1": "3k", "l": "E/8", "gamma": 0.97},
    "sin": {"policy": "sin", "k0": "k/10", "k1": "3k", "l": "E/8"},
    "sin2": {"policy": "sin2", "k0": "k/10", "k1": "3k", "l": "E/8"},
    "sinexp": {"policy": "sinexp", "k0": "k/10", "k1": "3k", "l": "E/8", "gamma": 0.97},
    "cos": {"policy": "cos", "k0": "k/100", "k1": "3k", "l": "E/8"},
}

_EXPR = {"E": lambda e, k: e, "E/2": lambda e, k: e // 2, "3E/4": lambda e, k: 3 * e // 4, "E/4": lambda e, k: e // 4,
         "E/8": lambda e, k: max(1, e // 8), "k/10": lambda e, k: k / 10, "k/100": lambda e, k: k / 100,
         "3k": lambda e, k: 3 * k}


def resolve(preset: dict, *, epochs: int, lr: float) -> dict:
    """Fill a preset's ``E``/``k`` placeholders (fixed table, no evaluation of user strings)."""
    def one(v):
        return [one(x) for x in v] if isinstance(v, list) else _EXPR[v](epochs, lr) if isinstance(v, str) and v in _EXPR else v
    return {key: one(v) for key, v in preset.items()}


@dataclass(frozen=True)
class LRSweepConfig:
    """Settings of :func:`run_sweep` (one field per ``medrobust lr-sweep`` flag)."""

    bundle: Path
    out: Path
    policies: tuple[str, ...] = ("default", *[p for p in PRESETS if p != "default"])
    seeds: tuple[int, ...] = (0,)
    epochs: int | None = None
    dataset_dir: Path | None = None
    test: bool = False
    num_threads: int = 1
    overrides: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [p for p in self.policies if p not in PRESETS]
        if unknown:
            raise ValueError(f"policies: unknown {unknown}; choose from {list(PRESETS)}.")
        if not (self.bundle / "configs" / "train.json").is_file():
            raise FileNotFoundError(f"--bundle {self.bundle}: no configs/train.json (a MONAI bundle folder).")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}.")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``lr-sweep`` subcommand."""
    p = subparsers.add_parser(
        "lr-sweep",
        help="compare LRBench learning-rate policies on a classification bundle (select on validation)",
        description="Train a classification bundle (configs/train.json) once per LR policy and seed, score it on "
        "the train/validation splits (test only with --test, never used for selection), write sweep.csv and sweep.png.",
        parents=[common_parent()],
    )
    req = p.add_argument_group("required")
    req.add_argument("--bundle", type=Path, required=True, help="MONAI bundle folder with configs/train.json")
    req.add_argument("--out", type=Path, required=True, help="output folder (sweep.csv is resumed if present)")
    p.add_argument("--policies", nargs="+", default=list(PRESETS), choices=list(PRESETS), metavar="NAME",
                   help=f"policies to run (default all: {' '.join(PRESETS)}); 'default' = the bundle's own scheduler")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default 0)")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the bundle's)")
    p.add_argument("--dataset-dir", type=Path, default=None, help="dataset (default: the bundle's dataset_dir)")
    p.add_argument("--test", action="store_true", help="also score the test split (reported, not used for selection)")
    p.add_argument("--num-threads", type=positive_int, default=1, help="torch threads (default 1)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Build the :class:`LRSweepConfig` of the parsed command line and run it; returns the exit status."""
    cfg = LRSweepConfig(bundle=args.bundle, out=args.out, policies=tuple(args.policies), seeds=tuple(args.seeds),
                        epochs=args.epochs, dataset_dir=args.dataset_dir, test=args.test, num_threads=args.num_threads)
    check_out_dir(cfg.out)
    run_sweep(cfg)
    return 0


def _scores(network, datalist) -> dict:
    import torch

    from medrobust.core.metrics.classification import roc_auc
    from medrobust.core.schedules import confidence

    x = torch.stack([torch.as_tensor(d["image"]) for d in datalist]).float()
    y = torch.as_tensor([int(d["label"]) for d in datalist])
    network.eval()
    with torch.no_grad():
        logits = torch.cat([network(x[i:i + 256]) for i in range(0, len(x), 256)])
    probs = logits.softmax(1)
    conf, conf_sd = confidence(probs, y)
    return {"auc": float(roc_auc(logits, y)), "loss": float(torch.nn.functional.cross_entropy(logits, y)),
            "accuracy": float((probs.argmax(1) == y).float().mean()), "confidence": conf, "confidence_sd": conf_sd,
            "_p": probs[:, 1].numpy(), "_y": y.numpy()}


def _test_predictions(out_dir: Path, name: str, seed: int, p, y) -> dict:
    """Write the per-case test probabilities (``OUT/test_predictions/<name>_<seed>.csv``: index, label,
    p_positive; no identifiers) and return the case-bootstrap 95 % CI of the test AUC."""
    import numpy as np

    from medrobust.sensitivity.intervals import auc_rows, bootstrap_indices, percentile_interval

    folder = out_dir / "test_predictions"
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / f"{name}_{seed}.csv", np.column_stack([np.arange(len(y)), y, p]), delimiter=",",
               header="index,label,p_positive", comments="", fmt=["%d", "%d", "%.6f"])
    idx = bootstrap_indices(len(y), seed=seed)
    lo, hi = percentile_interval(auc_rows(p[idx], y[idx]))
    return {"test_auc_ci_lo": lo, "test_auc_ci_hi": hi}


def _train_one(cfg: LRSweepConfig, name: str, settings: dict, seed: int, tmp: Path) -> dict:
    import time

    import torch
    from ignite.engine import Events

    from medrobust.core.schedules import cost_to_target, utility
    from medrobust.models.bundle import bundle_imports, run_bundle_workflow

    bundle = cfg.bundle.resolve()
    override = {"seed": seed, "ckpt_dir": str(tmp / f"{name}_{seed}"), "num_threads": cfg.num_threads, **cfg.overrides}
    if cfg.epochs is not None:
        override["epochs"] = cfg.epochs
    if cfg.dataset_dir is not None:
        override["dataset_dir"] = str(cfg.dataset_dir)
    if settings:
        override["lr_scheduler"] = {"_target_": "medrobust.core.schedules.LRBenchScheduler", "optimizer": "@optimizer",
                                    **settings}
    # initialized and checked by the project's one bundle runner; run here to record the validation curve
    wf = run_bundle_workflow(bundle, ["train.json"], run=False, **override)
    with bundle_imports(bundle):
        curve: list[float] = []
        evaluator = wf.parser.get_parsed_content("validate#evaluator")
        key = wf.parser.get_parsed_content("val_key_metric")
        evaluator.add_event_handler(Events.COMPLETED, lambda e: curve.append(float(e.state.metrics[key])))
        t0 = time.perf_counter()
        wf.run()
        seconds = time.perf_counter() - t0
        network = wf.parser.get_parsed_content("network").to("cpu")
        get = wf.parser.get_parsed_content("get_datalist")
        kw = {k: wf.parser.get_parsed_content(k) for k in ("label_map", "spatial_size", "in_channels")}
        ds = wf.parser.get_parsed_content("dataset_dir")
        out = {"train_s": round(seconds, 1), "val_utility": utility(curve), "val_curve_max": max(curve)}
        for split in ("train", "val", *(("test",) if cfg.test else ())):
            scores = _scores(network, get(ds, split, **kw))
            p, y = scores.pop("_p"), scores.pop("_y")
            out.update({f"{split}_{k}": v for k, v in scores.items()})
            if split == "test":
                out.update(_test_predictions(Path(cfg.out), name, seed, p, y))
        wf.finalize()
    out["gap_val_minus_train_loss"] = out["val_loss"] - out["train_loss"]
    out["val_epochs_to_0.9auc"] = cost_to_target(curve, 0.9)
    torch.set_num_threads(cfg.num_threads)
    return out


def run_sweep(cfg: LRSweepConfig) -> list[dict]:
    """Run the sweep of ``cfg``; writes ``sweep.csv`` and ``sweep.png`` in ``cfg.out`` and returns the rows."""
    import json
    import tempfile

    from monai.bundle import ConfigParser

    from medrobust.core.schedules import plot_sweep, select_policy, sweep

    train = ConfigParser.load_config_file(str(cfg.bundle / "configs" / "train.json"))
    lr, epochs = float(train.get("learning_rate", 1e-3)), int(cfg.epochs or train.get("epochs", 40))
    policies = {n: resolve(PRESETS[n], epochs=epochs, lr=lr) for n in cfg.policies}
    out = Path(cfg.out)
    with tempfile.TemporaryDirectory() as tmp:
        rows = sweep(lambda n, s, seed: _train_one(cfg, n, dict(s), seed, Path(tmp)), policies, cfg.seeds,
                     out / "sweep.csv")
    if not rows:
        raise UserError("no run finished.")
    best = select_policy(rows, metric="val_auc")
    plot_sweep(rows, out / "sweep.png", metric="val_auc", title=f"validation AUC per LR policy ({epochs} epochs)")
    (out / "selection.json").write_text(json.dumps({"selected": best, "by": "mean val_auc over seeds",
                                                    "settings": policies[best] if best in policies else None},
                                                   indent=2))
    logger.info("selected %s (best mean validation AUC); table %s", best, out / "sweep.csv")
    return rows
