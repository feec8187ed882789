"""Shared checks of the bundles' ``multi_gpu_*.json`` overrides (not a test module).

- :func:`check_multi_gpu_wiring`: the merged configs parsed with MONAI's ConfigParser (no process group):
  every override has a parent, references resolve, DDP / DistributedSampler / backend wiring, and the
  handlers each rank keeps (``_disabled_`` evaluated as rank 1 would).
- :func:`torchrun_bundle`: the bundle's workflows really run in 2 gloo processes (``torchrun --nproc_per_node 2``
  as a subprocess); each rank saves its network's parameters, so the test can check that DDP kept them equal.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.utils import optional_import

__all__ = ["check_multi_gpu_wiring", "torchrun_bundle", "rank_parameters", "one_thread"]

# One process per rank: initialize, run, save this rank's network parameters, finalize (destroys the process group).
_SCRIPT = """
import json, os, sys, torch
from medrobust.models import bundle_imports, run_bundle_workflow
bundle, name, files, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
torch.set_num_threads(1)
wf = run_bundle_workflow(bundle, files, run=False, **overrides)
with bundle_imports(bundle):
    wf.run()
    net = wf.parser.get_parsed_content("network")
    net = getattr(net, "module", net)  # DDP-wrapped
    params = {k: v.detach().cpu() for k, v in net.named_parameters()}
    torch.save(params, os.path.join(overrides["output_dir"], "%s_rank%s.pt" % (name, os.environ["RANK"])))
    wf.finalize()
# Release the DDP network (its reducer holds the gloo process group) while the interpreter is alive: a gloo group
# destroyed during interpreter finalisation can abort the process (SIGABRT, "terminate called without an active
# exception"; pytorch/pytorch#179291), which happened about once in 10 launches here.
del wf, net
import gc
gc.collect()
"""


class _Dist:
    """Stands in for ``torch.distributed`` when a rank-dependent expression is resolved (no process group)."""

    def __init__(self, rank: int, world_size: int = 2) -> None:
        self.rank, self.world_size = rank, world_size

    def get_rank(self) -> int:
        return self.rank

    def get_world_size(self) -> int:
        return self.world_size


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_refs(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_refs(v) for v in value)) if value else set()
    return {m.replace("#", "::") for m in re.findall(r"@([\w:#]+)", value)} if isinstance(value, str) else set()


def _locate(target: str) -> type:
    for name in (target, f"monai.handlers.{target}"):
        module, _, attr = name.rpartition(".")
        cls, ok = optional_import(module, name=attr)
        if ok:
            return cls
    raise AssertionError(f"handler {target!r} not found")


def _stand_ins(parser: ConfigParser, lst: str) -> list[Any]:
    """The handlers of ``lst`` that rank 1 instantiates (``_disabled_`` resolved), as bare instances of their classes."""
    out = []
    for i, h in enumerate(parser[lst]):
        if isinstance(h, dict) and "_disabled_" in h and parser.get_parsed_content(f"{lst}::{i}::_disabled_"):
            continue
        out.append(object.__new__(_locate(h["_target_"])))
    return out


def check_multi_gpu_wiring(bundle: Path, files: Sequence[str], *, loaders: Mapping[str, bool],
                           handlers: Mapping[str, str], rank1: Mapping[str, Sequence[str]], monkeypatch: Any) -> ConfigParser:  # fmt: skip
    """Merge ``files`` (the multi-GPU override last) with MONAI's ConfigParser and check the wiring.

    - every id the override sets has a parent in the base configs and every ``@reference`` resolves;
    - ``network`` is DistributedDataParallel, the device comes from ``LOCAL_RANK``, the backend from
      ``medrobust.distributed.backend_for`` (no hard-coded nccl), the process group is destroyed;
    - ``loaders``: ``{dataloader id: shuffle expected of its DistributedSampler}``, the loader itself not shuffling;
    - ``handlers``: ``{handler-list expression id: handler list id}``; ``rank1``: the class names of the
      handlers left on rank 1 (torchrun's ``RANK=1``: the MLflow handler is disabled there).
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
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
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
    if "imports" in parser:
        parser.get_parsed_content("imports")  # the bundle's "$import ..." statements into the expressions' globals
    for expr, lst in handlers.items():  # resolve the rank-dependent lists on rank 1 with stand-in handlers
        parser[lst] = _stand_ins(parser, lst)
        got = [type(h).__name__ for h in parser.get_parsed_content(expr) or []]
        assert got == list(rank1[expr]), f"{expr} on rank 1: {got}"
    return parser


def torchrun_bundle(bundle: Path, jobs: Sequence[tuple[str, Sequence[str], Mapping[str, Any]]], tmp_path: Path,
                    *, timeout: float = 180) -> None:  # fmt: skip
    """Run each job (``(name, config files, overrides)``, in order) in 2 gloo processes, one torchrun launch per job
    (a second ``init_process_group`` in the same processes after ``destroy_process_group`` hangs under torchrun).

    Each rank writes ``<output_dir>/<name>_rank<r>.pt`` (its network's parameters) after its job.
    """
    script = tmp_path / "torchrun_bundle.py"
    script.write_text(_SCRIPT)
    for name, files, overrides in jobs:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               str(bundle), name, json.dumps(list(files)), json.dumps(dict(overrides))]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        assert r.returncode == 0, f"{name}: {r.stderr[-4000:]}"


def rank_parameters(out: Path, name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The parameters ranks 0 and 1 saved after job ``name``; checks they are equal (DDP all-reduced the gradients)."""
    w0, w1 = (torch.load(out / f"{name}_rank{i}.pt", weights_only=True) for i in (0, 1))
    assert w0.keys() == w1.keys() and len(w0) > 2
    unequal = [k for k in w0 if not torch.equal(w0[k], w1[k])]
    assert not unequal, f"parameters differ between the ranks: {unequal}"
    return w0, w1


@contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread, as each rank runs (the single-process reference then rounds like the ranks)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
