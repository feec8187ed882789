"""TRE and Dice of the shipped registration network (and others) under PGD on the fixed image, over eps.

From the repository root::

    nice -n 10 .venv/bin/python bundles/mrus_registration/scripts/robustness_sweep.py --num_threads 1

By default the shipped weights (``models/model.pt``, built from ``configs/inference.json``) are
attacked on the held-out pairs of fold 0 of ``configs/folds.json`` (the fold the shipped model did
not train on). ``--model NAME=WEIGHTS`` adds networks (e.g. adversarially trained ones; same
config), ``--references`` adds the rows of ``configs/reference_networks.json`` whose weights exist.
Each row: clean and attacked gland Dice and TRE (median over pairs of the pair's mean landmark TRE)
for every eps, with the attacks library's L-inf PGD and the registration objective
(:func:`medrobust.registration.robustness.attack_rows`). Writes ``OUT/robustness.json`` and
``OUT/robustness.md`` (``OUT`` defaults to ``runs/robustness_sweep``); the README table between the
robustness markers changes only with ``--update_readme``. Exits with status 2 and a message when a
requested model file does not exist.
"""

from __future__ import annotations

import argparse
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
from medrobust.registration.crossval import pair_tre, read_folds
from medrobust.registration.robustness import attack_rows

BUNDLE = Path(__file__).resolve().parents[1]
logger = logging.getLogger("mrus_registration.robustness_sweep")


def _cells(rows: list[dict], suffix: str) -> dict[str, float]:
    tre = [pair_tre({"tre_landmarks_mm": r[f"tre_landmarks_mm{suffix}"]}) for r in rows]
    return {"dice": float(np.mean([r[f"dice_gland{suffix}"] for r in rows])), "tre_median_mm": float(np.nanmedian(tre)),
            "tre_mean_mm": float(np.nanmean(tre))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset_dir", default=str(BUNDLE.parents[1].parent / "shared" / "data" / "mrus_dev"))
    p.add_argument("--folds_file", default=str(BUNDLE / "configs" / "folds.json"))
    p.add_argument("--fold", type=int, default=0, help="held-out pairs of this fold are attacked")
    p.add_argument("--weights", default=str(BUNDLE / "models" / "model.pt"), help="the shipped model (row 'shipped')")
    p.add_argument("--model", action="append", default=[], metavar="NAME=WEIGHTS", help="another network, same config (repeatable)")
    p.add_argument("--override", action="append", default=[], metavar="ID=JSON",
                   help="config override for every network, e.g. moving_mask_input=true (repeatable)")
    p.add_argument("--ids", nargs="+", default=None, help="attack these pair ids instead of fold --fold's held-out pairs")
    p.add_argument("--references", action="store_true", help="add configs/reference_networks.json rows whose weights exist")
    p.add_argument("--eps", type=float, nargs="+", default=[0.005, 0.01, 0.02])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--num_threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=BUNDLE / "runs" / "robustness_sweep")
    p.add_argument("--update_readme", action="store_true", help="also write the table between the robustness markers of docs/README.md")
    args = p.parse_args(argv)
    command = "python bundles/mrus_registration/scripts/robustness_sweep.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    if any(e <= 0 for e in args.eps):
        raise SystemExit("--eps: every radius must be > 0 (the clean column is always reported).")
    common = {k: json.loads(v) for k, _, v in (o.partition("=") for o in args.override)}
    networks: list[tuple[str, Path, dict]] = [("shipped", Path(args.weights).resolve(), common)]
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--model must be NAME=WEIGHTS, got {item!r}")
        networks.append((name, Path(path).resolve(), common))
    if args.references:
        for row in json.loads((BUNDLE / "configs" / "reference_networks.json").read_text())["networks"]:
            if (BUNDLE / row["weights"]).is_file():
                networks.append((row["name"], BUNDLE / row["weights"], row["overrides"]))
    missing = [f"{name}: {path}" for name, path, _ in networks if not path.is_file()]
    if missing:
        print(f"robustness_sweep: no model weights at {'; '.join(missing)}. Train one (python -m monai.bundle run "  # noqa: T201
              f"--config_file configs/train.json --bundle_root {BUNDLE}) or pass --weights/--model.", file=sys.stderr)
        return 2
    ids = args.ids or read_folds(args.folds_file)[args.fold]["test"]
    results: dict[str, dict] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, path, overrides in networks:
        net = load_bundle_network(BUNDLE, config_files=["inference.json"], overrides=overrides, weights=path)
        keys = ["moving_image", "moving_mask"][: getattr(net, "in_channels", 2) - 1]
        items = load_paired_dataset(args.dataset_dir, ids=ids, spacing=3.0, size=(24, 32, 24), alignment="centre",
                                    moving_mask=len(keys) > 1)
        row: dict[str, dict] = {}
        for eps in args.eps:
            rows = attack_rows(net, items, eps=eps, steps=args.steps, moving_keys=keys)
            row.setdefault("0", _cells(rows, ""))
            row[f"{eps:g}"] = _cells(rows, "_adv")
            logger.info("%s eps %g: %s", name, eps, row[f"{eps:g}"])
        results[name] = row
        (args.out / "robustness.json").write_text(json.dumps(results, indent=2))
    cols = ["0"] + [f"{e:g}" for e in args.eps]
    lines = ["| network | " + " | ".join(f"eps {c}" for c in cols) + " |", "|" + "---|" * (1 + len(cols))]
    for name, by_eps in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{by_eps[c]['tre_median_mm']:.2f} mm / {by_eps[c]['dice']:.3f}" for c in cols) + " |")
    where = f"pairs {', '.join(ids)}" if args.ids else f"held-out pairs of fold {args.fold}"
    lines += ["", f"Cells: TRE median over pairs (mm) / mean gland Dice, on the {len(ids)} {where}. "
              f"L-inf PGD ({args.steps} steps, random start, objective 1 - soft Dice of the warped moving labels) on the [0, 1] "
              f"fixed (TRUS) image; eps 0 is clean. Generated by `{command}`."]
    table = "\n".join(lines) + "\n"
    (args.out / "robustness.md").write_text(table)
    if args.update_readme:
        write_between_markers(BUNDLE / "docs" / "README.md", "robustness", table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
