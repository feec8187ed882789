"""``medrobust metrics`` end to end on tiny 2-D and 3-D MedMNIST-style files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medrobust.cli import main


def _setup(tmp_path, spatial: tuple[int, ...], seed: int = 0):
    from monai.networks.nets import Classifier

    shape = [1, *spatial]
    cfg = {"network_def": {"_target_": "monai.networks.nets.Classifier", "in_shape": shape, "classes": 2,
                           "channels": [4, 8], "strides": [2, 2]},
           "spatial_shape": list(spatial), "num_channels": 1}  # fmt: skip
    (tmp_path / "net.json").write_text(json.dumps(cfg))
    for name, s in (("model.pt", seed), ("robust.pt", seed + 1)):
        with torch.random.fork_rng():
            torch.manual_seed(s)
            net = Classifier(in_shape=shape, classes=2, channels=[4, 8], strides=[2, 2])
        torch.save(net.state_dict(), tmp_path / name)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", 8), ("val", 8), ("test", 12)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, *spatial), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(tmp_path / "data.npz", **arrays)
    return ["--model", str(tmp_path / "model.pt"), "--network-config", str(tmp_path / "net.json"),
            "--data", str(tmp_path / "data.npz"), "--steps", "2", "--ig-steps", "8", "--seed", "0"]  # fmt: skip


def test_cli_2d_all_cheap_measures(tmp_path):
    base = _setup(tmp_path, (12, 12))
    out = tmp_path / "out"
    measures = "classification,intrinsic,surface,ig,deepshap,fisher,occlusion,purification,nmutant"
    rc = main(["metrics", *base, "--measures", measures, "--robust-model", str(tmp_path / "robust.pt"),
               "--label-map", "0:1,1:0", "--max-detail", "3", "--out", str(out)])  # fmt: skip
    assert rc == 0
    for f in ("per_sample.csv", "summary.csv", "summary.json", "loss_surface.png", "attributions.png",
              "occlusion_baselines.png", "occlusion_spearman.csv", "purification.csv", "filters.png", "nmutant.csv"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    per = pd.read_csv(out / "per_sample.csv")
    assert len(per) == 12 and {"intrinsic_psi", "gini_ig", "gini_deepshap", "fisher_information"} <= set(per.columns)
    assert per["label"].tolist() == [1, 0] * 6  # the label map was applied
    summary = pd.read_csv(out / "summary.csv")
    assert {"accuracy", "auc", "robust_accuracy", "intrinsic_robustness", "gini_ig"} <= set(summary["measure"])
    assert float(summary.loc[summary.measure == "intrinsic_robustness", "value"].iloc[0]) == pytest.approx(
        per["intrinsic_psi"].mean(), rel=1e-5)  # fmt: skip
    assert len(pd.read_csv(out / "nmutant.csv")) == 2 * 3


def test_cli_3d_flatness_probabilistic(tmp_path):
    base = _setup(tmp_path, (8, 8, 8), seed=2)
    out = tmp_path / "out3"
    rc = main(["metrics", *base, "--measures", "classification,intrinsic,ig,flatness,probabilistic", "--limit", "4",
               "--flatness-samples", "1", "--flatness-iterations", "1", "--max-detail", "1", "--out", str(out)])  # fmt: skip
    assert rc == 0
    summary = pd.read_csv(out / "summary.csv")
    assert {"average_flatness", "worst_flatness", "probabilistic_robustness_mean"} <= set(summary["measure"])
    assert "upper bound" in (out / "probabilistic_guarantee.txt").read_text()
    assert len(pd.read_csv(out / "per_sample.csv")) == 4


def test_cli_errors(tmp_path):
    base = _setup(tmp_path, (12, 12))
    assert main(["metrics", *base, "--measures", "intrinsic,colour", "--out", str(tmp_path / "o")]) == 2
    bad = [a if a != str(tmp_path / "data.npz") else str(tmp_path / "missing.npz") for a in base]
    assert main(["metrics", *bad, "--out", str(tmp_path / "o")]) == 2
    assert main(["metrics", *base, "--measures", "purification", "--out", str(tmp_path / "o")]) == 2
