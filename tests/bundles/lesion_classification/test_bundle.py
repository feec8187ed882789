"""lesion_classification bundle: metadata, network I/O, and train -> evaluate -> inference through
MONAI's ConfigWorkflow on tiny synthetic data (2-D natural and adversarial, 3-D), with outcomes checked."""

from __future__ import annotations

import csv
import json

import jsonschema
import pytest
import torch
from monai.bundle import verify_metadata, verify_net_in_out

from medrobust.core.defenses import (
    ADTEXP,
    TRADES,
    NoiseInjectionTraining,
    PGDAdversarialTraining,
    SIDPTraining,
    build_defense,
)
from medrobust.core.defenses.noise_injection import noisy_layers
from medrobust.models import bundle_parser, load_bundle_network

SMALL = {"spatial_size": [16, 16], "batch_size": 8, "learning_rate": 0.01}


def _metrics(path) -> dict[str, float]:
    with open(path, newline="") as f:
        return {r[0]: float(r[1]) for r in csv.reader(f) if len(r) == 2}


def test_metadata_matches_schema(bundle_root, meta_schema):
    meta = bundle_root / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta), filepath=str(meta_schema))  # raises on a schema violation
    m = json.loads(meta.read_text())
    broken = {k: v for k, v in m.items() if k != "network_data_format"}
    with pytest.raises(jsonschema.ValidationError, match="network_data_format"):
        jsonschema.validate(broken, json.loads(meta_schema.read_text()))
    assert m["version"] in m["changelog"]
    assert m["network_data_format"]["inputs"]["image"]["spatial_shape"] == [28, 28]


def test_verify_net_in_out(bundle_root):
    verify_net_in_out(net_id="network_def", meta_file=str(bundle_root / "configs" / "metadata.json"),
                      config_file=str(bundle_root / "configs" / "inference.json"))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_network_is_n_dimensional_and_small(bundle_root, spatial_dims):
    net = load_bundle_network(bundle_root, config_files=["train.json"], weights=None,
                              overrides={"spatial_dims": spatial_dims, "spatial_size": [16] * spatial_dims})
    out = net(torch.rand(3, 1, *[16] * spatial_dims))
    assert out.shape == (3, 2)
    assert sum(p.numel() for p in net.parameters()) < 300_000


def test_train_evaluate_infer_2d(run_workflow, synthetic_npz, tmp_path):
    ckpt, out = tmp_path / "models", tmp_path / "eval"
    common = {"dataset_dir": str(synthetic_npz), "ckpt_dir": str(ckpt), "output_dir": str(out), **SMALL}
    wf = run_workflow(["train.json"], epochs=10, **common)  # BatchNorm running stats need ~60 steps
    assert wf.trainer._process_function.__self__ is wf.trainer, "natural training uses MONAI's own iteration"
    assert (ckpt / "model.pt").is_file()
    state = torch.load(ckpt / "model.pt", weights_only=True, map_location="cpu")
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())

    run_workflow(["train.json", "evaluate.json"], eval_eps="$[2 / 255, 0.3]", eval_steps=3, **common)
    m = _metrics(out / "metrics.csv")
    assert set(m) >= {"auc", "accuracy", "ece", "robust_accuracy_eps2", "robust_auc_eps2", "robust_accuracy_eps76.5"}
    assert all(0.0 <= v <= 1.0 for v in m.values())
    assert m["auc"] > 0.9 and m["accuracy"] > 0.8, f"the synthetic task is easy: {m}"
    assert m["robust_accuracy_eps76.5"] < m["accuracy"], "a large PGD radius must hurt"

    run_workflow(["inference.json"], workflow_type="infer", dataset_dir=str(synthetic_npz),
                 ckpt_path=str(ckpt / "model.pt"), output_dir=str(out), spatial_size=[16, 16])
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 24 and rows[0][0] == "test_00000"
    probs = [float(r[1]) for r in rows]
    preds = [float(r[2]) for r in rows]
    assert all(0.0 <= p <= 1.0 for p in probs) and set(preds) <= {0.0, 1.0}
    # test images alternate malignant (label 1 after the BreastMNIST remap) / benign
    assert sum((p > 0.5) == (i % 2 == 0) for i, p in enumerate(probs)) >= 20


