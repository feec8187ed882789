"""Cost of the randomised and private defenses, each against its anchor timed side by side in one run.

Three tables, one CPU thread, the lesion_classification bundle's network (61 k parameters),
BreastMNIST train images (synthetic images of the same shape when the file is absent):

1. **Training step**: one epoch of PNI-W, PNI-C and CNI adversarial training
   (:class:`~medrobust.core.defenses.NoiseInjectionTraining`, PGD-3, ``0.5 CE(x) + 0.5 CE(x_adv)``)
   vs plain PGD-AT with the same attack and loss (:class:`~medrobust.core.defenses.PGDAdversarialTraining`,
   ``clean_weight=0.5``), and a natural epoch. The noise adds one weight draw per layer and forward.
2. **EOT attack**: PGD-10 with ``eot_samples = K`` on a PNI-W network vs ``K = 1`` (expected ~K x:
   every step costs K forward/backward passes).
3. **Per-sample gradients**: one epoch of Opacus DP-SGD (``GradSampleModule`` hooks) and of SIDP
   (``torch.func.vmap`` per-example gradients at the noisy weights) vs non-private SGD, all three
   on the same GroupNorm network, Poisson-sampled batches of expected size 64 from the same seed.

Each configuration is timed ``--repeats`` times, interleaved with its anchor, and the median is
reported; the machine's load average is recorded before and after (a shared machine makes
absolute times noisy; the ratios are measured side by side).

Run from the repository root::

    nice -n 5 python -m benchmarks.noise_defenses_cost --repeats 3 --out docs/benchmarks/noise_defenses.md
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from benchmarks._data import breastmnist_train

__all__ = ["training_rows", "eot_rows", "private_rows", "markdown", "main"]

REPO = Path(__file__).resolve().parents[1]
EPS = 2 / 255
logger = logging.getLogger("benchmarks.noise_defenses_cost")




def _network(seed: int) -> torch.nn.Module:
    from medrobust.models import load_bundle_network

    torch.manual_seed(seed)  # benchmark script, not library code: same initial weights for every case
    return load_bundle_network(REPO / "bundles" / "lesion_classification", config_files=["train.json"], weights=None).train()


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """``(wall seconds, CPU seconds of this process)``: on a shared machine the CPU time is the work done."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def _row(case: str, times: list[tuple[float, float]], anchor: list[tuple[float, float]]) -> dict:
    """Median wall and CPU seconds, the CPU range over repeats, and both medians' ratios to ``anchor``'s."""
    wall, cpu = [t[0] for t in times], [t[1] for t in times]
    a_wall, a_cpu = statistics.median(t[0] for t in anchor), statistics.median(t[1] for t in anchor)
    return {"case": case, "wall": statistics.median(wall), "cpu": statistics.median(cpu),
            "range": f"{min(cpu):.2f}-{max(cpu):.2f}", "ratio": statistics.median(cpu) / a_cpu,
            "wall_ratio": statistics.median(wall) / a_wall}


def _trainer(net: torch.nn.Module, data, optimizer, step=None):
    from monai.engines import SupervisedTrainer

    return SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=data, network=net, optimizer=optimizer,
                             loss_function=torch.nn.CrossEntropyLoss(), iteration_update=step, decollate=False)


def training_rows(x: torch.Tensor, y: torch.Tensor, *, repeats: int, batch_size: int, steps: int) -> list[dict]:
    """Seconds per epoch of PNI-W / PNI-C / CNI training vs plain PGD-AT (and natural), interleaved."""
    from medrobust.core.defenses import NoiseInjectionTraining, PGDAdversarialTraining, inject_noise, noise_parameter_groups

    batches = [{"image": x[i:i + batch_size], "label": y[i:i + batch_size]} for i in range(0, len(x), batch_size)]

    def epoch(kind: str, seed: int) -> tuple[float, float]:
        net = _network(seed)
        if kind == "natural":
            step = None
        elif kind == "pgd-at":
            step = PGDAdversarialTraining(eps=EPS, steps=steps, clean_weight=0.5, seed=seed)
        else:
            inject_noise(net, kind="cni" if kind == "cni" else "pni", per_channel=kind == "pni-c")
            step = NoiseInjectionTraining(eps=EPS, steps=steps, seed=seed)
        opt = torch.optim.AdamW(noise_parameter_groups(net, weight_decay=1e-4), lr=1e-3)
        return _timed(_trainer(net, batches, opt, step).run)

    epoch("pni-w", 0)  # warm-up (imports, allocator)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in ("natural", "pgd-at", "pni-w", "pni-c", "cni")}
    for r in range(repeats):
        for k in times:  # interleaved: every repeat times every case once
            times[k].append(epoch(k, r))
    labels = {"natural": "natural", "pgd-at": f"PGD-AT (PGD-{steps}, anchor)", "pni-w": f"PNI-W (PGD-{steps})",
              "pni-c": f"PNI-C (PGD-{steps})", "cni": f"CNI rank 5 (PGD-{steps})"}
    return [_row(labels[k], v, times["pgd-at"]) for k, v in times.items()]


