"""The mrus_registration bundle, tested the way the MONAI model zoo tests bundles, with outcome checks."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medrobust.models import load_bundle_network, run_bundle_workflow

BUNDLE = Path(__file__).resolve().parents[3] / "bundles" / "mrus_registration"
CONFIGS = BUNDLE / "configs"


@pytest.fixture(scope="module")
def sample_pairs(tmp_path_factory):
    from sample_data.mrus import generate

    root = generate(tmp_path_factory.mktemp("mrus") / "data", n=3, seed=7)
    folds = root.parent / "folds.json"
    folds.write_text(json.dumps({"folds": [{"train": ["case000", "case001"], "test": ["case002"]}]}))
    return root, folds


def _workflow(configs, workflow_type="train", *, run=True, **overrides):
    """The library's workflow runner with this bundle's logging config (run=False: initialized and checked only)."""
    return run_bundle_workflow(BUNDLE, configs, workflow_type=workflow_type, run=run,
                               logging_file=CONFIGS / "logging.conf", **overrides)


def _network(seed: int = 0) -> torch.nn.Module:
    """The bundle's ``network_def`` (inference config) with random weights, the affine head moved off identity."""
    torch.manual_seed(seed)  # test-side initialisation
    net = load_bundle_network(BUNDLE, weights=None)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):  # GlobalNet's affine head starts at exactly the identity
                m.weight.normal_(0.0, 1e-4)
    return net.eval()