@pytest.mark.parametrize("defense, cls, opts", [("trades", TRADES, {"beta": 3.0}), ("pgd-at", PGDAdversarialTraining, {}),
                                               ("adt-exp", ADTEXP, {"lam": 0.05})])
def test_defense_selected_in_train_config(run_workflow, synthetic_npz, tmp_path, defense, cls, opts):
    wf = run_workflow(["train.json"], epochs=2, dataset_dir=str(synthetic_npz), ckpt_dir=str(tmp_path), defense=defense,
                      attack_steps=2, **opts, **SMALL)
    step = wf.trainer._process_function
    assert isinstance(step, cls) and step.steps == 2 and step.eps == pytest.approx(2 / 255)
    if defense == "trades":
        assert step.beta == 3.0
    if defense == "adt-exp":
        assert step.lam == 0.05
    assert "val_robust_accuracy_eps2" in wf.parser.get_parsed_content("validate::evaluator").state.metrics
    assert (tmp_path / "model.pt").is_file()


@pytest.mark.parametrize("defense, kind, per_channel", [("pni-w", "pni", False), ("pni-c", "pni", True), ("cni", "cni", False),
                                                      ("sidp", None, False)])
def test_randomised_and_private_defenses_selected_in_train_config(run_workflow, synthetic_npz, tmp_path, defense, kind,
                                                                 per_channel):
    wf = run_workflow(["train.json"], epochs=1, dataset_dir=str(synthetic_npz), ckpt_dir=str(tmp_path), defense=defense,
                      attack_steps=2, **SMALL)
    step, net = wf.trainer._process_function, wf.parser.get_parsed_content("network")
    if kind is None:  # SIDP: the BatchNorm network was made non-affine in place, and trained
        assert isinstance(step, SIDPTraining) and step.convert_normalization and step.last_noise_scale > 0
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
        assert any(isinstance(m, torch.nn.GroupNorm) and not m.affine for m in net.modules())
    else:  # PNI/CNI: the trainer's network is noisy, and its noise parameters are in the optimiser
        assert isinstance(step, NoiseInjectionTraining) and step.steps == 2 and step.eps == pytest.approx(2 / 255)
        layers = noisy_layers(net)
        assert len(layers) == 5 and all(m.kind == kind for m in layers)
        assert all((m.alpha.numel() > 1) == per_channel for m in layers if kind == "pni")
        noise_ids = {id(p) for m in layers for p in m.parameters(recurse=False)}
        last = wf.trainer.optimizer.param_groups[-1]
        assert {id(p) for p in last["params"]} == noise_ids and last["weight_decay"] == 0.0
        x = torch.rand(2, 1, 16, 16)
        assert not torch.equal(net.eval()(x), net(x)), "the noise stays on in eval mode"
    assert "val_robust_accuracy_eps2" in wf.parser.get_parsed_content("validate::evaluator").state.metrics
    assert (tmp_path / "model.pt").is_file()


def test_train_evaluate_3d(run_workflow, synthetic_npz_3d, tmp_path):
    common = {"dataset_dir": str(synthetic_npz_3d), "ckpt_dir": str(tmp_path), "output_dir": str(tmp_path),
              "spatial_dims": 3, "spatial_size": [8, 8, 8], "batch_size": 8, "learning_rate": 0.01}
    run_workflow(["train.json"], epochs=2, defense="fast-fgsm", **common)
    run_workflow(["train.json", "evaluate.json"], eval_eps="$[2 / 255]", eval_steps=2, **common)
    m = _metrics(tmp_path / "metrics.csv")
    assert {"auc", "accuracy", "robust_accuracy_eps2"} <= set(m) and all(0.0 <= v <= 1.0 for v in m.values())


def test_method_defaults_apply_when_attack_steps_unset(bundle_root):
    parser = bundle_parser(bundle_root, ["train.json"], overrides={"defense": "adt-exp"})
    assert parser.get_parsed_content("defense_step").steps == 7, "ADT-EXP's 7 inner steps (METHODS.md)"
    parser.update({"defense": "trades"})
    parser.parse(reset=True)
    assert parser.get_parsed_content("defense_step").steps == 10
    assert build_defense("none", eps=0.1) is None
