"""The card's units: resume after an interruption, and sharded over torchrun ranks with the one-process result.

Ranks are simulated in this process (torchrun's ``RANK`` / ``WORLD_SIZE`` set one after the other:
the ranks share only the output folder, so order does not matter) and, in the slow test, started
for real with ``torchrun --nproc_per_node 2`` (no process group is created: the ranks meet in the folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from medrobust.card import make_card
from medrobust.card.units import UnitStore, block_seed, blocks, identity_hash, run_units

from .conftest import TINY

BUDGET = replace(TINY, block_cases=3)


def _numbers(card: dict) -> dict:
    return {k: v for k, v in card.items() if k != "timings_s"}


def test_blocks_and_seeds_depend_on_case_ids_only():
    assert blocks(["c5", "c1", "c3", "c1"], 2) == [("c1", "c3"), ("c5",)]
    assert block_seed(0, "adversarial", ("a", "b")) == block_seed(0, "adversarial", ("a", "b"))
    assert len({block_seed(0, "adversarial", ("a", "b")), block_seed(0, "intrinsic", ("a", "b")),
                block_seed(1, "adversarial", ("a", "b")), block_seed(0, "adversarial", ("a", "c"))}) == 4  # fmt: skip
    with pytest.raises(ValueError, match="size should be >= 1"):
        blocks(["a"], 0)


def test_run_units_resumes_and_refuses_another_identity(tmp_path):
    calls = []

    def unit(k: int, fail: bool = False):
        def run():
            if fail:
                raise KeyboardInterrupt  # the job is killed here
            calls.append(k)
            return {"k": k, "x": k / 3}

        return run

    ident = {"seed": 0, "model": "abc"}
    with pytest.raises(KeyboardInterrupt):
        run_units({f"s/{k:05d}": unit(k, fail=k == 2) for k in range(4)}, tmp_path, ident)
    assert calls == [0, 1]
    res = run_units({f"s/{k:05d}": unit(k) for k in range(4)}, tmp_path, ident)
    assert calls == [0, 1, 2, 3] and res["s/00001"] == {"k": 1, "x": 1 / 3}  # only the missing units ran
    folder = tmp_path / "units" / identity_hash(ident)
    assert UnitStore(folder, ident).keys() == [f"s/{k:05d}" for k in range(4)]
    with pytest.raises(ValueError, match="another card"):
        UnitStore(folder, {"seed": 1})


def test_card_resumes_without_recomputing(card_inputs, tmp_path, monkeypatch):
    model, data, dims = card_inputs
    if dims == 3:
        pytest.skip("2-D is enough")
    budget = replace(BUDGET, sensitivity=False)
    first = make_card(model, data, tmp_path, labels=data / "labels.csv", budget=budget, input_size=(8, 8), progress=False)
    import medrobust.card.sections as sections

    def boom(*a, **k):
        raise AssertionError("recomputed a stored unit")

    for name in ("adversarial_counts", "autoattack_counts", "probabilistic_cases", "intrinsic_cases", "nmutant_counts"):
        monkeypatch.setattr(sections, name, boom)
    again = make_card(model, data, tmp_path, labels=data / "labels.csv", budget=budget, input_size=(8, 8), progress=False)
    assert _numbers(again.card) == _numbers(first.card)
    more = make_card(model, data, tmp_path, labels=data / "labels.csv", budget=replace(budget, n_boot=80), input_size=(8, 8),
                     progress=False)  # more bootstrap resamples: intervals recomputed from the stored units
    assert more.card["adversarial"] == first.card["adversarial"] and more.card["provenance"]["budget"]["n_boot"] == 80


def test_card_sharded_over_two_ranks_equals_one_process(card_inputs, tmp_path, ranks):
    model, data, dims = card_inputs
    if dims == 3:
        pytest.skip("2-D is enough (the units do not depend on dims)")
    kw = dict(labels=data / "labels.csv", budget=BUDGET, input_size=(8, 8), progress=False)
    single = make_card(model, data, tmp_path / "one", **kw)
    out = tmp_path / "two"
    ranks(1, 2)  # rank 1 first: stores its share and its sensitivity shard, writes no card
    r1 = make_card(model, data, out, **kw)
    assert not r1.written and not (out / "card.json").exists()
    ranks(0, 2)
    r0 = make_card(model, data, out, **kw)
    assert r0.written
    merged = json.loads((out / "card.json").read_text())
    assert _numbers(merged) == _numbers(json.loads(single.json.read_text()))
    assert merged["adversarial"]["rows"][0]["n"] == 8 and merged["sensitivity"]["n_cases"] == 24
    shards = sorted((out / "units").glob("*/shards/rank-*-of-002"))
    assert len(shards) == 2 and all(len(list(s.glob("*/*.json"))) > 0 for s in shards)

    # rank 1 killed: one of its units never written, the merged store and the card gone; the job started again
    root = next((out / "units").glob("*/manifest.json")).parent
    lost = sorted((root / "shards" / "rank-001-of-002" / "adversarial").glob("*.json"))[0]
    lost.unlink()
    for p in root.glob("*/*.json"):
        p.unlink()
    (out / "card.json").unlink()
    ranks(1, 2)
    assert not make_card(model, data, out, **kw).written
    ranks(0, 2)
    make_card(model, data, out, **kw)
    assert lost.is_file()
    status = [json.loads((root / "shards" / f"rank-00{r}-of-002.status.json").read_text()) for r in range(2)]
    assert status[0]["computed"] == 0 and status[1]["computed"] == 1  # only the lost unit was measured again
    assert _numbers(json.loads((out / "card.json").read_text())) == _numbers(json.loads(single.json.read_text()))


@pytest.mark.slow
def test_card_under_torchrun_equals_one_process(card_inputs, tmp_path):
    """``torchrun --nproc_per_node 2 -m medrobust card``: 2 real processes, the one-process card."""
    model, data, dims = card_inputs
    if dims == 3:
        pytest.skip("2-D is enough")
    argv = ["card", "--model", str(model), "--input-size", "8", "8", "--data", str(data), "--labels",
            str(data / "labels.csv"), "--attack-cases", "8", "--eps", "2", "16", "--pgd-steps", "3", "5",
            "--square-queries", "20", "--autoattack-iterations", "5", "--prob-cases", "2", "--prob-eps", "0.25",
            "--prob-delta", "0.25", "--prob-attack-steps", "2", "--intrinsic-steps", "3", "--nmutant-cases", "16",
            "--nmutant-mutants", "10", "--families", "gaussian_noise", "--n-boot", "50", "--block-cases", "3",
            "--no-progress", "--no-tracking", "--num-threads", "1"]  # fmt: skip
    from medrobust.cli import main

    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    single = json.loads((tmp_path / "one" / "card.json").read_text())
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "medrobust",
           *argv, "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _numbers(json.loads((out / "card.json").read_text())) == _numbers(single)

