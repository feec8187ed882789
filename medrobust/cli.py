"""The ``medrobust`` command line: one subcommand per user task.

Each subcommand lives beside the code it drives and exposes ``add_parser(subparsers)``, which
adds its parser and sets ``func`` (called with the parsed namespace, returning an exit code).
Modules are imported lazily so ``medrobust --help`` stays fast and one broken optional
subcommand cannot take down the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# (subcommand module, is it required): required ones fail loudly if they cannot be imported.
_SUBCOMMAND_MODULES = (
    "medrobust.sensitivity.cli",
    "medrobust.core.metrics.cli",
    "medrobust.simulation.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medrobust",
        description="Attack, defend, detect and measure medical-imaging models on DICOM/NIfTI data.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that subcommand is not part of this installation
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
