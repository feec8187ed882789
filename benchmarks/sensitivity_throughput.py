"""Throughput of the sensitivity sweep on full-field mammograms: engine vs its irreducible parts vs a naive loop.

Data: ``--n`` synthetic full-field DICOM MG images (3328 x 2560, 16-bit) written by the
sample_data generator into a temporary folder (not committed). Model: the mammogram bundle's
``network_def`` (a 5-block MONAI conv stack, 26k parameters, input 1 x 320 x 256), random weights
(timing only). Families: the defaults (``DEFAULT_FAMILIES``) with their default severities.

Rows, per torch intra-op thread count:

- **engine**: ``run_sensitivity`` (no report), wall and process CPU time, images per hour;
- **irreducible parts**, each measured in isolation in the same process on the same images:
  decode (``load_image`` + the model's intensity mapping), one forward FFT per reflect-padding
  level the Fourier filters use, one inverse FFT per Fourier severity, the noise draws and the
  blur, the resize of every perturbed image to the model input, and the model forward passes
  (batched). ``engine / sum of parts`` is the overhead factor (goal <= 1.25);
- **naive loop**: one (image, family, severity) at a time, batch 1, and no reuse of a spectrum
  between severities (each filter call gets a fresh tensor, so its forward FFT is recomputed):
  what a straightforward script does.

Usage:
    python -m benchmarks.sensitivity_throughput [--n 2] [--threads 1 2] [--out docs/benchmarks/sensitivity.md]
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
from medrobust.data.preprocess import match_spatial_dims, resize_batch, to_model_input
from medrobust.models import LoadedModel, from_module
from medrobust.perturbations.natural import fourier_padding, highpass_radius, lowpass_radius
from medrobust.perturbations.registry import PerturbationContext, get_family, sample_seed
from medrobust.sensitivity import resolve_plan, run_sensitivity
from medrobust.sensitivity.batching import perturb_for_model

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "mammogram_perturbation_sensitivity"


def bundle_network() -> tuple[torch.nn.Module, tuple[int, ...]]:
    """The mammogram bundle's ``network_def`` (random weights suffice for timing) and input size."""
    from medrobust.models import load_bundle_network

    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    shape = tuple(meta["network_data_format"]["inputs"]["image"]["spatial_shape"])
    torch.manual_seed(0)  # benchmark script: the same random initialisation every run
    return load_bundle_network(BUNDLE, weights=None), shape


def _timed(fn):
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - t_cpu, time.perf_counter() - t_wall


def naive_loop(model: LoadedModel, data: Path, plan: dict[str, tuple[float, ...]], seed: int) -> pd.DataFrame:
    """One (image, family, severity) at a time, batch 1, a fresh tensor per call (no spectrum reuse)."""
    items, _ = scan_dataset(data)
    rows = []
    for it in items:
        x = match_spatial_dims(model.preprocessing.to_unit(load_image(it).array), model.spatial_dims)[None]
        for name, grid in plan.items():
            fam = get_family(name)
            for sev in grid:
                xp = perturb_for_model(fam, x.clone(), sev, [sample_seed(it.case_id, name, sev, base_seed=seed)], model)
                with torch.inference_mode():
                    p = float(model.probability(to_model_input(xp, model.spatial_shape, model.in_channels))[0])
                rows.append({"case_id": it.case_id, "family": name, "severity": float(sev), "p_positive": p})
    return pd.DataFrame(rows)


