"""multi_gpu_train.json: two gloo processes (torchrun) train the bundle one tiny epoch; DDP keeps the weights equal."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

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


def test_multi_gpu_config_follows_monai_convention():
    cfg = json.loads((BUNDLE / "configs" / "multi_gpu_train.json").read_text())
    assert cfg["network"]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
    assert cfg["train::sampler"]["_target_"] == "DistributedSampler" and cfg["train::dataloader::shuffle"] is False
    assert "get_rank() == 0" in cfg["train::trainer::train_handlers"]  # LR schedule + validation only on other ranks
    init = " ".join(cfg["initialize"])
    assert "backend_for(@device)" in init and "'nccl'" not in init  # gloo on CPU, nccl on GPU


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