def test_metadata_matches_the_schema(meta_schema):
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(meta_schema))
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    train = json.loads((CONFIGS / "train.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == train["grid_size"]


def test_verify_net_in_out():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"),
                      config_file=str(CONFIGS / "inference.json"), device="cpu", bundle_root=str(BUNDLE))


def test_shipped_weights_load_into_the_inference_network():
    net = load_bundle_network(BUNDLE)  # strict: the shipped checkpoint matches configs/inference.json
    assert net.in_channels == 2  # default: moving MR + fixed TRUS only (the image-only cascade)
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == net.in_channels


def test_image_only_option_loads_its_own_weights():
    net = load_bundle_network(BUNDLE, config_files=["inference.json", "image_only.json"],
                              weights=BUNDLE / "models" / "model_image_only.pt")  # strict load
    assert net.in_channels == 2
    x = torch.rand(2, 2, 24, 32, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert net(x).abs().max() > 0.1  # trained weights, not an initialisation


def _pairs_without_moving_labels(root: Path, n: int = 3) -> Path:
    """Tiny MR/TRUS image pairs (DeepReg layout) with fixed labels but no moving (MR) labels."""
    vol = nib.Nifti1Image(np.zeros((8, 8, 6), np.float32), np.diag([3.0, 3.0, 3.0, 1.0]))
    for folder in ("moving_images", "fixed_images", "fixed_labels"):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            nib.save(vol, root / folder / f"case{i:03d}.nii.gz")
    return root


def test_mask_input_inference_without_the_mr_gland_label_fails_clearly(tmp_path):
    data = _pairs_without_moving_labels(tmp_path / "data")
    with pytest.raises(Exception) as info:  # noqa: PT011 (MONAI's config parser wraps the ValueError in a RuntimeError)
        _workflow(["inference.json", "mask_input.json"], "infer", run=False, dataset_dir=str(data), output_dir=str(tmp_path / "out"))
    err = info.value if isinstance(info.value, ValueError) else info.value.__cause__
    assert isinstance(err, ValueError)
    msg = str(err)
    for needle in ("3 of 3 pairs have no moving label file", "case000, case001, case002", "MR gland segmentation",
                   "moving_labels/", "configs/mask_input.json", "configs/inference.json alone"):
        assert needle in msg, (needle, msg)
    assert not (tmp_path / "out").exists()
    # the default and the end-to-end image-only option run on the same folder (images only)
    for configs in (["inference.json"], ["inference.json", "image_only.json"]):
        wf = _workflow(configs, "infer", run=False, dataset_dir=str(data), output_dir=str(tmp_path / "out"))
        assert wf.parser.get_parsed_content("network_def").in_channels == 2


def test_folds_are_declared_grouped_and_cover_every_pair_once():
    from medrobust.registration.crossval import read_folds

    decl = json.loads((CONFIGS / "folds.json").read_text())
    folds = read_folds(CONFIGS / "folds.json")  # checks: test folds disjoint, no test pair in its training set
    assert len(folds) == 5
    tested = [p for f in folds for p in f["test"]]
    assert sorted(tested) == sorted(decl["groups"])  # every pair held out exactly once
    for f in folds:
        assert sorted(f["train"] + f["test"]) == sorted(decl["groups"])
        test_groups = {decl["groups"][p] for p in f["test"]}
        assert not test_groups & {decl["groups"][p] for p in f["train"]}  # a patient's pairs stay together


@pytest.mark.shared_data
def test_fold_groups_match_the_shared_data(shared_data):
    from medrobust.data.paired import moving_image_groups

    root = shared_data / "mrus_dev"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    # the data ships its own grouping (pairs that share an MR volume): ours must find the same groups
    by_mr: dict[str, list[str]] = {}
    for row in csv.DictReader(open(root / "pairs_by_mr.csv")):
        by_mr.setdefault(row["mr_group"], []).append(row["pair"])
    assert moving_image_groups(root) == sorted(by_mr.values())
    # and the declared folds hold the data's pairs with the data's grouping
    decl = json.loads((CONFIGS / "folds.json").read_text())
    assert decl["groups"] == {p: g for g, pairs in by_mr.items() for p in pairs}


@pytest.mark.slow
def test_train_evaluate_infer_end_to_end(sample_pairs, tmp_path):
    root, split = sample_pairs
    # no spatial augmentation: 40 steps are meant to fit the two training pairs, not to generalise
    common = dict(dataset_dir=str(root), folds_file=str(split), fold=0, ckpt_dir=str(tmp_path / "models"),
                  output_dir=str(tmp_path / "runs"), num_threads=1, batch_size=2, learning_rate=0.003,
                  **{"fe#n_per_case": 2, "fe#cache_dir": str(tmp_path / "fe"), "augment#translate_range": [0, 0, 0],
                     "augment#rotate_range": [0, 0, 0], "augment#scale_range": [0, 0, 0]})
    # 1a. the adversarial configuration end to end: FE bank from the training labels, D trained alongside
    _workflow(["train.json"], max_epochs=2, regulariser="adversarial", **common)
    log = list(csv.DictReader(open(tmp_path / "runs" / "train_losses.csv")))
    assert len(log) == 2 and all(np.isfinite(float(r["d_loss"])) for r in log)
    assert len(list((tmp_path / "fe").glob("*.npz"))) == 4  # 2 simulations x 2 training cases, cached
    # 1b. a run long enough to learn something, BatchNorm statistics recomputed at the end
    _workflow(["train.json"], max_epochs=40, regulariser="diffusion", precise_bn_batches=8, **common)
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.endswith("running_mean") for k in state)
    assert len(list(csv.DictReader(open(tmp_path / "runs" / "train_losses.csv")))) == 40
    # 2. train + evaluate merged: evaluate on the training pairs, which the network must have learned
    wf = _workflow(["train.json", "evaluate.json"], run=False, test_ids=["case000", "case001"], regulariser="diffusion", **common)
    test_data = wf.parser.get_parsed_content("test_data")
    wf.run()
    wf.finalize()
    from medrobust.registration.baselines import no_registration_rows

    before = no_registration_rows(test_data)
    before_tre = np.mean([v for r in before for v in r["tre_landmarks_mm"]])
    summary = json.loads((tmp_path / "runs" / "eval" / "summary.json").read_text())
    assert summary["n_cases"] == 2 and summary["n_landmarks"] >= 4
    assert summary["tre_mean_mm"] < before_tre - 0.5, (summary, before_tre)  # it learned to register its training pairs
    assert 0.0 <= summary["folding_pct"] < 5.0 and np.isfinite(summary["tre_median_mm"])
    rows = list(csv.DictReader(open(tmp_path / "runs" / "eval" / "cases.csv")))
    assert [r["case_id"] for r in rows] == ["case000", "case001"]
    # 3. inference (the mask-input variant, as trained above: the moving gland label read as a network input): DDF, warped image and integer labels in the fixed file's own space
    out = tmp_path / "infer"
    _workflow(["inference.json", "mask_input.json"], "infer", dataset_dir=str(root), ckpt_path=str(tmp_path / "models" / "model.pt"),
              output_dir=str(out), case_ids=["case002"], write_itk_transform=False, num_threads=1)
    folder = out / "case002"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["ddf.nii.gz", "warped_moving_gland.nii.gz", "warped_moving_image.nii.gz", "warped_moving_label.nii.gz"]
    from medrobust.data.paired import scan_paired
    from medrobust.registration.export import resample_native

    case = scan_paired(root)[2]
    fixed, ddf_img, warped = nib.load(case.fixed_image), nib.load(folder / "ddf.nii.gz"), nib.load(folder / "warped_moving_label.nii.gz")
    assert ddf_img.shape == (*fixed.shape[:3], 1, 3) and warped.shape[:3] == fixed.shape[:3]
    np.testing.assert_allclose(ddf_img.affine, fixed.affine, atol=1e-5)
    assert warped.get_data_dtype() == np.uint8
    # the written labels are the ORIGINAL moving labels moved by the written (fixed-space, world mm) DDF
    disp = np.moveaxis(np.asarray(ddf_img.dataobj)[..., 0, :], -1, 0)
    mov = nib.load(case.moving_label)
    lab = np.asarray(mov.dataobj, dtype=np.float32)
    lab = np.moveaxis(lab, -1, 0) if lab.ndim == 4 else lab[None]
    again = (resample_native(lab, mov.affine, disp, fixed.affine) >= 0.5).astype(np.uint8)
    written = np.asarray(warped.dataobj)
    written = np.moveaxis(written, -1, 0) if written.ndim == 4 else written[None]
    assert (again != written).mean() < 1e-3  # float32 round trip of the DDF may flip a voxel on a 0.5 edge


@pytest.mark.slow
def test_inference_writes_an_itk_transform(sample_pairs, tmp_path):
    itk = pytest.importorskip("itk")
    root, _ = sample_pairs
    net = _network()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    _workflow(["inference.json"], "infer", dataset_dir=str(root), ckpt_path=str(tmp_path / "model.pt"),
              output_dir=str(tmp_path / "out"), case_ids=["case000"], num_threads=1)
    transform = itk.transformread(str(tmp_path / "out" / "case000" / "ddf_itk.h5"))[0]
    assert "DisplacementFieldTransform" in type(transform).__name__
    shutil.rmtree(tmp_path / "out")


def test_ckpt_export_traced(tmp_path):
    from monai.bundle import ckpt_export

    net = _network()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    # LocalNet does not script (list comprehensions over modules); tracing is exact for this static graph
    ckpt_export(net_id="network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(tmp_path / "model.pt"),
                meta_file=str(CONFIGS / "metadata.json"), config_file=str(CONFIGS / "inference.json"),
                bundle_root=str(BUNDLE), use_trace=True, input_shape=[1, 2, 24, 32, 24])
    ts = torch.jit.load(str(tmp_path / "model.ts"))
    x = torch.rand(1, 2, 24, 32, 24)
    with torch.no_grad():
        torch.testing.assert_close(ts(x), net(x), atol=1e-5, rtol=1e-4)


def test_shipped_torchscript_matches_the_shipped_weights():
    path = BUNDLE / "models" / "model.ts"
    assert path.is_file(), "models/model.ts is shipped (regenerate with the ckpt_export command of docs/README.md)"
    ts = torch.jit.load(str(path), map_location="cpu")
    net = load_bundle_network(BUNDLE)
    assert net.in_channels == 2  # the default takes MR and TRUS only
    x = torch.rand(2, 2, 24, 32, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = net(x)
        torch.testing.assert_close(ts(x), ref, atol=1e-4, rtol=1e-4)
    assert ref.abs().max() > 0.1  # a trained network, not the identity


def test_sweep_script_exits_nonzero_without_a_model(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("mrus_robustness_sweep", BUNDLE / "scripts" / "robustness_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--weights", str(tmp_path / "absent.pt"), "--out", str(tmp_path / "out")]) == 2
    assert "no model weights" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_train_cascade_config_builds_one_image_only_network(tmp_path):
    from medrobust.registration.cascade import SegmentThenRegister

    wf = _workflow(["train.json", "train_cascade.json"], run=False, ckpt_dir=str(tmp_path), output_dir=str(tmp_path))
    cascade = wf.parser.get_parsed_content("cascade")
    assert isinstance(cascade, SegmentThenRegister) and cascade.in_channels == 2
    assert cascade.registration is wf.parser.get_parsed_content("network")  # the network the trainer optimises
    assert wf.parser.get_parsed_content("moving_keys") == ["moving_image", "moving_mask"]  # trained with true MR masks
    assert wf.parser.get_parsed_content("cascade_path") == str(tmp_path) + "/model_cascade.pt"


def test_default_is_the_image_only_cascade_and_the_mask_input_variant_loads():
    from medrobust.registration.cascade import SegmentThenRegister

    net = load_bundle_network(BUNDLE)  # strict load of models/model.pt
    assert isinstance(net, SegmentThenRegister) and net.in_channels == 2 and net.stage == "all"
    mask_net = load_bundle_network(BUNDLE, config_files=["inference.json", "mask_input.json"],
                                   weights=BUNDLE / "models" / "model_mask_input.pt")  # strict load
    assert mask_net.in_channels == 3
    x = torch.rand(2, 3, 24, 32, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert mask_net(x).abs().max() > 0.1  # trained weights


def test_robust_fine_tune_starts_from_the_shipped_cascade_registration_network():
    # train_robust.json's default `pretrained` is models/model.pt, the cascade; its registration
    # network (the part attacks on the TRUS image reach) is what the fine-tune starts from
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "train_robust.json")])
    parser["bundle_root"] = str(BUNDLE)
    parser["device"] = "cpu"
    net = parser.get_parsed_content("network")
    shipped = torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True)
    own = net.state_dict()
    reg = {k[len("registration."):]: v for k, v in shipped.items() if k.startswith("registration.")}
    assert reg and reg.keys() == own.keys()
    assert all(torch.equal(own[k], v) for k, v in reg.items())
