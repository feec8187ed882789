"""multi_gpu_train.json / multi_gpu_evaluate.json: wiring checked on the merged configs (MONAI ConfigParser, no
process group; the helper is shared with the other bundles), and two gloo processes (torchrun) train the bundle one
tiny epoch with DDP keeping the weights equal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from .conftest import BUNDLE

_SCRIPT = """
import os, sys, torch
from medrobust.models import bundle_imports, run_bundle_workflow
bundle, data, out = sys.argv[1:4]
wf = run_bundle_workflow(bundle, ["train.json", "multi_gpu_train.json"], dataset_dir=data, ckpt_dir=out, output_dir=out,
                         epochs=1, num_threads=1, spatial_size=[16, 16], batch_size=8, run=False)
with bundle_imports(bundle):
    wf.run()
    net = wf.parser.get_parsed_content("network")
    state = {k: v.detach().cpu() for k, v in net.module.named_parameters()}
    torch.save(state, os.path.join(out, "rank%s.pt" % os.environ["RANK"]))
    wf.finalize()
"""


class _Dist:
    """Stands in for ``torch.distributed`` when a rank-dependent expression is resolved (no process group)."""

    def __init__(self, rank: int, world_size: int = 2) -> None:
        self.rank, self.world_size = rank, world_size

    def get_rank(self) -> int:
        return self.rank

    def get_world_size(self) -> int:
        return self.world_size


def _refs(value) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_refs(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_refs(v) for v in value)) if value else set()
    return {m.replace("#", "::") for m in re.findall(r"@([\w:#]+)", value)} if isinstance(value, str) else set()


def check_multi_gpu_wiring(bundle: Path, files: list[str], *, loaders: dict[str, bool], handlers: dict[str, str],
                           rank1: dict[str, list[str]]) -> ConfigParser:  # fmt: skip
    """Merge ``files`` (the multi-GPU override last) with MONAI's ConfigParser and check the wiring.

    - every id the override sets has a parent in the base configs and every ``@reference`` resolves;
    - ``network`` is DistributedDataParallel, the device comes from ``LOCAL_RANK``, the backend from
      ``medrobust.distributed.backend_for`` (no hard-coded nccl), the process group is destroyed;
    - ``loaders``: ``{dataloader id: shuffle expected of its DistributedSampler}``, the loader itself not shuffling;
    - ``handlers``: ``{handler-list expression id: handler list id}``; ``rank1``: the handler ``_target_``
      names left on rank 1 (rank 0 keeps the whole list).
    """
    cfg = bundle / "configs"
    base, override = ConfigParser(), json.loads((cfg / files[-1]).read_text())
    base.read_config([str(cfg / f) for f in files[:-1]])
    for key in override:
        parent = key.replace("#", "::").rsplit("::", 1)[0]
        assert "::" not in key.replace("#", "::") or parent in base, f"{files[-1]}: {key} has no parent {parent}"
    parser = ConfigParser(globals={"dist": _Dist(1), "os": "os"})
    parser.read_config([str(cfg / f) for f in files])
    init, fin = " ".join(parser["initialize"]), " ".join(parser["finalize"])
    # "$import torch.distributed as dist" would replace the stand-in as soon as the config is parsed
    parser["initialize"] = [x for x in parser["initialize"] if x != "$import torch.distributed as dist"]
    missing = sorted(r for r in _refs(override) if r not in parser)
    assert not missing, f"{files[-1]}: unresolved references {missing}"
    assert parser["network"]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
    assert "@network_def" in parser["network"]["module"]
    os.environ.setdefault("LOCAL_RANK", "0")
    assert parser.get_parsed_content("device").type in ("cpu", "cuda")
    assert "import torch.distributed as dist" in init
    assert "init_process_group(backend=medrobust.distributed.backend_for(@device))" in init and "nccl" not in init
    assert "destroy_process_group" in fin
    for loader, shuffle in loaders.items():
        ref = parser[f"{loader}::sampler"]
        sampler = parser[ref.lstrip("@")]
        assert sampler["_target_"] == "DistributedSampler" and sampler["shuffle"] is shuffle
        assert sampler["dataset"] == parser[f"{loader}::dataset"]  # the loader's own dataset
        assert parser[f"{loader}::shuffle"] is False  # the sampler shuffles
    for expr, lst in handlers.items():  # resolve the rank-dependent lists on rank 1 with names for handlers
        parser[lst] = [h["_target_"] for h in parser[lst]]
        got = parser.get_parsed_content(expr) or []
        assert got == rank1[expr], f"{expr} on rank 1: {got}"
    return parser


def test_multi_gpu_config_follows_monai_convention():
    stats_checkpoint = ["StatsHandler", "CheckpointSaver"]
    parser = check_multi_gpu_wiring(
        BUNDLE, ["train.json", "multi_gpu_train.json"], loaders={"train::dataloader": True, "validate::dataloader": False},
        handlers={"train::trainer::train_handlers": "train::handlers", "validate::evaluator::val_handlers": "validate::handlers"},
        rank1={"train::trainer::train_handlers": ["LrScheduleHandler", "ValidationHandler"],
               "validate::evaluator::val_handlers": []})  # fmt: skip
    assert not set(stats_checkpoint) & set(parser.get_parsed_content("train::trainer::train_handlers"))
    assert "require_even_split(len(@validate::datalist)" in " ".join(parser["initialize"])


def test_multi_gpu_evaluate_config():
    parser = check_multi_gpu_wiring(BUNDLE, ["train.json", "evaluate.json", "multi_gpu_evaluate.json"],
                                    loaders={"validate::dataloader": False}, handlers={}, rank1={})  # fmt: skip
    assert parser["validate::evaluator::network"] == "$@network.module"  # uneven shards: no DDP collectives in eval
    names = [h["_target_"] for h in parser["validate::handlers"]]
    assert names == ["CheckpointLoader", "StatsHandler", "MetricsSaver"]  # MetricsSaver gathers: every rank keeps it
    assert parser.get_parsed_content("validate::handlers::1::_disabled_") is True  # StatsHandler off on rank 1
    assert "require_even_split(len(@validate::datalist)" in " ".join(parser["initialize"])


@pytest.mark.slow
def test_two_gloo_processes_train_with_synchronised_weights(synthetic_npz, tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(BUNDLE), str(synthetic_npz), str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    w0, w1 = (torch.load(out / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    assert w0.keys() == w1.keys() and len(w0) > 4
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # gradients all-reduced: identical parameters on both ranks
    saved = torch.load(out / "model.pt", weights_only=True)  # rank 0's CheckpointSaver (DDP unwrapped)
    assert all(torch.equal(saved[k], w0[k]) for k in w0)
