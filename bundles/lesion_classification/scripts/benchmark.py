"""Natural training vs every defense on one dataset: train, evaluate (clean + PGD), tabulate.

Each (method, seed) run trains with ``configs/train.json`` (overrides below) and evaluates the
final model with ``configs/train.json`` + ``configs/evaluate.json`` on the test split; one row per
run is appended to ``<out>/results.csv`` as soon as it finishes, and finished runs are skipped on
a rerun, so an interrupted benchmark resumes where it stopped. ``<out>/summary.csv`` and the
markdown table (mean +- sd over seeds) are rewritten after every run; with ``--readme`` the table
replaces the block between ``<!-- results:start -->`` and ``<!-- results:end -->`` in
``docs/README.md`` (:func:`medrobust.markdown.write_between_markers`). Workflows run with
:func:`medrobust.models.run_bundle_workflow`; ``--strong_eval`` is
:func:`medrobust.core.robustness.robust_accuracy` (PGD-10, PGD-50 x 5, Square, masking check).

Run from the bundle folder (the CPU is shared: keep it niced, one thread)::

    nice -n 10 python -m scripts.benchmark --out runs/benchmark --seeds 0 1 2 --readme
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["METHODS", "run_one", "summarise", "markdown_table", "strong_eval", "main"]

logger = logging.getLogger("lesion_classification.benchmark")

BUNDLE = Path(__file__).resolve().parents[1]

#: label -> train-config overrides. Defenses train at eps = 2/255 (the config default).
METHODS: dict[str, dict] = {
    "natural": {"defense": "none"},
    "pgd-at": {"defense": "pgd-at"},
    "fast-fgsm": {"defense": "fast-fgsm"},
    "fgm": {"defense": "fgm"},
    "trades-b6": {"defense": "trades", "beta": 6.0},
    "mart": {"defense": "mart", "beta": 6.0},
    "adt-exp-am": {"defense": "adt-exp-am"},
    "fisher-at": {"defense": "fisher-at", "fraction": 0.5},
    "at-awp": {"defense": "at-awp"},
    "trades-awp": {"defense": "trades-awp", "beta": 6.0},
    "trades-b1": {"defense": "trades", "beta": 1.0},
    "trades-b3": {"defense": "trades", "beta": 3.0},
    "adt-exp": {"defense": "adt-exp"},
}

COLUMNS = ["auc", "accuracy", "ece", "robust_accuracy_eps1", "robust_accuracy_eps2", "robust_accuracy_eps4",
           "robust_auc_eps1", "robust_auc_eps2", "robust_auc_eps4", "train_seconds"]


def run_one(label: str, seed: int, run_dir: Path, *, epochs: int, dataset_dir: str | None = None,
            extra: dict | None = None) -> dict:
    """Train and evaluate one (method, seed); returns the metrics row."""
    run_dir.mkdir(parents=True, exist_ok=True)
    from medrobust.models import run_bundle_workflow

    common = {"ckpt_dir": str(run_dir), "output_dir": str(run_dir), "seed": seed, "num_threads": 1}
    if dataset_dir:
        common["dataset_dir"] = dataset_dir
    train_over = {**METHODS[label], "epochs": epochs, "val_interval": max(1, epochs // 4), **(extra or {})}
    t0 = time.perf_counter()
    run_bundle_workflow(BUNDLE, ["train.json"], **common, **train_over)
    seconds = time.perf_counter() - t0
    run_bundle_workflow(BUNDLE, ["train.json", "evaluate.json"], **common)
    with open(run_dir / "metrics.csv", newline="") as f:
        metrics = {r[0]: float(r[1]) for r in csv.reader(f) if len(r) >= 2}
    row = {"method": label, "seed": seed, "epochs": epochs, **{k: metrics.get(k, math.nan) for k in COLUMNS[:-1]},
           "train_seconds": round(seconds, 1), "options": json.dumps(train_over, sort_keys=True)}
    logger.info("%s seed %d: %s", label, seed, {k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
    return row


def strong_eval(run_dir: Path, *, eps: float = 2 / 255, dataset_dir: str | None = None, queries: int = 1000) -> dict:
    """Gradient-masking check of a trained run on the test split: the library's strong suite
    (:func:`medrobust.core.robustness.robust_accuracy`: PGD-10, PGD-50 x 5, Square) as one CSV row."""
    import torch

    from medrobust.core.robustness import default_attacks, robust_accuracy
    from medrobust.data.medmnist import BREASTMNIST_MALIGNANT_POSITIVE, load_medmnist
    from medrobust.models import bundle_parser, load_bundle_network

    net = load_bundle_network(BUNDLE, config_files=["train.json"], weights=run_dir / "model.pt")
    src = dataset_dir or bundle_parser(BUNDLE, ["train.json"]).get_parsed_content("dataset_dir")
    s = load_medmnist(src, "test", label_map=BREASTMNIST_MALIGNANT_POSITIVE)
    result = robust_accuracy(net, torch.from_numpy(s.images), torch.from_numpy(s.labels), eps=eps,
                             attacks=default_attacks(queries=queries))
    return result.as_row()


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sample sd over seeds per method (methods in :data:`METHODS` order)."""
    out = []
    order = [m for m in METHODS if any(r["method"] == m for r in rows)]
    order += sorted({r["method"] for r in rows} - set(order))
    for m in order:
        sel = [r for r in rows if r["method"] == m]
        s = {"method": m, "n_seeds": len(sel)}
        for c in COLUMNS:
            vals = [float(r[c]) for r in sel if r.get(c) not in (None, "", "nan")]
            mean = sum(vals) / len(vals) if vals else math.nan
            sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else math.nan
            s[f"{c}_mean"], s[f"{c}_sd"] = mean, sd
        out.append(s)
    return out


