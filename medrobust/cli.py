"""The ``medrobust`` command line: one subcommand per user task (see :mod:`medrobust.commands`).

Conventions shared by every subcommand:

- ``medrobust --version``; ``-v/--verbose`` and ``-q/--quiet`` before or after the subcommand.
- User errors (a bad flag, a missing or unreadable file, an ``--out`` that is an existing file or
  cannot be written) print one line ``medrobust SUB: error: ...`` on stderr and exit with
  status 2, without a traceback (``-v`` adds it). Other exceptions are bugs and keep theirs.
- Subcommand modules are imported lazily and import only the standard library at import time,
  so ``medrobust --help`` and ``medrobust SUB --help`` return in well under two seconds.

Example:
    >>> build_parser().parse_args(["sensitivity", "--list-families", "-q"]).quiet
    True
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from medrobust import __version__
from medrobust.commands import SUBCOMMANDS
from medrobust.commands._common import USER_ERRORS, ArgumentParser, report_error

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every installed subcommand."""
    parser = ArgumentParser(
        prog="medrobust",
        description="Attack, defend, detect and measure medical-imaging models on DICOM/NIfTI data.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level; show tracebacks of errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:  # that subcommand is not part of this installation
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose and args.quiet:
        parser.error("-v/--verbose and -q/--quiet are exclusive")
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)  # basicConfig is a no-op when a handler exists (e.g. under pytest)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        return report_error(f"medrobust {args.command}", e, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
