"""Markdown output shared by reports, bundle scripts and benchmarks: one table formatter and one
writer that replaces a generated block between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``
markers in a README (so a rerun refreshes the numbers and leaves the prose alone).

Example:
    >>> import pandas as pd
    >>> print(markdown_table(pd.DataFrame({"family": ["blur"], "severity": [0.5], "auc": [0.91234]})))
    | family | severity | auc |
    |---|---|---|
    | blur | 0.5 | 0.912 |
    >>> replace_between_markers("a\\n<!-- t:start -->\\nold\\n<!-- t:end -->\\nb", "t", "| new |\\n")
    'a\\n<!-- t:start -->\\n| new |\\n<!-- t:end -->\\nb'
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["markdown_table", "replace_between_markers", "write_between_markers"]


def markdown_table(df: Any, floatfmt: str = ".3f") -> str:
    """A GitHub-flavoured markdown table of a ``pandas.DataFrame`` (no extra dependency).

    Floats are printed with ``floatfmt`` (NaN as ``n/a``), a ``severity`` column with ``g``.
    """

    def fmt(v: Any, col: str) -> str:
        if isinstance(v, float) and col == "severity":
            return format(v, "g")
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else format(v, floatfmt)
        return str(v)

    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v, c) for v, c in zip(row, cols)) + " |")
    return "\n".join(lines)


def replace_between_markers(text: str, name: str, block: str) -> str:
    """``text`` with the part between the ``name`` markers replaced by ``block``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    i, j = text.find(start), text.find(end)
    if i < 0 or j < 0 or j < i:
        raise ValueError(f"no {start} ... {end} markers (in this order) to write the {name!r} block between.")
    return text[: i + len(start)] + "\n" + block + text[j:]


def write_between_markers(path: str | Path, name: str, block: str) -> None:
    """Replace the block between the ``name`` markers of the file ``path`` with ``block``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the markers are missing (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (a README with <!-- {name}:start/end --> markers).")
    try:
        path.write_text(replace_between_markers(path.read_text(), name, block))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
