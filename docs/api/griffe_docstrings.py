"""Griffe extension for the API reference (mkdocs.yml): two docstring habits of this project.

Hand-written because griffe's Google parser does neither (griffelib 2.4):

- ``Example:`` (singular, MONAI's spelling) is read as a note, so its ``>>>`` lines become nested
  Markdown quotes (and ``x[0]["key"]`` a broken cross-reference); it is renamed ``Examples:``,
  which griffe renders as code.
- ``a, b: description`` in an Args section documents several parameters at once; griffe reads
  one parameter named ``"a, b"`` and warns that it is not in the signature. The entry is repeated
  for each name, so every name is still checked against the signature (``--strict``).
- A function or class taking ``**kwargs`` documents what it forwards (``steps: the PGD steps``)
  in Args; those names are not in its signature, so for such objects only griffe's unknown-name
  and missing-type warnings are off (everywhere else they stay on).

Only the text griffe parses is changed, never the source files.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

__all__ = ["ProjectDocstrings", "rewrite"]

_PARAM_SECTIONS = re.compile(
    r"^(\s*)(Args|Arguments|Params|Parameters|Keyword Args|Keyword Arguments|Other Parameters):\s*$"
)
_GROUPED = re.compile(r"^(\s+)(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)+)\s*:(.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def rewrite(text: str) -> str:
    """The docstring with ``Example:`` headers renamed and grouped parameters split.

    Example:
        >>> rewrite("Args:\\n    a, b: bounds.\\n        More.\\n\\nExample:\\n    >>> 1")
        'Args:\\n    a: bounds.\\n        More.\\n    b: bounds.\\n        More.\\n\\nExamples:\\n    >>> 1'
    """
    lines = text.split("\n")
    out: list[str] = []
    section_indent: int | None = None  # indent of the current parameter section's header
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"^\s*Example:\s*$", line):
            out.append(line.replace("Example:", "Examples:"))
            section_indent = None
            i += 1
            continue
        header = _PARAM_SECTIONS.match(line)
        if header:
            section_indent = len(header.group(1))
        elif line.strip() and section_indent is not None and _indent(line) <= section_indent:
            section_indent = None
        grouped = _GROUPED.match(line) if section_indent is not None else None
        if grouped and _indent(line) > section_indent:
            # the entry: this line plus its deeper-indented continuation lines
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > _indent(line)):
                j += 1
            while j > i + 1 and not lines[j - 1].strip():  # trailing blank lines stay outside
                j -= 1
            rest = lines[i + 1 : j]
            for name in re.split(r"\s*,\s*", grouped.group(2)):
                out.append(f"{grouped.group(1)}{name}:{grouped.group(3)}")
                out.extend(rest)
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class ProjectDocstrings(griffe.Extension):
    """Applies :func:`rewrite` to every docstring before griffe parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: D102
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: D102
        if obj.docstring is None or not (obj.is_function or obj.is_class):
            return
        try:
            params = obj.parameters
        except Exception:  # noqa: BLE001 -- a class without a resolvable __init__
            return
        if any(p.kind is griffe.ParameterKind.var_keyword for p in params):
            obj.docstring.parser_options = {
                **(obj.docstring.parser_options or {}), "warn_unknown_params": False, "warn_missing_types": False,
            }
