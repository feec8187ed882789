"""Tests of the ``mammogram_perturbation_sensitivity`` MONAI bundle, the way the model zoo tests bundles.

Metadata against the schema, network in/out shapes, then train -> train+evaluate -> inference
through ``monai.bundle.ConfigWorkflow`` on tiny generated mammograms, the sensitivity config,
the shipped weights on a freshly generated held-out set, and the CLI from the repository root
and from the bundle root.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medrobust.core.metrics.classification import binary_auc
from medrobust.models import bundle_parser, load_bundle_network, run_bundle_workflow

REPO_ROOT = Path(__file__).resolve().parents[3]
BUNDLE = REPO_ROOT / "bundles" / "mammogram_perturbation_sensitivity"
CONFIGS = BUNDLE / "configs"
META = CONFIGS / "metadata.json"
TINY_SIZE = [80, 64]  # network input for the shrunken workflow runs (the conv stack with global max pooling takes any size)

# Held-out check of the shipped weights. "Clearly better than chance" is taken as AUC >= 0.70 on 40
# fresh cases (20 per class; the AUC's standard error there is about 0.08, so 0.70 is about 2.5
# standard errors above 0.5). See docs/README.md ("Results") for the shipped model's measured AUCs.
HELDOUT_N, HELDOUT_SEED, HELDOUT_MIN_AUC = 40, 4242, 0.70


def _load_make_dataset():
    """The bundle's ``scripts/make_dataset.py`` under a private module name (no ``scripts`` clash)."""
    spec = importlib.util.spec_from_file_location("_mps_bundle_make_dataset", BUNDLE / "scripts" / "make_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return [row for row in csv.reader(f) if row]


def _run(config_files: list[str], workflow_type: str | None, **overrides):
    """The library's workflow runner (initialize, check properties, run, finalize) with this bundle's logging."""
    return run_bundle_workflow(BUNDLE, config_files, workflow_type=workflow_type, logging_file=CONFIGS / "logging.conf",
                               **overrides)


@pytest.fixture(autouse=True)
def _isolate(monkeypatch):
    """Keep sys.path as it was (the bundle runner restores it; the CLI tests' subprocesses do not touch
    it). One torch thread: the workflows here run tiny tensors, where thread hand-offs cost more than they gain."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """8 small synthetic mammograms (both classes, both subgroups) written by the bundle's script."""
    out = _load_make_dataset().make_dataset(tmp_path_factory.mktemp("mps_tiny"), n=8, seed=11, size=(256, 208))
    assert (out / "labels.csv").is_file()
    return out


def test_metadata_valid(meta_schema):
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(META), filepath=str(meta_schema))  # raises on schema violations
    meta = json.loads(META.read_text())
    assert meta["version"] in meta["changelog"]
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == 1 and image["value_range"] == [0, 1]
    assert pred["num_channels"] == 2 and pred["channel_def"]["1"] == "malignant"


def test_verify_net_in_out():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=str(META), config_file=str(CONFIGS / "inference.json"), device="cpu")


def test_ckpt_export_torchscript_matches_eager(tmp_path):
    """The zoo's ckpt_export: TorchScript of network_def + the shipped weights gives the eager logits."""
    from monai.bundle import ckpt_export

    ts_path = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def", filepath=str(ts_path), ckpt_file=str(BUNDLE / "models" / "model.pt"),
        meta_file=str(META), config_file=str(CONFIGS / "inference.json"), bundle_root=str(BUNDLE),
    )  # fmt: skip
    scripted = torch.jit.load(str(ts_path), map_location="cpu").eval()
    net = load_bundle_network(BUNDLE)
    x = torch.rand(2, 1, 320, 256, generator=torch.Generator().manual_seed(0))  # batch of 2
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net.eval()(x), rtol=1e-4, atol=1e-5)


