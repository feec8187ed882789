"""Train every regulariser on the same split and seed, evaluate, attack, and write the comparison table.

One command (from the repository root)::

    nice -n 10 .venv/bin/python bundles/mrus_registration/scripts/compare.py --num_threads 1

For each regulariser in {none, diffusion, bending, adversarial}: train with ``configs/train.json``
(overrides only: regulariser, seed, output folders), evaluate on the test ids of
``configs/split.json`` with ``configs/evaluate.json`` (per-case CSVs), attack the fixed image with
the attacks library's PGD and a registration loss, then rewrite the table between the markers in
``docs/README.md``. Results are written after every regulariser (``runs/compare/results.json``), and
a finished regulariser is skipped on a rerun unless ``--retrain``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.networks.blocks import Warp

BUNDLE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: its sibling modules
from readme_table import write_marked  # noqa: E402
logger = logging.getLogger("mrus_registration.compare")


def _workflow(configs: list[str], **overrides):
    from monai.bundle import ConfigWorkflow

    files = [str(BUNDLE / "configs" / c) for c in configs]
    wf = ConfigWorkflow(config_file=files if len(files) > 1 else files[0], workflow_type="train",
                        meta_file=str(BUNDLE / "configs" / "metadata.json"), logging_file=str(BUNDLE / "configs" / "logging.conf"),
                        **overrides)
    wf.initialize()
    missing = wf.check_properties()
    if missing:
        raise RuntimeError(f"bundle config misses required properties: {missing}")
    return wf


def _baseline(items) -> dict:
    from medrobust.registration.evaluation import case_metrics

    rows = []
    for it in items:
        zero = torch.zeros(1, 3, *it["fixed_image"].shape[1:])
        rows.append({"case_id": it["case_id"], **case_metrics(zero, it["moving_label"][None], it["fixed_label"][None], it["affine"],
                                                                 moving_label=it["moving_label"][None]),
                     "seconds": 0.0})
    return rows


def _mean_translation(train_items, test_items) -> list[dict]:
    """A constant DDF: the mean gland-centroid offset of the training pairs (a 'population prior' baseline)."""
    from medrobust.core.metrics.registration import ddf_world_to_voxel, label_centroids
    from medrobust.registration.evaluation import case_metrics

    offsets = [label_centroids(it["moving_label"][None, :1], it["affine"])[0, 0] - label_centroids(it["fixed_label"][None, :1], it["affine"])[0, 0]
               for it in train_items]
    mean = torch.stack(offsets).mean(0)
    warp = Warp(mode="bilinear", padding_mode="zeros")
    rows = []
    for it in test_items:
        shape = it["fixed_image"].shape[1:]
        world = mean.reshape(1, 3, 1, 1, 1).expand(1, 3, *shape)
        ddf = ddf_world_to_voxel(world, it["affine"]).float()
        rows.append({"case_id": it["case_id"], **case_metrics(ddf, warp(it["moving_label"][None], ddf), it["fixed_label"][None],
                                                             it["affine"], moving_label=it["moving_label"][None]), "seconds": 0.0})
    return rows


def _robustness(wf, items, eps: float, steps: int) -> dict:
    from medrobust.registration.robustness import attack_rows

    net = wf.parser.get_parsed_content("network")
    net.load_state_dict(torch.load(Path(wf.parser.get_parsed_content("ckpt_dir")) / "model.pt", map_location="cpu", weights_only=True))
    rows = attack_rows(net, items, eps=eps, steps=steps, moving_keys=wf.parser.get_parsed_content("moving_keys"))
    tre = np.array([v for r in rows for v in r["tre_landmarks_mm"]])
    tre_adv = np.array([v for r in rows for v in r["tre_landmarks_mm_adv"]])
    return {
        "rows": rows,
        "dice_gland": float(np.mean([r["dice_gland"] for r in rows])),
        "dice_gland_adv": float(np.mean([r["dice_gland_adv"] for r in rows])),
        "tre_median_mm": float(np.median(tre)),
        "tre_median_mm_adv": float(np.median(tre_adv)),
    }


def _table(results: dict, args) -> str:
    head = ("| regulariser | TRE median (mm) | TRE mean (mm) | TRE sd (mm) | gland Dice | HD95 (mm) | folding % | "
            "std log-J | inference (s/pair) | Dice under attack | TRE median under attack (mm) |")
    lines = [head, "|" + "---|" * 11]
    for name, r in results.items():
        s = r["summary"]
        rob = r.get("robustness")
        attacked = (f"{rob['dice_gland_adv']:.3f} ({rob['dice_gland_adv'] - rob['dice_gland']:+.3f})",
                    f"{rob['tre_median_mm_adv']:.2f} ({rob['tre_median_mm_adv'] - rob['tre_median_mm']:+.2f})") if rob else ("-", "-")
        lines.append(f"| {name} | {s['tre_median_mm']:.2f} | {s['tre_mean_mm']:.2f} | {s['tre_sd_mm']:.2f} | {s['dice_gland']:.3f} | "
                     f"{s['hd95_gland_mm']:.2f} | {s['folding_pct']:.3f} | {s['std_log_jacobian']:.3f} | "
                     f"{s.get('seconds', 0.0):.3f} | {attacked[0]} | {attacked[1]} |")
    n = next(iter(results.values()))["summary"]
    notes = (f"\n{n['n_cases']} test pairs, {n['n_landmarks']} landmarks (TRE pooled over landmarks; Dice, HD95, folding, "
             f"std log-J averaged over pairs). Training: {args.max_epochs} epochs, seed {args.seed}, same split for all. "
             f"Attack: PGD L-inf eps {args.eps} on the [0, 1] fixed image, {args.pgd_steps} steps, loss 1 - soft Dice of the "
             f"warped moving labels (medrobust.core.attacks.pgd, registration objective); change from clean in brackets. "
             f"Generated by `{args.command}`.\n")
    return "\n".join(lines) + "\n" + notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset_dir", default=str(BUNDLE.parents[1].parent / "shared" / "data" / "mrus_dev"))
    p.add_argument("--split_file", default=str(BUNDLE / "configs" / "split.json"), help="JSON with 'train' and 'test' case ids")
    p.add_argument("--out", type=Path, default=BUNDLE / "runs" / "compare")
    p.add_argument("--regularisers", nargs="+", default=["none", "diffusion", "bending", "adversarial"])
    p.add_argument("--max_epochs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--pgd_steps", type=int, default=10)
    p.add_argument("--num_threads", type=int, default=0, help="torch threads (1 on a shared CPU)")
    p.add_argument("--override", action="append", default=[], metavar="ID=JSON",
                   help="extra config override, e.g. augment#intensity_prob=0.5 (repeatable)")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--reuse_models", action="store_true",
                   help="evaluate an existing OUT/<regulariser>/model.pt (a finished run) instead of training again")
    p.add_argument("--no_readme", action="store_true", help="do not rewrite docs/README.md")
    p.add_argument("--include", action="append", default=[], metavar="LABEL=RESULTS_JSON#ROW",
                   help="add a row from another run's results.json to the table (e.g. a reference configuration "
                        "trained with --override into another --out)")
    args = p.parse_args(argv)
    args.command = "python bundles/mrus_registration/scripts/compare.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    from medrobust.registration.evaluation import write_rows

    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results: dict = json.loads(results_path.read_text()) if results_path.is_file() and not args.retrain else {}
    common = {"bundle_root": str(BUNDLE), "dataset_dir": args.dataset_dir, "split_file": args.split_file, "seed": args.seed,
              "num_threads": args.num_threads,
              "fe#cache_dir": str(BUNDLE / "runs" / "fe_cache")}
    for item in args.override:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--override must be ID=JSON, got {item!r}")
        common[key] = json.loads(value)

    if "no registration" not in results:
        wf = _workflow(["train.json", "evaluate.json"], **common, regulariser="none", output_dir=str(args.out / "baseline"))
        rows = _baseline(wf.parser.get_parsed_content("test_data"))
        results["no registration"] = {"summary": write_rows(rows, args.out / "baseline"), "train_seconds": 0.0}
        results_path.write_text(json.dumps(results, indent=2))
    if "mean training translation" not in results:
        wf = _workflow(["train.json", "evaluate.json"], **common, regulariser="none", output_dir=str(args.out / "mean_translation"))
        rows = _mean_translation(wf.parser.get_parsed_content("train_data"), wf.parser.get_parsed_content("test_data"))
        results["mean training translation"] = {"summary": write_rows(rows, args.out / "mean_translation"), "train_seconds": 0.0}
        results_path.write_text(json.dumps(results, indent=2))
    for reg in args.regularisers:
        if reg in results and not args.retrain:
            logger.info("skipping %s (already in %s)", reg, results_path)
            continue
        out = args.out / reg
        over = {**common, "regulariser": reg, "ckpt_dir": str(out), "output_dir": str(out), "max_epochs": args.max_epochs}
        t0 = time.time()
        if args.reuse_models and (out / "model.pt").is_file():
            logger.info("reusing %s", out / "model.pt")
            train_s = float("nan")
        else:
            wf = _workflow(["train.json"], **over)
            wf.run()
            wf.finalize()
            train_s = time.time() - t0
        wf = _workflow(["train.json", "evaluate.json"], **over)
        wf.run()
        summary = json.loads((out / "eval" / "summary.json").read_text())
        rob = _robustness(wf, wf.parser.get_parsed_content("test_data"), args.eps, args.pgd_steps)
        write_rows(rob.pop("rows"), out / "robustness", prefix="attacked_")
        wf.finalize()
        results[reg] = {"summary": summary, "robustness": rob, "train_seconds": train_s}
        results_path.write_text(json.dumps(results, indent=2))
        _publish(results, args)
        logger.info("%s done in %.0f s: %s", reg, train_s, json.dumps(summary))
    _publish(results, args)
    return 0


def _publish(results: dict, args) -> None:
    order = ["no registration", "mean training translation", "none", "diffusion", "bending", "adversarial"]
    ordered = {k: results[k] for k in sorted(results, key=lambda k: order.index(k) if k in order else len(order))}
    for item in args.include:
        label, sep, ref = item.partition("=")
        path, sep2, row = ref.partition("#")
        if not (sep and sep2):
            raise SystemExit(f"--include must be LABEL=RESULTS_JSON#ROW, got {item!r}")
        other = json.loads(Path(path).read_text())
        if row not in other:
            raise SystemExit(f"--include: {path} has no row {row!r} (rows: {sorted(other)})")
        ordered[label] = other[row]
    table = _table(ordered, args)
    (args.out / "table.md").write_text(table)
    if not args.no_readme:
        write_marked(table, "comparison")


if __name__ == "__main__":
    raise SystemExit(main())
