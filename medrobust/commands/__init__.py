"""The ``medrobust`` subcommands: the application layer over the library.

Each module here exposes ``add_parser(subparsers)``, which adds its parser (built on
:func:`medrobust.commands._common.common_parent`) and sets ``func``: called with the parsed
namespace, it builds a typed config object, calls library code with it and returns an exit
code. Modules import only the standard library at import time, so ``medrobust --help`` stays
fast; library code is imported inside ``func``. User errors (``UserError``, ``ValueError``,
``FileNotFoundError``, ...) are turned into one line on stderr and exit status 2 by
:func:`medrobust.cli.main`.

To add a subcommand see ``CONTRIBUTING.md`` ("Adding a subcommand").
"""

from __future__ import annotations

__all__ = ["SUBCOMMANDS"]

#: subcommand name -> module with ``add_parser(subparsers)``, in ``--help`` order.
SUBCOMMANDS: dict[str, str] = {
    "sensitivity": "medrobust.commands.sensitivity",
    "metrics": "medrobust.commands.metrics",
    "simulate": "medrobust.commands.simulate",
    "lr-sweep": "medrobust.commands.lr_sweep",
    "card": "medrobust.commands.card",
}