def test_configs_agree_on_network_and_preprocessing():
    """train.json and inference.json must build the same network and the same model input."""
    train = json.loads((CONFIGS / "train.json").read_text())
    infer = json.loads((CONFIGS / "inference.json").read_text())
    meta = json.loads(META.read_text())
    assert train["network_layers"] == infer["network_layers"] and train["network_def"] == infer["network_def"]
    assert train["deterministic_transforms"] == infer["preprocessing"]["transforms"]
    shape = meta["network_data_format"]["inputs"]["image"]["spatial_shape"]
    assert train["image_size"] == infer["image_size"] == shape


def test_preprocessing_matches_sensitivity_engine(tiny_data):
    """The bundle's preprocessing gives exactly what medrobust.sensitivity feeds the model."""
    from medrobust.data import load_image, scan_dataset
    from medrobust.data.preprocess import normalise_image, to_model_input

    parser = bundle_parser(BUNDLE, ["inference.json"], overrides={"image_size": TINY_SIZE})
    transform = parser.get_parsed_content("preprocessing")
    item = scan_dataset(tiny_data)[0][0]
    out = transform({"image": item, "case_id": item.case_id})["image"]
    ref = to_model_input(normalise_image(load_image(item).array)[None], TINY_SIZE, 1)[0]
    assert tuple(out.shape) == (1, *TINY_SIZE)
    torch.testing.assert_close(torch.as_tensor(out), ref)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.slow
def test_train_evaluate_infer_workflows(tiny_data, tmp_path):
    """patch stage -> whole-image train -> train+evaluate -> inference, each initialize/check_properties/run/finalize."""
    shipped = BUNDLE / "models" / "model.pt"
    shipped_before = shipped.read_bytes() if shipped.is_file() else None
    common = {
        "dataset_dir": str(tiny_data),
        "image_size": TINY_SIZE,
        "num_workers": 0,
    }
    train_over = {
        **common,
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "eval"),
        "max_epochs": 1,
        "batch_size": 4,
    }
    patch_over = {**train_over, "ckpt_dir": str(tmp_path / "patch"), "output_dir": str(tmp_path / "patch"), "patch_size": [32, 32]}
    _run(["train.json", "train_patch.json"], "train", **patch_over)
    patch_ckpt = tmp_path / "patch" / "model.pt"
    assert patch_ckpt.is_file()

    _run(["train.json"], "train", **train_over, pretrained_ckpt=str(patch_ckpt))
    ckpt = tmp_path / "models" / "model.pt"
    assert ckpt.is_file()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    load_bundle_network(BUNDLE, weights=ckpt)  # strict: a plain state dict of exactly this network

    _run(["train.json", "evaluate.json"], "train", **train_over, eval_split="all")
    metrics = {row[0]: float(row[1]) for row in _read_rows(tmp_path / "eval" / "metrics.csv")}
    assert set(metrics) == {"val_auc", "val_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values()), metrics
    eval_rows = _read_rows(tmp_path / "eval" / "predictions.csv")
    assert len(eval_rows) == 8  # eval_split=all: every labelled image

    _run(
        ["inference.json"],
        "infer",
        **common,
        ckpt_path=str(ckpt),
        output_dir=str(tmp_path / "infer"),
        batch_size=3,  # 8 images: a short last batch
    )
    rows = _read_rows(tmp_path / "infer" / "predictions.csv")
    case_ids = {r[0] for r in _read_rows(tiny_data / "labels.csv")[1:]}
    assert sorted(r[0] for r in rows) == sorted(case_ids)
    probs = np.array([float(r[1]) for r in rows])
    assert probs.shape == (8,) and np.all((probs >= 0) & (probs <= 1))
    # the same weights in evaluate and inference give the same probabilities
    eval_probs = {r[0]: float(r[1]) for r in eval_rows}
    np.testing.assert_allclose([eval_probs[r[0]] for r in rows], probs, rtol=1e-4, atol=1e-5)
    # the overrides kept every output in tmp_path: the shipped weights are untouched
    assert (shipped.read_bytes() if shipped.is_file() else None) == shipped_before


@pytest.mark.slow
def test_sensitivity_config_runs_main_job(tiny_data, tmp_path):
    """configs/sensitivity.json drives medrobust's run_sensitivity with this bundle's model."""
    out = tmp_path / "sens"
    _run(
        ["sensitivity.json"],
        None,
        dataset_dir=str(tiny_data),
        output_dir=str(out),
        families=["gaussian_noise", "fourier_lowpass"],
        severities=[0.0, 0.5],
        progress=False,
        device="cpu",
    )
    assert (out / "report.md").is_file()
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["case_id"] for r in rows} == {r[0] for r in _read_rows(tiny_data / "labels.csv")[1:]}
    assert {r["family"] for r in rows} >= {"gaussian_noise", "fourier_lowpass"}


