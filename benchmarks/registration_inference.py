"""Inference time per MR-TRUS pair of the mrus_registration network on this CPU.

Times each reference configuration of the bundle (``configs/reference_networks.json``: the
``network_def`` of ``configs/train.json`` with that row's overrides, built by
:func:`medrobust.models.load_bundle_network`; weights from the comparison run when present) on the 3 mm grid:
one forward of ``cat([moving, fixed])`` plus warping the moving labels, batch 1, after a warm-up;
best and median of repeats, as process CPU time (one intra-op thread: CPU time = compute time,
far steadier than wall time on a shared box) and wall time.

Usage:
    python -m benchmarks.registration_inference [--repeats 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from monai.networks.blocks import Warp

from medrobust.registration.engine import register

__all__ = ["reference_networks", "time_inference"]

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "mrus_registration"


def reference_networks(*, trained_only: bool = False) -> list[tuple[str, torch.nn.Module, bool]]:
    """``(row name, network, trained)`` per entry of the bundle's ``configs/reference_networks.json``.

    A row whose weights are missing gets its initialisation (``trained`` False) unless ``trained_only``.
    """
    from medrobust.models import load_bundle_network

    spec = json.loads((BUNDLE / "configs" / "reference_networks.json").read_text())["networks"]
    out = []
    for row in spec:
        weights = BUNDLE / row["weights"]
        if trained_only and not weights.is_file():
            continue
        # a row may name its own configs (e.g. the image-only cascade: inference.json + cascade.json)
        net = load_bundle_network(BUNDLE, config_files=row.get("config_files", ["train.json"]), overrides=row["overrides"],
                                  weights=weights if weights.is_file() else None)
        out.append((row["name"], net, weights.is_file()))
    return out


def time_inference(net: torch.nn.Module, shape=(24, 32, 24), n_labels: int = 6, repeats: int = 20) -> dict[str, float]:
    """Seconds per pair (network + label warp), batch 1: best/median CPU and wall time over ``repeats``."""
    gen = torch.Generator().manual_seed(0)
    moving_channels = getattr(net, "in_channels", 2) - 1  # image (+ gland mask)
    mov, fix = torch.rand(1, moving_channels, *shape, generator=gen), torch.rand(1, 1, *shape, generator=gen)
    labels = (torch.rand(1, n_labels, *shape, generator=gen) > 0.5).float()
    warp = Warp(mode="bilinear", padding_mode="zeros")

    def once() -> None:
        with torch.no_grad():
            warp(labels, register(net, mov, fix))

    once()  # warm-up
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        once()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {"cpu_best_s": min(cpu), "cpu_median_s": statistics.median(cpu), "wall_best_s": min(wall),
            "wall_median_s": statistics.median(wall), "threads": torch.get_num_threads(),
            "parameters": sum(p.numel() for p in net.parameters())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=BUNDLE / "runs" / "benchmarks" / "inference.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {name: time_inference(net, repeats=args.repeats) for name, net, _ in reference_networks()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))  # noqa: T201 (a command-line script)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
