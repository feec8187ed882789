"""Write a generated table between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in the bundle's docs/README.md."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "docs" / "README.md"


def write_marked(table: str, name: str, readme: Path = README) -> None:
    """Replace the text between the ``name`` markers of ``readme`` with ``table``.

    Raises:
        RuntimeError: the markers are missing.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        raise RuntimeError(f"{readme} has no {start} ... {end} markers.")
    pre, rest = text.split(start, 1)
    readme.write_text(pre + start + "\n" + table + end + rest.split(end, 1)[1])
