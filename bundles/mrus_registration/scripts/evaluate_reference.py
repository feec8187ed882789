"""Score a trained network on every mrus_dev pair whose patient (MR group) it never saw in training.

From the repository root (the mask-input variant shipped as ``models/model.pt``, the default since 0.4.0, trained
on the 12 training pairs of the former 16-pair ``split.json``)::

    nice -n 10 .venv/bin/python bundles/mrus_registration/scripts/evaluate_reference.py --num_threads 1 \\
        --name "mask input (v0.2)" --weights bundles/mrus_registration/models/model.pt \\
        --override moving_mask_input=true --trained_on obs000 obs001 obs002 obs003 obs006 obs007 obs008 obs009 obs010 obs011 obs012 obs013

Rows for no registration, the global stage alone and global + dense, summarised with
:func:`medrobust.registration.crossval.cv_summary`, go to ``OUT/<name>.json`` (default ``runs/reference``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from medrobust.data.paired import load_paired_dataset
from medrobust.models import load_bundle_network
from medrobust.registration.baselines import ddf_rows, network_ddf_fn, no_registration_rows
from medrobust.registration.crossval import cv_summary, read_pair_groups

BUNDLE = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset_dir", default=str(BUNDLE.parents[1].parent / "shared" / "data" / "mrus_dev"))
    p.add_argument("--name", required=True)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--override", action="append", default=[], metavar="ID=JSON")
    p.add_argument("--trained_on", nargs="+", required=True, help="the network's training pair ids (their MR groups are excluded)")
    p.add_argument("--num_threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=BUNDLE / "runs" / "reference")
    args = p.parse_args(argv)
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    if not args.weights.is_file():
        print(f"evaluate_reference: no model weights at {args.weights}.", file=sys.stderr)  # noqa: T201
        return 2
    overrides = {k: json.loads(v) for k, _, v in (o.partition("=") for o in args.override)}
    groups = read_pair_groups(Path(args.dataset_dir) / "pairs_by_mr.csv")
    seen = {groups[i] for i in args.trained_on}
    ids = sorted(i for i, g in groups.items() if g not in seen)
    net = load_bundle_network(BUNDLE, config_files=["inference.json"], overrides=overrides, weights=args.weights.resolve())
    keys = ["moving_image", "moving_mask"][: net.in_channels - 1]
    items = load_paired_dataset(args.dataset_dir, ids=ids, spacing=3.0, size=(24, 32, 24), alignment="centre", moving_mask=len(keys) > 1)
    out = {"pairs": ids, "no registration": cv_summary(no_registration_rows(items))}
    for stage, label in (("global", "global only"), ("all", "global + dense")):
        out[label] = cv_summary(ddf_rows(items, network_ddf_fn(net, keys, stage=stage), timed=True))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name.replace(' ', '_')}.json").write_text(json.dumps(out, indent=2))
    sys.stdout.write(json.dumps({k: v for k, v in out.items() if k != "pairs"}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
