"""configs/train_binary.json merged over train.json trains a BinaryDenseNet (2-D and 3-D) and the
evaluation config runs on it."""

from __future__ import annotations

import csv

import pytest
from monai.bundle import ConfigParser

from medrobust.core.quantization import BinaryConv, BinaryDenseNet


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_binary_config_builds_binary_densenet(bundle_root, spatial_dims):
    parser = ConfigParser()
    parser.read_config([str(bundle_root / "configs" / f) for f in ("train.json", "train_binary.json")])
    parser.update({"spatial_dims": spatial_dims, "spatial_size": [16] * spatial_dims})
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, BinaryDenseNet)
    assert sum(isinstance(m, BinaryConv) for m in net.modules()) == 12
    assert parser.get_parsed_content("weight_decay") == 0.0  # weight decay would pull latent weights to zero
    assert "$import medrobust" in parser.get("imports")  # train.json's imports are kept ("+imports" merges)


def test_binary_train_and_evaluate_3d(run_workflow, synthetic_npz_3d, tmp_path):
    common = {"dataset_dir": str(synthetic_npz_3d), "ckpt_dir": str(tmp_path), "output_dir": str(tmp_path),
              "spatial_dims": 3, "spatial_size": [8, 8, 8], "batch_size": 8,
              "binary": {"init_features": 4, "growth_rate": 4, "block_config": [1, 1], "reduction": 2.0,
                         "dropout_prob": 0.0}}
    wf = run_workflow(["train.json", "train_binary.json"], epochs=1, **common)
    assert isinstance(wf.parser.get_parsed_content("network"), BinaryDenseNet)
    run_workflow(["train.json", "train_binary.json", "evaluate.json"], eval_eps="$[2 / 255]", eval_steps=2, **common)
    with open(tmp_path / "metrics.csv", newline="") as f:
        m = {r[0]: float(r[1]) for r in csv.reader(f) if len(r) == 2}
    assert {"auc", "accuracy", "robust_accuracy_eps2"} <= set(m)
