"""The one markdown table formatter and README-block writer."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from medrobust.markdown import markdown_table, write_between_markers


def test_table_formats_floats_nan_and_severity() -> None:
    df = pd.DataFrame({"severity": [0.25, 2.0], "auc": [0.5, math.nan], "n": [3, 4]})
    assert markdown_table(df, floatfmt=".2f").splitlines() == [
        "| severity | auc | n |", "|---|---|---|", "| 0.25 | 0.50 | 3 |", "| 2 | n/a | 4 |"]


@pytest.mark.parametrize("name", ["results", "robustness"])
def test_block_is_replaced_and_prose_kept(tmp_path, name) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n<!-- {name}:start -->\nold\n<!-- {name}:end -->\noutro\n")
    write_between_markers(readme, name, "| new |\n")
    write_between_markers(readme, name, "| newer |\n")  # idempotent structure: markers stay
    assert readme.read_text() == f"intro\n<!-- {name}:start -->\n| newer |\n<!-- {name}:end -->\noutro\n"


def test_missing_markers_or_file_are_named(tmp_path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("<!-- t:end --> <!-- t:start -->")
    with pytest.raises(ValueError, match=r"README.md: no <!-- t:start --> \.\.\. <!-- t:end --> markers"):
        write_between_markers(readme, "t", "x")
    with pytest.raises(FileNotFoundError, match="nope.md"):
        write_between_markers(tmp_path / "nope.md", "t", "x")
