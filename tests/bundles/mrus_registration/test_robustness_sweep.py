"""The bundle's robustness sweep on the shipped weights: tables with CIs, masking checks, resumable cells, README untouched."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BUNDLE = Path(__file__).resolve().parents[3] / "bundles" / "mrus_registration"
DATA = BUNDLE.parents[1].parent / "shared" / "data" / "mrus_dev"


def _sweep():
    spec = importlib.util.spec_from_file_location("mrus_robustness_sweep_t", BUNDLE / "scripts" / "robustness_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "fixed_images").is_dir() or not (BUNDLE / "models" / "model.pt").is_file(),
                    reason="needs ../shared/data/mrus_dev and the shipped weights")
def test_sweep_writes_ci_tables_and_masking_checks_and_resumes(tmp_path):
    readme = (BUNDLE / "docs" / "README.md").read_bytes()
    weights = str(BUNDLE / "models" / "model.pt")
    argv = ["--num_threads", "1", "--ids", "obs024", "obs027", "--eps", "0.01", "--steps", "1", "--checks", "--noise_draws", "1",
            "--queries", "2", "--name", "shipped", "--model", f"again={weights}", "--out", str(tmp_path)]
    assert _sweep().main(argv) == 0
    table = (tmp_path / "robustness.md").read_text()
    assert "| shipped | 2 |" in table and "TRE increase at eps 0.01" in table and "95 % bootstrap CI" in table
    assert "sign noise" in table and "another pair" in table and "Square (2 queries)" in table and "transfer from first row" in table
    res = json.loads((tmp_path / "robustness.json").read_text())
    assert set(res["checks"]["again"]) == {"pgd", "noise", "square", "swap", "transfer"} and "transfer" not in res["checks"]["shipped"]
    # the same weights under another name: identical clean and PGD cells (the cache is keyed by weights and settings)
    assert res["sweep"]["again"]["0.01"] == res["sweep"]["shipped"]["0.01"]
    cells = sorted(p.name for p in (tmp_path / "cells").iterdir())
    mtimes = [(tmp_path / "cells" / c).stat().st_mtime_ns for c in cells]
    assert _sweep().main(argv) == 0  # resumes: every cell read back, none recomputed
    assert [(tmp_path / "cells" / c).stat().st_mtime_ns for c in cells] == mtimes
    assert (BUNDLE / "docs" / "README.md").read_bytes() == readme  # no --update_readme, no README change


def test_cells_are_keyed_by_weights_content_not_path(tmp_path):
    sweep = _sweep()
    a, b, c = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"
    a.write_bytes(b"weights one")
    b.write_bytes(b"weights one")
    c.write_bytes(b"weights two")
    args = ("pgd", 0.01, ["obs000"], {}, {"steps": 20}, ["train.json"])
    assert sweep.cell_key(a, None, *args) == sweep.cell_key(b, None, *args)  # a copy attacks the same network
    assert sweep.cell_key(a, None, *args) != sweep.cell_key(c, None, *args)  # replaced weights are not served from cache
    assert sweep.cell_key(a, None, *args) != sweep.cell_key(a, None, *args[:-1], ["inference.json"])