def _fmt(s: dict, c: str, digits: int = 3) -> str:
    m, sd = s[f"{c}_mean"], s[f"{c}_sd"]
    if math.isnan(m):
        return "-"
    return f"{m:.{digits}f}" if math.isnan(sd) else f"{m:.{digits}f} ± {sd:.{digits}f}"


def markdown_table(summary: list[dict]) -> str:
    """The README table: clean AUC/accuracy/ECE and PGD-10 robust accuracy (AUC) at 1, 2, 4 /255."""
    head = ("| method | seeds | clean AUC | clean acc | ECE | PGD-10 acc 1/255 | PGD-10 acc 2/255 | PGD-10 acc 4/255 "
            "| robust AUC 2/255 | train s |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [
        f"| {s['method']} | {s['n_seeds']} | {_fmt(s, 'auc')} | {_fmt(s, 'accuracy')} | {_fmt(s, 'ece')} "
        f"| {_fmt(s, 'robust_accuracy_eps1')} | {_fmt(s, 'robust_accuracy_eps2')} | {_fmt(s, 'robust_accuracy_eps4')} "
        f"| {_fmt(s, 'robust_auc_eps2')} | {_fmt(s, 'train_seconds', 0)} |"
        for s in summary
    ]
    return head + "\n".join(lines) + "\n"


def _write_outputs(out: Path, rows: list[dict], readme: bool) -> str:
    summary = summarise(rows)
    with open(out / "summary.csv", "w", newline="") as f:
        if summary:
            w = csv.DictWriter(f, fieldnames=list(summary[0]))
            w.writeheader()
            w.writerows(summary)
    table = markdown_table(summary)
    (out / "results.md").write_text(table)
    if readme:
        from medrobust.markdown import write_between_markers

        try:
            write_between_markers(BUNDLE / "docs" / "README.md", "results", table)
        except ValueError as e:
            logger.warning("%s; table left in %s", e, out / "results.md")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=BUNDLE / "runs" / "benchmark", help="results folder")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--dataset_dir", default=None, help="default: the train config's (BreastMNIST)")
    p.add_argument("--readme", action="store_true", help="write the table into docs/README.md")
    p.add_argument("--strong_eval", nargs="*", default=None, metavar="METHOD",
                   help="only run the gradient-masking check (PGD-50x5, Square) on the first seed's finished runs "
                        "of these methods; writes <out>/strong_eval.csv")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.strong_eval is not None:
        rows_se = []
        for m in args.strong_eval or args.methods:
            run_dir = args.out / f"{m}_seed{args.seeds[0]}"
            if (run_dir / "model.pt").is_file():
                rows_se.append({"method": m, "seed": args.seeds[0], **strong_eval(run_dir, dataset_dir=args.dataset_dir)})
                logger.info("strong eval %s", rows_se[-1])
        with open(args.out / "strong_eval.csv", "w", newline="") as f:
            if rows_se:
                w = csv.DictWriter(f, fieldnames=list(rows_se[0]))
                w.writeheader()
                w.writerows(rows_se)
        return 0
    results = args.out / "results.csv"
    rows = _read_rows(results)
    done = {(r["method"], int(r["seed"])) for r in rows}
    todo = [(m, s) for s in args.seeds for m in args.methods if (m, s) not in done]
    logger.info("%d runs to do, %d already in %s", len(todo), len(done), results)
    for label, seed in todo:
        row = run_one(label, seed, args.out / f"{label}_seed{seed}", epochs=args.epochs, dataset_dir=args.dataset_dir)
        new = not results.is_file()
        with open(results, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        rows.append({k: str(v) for k, v in row.items()})
        _write_outputs(args.out, rows, args.readme)
    print(_write_outputs(args.out, rows, args.readme))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
