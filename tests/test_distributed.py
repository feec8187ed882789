"""medrobust.distributed: shards, backends, and ``medrobust sensitivity`` under torchrun (2 gloo processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from medrobust.distributed import backend_for, dist_context, merge_shards, shard_cases, shard_dir


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_shards_partition_the_cases(world):
    ids = [f"case{i}" for i in (5, 3, 9, 1, 0, 8, 2)]
    shards = [shard_cases(ids, rank=r, world_size=world) for r in range(world)]
    assert sorted(c for s in shards for c in s) == sorted(ids)
    assert shards == [shard_cases(list(reversed(ids)), rank=r, world_size=world) for r in range(world)]  # order-free


def test_backend_and_context(monkeypatch):
    assert backend_for("cpu") == "gloo" and backend_for("cuda:1") == "nccl"
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert dist_context().rank == 2 and dist_context().world_size == 4
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4"):
        dist_context()


def test_merge_refuses_incomplete_shards(tmp_path):
    with pytest.raises(ValueError, match="shard 0 of 2 has no manifest"):
        merge_shards(tmp_path, 2)
    for r in range(2):
        d = shard_dir(tmp_path, r, 2)
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({"identity": {"seed": r}, "status": "complete" if r else "running"}))
    with pytest.raises(ValueError, match="shard 0 of 2 is not complete"):
        merge_shards(tmp_path, 2)


def _dataset(root: Path, n: int = 9) -> Path:
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = ["case_id,label"]
    for i in range(n):
        Image.fromarray((rng.random((14, 12)) * 255).astype("uint8")).save(root / f"img{i}.png")
        rows.append(f"img{i},{i % 2}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def _model(path: Path) -> Path:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(3, 2))  # fmt: skip
    torch.jit.script(net.eval()).save(str(path))
    return path


def _sweep(model, data, out, *, ranks: int) -> subprocess.CompletedProcess | None:
    argv = ["sensitivity", "--model", str(model), "--input-size", "8", "8", "--data", str(data),
            "--labels", str(data / "labels.csv"), "--out", str(out), "--families", "gaussian_noise", "fourier_lowpass",
            "--severities", "0", "0.3", "1", "--no-progress", "--no-examples", "--roi-masks", "none"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if ranks == 1:  # in this process: the same command, without paying another interpreter start
        from medrobust.cli import main

        assert main(argv) == 0
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
               "-m", "medrobust", *argv]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _key(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["case_id", "family", "severity"]).reset_index(drop=True)


@pytest.mark.slow
def test_sensitivity_under_torchrun_equals_one_process_and_resumes(tmp_path):
    data, model = _dataset(tmp_path / "data"), _model(tmp_path / "m.ts")
    _sweep(model, data, tmp_path / "single", ranks=1)
    out = tmp_path / "two"
    _sweep(model, data, out, ranks=2)
    single = pd.read_csv(tmp_path / "single" / "predictions.csv", dtype={"case_id": str})
    merged = pd.read_csv(out / "predictions.csv", dtype={"case_id": str})
    pd.testing.assert_frame_equal(_key(single), _key(merged))  # bit-identical predictions
    shards = [pd.read_csv(shard_dir(out, r, 2) / "predictions.csv", dtype={"case_id": str}) for r in range(2)]
    assert set(shards[0].case_id).isdisjoint(shards[1].case_id) and len(shards[0]) + len(shards[1]) == len(single)
    s1, s2 = (pd.read_csv(p / "summary.csv") for p in (tmp_path / "single", out))
    pd.testing.assert_frame_equal(s1, s2)
    assert json.loads((out / "manifest.json").read_text())["identity"] == \
        json.loads((tmp_path / "single" / "manifest.json").read_text())["identity"]  # fmt: skip

    # rank 1 killed mid-sweep: its shard holds 2 rows and is not complete; the merged run is gone
    sd = shard_dir(out, 1, 2)
    lines = (sd / "predictions.csv").read_text().splitlines(keepends=True)
    (sd / "predictions.csv").write_text("".join(lines[:3]))
    m = json.loads((sd / "manifest.json").read_text())
    (sd / "manifest.json").write_text(json.dumps({**m, "status": "running"}))
    for name in ("predictions.csv", "manifest.json", "summary.csv", "errors.csv", "inputs.csv"):
        (out / name).unlink(missing_ok=True)
    _sweep(model, data, out, ranks=2)
    assert len(pd.read_csv(sd / "predictions.csv")) == len(shards[1])
    pd.testing.assert_frame_equal(_key(single), _key(pd.read_csv(out / "predictions.csv", dtype={"case_id": str})))
    pd.testing.assert_frame_equal(s1, pd.read_csv(out / "summary.csv"))


def test_rank_zero_raises_when_another_rank_failed(tmp_path, monkeypatch):
    from medrobust.distributed import DistContext, wait_for_ranks, write_status

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-1")
    write_status(tmp_path, DistContext(0, 2, 0), ok=True)
    write_status(tmp_path, DistContext(1, 2, 1), ok=False, error="ValueError: bad file")
    with pytest.raises(RuntimeError, match=r"rank 1 failed \(ValueError: bad file\)"):
        wait_for_ranks(tmp_path, 2, started=0.0, poll_s=0.01)
    write_status(tmp_path, DistContext(1, 2, 1), ok=True)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-2")  # status files of an earlier job do not count
    write_status(tmp_path, DistContext(0, 2, 0), ok=True)
    import threading

    done = threading.Event()
    t = threading.Thread(target=lambda: (wait_for_ranks(tmp_path, 2, started=0.0, poll_s=0.01), done.set()), daemon=True)
    t.start()
    assert not done.wait(0.3)  # still waiting for rank 1 of job-2
    write_status(tmp_path, DistContext(1, 2, 1), ok=True)
    assert done.wait(5)
