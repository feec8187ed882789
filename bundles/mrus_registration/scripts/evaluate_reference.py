"""Score a trained network on every mrus_dev pair whose patient (MR group) it never saw in training.

From the repository root (the mask-input variant shipped as ``models/model.pt``, the default since 0.4.0, trained
on the 12 training pairs of the former 16-pair ``split.json``)::

    nice -n 10 .venv/bin/python bundles/mrus_registration/scripts/evaluate_reference.py --num_threads 1 \\
        --name "mask input (v0.2)" --weights bundles/mrus_registration/models/model.pt \\
        --override moving_mask_input=true --trained_on obs000 obs001 obs002 obs003 obs006 obs007 obs008 obs009 obs010 obs011 obs012 obs013

Rows for no registration, the global stage alone and global + dense, summarised with
:func:`medrobust.registration.crossval.cv_summary` (and the per-pair change against no registration,
:func:`~medrobust.registration.crossval.paired_difference`), go to ``OUT/<name>.json`` (default
``runs/reference``). With ``--cascade_steps N`` (a mask-input network), an MR gland segmenter is trained
for N steps on the MR images of the ``--trained_on`` pairs only and the network is also scored
image-only, fed the segmenter's mask (:class:`~medrobust.registration.cascade.SegmentThenRegister`);
the cascade's weights go to ``OUT/<name>_cascade.pt``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from medrobust.data.paired import load_paired_dataset
from medrobust.models import load_bundle_network
from medrobust.registration.baselines import ddf_rows, network_ddf_fn, no_registration_rows
from medrobust.registration.cascade import SegmentThenRegister
from medrobust.registration.crossval import cv_summary, paired_difference, read_pair_groups, summary_table
from medrobust.registration.segmenter import fit_gland_segmenter, gland_dice, gland_segmenter

BUNDLE = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset_dir", default=str(BUNDLE.parents[1].parent / "shared" / "data" / "mrus_dev"))
    p.add_argument("--name", required=True)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--override", action="append", default=[], metavar="ID=JSON")
    p.add_argument("--trained_on", nargs="+", required=True, help="the network's training pair ids (their MR groups are excluded)")
    p.add_argument("--num_threads", type=int, default=0)
    p.add_argument("--cascade_steps", type=int, default=0, help="also score the image-only cascade, its segmenter trained this many steps")
    p.add_argument("--seed", type=int, default=0)
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
    grid = {"spacing": 3.0, "size": (24, 32, 24), "alignment": "centre"}
    items = load_paired_dataset(args.dataset_dir, ids=ids, moving_mask=True, **grid)
    none = no_registration_rows(items)
    out = {"pairs": ids, "no registration": cv_summary(none)}
    nets = [("", net, keys)]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cascade_steps > 0:
        if net.in_channels != 3:
            print("evaluate_reference: --cascade_steps needs a mask-input network (3 input channels).", file=sys.stderr)  # noqa: T201
            return 2
        train = load_paired_dataset(args.dataset_dir, ids=args.trained_on, moving_mask=True, **grid)
        with torch.random.fork_rng():  # a seeded initialisation that leaves the caller's RNG alone
            torch.manual_seed(args.seed)
            seg = gland_segmenter(spatial_dims=3)
        fit_gland_segmenter(seg, torch.stack([t["moving_image"] for t in train]), torch.stack([t["moving_mask"] for t in train]),
                            steps=args.cascade_steps, seed=args.seed)
        dice = gland_dice(seg, torch.stack([t["moving_image"] for t in items]), torch.stack([t["moving_mask"] for t in items]))
        out["segmenter_dice_mean"] = float(dice.mean())
        cascade = SegmentThenRegister(seg, net).eval()
        torch.save(cascade.state_dict(), args.out / f"{args.name.replace(' ', '_')}_cascade.pt")
        nets.append(("image-only cascade (hard predicted MR mask), ", cascade, ["moving_image"]))
    table = {"no registration": {"identity": out["no registration"]}}
    for prefix, model, model_keys in nets:
        global_rows = None
        for stage, label in (("global", "global only"), ("all", "global + dense")):
            rows = ddf_rows(items, network_ddf_fn(model, model_keys, stage=stage), timed=True)
            out[prefix + label] = {**cv_summary(rows), "vs_none": paired_difference(rows, none)}
            if global_rows is not None:
                out[prefix + label]["vs_global"] = paired_difference(rows, global_rows)
            global_rows = rows
            table.setdefault(args.name + (" -> " + prefix.rstrip(", ") if prefix else ""), {})[label] = out[prefix + label]
    (args.out / f"{args.name.replace(' ', '_')}.json").write_text(json.dumps(out, indent=2))
    command = "python bundles/mrus_registration/scripts/evaluate_reference.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    note = (f"{len(ids)} pairs of the patients the network never saw; TRE per pair = mean over its landmarks; change vs none = "
            "per-pair TRE minus the same pair's unregistered TRE; CIs: percentile bootstrap over pairs (2000 resamples)."
            + (f" MR gland segmenter (trained on the MR images of the --trained_on pairs only): Dice {out['segmenter_dice_mean']:.3f} "
               "on these pairs." if "segmenter_dice_mean" in out else "") + f" Generated by `{command}`.")
    (args.out / f"{args.name.replace(' ', '_')}.md").write_text(summary_table(table, note))
    sys.stdout.write(json.dumps({k: v for k, v in out.items() if k != "pairs"}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
