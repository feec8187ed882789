"""The command-line tail shared by the evidence scripts (run, then print the table; or only print it)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["add_results_arguments", "run_or_report"]


def add_results_arguments(p: argparse.ArgumentParser, default: Path) -> None:
    """``--results`` (the resumable JSONL of runs) and ``--report`` (print the table, train nothing)."""
    p.add_argument("--results", type=Path, default=default)
    p.add_argument("--report", action="store_true", help="only print the table from --results")


def run_or_report(args: argparse.Namespace, run: Callable[[argparse.Namespace], object],
                  report: Callable[[Path], str]) -> int:
    """One torch thread (the evidence runs share a small CPU), quiet ignite, then ``run`` unless
    ``--report``, then print ``report(args.results)``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("ignite").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    if not args.report:
        run(args)
    print(report(args.results))
    return 0
