"""TRE and Dice of the shipped registration network (and defended ones) under attack on the fixed image, over eps.

From the repository root::

    nice -n 10 .venv/bin/python bundles/mrus_registration/scripts/robustness_sweep.py --num_threads 1

By default the shipped weights (``models/model.pt``, built from ``configs/inference.json``) are
attacked on the held-out pairs of fold 0 of ``configs/folds.json``. ``--weights`` and every
``--model NAME=WEIGHTS`` may contain ``{fold}``: with several ``--fold`` values each fold's
held-out pairs are attacked on that fold's network and the pairs are pooled (every pair scored by
a network that never saw its patient). ``--references`` adds the rows of
``configs/reference_networks.json`` whose weights exist.

Each row: per eps (0 is clean) the median over pairs of the pair's mean landmark TRE with a 95 %
percentile-bootstrap CI over pairs (:func:`medrobust.registration.crossval.cv_summary`) and the
mean gland Dice, under the attacks library's L-inf PGD with the registration objective
(:func:`medrobust.registration.robustness.attack_rows`; ``--steps``, ``--restarts``).
``--checks`` adds a gradient-masking table at ``--check_eps``: for every network, PGD against
uniform sign noise of the same size (``--noise_draws``, the worst kept), the score-based Square
attack (``--queries``), each pair registered with the next pair's TRUS (does the network use the
TRUS image at all?) and, for every network but the first, PGD examples transferred from the first
(undefended) network. Writes ``OUT/robustness.json``, ``OUT/robustness.md`` and
``OUT/pairs.csv`` (per pair, network, attack and eps), caches finished (network, attack, eps)
cells under ``OUT/cells/`` (keyed by the weights' sha256, configs and attack settings) so that a rerun resumes, and changes the README table between the
``--marker`` markers (default ``robustness``) only with ``--update_readme``. Exits with status 2 and a message when a
requested model file does not exist.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from medrobust.data.paired import load_paired_dataset
from medrobust.markdown import write_between_markers
from medrobust.models import load_bundle_network
from medrobust.registration.crossval import bootstrap_ci, cv_summary, pair_tre, read_folds
from medrobust.registration.robustness import adversarial_rows, attack_rows

BUNDLE = Path(__file__).resolve().parents[1]
REPO = BUNDLE.parents[1]
logger = logging.getLogger("mrus_registration.robustness_sweep")


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def file_digest(path: Path | None) -> str | None:
    """sha256 (first 16 hex digits) of a weights file: cells are cached by what was attacked, not by its path."""
    if path is None:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def cell_key(weights: Path, source: Path | None, attack: str, eps: float, ids: list, overrides: dict, settings: dict,
             configs: list) -> str:
    """The cache key of one (network, attack, eps, pairs) cell: weights by content, configs, overrides and attack settings."""
    return json.dumps([file_digest(weights), file_digest(source), attack, eps, list(ids), overrides, settings, list(configs)],
                      sort_keys=True)


def _cell(rows: list[dict], adversarial: bool) -> dict:
    s = cv_summary(adversarial_rows(rows, adversarial=adversarial))
    return {k: s[k] for k in ("n_pairs", "tre_median_mm", "tre_median_ci", "tre_mean_mm", "dice_gland")}


def _increase(rows: list[dict]) -> dict:
    """Median over pairs of the per-pair TRE increase under attack (mm), with its 95 % bootstrap CI."""
    d = np.array([pair_tre({"tre_landmarks_mm": r["tre_landmarks_mm_adv"]}) - pair_tre(r) for r in rows], dtype=float)
    return {"median_mm": float(np.nanmedian(d)), "ci": bootstrap_ci(d, np.median), "n_worse": int((d > 0).sum())}


def _fmt(c: dict) -> str:
    lo, hi = c["tre_median_ci"]
    return f"{c['tre_median_mm']:.2f} [{lo:.2f}, {hi:.2f}] / {c['dice_gland']:.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset_dir", default=str(REPO.parent / "shared" / "data" / "mrus_dev"))
    p.add_argument("--folds_file", default=str(BUNDLE / "configs" / "folds.json"))
    p.add_argument("--fold", type=int, nargs="+", default=[0], help="held-out pairs of these folds are attacked (pooled)")
    p.add_argument("--weights", default=str(BUNDLE / "models" / "model.pt"), help="the first row's network ({fold} allowed)")
    p.add_argument("--name", default=None, help="the first row's name (default: its weights path)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=WEIGHTS", help="another network, same config (repeatable)")
    p.add_argument("--configs", nargs="+", default=["inference.json"],
                   help="configs every network is built from, in order (e.g. inference.json cascade.json for the image-only cascade)")
    p.add_argument("--override", action="append", default=[], metavar="ID=JSON",
                   help="config override for every network, e.g. moving_mask_input=true (repeatable)")
    p.add_argument("--ids", nargs="+", default=None, help="attack these pair ids instead of the folds' held-out pairs")
    p.add_argument("--references", action="store_true", help="add configs/reference_networks.json rows whose weights exist")
    p.add_argument("--eps", type=float, nargs="+", default=[0.005, 0.01, 0.02])
    p.add_argument("--steps", type=int, default=20, help="PGD steps per restart")
    p.add_argument("--restarts", type=int, default=1, help="PGD restarts (random starts; the worst kept per pair)")
    p.add_argument("--checks", action="store_true", help="also the gradient-masking table (noise, Square, transfer)")
    p.add_argument("--check_eps", type=float, default=0.01)
    p.add_argument("--check_attacks", nargs="+", default=["noise", "square", "swap", "transfer"],
                   choices=["noise", "square", "swap", "transfer"], help="which checks --checks runs (PGD is always shown)")
    p.add_argument("--noise_draws", type=int, default=10)
    p.add_argument("--queries", type=int, default=300, help="Square attack iterations")
    p.add_argument("--num_threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=BUNDLE / "runs" / "robustness_sweep")
    p.add_argument("--update_readme", action="store_true", help="also write the tables between the --marker markers of docs/README.md")
    p.add_argument("--marker", default="robustness", help="README block name: <!-- NAME:start --> ... <!-- NAME:end -->")
    args = p.parse_args(argv)
    command = "python bundles/mrus_registration/scripts/robustness_sweep.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    if any(e <= 0 for e in args.eps) or args.check_eps <= 0:
        raise SystemExit("--eps/--check_eps: every radius must be > 0 (the clean column is always reported).")
    common = {k: json.loads(v) for k, _, v in (o.partition("=") for o in args.override)}
    configs = list(args.configs)
    networks: list[tuple[str, str, dict, list]] = [(args.name or _rel(Path(args.weights)), args.weights, common, configs)]
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--model must be NAME=WEIGHTS, got {item!r}")
        networks.append((name, path, common, configs))
    if args.references:
        for row in json.loads((BUNDLE / "configs" / "reference_networks.json").read_text())["networks"]:
            if (BUNDLE / row["weights"]).is_file():
                networks.append((row["name"], str(BUNDLE / row["weights"]), row["overrides"], row.get("config_files", ["inference.json"])))
    folds = read_folds(args.folds_file)
    splits = [("ids", args.ids)] if args.ids else [(k, folds[k]["test"]) for k in args.fold]
    path_of = {(name, k): Path(w.format(fold=k)).resolve() for name, w, _, _ in networks for k, _ in splits}
    missing = sorted({f"{name}: {path}" for (name, _), path in path_of.items() if not path.is_file()})
    if missing:
        print(f"robustness_sweep: no model weights at {'; '.join(missing)}. Train one (python -m monai.bundle run "  # noqa: T201
              f"--config_file configs/train.json --bundle_root {BUNDLE}) or pass --weights/--model.", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cells").mkdir(exist_ok=True)
    settings = {"steps": args.steps, "restarts": args.restarts, "noise_draws": args.noise_draws, "queries": args.queries}
    items_of = {}
    all_rows: list[dict] = []

    def run_cell(name: str, overrides: dict, cfgs: list, attack: str, eps: float) -> list[dict]:
        """Per-pair rows of one (network, attack, eps), pooled over the splits; cached under OUT/cells."""
        rows: list[dict] = []
        for k, ids in splits:
            weights = path_of[(name, k)]
            src = path_of[(networks[0][0], k)] if attack == "transfer" else None
            key = cell_key(weights, src, attack, eps, ids, overrides, settings, cfgs)
            cache = args.out / "cells" / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")
            if cache.is_file():
                rows += json.loads(cache.read_text())["rows"]
                continue
            net = load_bundle_network(BUNDLE, config_files=cfgs, overrides=overrides, weights=weights)
            first = networks[0]
            source = None if src is None else load_bundle_network(BUNDLE, config_files=first[3], overrides=first[2], weights=src)
            keys = ["moving_image", "moving_mask"][: getattr(net, "in_channels", 2) - 1]
            if (k, len(keys)) not in items_of:
                items_of[(k, len(keys))] = load_paired_dataset(args.dataset_dir, ids=ids, spacing=3.0, size=(24, 32, 24),
                                                               alignment="centre", moving_mask=len(keys) > 1)
            part = attack_rows(net, items_of[(k, len(keys))], eps=eps, steps=args.steps, moving_keys=keys, attack=attack,
                               restarts=args.noise_draws if attack == "noise" else args.restarts, queries=args.queries,
                               source=source)
            part = [{**r, "fold": k, "eps": eps} for r in part]
            cache.write_text(json.dumps({"key": key, "rows": part}))
            rows += part
        all_rows.extend({**r, "network": name} for r in rows)
        return rows

    results: dict[str, dict] = {"settings": {**settings, "splits": [k for k, _ in splits]}, "sweep": {}, "checks": {}}
    for name, _, overrides, cfgs in networks:
        row: dict[str, dict] = {}
        for eps in args.eps:
            rows = run_cell(name, overrides, cfgs, "pgd", eps)
            row.setdefault("0", _cell(rows, adversarial=False))
            row[f"{eps:g}"] = _cell(rows, adversarial=True)
            logger.info("%s eps %g: %s", name, eps, row[f"{eps:g}"])
            if eps == args.check_eps:
                row["increase"] = _increase(rows)
        results["sweep"][name] = row
        (args.out / "robustness.json").write_text(json.dumps(results, indent=2))
    if args.checks:
        for i, (name, _, overrides, cfgs) in enumerate(networks):
            attacks = ["pgd"] + [a for a in args.check_attacks if a != "transfer" or i > 0]
            results["checks"][name] = {a: _cell(run_cell(name, overrides, cfgs, a, args.check_eps), adversarial=True) for a in attacks}
            logger.info("%s checks at eps %g: %s", name, args.check_eps, results["checks"][name])
            (args.out / "robustness.json").write_text(json.dumps(results, indent=2))
    with open(args.out / "pairs.csv", "w", newline="") as fh:
        fields = ["network", "fold", "case_id", "attack", "eps", "tre_mm", "tre_mm_adv", "dice_gland", "dice_gland_adv",
                  "perturbation_linf", "attack_loss_clean", "attack_loss_adv"]
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in all_rows:
            w.writerow({**r, "tre_mm": pair_tre(r), "tre_mm_adv": pair_tre({"tre_landmarks_mm": r["tre_landmarks_mm_adv"]})})

    n_pairs = sum(len(ids) for _, ids in splits)
    where = f"pairs {', '.join(args.ids)}" if args.ids else (
        f"held-out pairs of fold{'s' if len(splits) > 1 else ''} {', '.join(str(k) for k, _ in splits)} of configs/folds.json"
        + (" (each fold's network on its own held-out pairs, pooled)" if len(splits) > 1 else ""))
    pgd_words = (f"L-inf PGD ({args.steps} steps, step 2.5 eps / steps, random start, {args.restarts} restart"
                 f"{'s' if args.restarts > 1 else ''}, the worst kept per pair; objective 1 - soft Dice of the warped moving labels)")
    cols = ["0"] + [f"{e:g}" for e in args.eps]
    inc = args.check_eps in args.eps
    lines = ["| network | pairs | " + " | ".join("clean" if c == "0" else f"eps {c}" for c in cols) + " |"
             + (f" TRE increase at eps {args.check_eps:g} (mm) |" if inc else ""),
             "|---|---|" + "---|" * (len(cols) + inc)]
    for name, by_eps in results["sweep"].items():
        extra = ""
        if inc:
            d = by_eps["increase"]
            extra = f" {d['median_mm']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}], worse in {d['n_worse']} |"
        lines.append(f"| {name} | {by_eps['0']['n_pairs']} | " + " | ".join(_fmt(by_eps[c]) for c in cols) + " |" + extra)
    lines += ["", f"Cells: TRE median over pairs (mm) [95 % bootstrap CI over pairs] / mean gland Dice, on the {n_pairs} "
              f"{where}. {pgd_words} on the [0, 1] fixed (TRUS) image; eps in intensity units."
              + (f" TRE increase: median over pairs of the pair's attacked minus clean TRE [95 % bootstrap CI], and in how many "
                 f"pairs the attack made TRE worse." if inc else "") + f" Generated by `{command}`."]
    if args.checks:
        names = {"pgd": f"PGD ({args.steps} steps)", "noise": f"sign noise (worst of {args.noise_draws})",
                 "square": f"Square ({args.queries} queries)", "transfer": "transfer from first row",
                 "swap": "another pair's TRUS (unbounded)"}
        names = {a: n for a, n in names.items() if a == "pgd" or a in args.check_attacks}
        lines += ["", "| network | " + " | ".join(names.values()) + " |", "|---|" + "---|" * len(names)]
        for name, by_attack in results["checks"].items():
            lines.append(f"| {name} | " + " | ".join(_fmt(by_attack[a]) if a in by_attack else "-" for a in names) + " |")
        lines += ["", f"Gradient-masking checks at eps {args.check_eps:g} (same pairs and cells): if noise, the score-based Square "
                  "attack or PGD examples built on the first (undefended) network and transferred gave a higher TRE than PGD "
                  "on the network itself, its PGD row would understate the damage. Last column: each pair registered with the next "
                  "pair's TRUS image instead of its own (no eps): a network whose TRE barely changes there does not use the TRUS "
                  "image much, and its robustness says little."]
    table = "\n".join(lines) + "\n"
    (args.out / "robustness.md").write_text(table)
    if args.update_readme:
        write_between_markers(BUNDLE / "docs" / "README.md", args.marker, table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
