"""``medrobust simulate`` writes DDFs and a parameter table, and reuses its cache."""

from __future__ import annotations

import argparse
import csv
import json

import nibabel as nib
import numpy as np
import pytest

from medrobust.commands import simulate as cli


def _parse(argv):
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_simulate_writes_ddfs_csv_and_cache(tmp_path):
    out = tmp_path / "sims"
    args = _parse(["simulate", "--n", "2", "--out", str(out), "--seed", "4", "--spacing", "5", "--size", "10", "12", "10",
                   "--element-size", "12", "--no-progress"])
    assert args.func(args) == 0
    rows = list(csv.DictReader(open(out / "simulations.csv")))
    assert [r["file"] for r in rows] == ["sim_0000.nii.gz", "sim_0001.nii.gz"]
    assert all(0.45 <= float(r["nu_gland"]) <= 0.49 for r in rows)
    img = nib.load(out / "sim_0000.nii.gz")
    assert img.shape == (10, 12, 10, 1, 3)
    np.testing.assert_allclose(img.affine, np.diag([5.0, 5.0, 5.0, 1.0]))
    mm = np.linalg.norm(np.asarray(img.dataobj), axis=-1)
    assert 0.5 < mm.max() == pytest.approx(float(rows[0]["max_displacement_mm"]), rel=1e-4)
    assert len(list((out / ".cache").glob("*.npz"))) == 2
    grid = json.loads((out / "grid.json").read_text())
    assert grid["shape"] == [10, 12, 10]
    before = (out / "sim_0001.nii.gz").read_bytes()
    args2 = _parse(["simulate", "--n", "2", "--out", str(out), "--seed", "4", "--spacing", "5", "--size", "10", "12", "10",
                    "--element-size", "12", "--no-progress"])
    assert args2.func(args2) == 0
    assert (out / "sim_0001.nii.gz").read_bytes() == before  # same seed, served from the cache
    assert not np.array_equal(np.asarray(img.dataobj), np.asarray(nib.load(out / "sim_0001.nii.gz").dataobj))


@pytest.mark.parametrize("n", ["0", "-3", "two"])
def test_simulate_rejects_bad_n(tmp_path, capsys, n):
    from medrobust.cli import main

    with pytest.raises(SystemExit) as e:
        main(["simulate", "--n", n, "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "--n: expected an integer >= 1" in capsys.readouterr().err


def test_simulate_config_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="n must be >= 1"):
        cli.SimulateConfig(n=0, out=tmp_path)
    with pytest.raises(ValueError, match="spacing and element_size must be > 0"):
        cli.SimulateConfig(n=1, out=tmp_path, spacing=0.0)
