"""End-to-end sweeps on tiny synthetic DICOM / NIfTI / PNG datasets built in tmp dirs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medrobust.perturbations.registry import family_names
from medrobust.sensitivity import RunIdentityError, run_sensitivity

FAMILIES = ["gaussian_noise", "fourier_lowpass", "fourier_highpass"]
HAS_FGSM = "fgsm" in family_names()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, builders):
    root = tmp_path_factory.mktemp("demo")
    data, labels = builders.make_dataset(root / "mammo")
    weights, cfg = builders.make_model_files(root / "model")
    handler = _Collect()
    logging.getLogger().addHandler(handler)
    old_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        families = FAMILIES + (["fgsm"] if HAS_FGSM else [])
        res = run_sensitivity(
            weights, data, root / "run", labels=labels, network_config=cfg, input_size=(32, 32),
            families=families, batch_size=4, seed=3, progress=False,
        )
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(old_level)
    return res, handler.lines, root


def test_outputs_exist_and_are_consistent(demo_run) -> None:
    res, _, _ = demo_run
    out = res.out
    for name in ["predictions.csv", "errors.csv", "manifest.json", "summary.csv", "summary.json", "report.md", "examples.png"]:
        assert (out / name).is_file(), name
    for fam in FAMILIES:
        assert (out / f"curves_{fam}.png").is_file()
    pred = pd.read_csv(out / "predictions.csv")
    plan = json.loads((out / "manifest.json").read_text())["identity"]["plan"]
    assert len(pred) == 6 * sum(len(v) for v in plan.values())
    assert not pred.duplicated(["case_id", "family", "severity"]).any()
    assert pred["p_positive"].between(0, 1).all()
    # the corrupt file is reported and skipped; the run went on
    err = pd.read_csv(out / "errors.csv")
    assert list(err["file"]) == ["broken.dcm"] and err["reason"].str.len().min() > 5
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"

    s = res.summary
    zero = s[s["severity"] == 0]
    assert (zero["flip_rate"] == 0).all() and (zero["mean_abs_delta_p"] == 0).all()
    clean = pred[(pred["family"] == "gaussian_noise") & (pred["severity"] == 0)]
    auc = s[(s["family"] == "gaussian_noise") & (s["severity"] == 0) & (s["subgroup"] == "all")]["auc"].item()
    assert auc == pytest.approx(roc_auc_score(clean["label"], clean["p_positive"]))
    assert {"all", "calcification", "soft_tissue"} <= set(s["subgroup"])
    assert s[s["subgroup"] == "calcification"]["n"].max() == 2
    strong = s[(s["family"] == "fourier_highpass") & (s["subgroup"] == "all") & (s["severity"] == 4.0)]
    assert strong["mean_abs_delta_p"].item() > 0
    report = (out / "report.md").read_text()
    assert "curves_fourier_lowpass.png" in report and "examples.png" in report and "By subgroup" in report


@pytest.mark.skipif(not HAS_FGSM, reason="no adversarial family registered")
def test_adversarial_family_moves_predictions(demo_run) -> None:
    s = demo_run[0].summary
    fg = s[(s["family"] == "fgsm") & (s["subgroup"] == "all")].sort_values("severity")
    assert fg["mean_abs_delta_p"].iloc[-1] > fg["mean_abs_delta_p"].iloc[1] > 0


def test_no_identifiers_in_outputs_or_logs(demo_run, builders) -> None:
    res, log_lines, _ = demo_run
    texts = {p.name: p.read_bytes().decode("latin-1") for p in res.out.iterdir() if p.is_file()}
    texts["log"] = "\n".join(log_lines)
    assert len(texts) > 8
    for ident in builders.identifiers:
        for name, text in texts.items():
            assert ident.lower() not in text.lower(), f"{ident!r} found in {name}"


def test_resume_same_args_and_identity_check(demo_run) -> None:
    res, _, root = demo_run
    kwargs = dict(
        labels=root / "mammo_labels.csv", network_config=root / "model" / "net.json", input_size=(32, 32),
        families=FAMILIES + (["fgsm"] if HAS_FGSM else []), seed=3, progress=False, examples=False,
    )
    again = run_sensitivity(root / "model" / "model.pt", root / "mammo", res.out, batch_size=2, **kwargs)
    assert again.resumed and again.n_computed == 0 and len(again.predictions) == len(res.predictions)
    with pytest.raises(RunIdentityError, match="seed"):
        run_sensitivity(root / "model" / "model.pt", root / "mammo", res.out, **{**kwargs, "seed": 4})
    with pytest.raises(RunIdentityError, match="plan"):
        run_sensitivity(root / "model" / "model.pt", root / "mammo", res.out, **{**kwargs, "families": ["gaussian_noise"]})


def test_overwrite_replaces_the_run(tmp_path: Path, builders) -> None:
    data, _ = builders.make_dataset(tmp_path / "d", n=2, corrupt=False)
    weights, cfg = builders.make_model_files(tmp_path / "m")
    common = dict(network_config=cfg, input_size=(32, 32), families=["gaussian_blur"], severities=[1.0], progress=False)
    run = data / "run"  # inside the data folder: its figures must not be read back as images
    run_sensitivity(weights, data, run, seed=0, **common)
    res = run_sensitivity(weights, data, run, seed=1, overwrite=True, **common)
    assert not res.resumed and res.n_computed == 4 and set(res.predictions["case_id"]) == {"case_00", "case_01"}
    assert json.loads((run / "manifest.json").read_text())["identity"]["seed"] == 1
    assert run_sensitivity(weights, data, run, seed=1, **common).n_computed == 0
    with pytest.raises(ValueError, match="data folder"):
        run_sensitivity(weights, data, data, seed=1, **common)


def test_3d_nifti_sweep_without_labels(tmp_path: Path) -> None:
    import nibabel as nib
    from monai.networks.nets import Classifier

    data = tmp_path / "vols"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(20, 18, 10), (20, 18, 10), (16, 16, 12)]):
        vol = rng.random(shape).astype(np.float32) * 100 + i
        nib.save(nib.Nifti1Image(vol, np.diag([1.2, 1.2, 2.5, 1.0])), data / f"vol_{i}.nii.gz")
    torch.manual_seed(0)
    net = Classifier(in_shape=(1, 16, 16, 12), classes=1, channels=(4,), strides=(2,))
    res = run_sensitivity(
        net, data, tmp_path / "run", input_size=(16, 16, 12), families=["fourier_lowpass", "mr_bias_field", "gaussian_noise"],
        severities={"fourier_lowpass": [1.0, 4.0], "mr_bias_field": [0.5], "gaussian_noise": [0.1]}, batch_size=2, progress=False,
    )
    assert len(res.predictions) == 3 * (3 + 2 + 2) and res.errors.empty
    assert res.summary["auc"].isna().all() and (res.summary["n_labelled"] == 0).all()
    assert (res.out / "examples.png").is_file()
    moved = res.summary[(res.summary["severity"] > 0)]["mean_abs_delta_p"]
    assert (moved > 0).all()


def test_roi_cnr_drops_under_lowpass(tmp_path: Path) -> None:
    from PIL import Image
    from monai.networks.nets import Classifier

    data, masks = tmp_path / "png", tmp_path / "roi"
    data.mkdir()
    masks.mkdir()
    from scipy import ndimage

    rng = np.random.default_rng(1)
    for i in range(2):
        # smooth 'anatomical' background (what a low-pass keeps) + a 2x2 speck (what it removes)
        texture = ndimage.gaussian_filter(rng.standard_normal((64, 80)), 4)
        img = 20000 + 800 * texture / texture.std() + 50 * rng.standard_normal((64, 80))
        mask = np.zeros((64, 80), bool)
        mask[30:32, 40 + i : 42 + i] = True
        img[mask] += 4000
        Image.fromarray(np.clip(img, 0, 65535).astype(np.uint16)).save(data / f"img_{i}.png")
        np.save(masks / f"img_{i}.npy", mask)
    torch.manual_seed(0)
    net = Classifier(in_shape=(1, 32, 32), classes=2, channels=(4,), strides=(2,))
    res = run_sensitivity(
        net, data, tmp_path / "run", input_size=(32, 32), families=["fourier_lowpass"], severities=[2.0, 8.0],
        roi_masks=masks, progress=False, examples=False,
    )
    cnr = pd.read_csv(res.out / "cnr.csv")
    assert len(cnr) == 2 * 3
    mean = cnr.groupby("severity")["cnr"].mean()
    assert mean[0.0] > 3 and mean[8.0] < mean[2.0] < mean[0.0]
    assert mean[8.0] < 0.5 * mean[0.0]
    assert "contrast-to-noise" in (res.out / "report.md").read_text()
    assert (res.out / "curves_cnr.png").is_file()