@pytest.fixture(scope="module")
def heldout_data(tmp_path_factory) -> Path:
    """A fresh full-size (1024 x 832) held-out set, seed different from training (1234) and demo (0)."""
    return _load_make_dataset().make_dataset(tmp_path_factory.mktemp("mps_heldout"), n=HELDOUT_N, seed=HELDOUT_SEED)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = "1"  # small CPU runs in a shared test machine: no thread oversubscription
    return env


@pytest.fixture(scope="module")
def repo_root_cli_run(heldout_data, tmp_path_factory) -> Path:
    """``python -m monai.bundle run`` of inference.json from the repository root with the shipped weights."""
    out = tmp_path_factory.mktemp("mps_cli_repo_root")
    rel = BUNDLE.relative_to(REPO_ROOT)
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--bundle_root", str(rel),
        "--config_file", str(rel / "configs" / "inference.json"),
        "--meta_file", str(rel / "configs" / "metadata.json"),
        "--logging_file", str(rel / "configs" / "logging.conf"),
        "--dataset_dir", str(heldout_data),
        "--output_dir", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out / "predictions.csv"


def test_shipped_weights_load_as_medrobust_loads_them():
    """models/model.pt is a plain state dict that medrobust.models loads (weights_only=True) into network_def."""
    from medrobust.models import load_model

    state = torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    loaded = load_model(BUNDLE)
    assert tuple(loaded.spatial_shape) == (320, 256) and loaded.in_channels == 1
    assert (BUNDLE / "models" / "model.pt").stat().st_size < 5 * 2**20


@pytest.mark.slow
def test_cli_from_repo_root(repo_root_cli_run, heldout_data):
    """One row per image, probabilities in [0, 1], and not one constant answer for every image."""
    rows = _read_rows(repo_root_cli_run)
    labels = {r[0]: int(r[1]) for r in _read_rows(heldout_data / "labels.csv")[1:]}
    assert sorted(r[0] for r in rows) == sorted(labels)
    probs = np.array([float(r[1]) for r in rows])
    assert np.all((probs >= 0) & (probs <= 1)) and probs.std() > 1e-4


@pytest.mark.slow
def test_shipped_model_beats_chance_on_heldout(repo_root_cli_run, heldout_data):
    rows = _read_rows(repo_root_cli_run)
    labels = {r[0]: int(r[1]) for r in _read_rows(heldout_data / "labels.csv")[1:]}
    auc = binary_auc([float(r[1]) for r in rows], [labels[r[0]] for r in rows])
    assert auc >= HELDOUT_MIN_AUC, f"held-out AUC {auc:.3f} < {HELDOUT_MIN_AUC}"


@pytest.mark.slow
def test_cli_from_bundle_root(tmp_path):
    """The documented bundle-root commands: the dataset script as ``scripts.`` module, then inference."""
    env = _env()
    data = subprocess.run(
        [sys.executable, "-m", "scripts.make_dataset", "--out", str(tmp_path / "gen"), "--n", "4", "--seed", "5",
         "--size", "256", "208"],
        cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert data.returncode == 0, data.stderr[-2000:]
    out = tmp_path / "cli_bundle_root"
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
         "--dataset_dir", str(tmp_path / "gen" / "mammo"), "--output_dir", str(out)],
        cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = _read_rows(out / "predictions.csv")
    assert len(rows) == 4 and all(0.0 <= float(r[1]) <= 1.0 for r in rows)