def eot_rows(x: torch.Tensor, y: torch.Tensor, *, repeats: int, ks: Sequence[int], attack_steps: int) -> list[dict]:
    """Seconds of PGD-``attack_steps`` with ``eot_samples = K`` on a PNI-W network vs ``K = 1``."""
    from medrobust.core.attacks import pgd
    from medrobust.core.defenses import inject_noise

    net = inject_noise(_network(0), kind="pni").eval()
    run = {k: (lambda k=k: pgd(net, x, y, eps=EPS, steps=attack_steps, eot_samples=k, generator=0)) for k in ks}
    run[ks[0]]()  # warm-up
    times: dict[int, list[tuple[float, float]]] = {k: [] for k in ks}
    for _ in range(repeats):
        for k in ks:
            times[k].append(_timed(run[k]))
    base = times[1] if 1 in times else times[ks[0]]
    return [{**_row(f"K = {k}", v, base), "expected": k} for k, v in times.items()]


def private_rows(x: torch.Tensor, y: torch.Tensor, *, repeats: int, batch_size: int) -> list[dict]:
    """Seconds per epoch of Opacus DP-SGD and SIDP vs non-private SGD (same GroupNorm network, Poisson batches)."""
    from opacus.data_loader import DPDataLoader
    from torch.utils.data import DataLoader, TensorDataset

    from medrobust.core.defenses import SIDPTraining, make_dp_sgd, non_affine_normalization, opacus_compatible

    def loader(seed: int) -> DataLoader:
        base = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(seed))
        return DPDataLoader.from_data_loader(base, generator=torch.Generator().manual_seed(seed))

    def epoch(kind: str, seed: int) -> tuple[float, float]:
        if kind == "sidp":
            net = non_affine_normalization(_network(seed))
            opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
            step = SIDPTraining(max_grad_norm=1.0, noise_multiplier=1.0, batch_size=batch_size, seed=seed)
            return _timed(_trainer(net, loader(seed), opt, step).run)
        net = opacus_compatible(_network(seed))
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        if kind == "sgd":
            return _timed(_trainer(net, loader(seed), opt).run)
        base = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(seed))
        _, gsm, opt, data = make_dp_sgd(net, opt, base, noise_multiplier=1.0, max_grad_norm=1.0, seed=seed)
        seconds = _timed(_trainer(gsm, data, opt).run)
        gsm.remove_hooks()
        return seconds

    epoch("sidp", 0)  # warm-up (vmap tracing, Opacus imports)
    epoch("dp-sgd", 0)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in ("sgd", "dp-sgd", "sidp")}
    for r in range(repeats):
        for k in times:
            times[k].append(epoch(k, r))
    labels = {"sgd": "non-private SGD (anchor)", "dp-sgd": "Opacus DP-SGD (per-sample hooks, clip, noise)",
              "sidp": "SIDP (vmap per-example grads at noisy weights, clip)"}
    return [_row(labels[k], v, times["sgd"]) for k, v in times.items()]


