"""Write a card's headline into a MONAI bundle's ``configs/metadata.json`` (a ``robustness`` block).

The MONAI metadata schema allows extra top-level keys, so the block keeps the file valid; when a
schema file is given the result is validated (``jsonschema``) *before* the file is replaced, and
the replacement is atomic (write to a temporary file, then rename), so a failed write never
leaves a broken metadata file.

Example:
    >>> import json, tempfile, pathlib
    >>> b = pathlib.Path(tempfile.mkdtemp()); (b / "configs").mkdir()
    >>> _ = (b / "configs" / "metadata.json").write_text(json.dumps({"version": "0.1.0"}))
    >>> p = write_robustness_metadata(b, {"headline": {"clean_accuracy": 0.9}, "provenance": {"data_sha256": "ab",
    ...     "seed": 0, "versions": {"medrobust": "0.1.0"}}})
    >>> json.loads(p.read_text())["robustness"]["clean_accuracy"]
    0.9
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["robustness_block", "write_robustness_metadata"]


def robustness_block(card: Mapping[str, Any]) -> dict[str, Any]:
    """The ``robustness`` block: the card's headline plus what it was measured on."""
    prov = card["provenance"]
    return {**card["headline"], "data_sha256": prov["data_sha256"], "seed": prov["seed"],
            "medrobust_version": prov["versions"].get("medrobust"),
            "generated_by": "medrobust card (card.json holds the intervals and budgets)"}  # fmt: skip


def write_robustness_metadata(bundle: str | Path, card: Mapping[str, Any], *, schema: str | Path | None = None) -> Path:
    """Set ``robustness`` in ``bundle/configs/metadata.json``; returns its path.

    Raises:
        FileNotFoundError: no ``configs/metadata.json`` (or schema file).
        ValueError: the updated metadata does not validate against ``schema`` (the file is left unchanged).
    """
    path = Path(bundle) / "configs" / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"bundle {bundle}: {path} not found; cannot write the robustness block.")
    meta = json.loads(path.read_text())
    meta["robustness"] = robustness_block(card)
    if schema is not None:
        import jsonschema

        try:
            jsonschema.validate(meta, json.loads(Path(schema).read_text()))
        except jsonschema.ValidationError as e:
            raise ValueError(f"{path}: metadata with the robustness block fails {schema}: {e.message}") from None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".metadata.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(meta, indent=4) + "\n")
    os.replace(tmp, path)
    return path
