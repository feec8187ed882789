"""Why the dense stage of the cross-validated registration networks moves TRE: BatchNorm statistics and grid-border folding.

For every fold network of a ``scripts/crossval.py`` run folder, on that fold's held-out pairs:
the global stage alone, global + dense as trained, and global + dense after LocalNet's BatchNorm
running statistics are recomputed with the final weights on the fold's own training pairs
(:func:`medrobust.registration.engine.recompute_batchnorm`, no augmentation, batches of 2); and
where the dense stage folds (det J <= 0): in the outer ``--rim`` voxels of the grid or inside.
TRE changes are per pair against the global stage (:func:`medrobust.registration.crossval.paired_difference`).

Usage (from the repository root)::

    nice -n 10 python -m benchmarks.registration_dense_stage --num_threads 1 \\
        --run bundles/mrus_registration/runs/crossval/mask_input_bending --override moving_mask_input=true
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from medrobust.core.metrics.registration import jacobian_determinant
from medrobust.data.paired import load_paired_dataset
from medrobust.registration.baselines import ddf_rows, network_ddf_fn
from medrobust.registration.crossval import cv_summary, paired_difference, read_folds
from medrobust.registration.engine import recompute_batchnorm

__all__ = ["border_folding"]

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "mrus_registration"
GRID = {"spacing": 3.0, "size": (24, 32, 24), "alignment": "centre"}


def border_folding(ddf: torch.Tensor, rim: int = 2) -> tuple[int, int]:
    """Folded voxels (det J <= 0) of a ``(B, 3, *S)`` voxel DDF: ``(in the outer rim, inside)``."""
    folded = jacobian_determinant(ddf) <= 0  # (B, *S)
    inner = torch.zeros_like(folded)
    inner[(slice(None),) + (slice(rim, -rim),) * (folded.ndim - 1)] = True
    return int((folded & ~inner).sum()), int((folded & inner).sum())


def main(argv: list[str] | None = None) -> int:
    from medrobust.models import load_bundle_network

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a crossval run folder (fold<k>/model.pt)")
    p.add_argument("--dataset_dir", default=str(BUNDLE.parents[1].parent / "shared" / "data" / "mrus_dev"))
    p.add_argument("--folds_file", default=str(BUNDLE / "configs" / "folds.json"))
    p.add_argument("--override", action="append", default=[], metavar="ID=JSON")
    p.add_argument("--rim", type=int, default=2)
    p.add_argument("--num_threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    overrides = {k: json.loads(v) for k, _, v in (o.partition("=") for o in args.override)}
    folds = read_folds(args.folds_file)
    rows: dict[str, list] = {"global": [], "dense": [], "dense, BN recomputed": []}
    rim = {"dense": [0, 0], "dense, BN recomputed": [0, 0]}
    for k, fold in enumerate(folds):
        weights = (args.run / f"fold{k}" / "model.pt").resolve()
        if not weights.is_file():
            continue
        net = load_bundle_network(BUNDLE, config_files=["train.json"], overrides=overrides, weights=weights)
        keys = ["moving_image", "moving_mask"][: net.in_channels - 1]
        test = load_paired_dataset(args.dataset_dir, ids=fold["test"], moving_mask=True, **GRID)
        train = load_paired_dataset(args.dataset_dir, ids=fold["train"], moving_mask=True, **GRID)
        for name in ("global", "dense", "dense, BN recomputed"):
            if name == "dense, BN recomputed":
                recompute_batchnorm(net, (torch.stack([torch.cat([*(t[q] for q in keys), t["fixed_image"]]) for t in train[i:i + 2]])
                                          for i in range(0, len(train) - 1, 2)))
                net.eval()
            fn = network_ddf_fn(net, keys, stage="global" if name == "global" else "all")
            rows[name] += ddf_rows(test, fn)
            if name in rim:
                for t in test:
                    a, b = border_folding(fn(t)[None], args.rim)
                    rim[name][0] += a
                    rim[name][1] += b
    out = {}
    for name, r in rows.items():
        s = cv_summary(r)
        out[name] = {"n_pairs": s["n_pairs"], "tre_median_mm": s["tre_median_mm"], "tre_mean_mm": s["tre_mean_mm"],
                     "folding_pct": s.get("folding_pct"), "vs_global": paired_difference(r, rows["global"]) if name != "global" else None,
                     "folded_voxels_rim_inside": rim.get(name)}
    print(json.dumps(out, indent=1))  # noqa: T201 - a benchmark's report
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
