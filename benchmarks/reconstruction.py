"""Cost of FNAF-robust training and of inference for the mri_reconstruction bundle's U-Net.

Training: one ``SupervisedTrainer`` iteration (batch 8, 96 x 96 single-coil 4x slices simulated
from synthetic magnitude images, L1, Adam) with MONAI's default iteration (clean) vs
:class:`~medrobust.core.defenses.FNAFTraining` (clean step + FNAF step; ``restarts`` feature draws
per step). Cost model: about 2x a clean step plus ``restarts`` forward passes for the search.
Inference: ``ReconUNet`` forward per slice (batch 1, 96 x 96 and 256 x 256) vs the zero-filled
acquisition alone (FFT, mask, IFFT), and the FNAF evaluation of one slice (worst of 11). All in
one run, one CPU thread, interleaved repeats, median reported; ratios are against the clean step
/ plain forward measured side by side.

Run from the repository root::

    nice -n 10 python benchmarks/reconstruction.py --repeats 3 --out docs/benchmarks/reconstruction.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from monai.engines import SupervisedTrainer

from medrobust.core.attacks import fnaf
from medrobust.core.defenses import FNAFTraining
from medrobust.reconstruction.evaluation import acquire, batch_acquisition, prepare_batch
from medrobust.reconstruction.masks import undersampling_mask
from medrobust.reconstruction.networks import ReconUNet

__all__ = ["main"]


def _batch(b: int, size: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, 1, size, size, generator=g)
    mask = undersampling_mask(size, acceleration=4, generator=g).expand(b, 1, 1, size, 1)
    phase = torch.zeros_like(target)
    return {"target": target, "mask": mask, "phase": phase, "zero_filled": acquire(target, mask, phase)}


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _trainer(step, batch, net) -> SupervisedTrainer:
    return SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=[batch] * 2, network=net,
                             optimizer=torch.optim.Adam(net.parameters(), 1e-3), loss_function=torch.nn.L1Loss(),
                             prepare_batch=prepare_batch, iteration_update=step, decollate=False)


def run(repeats: int) -> list[tuple[str, float, str]]:
    torch.set_num_threads(1)
    batch = _batch(8, 96)
    net = ReconUNet()
    cases = {"clean step": None, "FNAF step (1 draw)": FNAFTraining(acquisition=batch_acquisition, restarts=1),
             "FNAF step (11 draws)": FNAFTraining(acquisition=batch_acquisition, restarts=11)}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):  # interleaved
        for k, step in cases.items():
            tr = _trainer(step, batch, net)
            t = time.perf_counter()
            tr.run()
            times[k].append((time.perf_counter() - t) / 2)
    clean = statistics.median(times["clean step"])
    rows = [(f"train: {k} (batch 8, 96x96)", statistics.median(v), f"{statistics.median(v) / clean:.2f}x clean")
            for k, v in times.items()]
    net.eval()
    for size in (96, 256):
        b = _batch(1, size)
        with torch.no_grad():
            fwd = _median_time(lambda: net(b["zero_filled"]), repeats)
            acq = _median_time(lambda: acquire(b["target"], b["mask"], b["phase"]), repeats)
        rows.append((f"inference: U-Net forward, 1 slice {size}x{size}", fwd, "1.00x forward"))
        rows.append((f"inference: zero-filled acquisition only, {size}x{size}", acq, f"{acq / fwd:.2f}x forward"))
        if size == 96:
            ev = _median_time(lambda: fnaf(net, b["target"], forward_op=lambda img: acquire(img, b["mask"], b["phase"]),
                                           restarts=11), max(1, repeats // 2))
            rows.append(("evaluation: FNAF worst of 11 on 1 slice 96x96", ev, f"{ev / fwd:.2f}x forward"))
    return rows


def markdown(rows: Sequence[tuple[str, float, str]], repeats: int) -> str:
    lines = ["# Reconstruction: training and inference cost", "",
             "Measured by `nice -n 10 python benchmarks/reconstruction.py --repeats "
             f"{repeats} --out docs/benchmarks/reconstruction.md` (one CPU thread, shared 2-core machine, "
             "median of interleaved repeats; ratios against the clean step / the plain U-Net forward of the same run). "
             "Network: the bundle's `ReconUNet` (features 8-128, 0.49 M parameters).", "",
             "| what | seconds | ratio |", "|---|---|---|"]
    lines += [f"| {n} | {s:.4f} | {r} |" for n, s, r in rows]
    lines += ["", "Cost model: a FNAF step is a clean step plus a second training step on the perturbed batch plus "
              "`restarts` search forwards (no gradients), so about 2x a clean step plus the search.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    text = markdown(run(args.repeats), args.repeats)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
