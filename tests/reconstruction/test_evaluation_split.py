"""medrobust.reconstruction.evaluation: evaluating a subset of volumes (``volume_indices``) keeps every slice's
global index (mask, phase, attack seeds), and merging shards (``merge_split``) reproduces one evaluation exactly."""

from __future__ import annotations

import csv

import pytest
import torch

from medrobust.reconstruction import evaluation as ev
from medrobust.reconstruction.data import prepare_volume

SETTINGS = dict(accelerations=(4, 8), seed=3, fnaf_restarts=2, fnaf_size=3, pgd_steps=1, batch_size=2,
                fn_thresholds=(0.01,))  # fmt: skip


def _volumes(n: int = 3, slices: int = 3):
    g = torch.Generator().manual_seed(0)
    return [prepare_volume(f"v{i}", torch.rand(slices, 20, 20, generator=g) * 900, size=(16, 16)) for i in range(n)]


def _nets():
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        net.weight.copy_(torch.rand(net.weight.shape, generator=torch.Generator().manual_seed(1)) / 9)
        net.bias.zero_()
    return {"zero_filled": None, "net": net}


def _rows(d):
    return list(csv.DictReader(open(d / "per_volume.csv", newline="")))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """One evaluation of every volume (the single-process reference)."""
    vols, nets, out = _volumes(), _nets(), tmp_path_factory.mktemp("full")
    ev.evaluate_split(nets, vols, out, **SETTINGS)
    return vols, nets, out


@pytest.mark.parametrize("indices", [[1], [2, 0]])
def test_subset_rows_equal_full_rows(full, tmp_path, indices):
    vols, nets, out = full
    ev.evaluate_split(nets, vols, tmp_path, volume_indices=indices, **SETTINGS)
    ids = {vols[i].volume_id for i in indices}
    want = [r for r in _rows(out) if r["volume_id"] in ids]
    got = _rows(tmp_path)
    assert len(got) == len(want) == len(indices) * 2 * 2  # volumes x accelerations x models
    key = lambda r: (r["acceleration"], r["volume_id"], r["model"])  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)  # same text: same masks, phases and attack seeds


def test_merged_shards_equal_one_evaluation(full, tmp_path):
    vols, nets, out = full
    for r in range(2):  # round-robin shards, as evaluate_split_distributed deals them (one per rank)
        ev.evaluate_split(nets, vols, tmp_path / f"rank{r}", volume_indices=range(r, len(vols), 2), **SETTINGS)
    kw = {k: SETTINGS[k] for k in ("accelerations", "seed", "fn_thresholds")}
    summary = ev.merge_split([tmp_path / "rank0", tmp_path / "rank1"], tmp_path / "merged", models=list(nets), volumes=vols,
                             **kw)  # fmt: skip
    for name in ("per_volume.csv", "summary.json"):
        assert (tmp_path / "merged" / name).read_bytes() == (out / name).read_bytes(), name
    assert summary["net_x8"]["nmse"]["n"] == len(vols)


def test_distributed_without_process_group_is_one_evaluation(full, tmp_path):
    vols, nets, out = full
    ev.evaluate_split_distributed(nets, vols, tmp_path, **SETTINGS)
    assert (tmp_path / "per_volume.csv").read_bytes() == (out / "per_volume.csv").read_bytes()


def test_merge_split_missing_or_duplicated_rows(full, tmp_path):
    vols, nets, out = full
    kw = dict(models=list(nets), volumes=vols, accelerations=SETTINGS["accelerations"], seed=SETTINGS["seed"],
              fn_thresholds=SETTINGS["fn_thresholds"])  # fmt: skip
    ev.evaluate_split(nets, vols, tmp_path / "part", volume_indices=[0], **SETTINGS)
    with pytest.raises(ValueError, match="rows missing from the shards"):
        ev.merge_split([tmp_path / "part"], tmp_path / "m", **kw)
    with pytest.raises(ValueError, match="is in two shards"):
        ev.merge_split([out, tmp_path / "part"], tmp_path / "m", **kw)


@pytest.mark.parametrize("bad", [[3], [-1], [0, 0], [0.5], [True]])
def test_volume_indices_must_be_distinct_positions(tmp_path, bad):
    with pytest.raises(ValueError, match="volume_indices must be distinct ints"):
        ev.evaluate_split(_nets(), _volumes(), tmp_path, volume_indices=bad, **SETTINGS)