def markdown(tables: dict[str, list[dict]], *, data_name: str, repeats: int, command: str, load: tuple, seconds: float,
             steps: int, attack_steps: int, eot_n: int) -> str:
    lines = [
        "# Cost of the randomised and private defenses",
        "",
        f"Command (from the repository root): `{command}`",
        "",
        f"Data: {data_name}; the lesion_classification bundle's network; MONAI `SupervisedTrainer`, batch 64; "
        f"one torch thread; median of {repeats} interleaved repeats (every repeat times each case once, so a "
        "ratio compares times taken minutes apart at most).",
        "",
        f"**Machine load.** A shared 2-core CPU with other engineers' jobs running: load average (1, 5, 15 min) "
        f"{load[0][0]:.1f} / {load[0][1]:.1f} / {load[0][2]:.1f} at the start and "
        f"{load[1][0]:.1f} / {load[1][1]:.1f} / {load[1][2]:.1f} at the end of this {seconds / 60:.0f}-minute run, "
        "i.e. several runnable processes per core, so wall-clock time measures the scheduler as much as the "
        "code. Each case is therefore timed twice: wall seconds and the CPU seconds of this one-thread process "
        "(`time.process_time`, the work done, much less sensitive to other jobs; cache contention still "
        "inflates it). The ratios use CPU seconds; wall-clock ratios are shown for comparison. Read them to "
        "the precision the CPU ranges over repeats allow.",
        "",
        f"## Training step: noise injection vs plain PGD-AT (PGD-{steps}, eps 2/255, one epoch)",
        "",
        "Anchor: plain PGD-AT with the same attack and the same `0.5 CE(x) + 0.5 CE(x_adv)` loss. PNI/CNI add a "
        "weight-noise draw per noisy layer and forward (the attack's forwards included); CNI's draw is a "
        "`(n, 5)` factor product per layer.",
        "",
        "| case | CPU s / epoch (median) | CPU range over repeats | wall s / epoch | ratio to PGD-AT (CPU) | ratio (wall) |",
        "|---|---|---|---|---|---|",
        *[f"| {r['case']} | {r['cpu']:.2f} | {r['range']} | {r['wall']:.2f} | {r['ratio']:.2f} | {r['wall_ratio']:.2f} |"
          for r in tables["training"]],
        "",
        f"## EOT attack cost vs K (PGD-{attack_steps} on a PNI-W network, {eot_n} images)",
        "",
        "Every step averages the input gradient over K noisy forward/backward passes, so the expected ratio is "
        "about K (a little less: the projection and bookkeeping are paid once per step).",
        "",
        "| K | CPU s (median) | CPU range over repeats | wall s | ratio to K = 1 (CPU) | ratio (wall) | expected |",
        "|---|---|---|---|---|---|---|",
        *[f"| {r['case']} | {r['cpu']:.2f} | {r['range']} | {r['wall']:.2f} | {r['ratio']:.1f} | {r['wall_ratio']:.1f} "
          f"| {r['expected']} |" for r in tables["eot"]],
        "",
        "## Per-sample gradients: Opacus DP-SGD and SIDP vs non-private SGD (one epoch)",
        "",
        "Same GroupNorm network (Opacus' `ModuleValidator.fix`; non-affine GroupNorm for SIDP), SGD lr 0.1 "
        "momentum 0.9, Poisson sampling q = 64/N, sigma = 1, C = 1. Opacus computes per-sample gradients with "
        "module hooks and adds Gaussian noise to their clipped sum; SIDP draws noisy weights and computes "
        "per-example gradients with `torch.func.vmap(grad(...))` (no gradient noise).",
        "",
        "| case | CPU s / epoch (median) | CPU range over repeats | wall s / epoch | ratio to SGD (CPU) | ratio (wall) |",
        "|---|---|---|---|---|---|",
        *[f"| {r['case']} | {r['cpu']:.2f} | {r['range']} | {r['wall']:.2f} | {r['ratio']:.2f} | {r['wall_ratio']:.2f} |"
          for r in tables["private"]],
    ]
    if not tables["private"]:
        lines += ["", "(Not measured: Opacus, the `privacy` extra, is not installed.)"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n", type=int, default=None, help="use only the first n training images")
    p.add_argument("--steps", type=int, default=3, help="PGD steps inside adversarial training")
    p.add_argument("--attack_steps", type=int, default=10, help="PGD steps of the EOT attack")
    p.add_argument("--eot_n", type=int, default=64, help="images attacked in the EOT table")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 5, 10, 20])
    p.add_argument("--out", type=Path, default=None, help="markdown file to write (default: print only)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("ignite").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    load0, t0 = os.getloadavg(), time.perf_counter()
    x, y, name = breastmnist_train(args.n)
    tables = {"training": training_rows(x, y, repeats=args.repeats, batch_size=64, steps=args.steps)}
    logger.info("training: %s", tables["training"])
    tables["eot"] = eot_rows(x[:args.eot_n], y[:args.eot_n], repeats=args.repeats, ks=args.ks, attack_steps=args.attack_steps)
    logger.info("eot: %s", tables["eot"])
    try:
        import opacus  # noqa: F401 (the privacy extra)
    except ImportError:
        logger.warning("opacus not installed (pip install 'medrobust[privacy]'): the per-sample-gradient table is skipped")
        tables["private"] = []
    else:
        tables["private"] = private_rows(x, y, repeats=args.repeats, batch_size=64)
    logger.info("private: %s", tables["private"])
    cmd = "nice -n 5 python -m benchmarks.noise_defenses_cost " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(tables, data_name=name, repeats=args.repeats, command=cmd.strip(), load=(load0, os.getloadavg()),
                    seconds=time.perf_counter() - t0, steps=args.steps, attack_steps=args.attack_steps, eot_n=args.eot_n)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)  # noqa: T201 (command-line output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
