"""Throughput of the batched sensitivity engine against a naive per-image, per-severity loop.

Both compute the same thing on the same model and images (checked: the largest difference in
p(positive) is reported): for every image x family x severity, perturb at native resolution,
resize to the model input and predict. The naive loop loads each image once, then perturbs and
predicts one (image, severity) at a time with batch 1 and keeps results in memory; the engine
(``run_sensitivity``, no report) groups same-shape images, chunks perturbations, batches
inference and appends every batch to ``predictions.csv``. Throughput = (images x severities)
per second of process CPU time with one intra-op thread (CPU time is far less disturbed than
wall time by other work on a shared machine), plus wall time for reference.

Usage:
    python -m benchmarks.sensitivity_throughput [--n 8] [--size 1024 832] [--batch-size 8]
        [--threads 1] [--out docs/benchmarks/sensitivity.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medrobust.data import load_image, scan_dataset
from medrobust.models import LoadedModel, from_module
from medrobust.perturbations.registry import get_family, sample_seed
from medrobust.sensitivity import resolve_plan, run_sensitivity
from medrobust.sensitivity.batching import perturb_for_model
from medrobust.sensitivity.preprocess import match_spatial_dims, normalise_image, to_model_input

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "mammogram_perturbation_sensitivity"


def bundle_network() -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The mammogram bundle's ``network_def`` (random weights suffice for timing) and input size."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    shape = tuple(meta["network_data_format"]["inputs"]["image"]["spatial_shape"])
    torch.manual_seed(0)
    return parser.get_parsed_content("network_def"), shape


def naive_loop(model: LoadedModel, data: Path, plan: dict[str, tuple[float, ...]], seed: int) -> pd.DataFrame:
    """One (image, family, severity) at a time, batch 1, same seeds and preprocessing as the engine."""
    items, _ = scan_dataset(data)
    rows = []
    for it in items:
        x = match_spatial_dims(normalise_image(load_image(it).array), model.spatial_dims)[None]
        for name, grid in plan.items():
            fam = get_family(name)
            for sev in grid:
                xp = perturb_for_model(fam, x, sev, [sample_seed(it.case_id, name, sev, base_seed=seed)], model)
                with torch.inference_mode():
                    p = float(model.probability(to_model_input(xp, model.spatial_shape, model.in_channels))[0])
                rows.append({"case_id": it.case_id, "family": name, "severity": float(sev), "p_positive": p})
    return pd.DataFrame(rows)


def _timed(fn):
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - t_cpu, time.perf_counter() - t_wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="synthetic mammograms (sample_data generator)")
    ap.add_argument("--size", type=int, nargs=2, default=(1024, 832), help="image rows, columns")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/benchmarks/sensitivity.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from sample_data.mammograms import generate_mammograms

    net, shape = bundle_network()
    model = from_module(net, input_size=shape, name="bundle network_def (random init)")
    plan = resolve_plan(None)
    with tempfile.TemporaryDirectory() as tmp:
        data = generate_mammograms(Path(tmp) / "mammo", n=args.n, seed=args.seed, size=tuple(args.size))
        n_items = len(scan_dataset(data)[0])
        units = n_items * sum(len(g) for g in plan.values())
        naive, naive_cpu, naive_wall = _timed(lambda: naive_loop(model, data, plan, args.seed))
        res, eng_cpu, eng_wall = _timed(
            lambda: run_sensitivity(
                model, data, Path(tmp) / "run", batch_size=args.batch_size, seed=args.seed, progress=False,
                report=False, roi_masks=None,
            )
        )
    key = ["case_id", "family", "severity"]
    merged = naive.merge(res.predictions[key + ["p_positive"]].astype({"severity": float}), on=key, suffixes=("_naive", "_engine"))
    if len(merged) != units:
        raise RuntimeError(f"engine and naive loop disagree on the work: {len(merged)} vs {units} rows")
    max_diff = float(np.abs(merged["p_positive_naive"] - merged["p_positive_engine"]).max())
    rows = [
        ("naive loop (batch 1, per image x severity)", naive_cpu, naive_wall),
        (f"medrobust engine (batch {args.batch_size}, CSV writes included)", eng_cpu, eng_wall),
    ]
    cmd = "python -m benchmarks.sensitivity_throughput " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Sensitivity sweep throughput: batched engine vs naive loop",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, {args.threads} intra-op thread(s), CPU. "
        f"Model: the mammogram bundle's network_def (DenseNet, input 1 x {shape[0]} x {shape[1]}), random weights. "
        f"Data: {n_items} synthetic DICOM mammograms {args.size[0]} x {args.size[1]} (sample_data generator). "
        f"Families: {', '.join(plan)} with their default severities ({units // n_items} per image, severity 0 included), "
        f"{units} image x severity units. One run each; process CPU time (wall time in brackets; the machine is shared).",
        "",
        "| implementation | CPU s | units / CPU s | wall s | units / wall s |",
        "|---|---|---|---|---|",
    ]
    for name, cpu, wall in rows:
        lines.append(f"| {name} | {cpu:.1f} | {units / cpu:.2f} | {wall:.1f} | {units / wall:.2f} |")
    lines += [
        "",
        f"Speed-up of the engine (CPU time): **{naive_cpu / eng_cpu:.2f}x** (wall: {naive_wall / eng_wall:.2f}x). "
        f"Largest |p_engine - p_naive| over all {units} units: {max_diff:.2e} (same seeds, same preprocessing; "
        "differences are float rounding of batched vs single convolutions).",
        "",
        "Where the time goes: both pay the same per-unit perturbation work (noise, blur, one inverse FFT "
        "per Fourier-filter severity; FFTs run one image at a time in both because pocketfft is slower on "
        "batches) and the same DenseNet forward per unit. The engine saves the repeated clean forward "
        "(severity 0 is computed once per image, the naive loop repeats it per family), reuses each "
        "image's forward spectrum across all low-/high-pass severities, and runs the network on batches "
        "(on one CPU thread batching a convolution saves only ~10%); it also writes every batch to CSV. "
        "The gain is therefore modest on CPU; batched inference matters more with more threads or a GPU.",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
