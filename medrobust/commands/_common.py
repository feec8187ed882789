"""What every subcommand shares: the argument parser class, -v/-q, the error convention, --out checks.

Example:
    >>> import argparse
    >>> p = ArgumentParser(prog="medrobust demo", parents=[common_parent()])
    >>> vars(p.parse_args(["-q"]))
    {'quiet': True}
    >>> check_out_dir("/dev/null", create=False)
    Traceback (most recent call last):
    ...
    medrobust.commands._common.UserError: --out /dev/null exists and is not a folder; give a new or existing folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

__all__ = ["USER_ERRORS", "ArgumentParser", "UserError", "check_out_dir", "common_parent", "positive_int", "report_error"]


class UserError(Exception):
    """A mistake in the command line or the files it names: reported in one line, exit status 2."""


#: exceptions reported as user errors (one line on stderr, exit 2, no traceback unless -v).
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``PROG: error: MESSAGE (see PROG --help)``."""

    def error(self, message: str) -> NoReturn:  # argparse's default prints the whole usage block first
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def common_parent() -> argparse.ArgumentParser:
    """Parent parser with ``-v/--verbose`` and ``-q/--quiet``, accepted after the subcommand too.

    Defaults are suppressed so that a flag given before the subcommand is not reset by the
    subparser's defaults.
    """
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    g.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log at DEBUG level; show tracebacks of errors")  # fmt: skip
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="log warnings and errors only")
    return p


def positive_int(text: str) -> int:
    """argparse ``type=``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def check_out_dir(path: str | os.PathLike[str], *, flag: str = "--out", create: bool = True) -> Path:
    """Check that ``path`` can be an output folder (and create it when ``create``).

    Raises:
        UserError: ``path`` exists and is not a folder, or it cannot be created or written to.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} exists and is not a folder; give a new or existing folder.")
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{flag} {out}: cannot create the folder ({e.strerror or e}).") from None
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {out}: folder {probe} is not writable.")
    return out


def report_error(prog: str, error: BaseException, *, verbose: bool = False) -> int:
    """Write ``error`` as one line ``PROG: error: MESSAGE`` on stderr (with the traceback when ``verbose``); return 2."""
    if verbose:
        import traceback

        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in message:
        message = f"{error.filename}: {message}"
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2
