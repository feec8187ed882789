"""Run every timing benchmark, each writing its ``docs/benchmarks/<topic>.md`` (``make bench``).

Each benchmark runs in its own process (``python -m benchmarks.<name> ...``) with one torch thread
and the settings below, so one failure does not stop the others; a benchmark whose data is absent
(the registration comparison needs ``../shared/data/mrus_dev``) is skipped and said so. A
benchmark is a script that writes a ``docs/benchmarks`` table; the evidence scripts (training
runs of an hour or more: ``*_evidence.py``, ``noise_defenses.py``, ``stable_explanations.py``)
are not run here; each states its own command.

``--quick`` is a smoke run: the smallest settings, and the tables go to ``runs/benchmarks_quick/``
instead of ``docs/benchmarks/`` (quick numbers must not replace the published ones).

Usage::

    nice -n 10 python -m benchmarks.run_all            # all, small default settings -> docs/benchmarks/
    python -m benchmarks.run_all --quick               # smoke run -> runs/benchmarks_quick/
    python -m benchmarks.run_all --only attack_speed   # a subset; --list names them
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["BENCHMARKS", "main"]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
logger = logging.getLogger("benchmarks.run_all")

#: name -> (markdown file, default arguments, quick arguments, data the benchmark needs or None)
BENCHMARKS: dict[str, tuple[str, list[str], list[str], Path | None]] = {
    "attack_speed": ("attacks.md", ["--repeats", "3"], ["--repeats", "1", "--steps", "3"], None),
    "adversarial_training_cost": ("adversarial_training.md", ["--repeats", "1", "--n", "256"],
                                  ["--repeats", "1", "--n", "64"], None),
    "sensitivity_throughput": ("sensitivity.md", ["--n", "4"], ["--n", "4", "--size", "256", "208", "--batch-size", "2"], None),
    "bandlimited": ("bandlimited.md", ["--repeats", "3"], ["--repeats", "1"], None),
    "pruning": ("pruning.md", ["--repeat", "5"], ["--repeat", "1"], None),
    "reconstruction": ("reconstruction.md", ["--repeats", "3"], ["--repeats", "1"], None),
    "quantization": ("quantization.md", ["--repeats", "3"], ["--repeats", "1"], None),
    "noise_defenses_cost": ("noise_defenses.md", ["--repeats", "3"],
                            ["--repeats", "1", "--n", "64", "--ks", "1", "2", "--eot_n", "8", "--attack_steps", "2"], None),
    "registration_bspline": ("registration.md", [], [], SHARED / "mrus_dev"),
    "distributed": ("distributed.md", ["--n", "16", "--size", "3328", "2560", "--families", "gaussian_noise", "fourier_noise",
                                       "fourier_lowpass", "fourier_highpass", "gaussian_blur", "--repeats", "2"],
                    ["--n", "4", "--size", "416", "320", "--families", "gaussian_noise"], None),
}


def _run_one(name: str, out: Path, extra: list[str], timeout: float) -> tuple[str, float]:
    cmd = [sys.executable, "-m", f"benchmarks.{name}", *extra, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    logger.info("running %s", " ".join(cmd[1:]))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s", time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return f"failed (exit {proc.returncode}): {tail[0]}", seconds
    return ("ok" if out.is_file() else "ran, but wrote no table"), seconds


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: smallest settings, tables to runs/benchmarks_quick/")
    p.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=None, metavar="NAME", help="run only these")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="where the tables go (default docs/benchmarks, or runs/benchmarks_quick with --quick)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark")
    p.add_argument("--list", action="store_true", help="print the benchmarks and their settings, run nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = args.only or list(BENCHMARKS)
    if args.list:
        for n in names:
            md, full, quick, data = BENCHMARKS[n]
            print(f"{n}: {md}; default {' '.join(full) or '-'}; --quick {' '.join(quick) or '-'}"  # noqa: T201
                  + (f"; needs {data}" if data else ""))
        return 0
    out_dir = args.out_dir or (REPO / ("runs/benchmarks_quick" if args.quick else "docs/benchmarks"))
    out_dir.mkdir(parents=True, exist_ok=True)
    status: dict[str, tuple[str, float]] = {}
    for n in names:
        md, full, quick, data = BENCHMARKS[n]
        if data is not None and not data.exists():
            status[n] = (f"skipped: {data} not found", 0.0)
            logger.warning("%s skipped: %s not found", n, data)
            continue
        status[n] = _run_one(n, out_dir / md, quick if args.quick else full, args.timeout)
        logger.info("%s: %s (%.0f s)", n, *status[n])
    lines = [f"{n:28s} {s} ({sec:.0f} s) -> {out_dir / BENCHMARKS[n][0]}" for n, (s, sec) in status.items()]
    print("\n".join(lines))  # noqa: T201 (a command-line summary)
    return 0 if all(s.startswith(("ok", "skipped")) for s, _ in status.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