def irreducible_parts(model: LoadedModel, data: Path, plan: dict[str, tuple[float, ...]], batch_size: int) -> dict[str, float]:
    """Wall seconds of each irreducible part of the sweep, measured in isolation (see the module docstring)."""
    items, _ = scan_dataset(data)
    t = dict.fromkeys(["decode", "forward FFT", "inverse FFT", "noise + blur", "resize", "model forward"], 0.0)
    n_units = 0
    for it in items:
        start = time.perf_counter()
        x = match_spatial_dims(model.preprocessing.to_unit(load_image(it).array), model.spatial_dims)[None]
        t["decode"] += time.perf_counter() - start
        spatial = tuple(x.shape[2:])
        radii = [lowpass_radius(s) for s in plan.get("fourier_lowpass", ()) if s > 0]
        radii += [highpass_radius(s) for s in plan.get("fourier_highpass", ()) if s > 0]
        pads = {fourier_padding(spatial, r) for r in radii}
        spectra = {}
        for widths in pads:
            start = time.perf_counter()
            xp = torch.nn.functional.pad(x, [w for a, b in reversed(widths) for w in (a, b)], mode="reflect")
            spectra[widths] = torch.fft.rfftn(xp[0], dim=(1, 2))
            t["forward FFT"] += time.perf_counter() - start
        for r in radii:
            widths = fourier_padding(spatial, r)
            padded = tuple(n + a + b for n, (a, b) in zip(spatial, widths))
            start = time.perf_counter()
            torch.fft.irfftn(spectra[widths], s=padded, dim=(1, 2))
            t["inverse FFT"] += time.perf_counter() - start
        ctx = PerturbationContext.from_seeds([0])
        for name in ("gaussian_noise", "fourier_noise", "gaussian_blur"):
            for sev in plan.get(name, ()):
                if sev > 0:
                    start = time.perf_counter()
                    get_family(name).apply(x, sev, ctx)
                    t["noise + blur"] += time.perf_counter() - start
        units = sum(len([s for s in g if s > 0]) for g in plan.values()) + 1
        n_units += units
        start = time.perf_counter()
        for _ in range(units):
            resize_batch(x, model.spatial_shape)
        t["resize"] += time.perf_counter() - start
    small = torch.rand(batch_size, model.in_channels, *model.spatial_shape)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(0, n_units, batch_size):
            model.logits(small)
    t["model forward"] = time.perf_counter() - start
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2, help="synthetic full-field mammograms (sample_data generator)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch intra-op thread counts to measure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-naive", action="store_true", help="skip the naive loop (slow)")
    ap.add_argument("--out", default="docs/benchmarks/sensitivity.md")
    args = ap.parse_args(argv)
    from sample_data.mammograms import generate_mammograms

    net, shape = bundle_network()
    model = from_module(net, input_size=shape, name="mammogram bundle network_def (random init)")
    plan = resolve_plan(None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gen = generate_mammograms(Path(tmp) / "gen", n=max(4, args.n), seed=args.seed, full_size=True)  # it writes >= 4
        data = Path(tmp) / "mammo"
        data.mkdir()
        for it in sorted(scan_dataset(gen)[0], key=lambda i: i.case_id)[: args.n]:
            it.path.rename(data / it.path.name)
        items = scan_dataset(data)[0]
        n_items = len(items)
        native = tuple(load_image(items[0]).array.shape[1:])
        for threads in args.threads:
            torch.set_num_threads(threads)
            res, cpu, wall = _timed(lambda: run_sensitivity(
                model, data, Path(tmp) / f"run{threads}", batch_size=args.batch_size, seed=args.seed, progress=False,
                report=False, roi_masks=None, overwrite=True))
            parts = irreducible_parts(model, data, plan, args.batch_size)
            row = {"threads": threads, "engine_wall": wall, "engine_cpu": cpu, "parts": parts, "units": len(res.predictions)}
            if not args.no_naive:
                naive, ncpu, nwall = _timed(lambda: naive_loop(model, data, plan, args.seed))
                key = ["case_id", "family", "severity"]
                merged = naive.merge(res.predictions[key + ["p_positive"]].astype({"severity": float}), on=key)
                row.update(naive_wall=nwall, naive_cpu=ncpu,
                           max_diff=float(np.abs(merged["p_positive_x"] - merged["p_positive_y"]).max()))
            rows.append(row)
    units = rows[0]["units"]
    cmd = "python -m benchmarks.sensitivity_throughput " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Sensitivity sweep throughput on full-field mammograms",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, CPU only (a 2-core machine shared with other "
        "engineers' jobs: wall times include their load; no GPU was lent to this task, so there is no GPU row). "
        f"Model: the mammogram bundle's network_def (5-block MONAI conv stack, 26k parameters, input 1 x {shape[0]} x "
        f"{shape[1]}), random weights. Data: {n_items} synthetic full-field 16-bit DICOM MG images {native[0]} x "
        f"{native[1]} (sample_data generator, temporary). Families: {', '.join(plan)} with their default severities "
        f"({units // n_items} predictions per image, severity 0 included). Fourier filters reflect-pad before "
        "filtering (no wrap-around), which the parts below include.",
        "",
        "| threads | engine wall s | engine CPU s | images / hour (wall) | sum of irreducible parts s | engine / parts | naive loop wall s | engine speed-up vs naive |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        psum = sum(r["parts"].values())
        naive = f"{r['naive_wall']:.1f}" if "naive_wall" in r else "-"
        speed = f"{r['naive_wall'] / r['engine_wall']:.2f}x" if "naive_wall" in r else "-"
        lines.append(
            f"| {r['threads']} | {r['engine_wall']:.1f} | {r['engine_cpu']:.1f} | {3600 * n_items / r['engine_wall']:.0f} | "
            f"{psum:.1f} | **{r['engine_wall'] / psum:.2f}x** | {naive} | {speed} |"
        )
    lines += ["", "Irreducible parts (wall s, measured in isolation, all images):", "",
              "| threads | " + " | ".join(rows[0]["parts"]) + " |", "|---|" + "---|" * len(rows[0]["parts"])]
    for r in rows:
        lines.append(f"| {r['threads']} | " + " | ".join(f"{v:.2f}" for v in r["parts"].values()) + " |")
    if any("max_diff" in r for r in rows):
        lines += ["", f"Agreement: largest |p_engine - p_naive| {max(r.get('max_diff', 0) for r in rows):.2e} "
                  "(same per-sample seeds and preprocessing)."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
