"""PGD-k cost against its physical limit and against torchattacks, for a 2-D and a 3-D model.

The limit: PGD-k needs k x (one forward + one input-gradient backward) on the batch. We time
that bare loop, ``medrobust.core.attacks.pgd`` (which adds one clean and one final forward for
its per-sample loss/success bookkeeping), and torchattacks' ``PGD`` / ``PGDL2`` on the same model
and batch, and write the ratios to ``docs/benchmarks/attacks.md``.

Usage:
    python -m benchmarks.attack_speed [--steps 10] [--repeats 5] [--threads 1] [--out docs/benchmarks/attacks.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from medrobust.core.attacks import pgd


def make_model(spatial_dims: int) -> nn.Module:
    """A small CNN (~100k parameters) for 1-channel inputs."""
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
    torch.manual_seed(0)
    return nn.Sequential(
        conv(1, 16, 3, padding=1), nn.ReLU(), conv(16, 32, 3, padding=1, stride=2), nn.ReLU(),
        conv(32, 64, 3, padding=1, stride=2), nn.ReLU(), conv(64, 64, 3, padding=1, stride=2), nn.ReLU(),
        pool, nn.Flatten(), nn.Linear(64, 2),
    ).eval()


def timed_all(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float | str]:
    """Best-of-``repeats`` process CPU time per callable, run round-robin after one warm-up each.

    With one intra-op thread, CPU time equals compute time and is far less disturbed than wall
    time by other processes on a shared machine; a failing callable maps to its error."""
    best: dict[str, float | str] = {}
    for name, fn in fns.items():
        try:
            fn()
            best[name] = float("inf")
        except Exception as e:  # a finding to report, not a crash
            best[name] = f"fails: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    for _ in range(repeats):
        for name, fn in fns.items():
            if isinstance(best[name], str):
                continue
            t = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - t)
    return best


def limit_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> Callable[[], None]:
    """k x (forward + input-gradient backward): the cost floor of any PGD-k."""

    def run() -> None:
        for _ in range(steps):
            xr = x.detach().requires_grad_(True)
            loss = nn.functional.cross_entropy(model(xr), y)
            torch.autograd.grad(loss, xr)

    return run


def bench_case(name: str, dims: int, shape: tuple[int, ...], batch: int, steps: int, repeats: int) -> list[dict]:
    model = make_model(dims)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((batch, 1) + shape, generator=g)
    y = torch.randint(0, 2, (batch,), generator=g)
    eps = {"inf": 8 / 255, "2": 0.5}
    fns: dict[str, Callable[[], object]] = {"limit": limit_loop(model, x, y, steps)}
    for norm in ("inf", "2"):
        fns[f"medrobust pgd|{norm}"] = (
            lambda norm=norm: pgd(model, x, y, eps=eps[norm], norm=norm, steps=steps, generator=0))
    try:
        import torchattacks

        for norm, cls in (("inf", torchattacks.PGD), ("2", torchattacks.PGDL2)):
            atk = cls(model, eps=eps[norm], alpha=2.5 * eps[norm] / steps, steps=steps, random_start=True)
            fns[f"torchattacks {cls.__name__}|{norm}"] = lambda atk=atk: atk(x, y)
    except ImportError:  # optional comparison
        pass
    times = timed_all(fns, repeats)
    t_limit = times["limit"]
    rows = [dict(case=name, impl="limit: k x (fwd + input-grad bwd)", norm="-", seconds=t_limit, ratio=1.0)]
    for key, t in times.items():
        if key == "limit":
            continue
        impl, norm = key.split("|")
        if isinstance(t, str):
            rows.append(dict(case=name, impl=impl, norm=norm, seconds=None, ratio=None, note=t))
        else:
            rows.append(dict(case=name, impl=impl, norm=norm, seconds=t, ratio=t / t_limit))
    return rows


def write_markdown(rows: list[dict], out: Path, command: str, steps: int, threads: int) -> None:
    lines = [
        "# Attack speed: PGD-k against its limit and against torchattacks",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{threads} intra-op thread(s), CPU. PGD-{steps}; best of repeated round-robin runs after a warm-up, process CPU time "
        "(single thread, so CPU time = compute time; wall time on the shared 2-core box was too noisy). "
        "Ratio = time / limit, where the limit is k x (one forward + one input-gradient backward) "
        "on the same batch. medrobust's pgd adds one clean and one final forward (loss and success "
        "per sample), i.e. 2 forwards on top of the limit.",
        "",
        "| case | implementation | norm | seconds | ratio to limit | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        sec = "-" if r["seconds"] is None else f"{r['seconds']:.4f}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['case']} | {r['impl']} | {r['norm']} | {sec} | {ratio} | {r.get('note', '')} |")
    failures = [r for r in rows if r["seconds"] is None]
    lines += ["", "## Findings", ""]
    for r in failures:
        lines.append(f"- {r['impl']} ({r['norm']}) on {r['case']}: {r.get('note', 'failed')}. torchattacks reshapes "
                     "per-sample norms with `view(batch, 1, 1, 1)`, i.e. assumes 4-D (B, C, H, W) images.")
    lines += [
        "- medrobust's overhead over the limit is its bookkeeping: one clean forward (clean loss, the default "
        "`y`), one forward of the final iterate (per-sample loss and success), and element-wise work per step "
        "(projection, tensor bounds, NaN/zero-gradient diagnostics). A no-grad forward costs about a quarter of "
        "a forward + input-gradient step for these models, so the two extra forwards alone are ~5% at k = 10.",
        "- Correctness against torchattacks 3.5.1 is tested in `tests/core/attacks/test_torchattacks_agreement.py`: "
        "FGSM and PGD without random start agree to 1e-6 (untargeted and targeted); CW-L2 agrees in success rate "
        "and perturbation size; DeepFool finds the same perturbations, and its success differs only where "
        "torchattacks stops exactly on the decision boundary (a logit tie that `argmax` resolves to the label).",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: CPU time is then the compute time)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/attacks.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = bench_case("2-D 1x64x64, batch 32", 2, (64, 64), 32, args.steps, args.repeats)
    rows += bench_case("3-D 1x32x32x32, batch 4", 3, (32, 32, 32), 4, args.steps, args.repeats)
    cmd = "python -m benchmarks.attack_speed " + " ".join(
        f"--{k} {v}" for k, v in (("steps", args.steps), ("repeats", args.repeats), ("threads", args.threads)))
    write_markdown(rows, args.out, cmd, args.steps, args.threads)
    print(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
