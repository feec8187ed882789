"""mri_reconstruction bundle: metadata, network I/O, shipped weights, inference outputs without
input identifiers, bad k-space files, and a tiny train -> train_robust -> evaluate -> inference run."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out

from medrobust.core.defenses import FNAFTraining
from medrobust.reconstruction.inference import reconstruct_file
from medrobust.reconstruction.networks import ReconUNet

TINY = {"spatial_size": [32, 32], "features": [4, 4, 8, 8, 16, 4], "batch_size": 4}


def _net(bundle_root) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(bundle_root / "configs" / "inference.json"))
    return parser.get_parsed_content("network_def")


def test_metadata_matches_schema(bundle_root, meta_schema):
    meta = bundle_root / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta), filepath=str(meta_schema))
    m = json.loads(meta.read_text())
    assert m["version"] in m["changelog"]


def test_verify_net_in_out(bundle_root):
    verify_net_in_out(net_id="network_def", meta_file=str(bundle_root / "configs" / "metadata.json"),
                      config_file=str(bundle_root / "configs" / "inference.json"))


def test_shipped_weights_load(bundle_root):
    net = _net(bundle_root)
    assert isinstance(net, ReconUNet)
    net.load_state_dict(torch.load(bundle_root / "models" / "model.pt", weights_only=True, map_location="cpu"))
    net.eval()
    x = torch.rand(2, 1, 96, 96)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def _dicom_with_identifiers(tmp_path):
    from pydicom import dcmread
    from pydicom.data import get_testdata_files

    ds = dcmread(get_testdata_files("MR_small.dcm")[0])
    ds.PatientName, ds.PatientID = "Doe^Jane", "SECRET12345"
    ds.InstitutionName, ds.ReferringPhysicianName = "Hospital Of Secrets", "Dr^Who"
    path = tmp_path / "input.dcm"
    ds.save_as(path)
    return path, ds


def test_inference_writes_nifti_and_dicom_without_input_identifiers(bundle_root, tmp_path):
    import nibabel as nib
    from pydicom import dcmread

    src, ds_in = _dicom_with_identifiers(tmp_path)
    res = reconstruct_file(ReconUNet(features=(4, 4, 8, 8, 16, 4)), src, tmp_path / "out", acceleration=4)
    assert res["mask"] == "simulated x4" and res["slices"] == 1
    vol = nib.load(str(res["nifti"])).get_fdata()
    assert vol.shape == (ds_in.Rows, ds_in.Columns, 1) and np.isfinite(vol).all()
    secrets = [b"Doe^Jane", b"SECRET12345", b"Hospital Of Secrets", b"Dr^Who",
               str(ds_in.StudyInstanceUID).encode(), str(ds_in.SeriesInstanceUID).encode(), str(ds_in.SOPInstanceUID).encode()]
    for p in [res["nifti"], res["zero_filled"], *res["dicom"]]:
        raw = p.read_bytes()
        assert not [s for s in secrets if s in raw], p
    out = dcmread(res["dicom"][0])
    assert out.Modality == "MR" and out.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert out.StudyInstanceUID != ds_in.StudyInstanceUID and out.PatientName == "Anonymous"
    np.testing.assert_allclose(out.pixel_array * float(out.RescaleSlope), vol[..., 0], atol=float(out.RescaleSlope))


@pytest.mark.parametrize("problem", ["truncated", "nan", "dims"])
def test_bad_kspace_file_gives_a_clear_error(tmp_path, problem):
    path = tmp_path / f"{problem}.h5"
    if problem == "truncated":
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    else:
        k = np.ones((2, 16, 16), np.complex64) if problem == "nan" else np.ones((16,), np.complex64)
        if problem == "nan":
            k[0, 0, 0] = np.nan
        with h5py.File(path, "w") as f:
            f["kspace"] = k
    with pytest.raises(ValueError, match=problem + r"\.h5"):
        reconstruct_file(ReconUNet(), path, tmp_path / "out")


@pytest.mark.slow
def test_train_robust_evaluate_infer(run_workflow, promise_dir, tmp_path, bundle_root):
    common = {"dataset_dir": str(promise_dir), "output_dir": str(tmp_path / "eval"), **TINY}
    run_workflow(["train.json"], epochs=1, ckpt_dir=str(tmp_path / "clean"), **common)
    wf = run_workflow(["train.json", "train_robust.json"], epochs=2, ckpt_dir=str(tmp_path / "fnaf"),
                      fnaf_size=[5, 10], **common)
    assert isinstance(wf.trainer._process_function, FNAFTraining)
    assert (tmp_path / "fnaf" / "model.pt").is_file()
    split = json.loads((tmp_path / "fnaf" / "split.json").read_text())
    assert split["unit"] == "volume" and not set(split["train"]) & set(split["test"])

    run_workflow(["train.json", "evaluate.json"], check=False, ckpt_dir=str(tmp_path / "fnaf"), eval_accelerations=[4],
                 fnaf_eval_restarts=2, pgd_steps=2, **common)
    rows = list(csv.DictReader(open(tmp_path / "eval" / "per_volume.csv", newline="")))
    assert {r["model"] for r in rows} == {"zero_filled", "model"} and {r["volume_id"] for r in rows} == set(split["test"])
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    m = summary["model_x4"]
    assert 0 < m["ssim"]["mean"] <= 1 and m["psnr"]["mean"] > 10 and 0 <= m["fn_rate"]["mean"] <= 1
    assert m["pgd_nmse"]["mean"] > m["nmse"]["mean"], "k-space PGD must degrade the reconstruction"

    from medrobust.reconstruction.io import write_fastmri

    kfile = write_fastmri(tmp_path / "k.h5", torch.randn(2, 1, 32, 32, 2))
    wf = run_workflow(["inference.json"], workflow_type="infer", check=False, input_file=str(kfile),
                      output_dir=str(tmp_path / "out"), ckpt_path=str(tmp_path / "fnaf" / "model.pt"),
                      features=TINY["features"])
    assert (tmp_path / "out" / "k_recon.nii.gz").is_file() and len(list((tmp_path / "out" / "k_dicom").glob("*.dcm"))) == 2
