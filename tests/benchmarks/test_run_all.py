"""``make bench`` (``python -m benchmarks.run_all``) knows every timing benchmark and resolves to this repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_every_timing_benchmark_is_run_and_exists() -> None:
    from benchmarks.run_all import BENCHMARKS

    # a timing benchmark writes a docs/benchmarks table (evidence scripts write runs/ and are run by hand)
    timing = {p.stem for p in (REPO / "benchmarks").glob("*.py")
              if "docs/benchmarks" in p.read_text() and p.stem not in ("__init__", "run_all")}
    assert timing == set(BENCHMARKS), "add the new benchmark to benchmarks/run_all.py"
    outputs = [md for md, *_ in BENCHMARKS.values()]
    assert len(set(outputs)) == len(outputs), "two benchmarks would write the same docs/benchmarks file"


@pytest.mark.parametrize("args", [["--list"], ["--list", "--only", "attack_speed"]])
def test_module_runs_from_the_repository_root(args) -> None:
    # a site-packages "benchmarks" package (Opacus ships one) must not shadow ours
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run_all", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "attack_speed: attacks.md" in proc.stdout
