"""python -m sample_data.generate: dispatch, idempotency via the manifest, missing generators skipped."""

from __future__ import annotations

import json

import pytest

import sample_data.generate as gen


def test_generate_idempotent_and_skips_missing(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(gen, "GENERATORS", {"mammo": "sample_data.mammograms:generate",
                                            "later": "sample_data.not_written_yet:generate"})
    with caplog.at_level("INFO"):
        done = gen.generate_all(tmp_path, n=4, seed=1)
    assert list(done) == ["mammo"] and "skipping later" in caplog.text
    folder = tmp_path / "mammo"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["n"] == 4 and manifest["seed"] == 1 and len(list((folder / "images").iterdir())) == 4
    stamp = (folder / "labels.csv").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level("INFO"):
        gen.generate_all(tmp_path, n=4, seed=1, only=["mammo"])
    assert "up to date" in caplog.text and (folder / "labels.csv").stat().st_mtime_ns == stamp
    gen.generate_all(tmp_path, n=5, seed=1, only=["mammo"])  # other parameters: regenerated, stale files gone
    assert len(list((folder / "images").iterdir())) == 5 and json.loads((folder / "manifest.json").read_text())["n"] == 5


def test_cli_arguments(tmp_path):
    assert gen.main(["--out", str(tmp_path), "--only", "mammo", "--n", "4", "--seed", "2"]) == 0
    assert (tmp_path / "mammo" / "labels.csv").is_file()
    with pytest.raises(ValueError, match="unknown generator"):
        gen.generate_all(tmp_path, only=["nope"])
    with pytest.raises(SystemExit):
        gen.main(["--out", str(tmp_path), "--n", "0"])
    foreign = tmp_path / "other" / "mammo"
    foreign.mkdir(parents=True)
    (foreign / "precious.dcm").write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        gen.generate_all(tmp_path / "other", only=["mammo"], n=4)
    assert (foreign / "precious.dcm").read_bytes() == b"user data"
