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
        [--threads 1 2] [--out docs/benchmarks/sensitivity.md]
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
from medrobust.data.preprocess import match_spatial_dims, normalise_image, to_model_input

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "mammogram_perturbation_sensitivity"


def bundle_network() -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The mammogram bundle's ``network_def`` (random weights suffice for timing) and input size."""
    from medrobust.models import load_bundle_network

    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    shape = tuple(meta["network_data_format"]["inputs"]["image"]["spatial_shape"])
    torch.manual_seed(0)  # benchmark script: the same random initialisation every run
    return load_bundle_network(BUNDLE, weights=None), shape


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


def compare(model: LoadedModel, data: Path, run_dir: Path, plan: dict, batch_size: int, seed: int) -> dict:
    """Time the naive loop and the engine on ``data``; check they agree."""
    naive, naive_cpu, naive_wall = _timed(lambda: naive_loop(model, data, plan, seed))
    res, eng_cpu, eng_wall = _timed(
        lambda: run_sensitivity(
            model, data, run_dir, batch_size=batch_size, seed=seed, progress=False, report=False, roi_masks=None,
            overwrite=True,
        )
    )
    key = ["case_id", "family", "severity"]
    engine = res.predictions[key + ["p_positive"]].astype({"severity": float})
    merged = naive.merge(engine, on=key, suffixes=("_naive", "_engine"))
    if len(merged) != len(naive) or len(merged) != len(engine):
        raise RuntimeError(f"engine and naive loop disagree on the work: {len(merged)} / {len(naive)} / {len(engine)} rows")
    diff = float(np.abs(merged["p_positive_naive"] - merged["p_positive_engine"]).max())
    return {"naive": (naive_cpu, naive_wall), "engine": (eng_cpu, eng_wall), "max_diff": diff, "units": len(merged)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="synthetic mammograms (sample_data generator)")
    ap.add_argument("--size", type=int, nargs=2, default=(1024, 832), help="image rows, columns")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, nargs="+", default=[1], help="torch intra-op thread counts to measure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/benchmarks/sensitivity.md")
    args = ap.parse_args(argv)
    from sample_data.mammograms import generate_mammograms

    net, shape = bundle_network()
    model = from_module(net, input_size=shape, name="bundle network_def (random init)")
    plan = resolve_plan(None)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = generate_mammograms(Path(tmp) / "mammo", n=args.n, seed=args.seed, size=tuple(args.size))
        n_items = len(scan_dataset(data)[0])
        for threads in args.threads:
            torch.set_num_threads(threads)
            results[threads] = compare(model, data, Path(tmp) / "run", plan, args.batch_size, args.seed)
    units = n_items * sum(len(g) for g in plan.values())
    cmd = "python -m benchmarks.sensitivity_throughput " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Sensitivity sweep throughput: batched engine vs naive loop",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, CPU (a 2-core machine shared with other jobs). "
        f"Model: the mammogram bundle's network_def (DenseNet, input 1 x {shape[0]} x {shape[1]}), random weights. "
        f"Data: {n_items} synthetic DICOM mammograms {args.size[0]} x {args.size[1]} (sample_data generator). "
        f"Families: {', '.join(plan)} with their default severities ({units // n_items} per image, severity 0 "
        f"included): {units} image x severity units. One run each; process CPU time and wall time.",
        "",
        "| intra-op threads | implementation | CPU s | units / CPU s | wall s | units / wall s | speed-up (CPU / wall) |",
        "|---|---|---|---|---|---|---|",
    ]
    for threads, r in results.items():
        for name, label in (("naive", "naive loop (batch 1, per image x severity)"),
                            ("engine", f"medrobust engine (batch {args.batch_size}, CSV writes included)")):
            cpu, wall = r[name]
            speed = "1.00 / 1.00" if name == "naive" else f"**{r['naive'][0] / cpu:.2f}x** / {r['naive'][1] / wall:.2f}x"
            lines.append(f"| {threads} | {label} | {cpu:.1f} | {units / cpu:.2f} | {wall:.1f} | {units / wall:.2f} | {speed} |")
    worst = max(r["max_diff"] for r in results.values())
    lines += [
        "",
        f"Agreement: largest |p_engine - p_naive| over all units {worst:.2e} (same per-sample seeds and "
        "preprocessing; differences are float rounding of batched vs single convolutions).",
        "",
        "Where the time goes: both pay the same perturbation work per unit (noise, blur, one inverse FFT per "
        "Fourier-filter severity; the forward spectrum of an image is cached across severities in both, and "
        "FFTs run one image at a time because pocketfft is slower on batches) and one DenseNet forward per "
        "unit. The engine saves the repeated clean forward (severity 0 once per image instead of once per "
        "family), resizes and infers in batches, and writes every batch to CSV. On one thread a batched "
        "convolution saves only ~10%, so the gain is modest; with more threads, batch-1 work cannot keep the "
        "threads busy (and on this oversubscribed machine threads spinning on tiny ops inflate CPU time), so "
        "the batched engine pulls ahead. When the machine has fewer free cores than threads, both multi-thread "
        "rows are dominated by contention and vary a lot between runs: read them as indicative only. A GPU "
        "would widen the gap further (not measured: no GPU here).",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
