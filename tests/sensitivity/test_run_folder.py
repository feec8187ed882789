"""Run-folder lock, --strict, label matching in the sweep, no usable image, old stores, saturated-model report."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from medrobust.cli import main as cli_main
from medrobust.sensitivity import ResultsStore, RunIdentityError, run_sensitivity
from medrobust.sensitivity.engine import StrictModeError
from medrobust.sensitivity.store import LEGACY_PREDICTION_COLUMNS, RunLock, RunLockedError

FAST = dict(input_size=(32, 32), families=["gaussian_noise"], severities=[0.1], progress=False, examples=False)


@pytest.fixture
def small(tmp_path: Path, builders):
    data, labels = builders.make_dataset(tmp_path / "d", n=4, corrupt=False)
    weights, cfg = builders.make_model_files(tmp_path / "m")
    return data, labels, weights, cfg


def test_second_run_fails_naming_the_holder_or_waits(tmp_path: Path, small) -> None:
    data, labels, weights, cfg = small
    out = tmp_path / "run"
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # another holder (a thread: filelock refuses to wait on its own thread's lock)
        with RunLock(out):
            held.set()
            release.wait(30)
            time.sleep(0.5)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(30)
    try:
        with pytest.raises(RunLockedError, match=r"in use by another medrobust run \(pid \d+ on host .* since "):
            run_sensitivity(weights, data, out, network_config=cfg, **FAST)
        rc = cli_main(["sensitivity", "--model", str(weights), "--network-config", str(cfg), "--input-size", "32", "32",
                       "--data", str(data), "--out", str(out), "--families", "gaussian_noise", "--no-progress"])
        assert rc == 2
        release.set()
        start = time.time()
        res = run_sensitivity(weights, data, out, network_config=cfg, wait=True, **FAST)
        assert time.time() - start >= 0.3 and len(res.predictions) == 8
    finally:
        release.set()
        t.join()
    assert not (out / ".lock.holder.json").exists()
    with RunLock(out):  # released after the run
        pass


def test_store_ignores_duplicate_keys_on_read(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.open({"seed": 0}, provenance={})
    row = {"case_id": "a", "family": "f", "severity": "0.0", "p_positive": "0.5", "margin": "0.0", "predicted_class": 1}
    store.add_predictions([row, row, {**row, "severity": "1.0"}, {**row, "severity": "1.0"}])
    assert len(store.read_predictions()) == 2 and len(store.done_keys()) == 2
    store.close()


def test_old_store_reads_but_does_not_resume(tmp_path: Path, small) -> None:
    data, labels, weights, cfg = small
    out = tmp_path / "old"
    out.mkdir()
    (out / "predictions.csv").write_text(",".join(LEGACY_PREDICTION_COLUMNS) + "\ncase_00,gaussian_noise,0.0,0.5,1,1,\n")
    (out / "manifest.json").write_text(json.dumps({"identity": {"engine_version": 1}}))
    with pytest.raises(RunIdentityError, match="older medrobust sensitivity engine"):
        run_sensitivity(weights, data, out, network_config=cfg, **FAST)
    df = ResultsStore(out).read_predictions()
    assert len(df) == 1 and df["margin"].isna().all()
    with pytest.raises(RunIdentityError, match="older medrobust .* cannot|can be read but not resumed"):
        ResultsStore(out).add_predictions([{"case_id": "x"}])


def test_label_ids_with_extensions_match_and_mismatches_are_counted(tmp_path: Path, small) -> None:
    data, labels, weights, cfg = small
    table = pd.read_csv(labels)
    table["case_id"] = table["case_id"] + ".dcm"  # ids written with the file extension
    with_ext = tmp_path / "ext.csv"
    pd.concat([table, pd.DataFrame([{"case_id": "ghost.dcm", "label": 1, "subgroup": "x"}])]).to_csv(with_ext, index=False)
    res = run_sensitivity(weights, data, tmp_path / "r1", labels=with_ext, network_config=cfg, **FAST)
    assert res.labels == {"matched": 4, "matched_loosely": 4, "images_without_labels": 0, "labels_without_images": 1, "ambiguous": 0}
    assert res.predictions["label"].notna().all()
    report = (res.out / "report.md").read_text()
    assert "label mismatch" in report and "labels matched 4 images" in report
    assert json.loads((res.out / "summary.json").read_text())["labels"]["labels_without_images"] == 1
    with pytest.raises(StrictModeError, match="ghost"):
        run_sensitivity(weights, data, tmp_path / "r2", labels=with_ext, network_config=cfg, strict=True, **FAST)
    table.to_csv(with_ext, index=False)  # now every row matches
    assert run_sensitivity(weights, data, tmp_path / "r3", labels=with_ext, network_config=cfg, strict=True, **FAST).labels["matched"] == 4


def test_strict_skipped_file_and_no_usable_image_exit_non_zero(tmp_path: Path, small, builders) -> None:
    data, labels, weights, cfg = small
    (data / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"garbage")
    args = ["sensitivity", "--model", str(weights), "--network-config", str(cfg), "--input-size", "32", "32",
            "--families", "gaussian_noise", "--severities", "0.1", "--no-progress", "--no-examples", "--data"]
    assert cli_main([*args, str(data), "--out", str(tmp_path / "a")]) == 0
    assert cli_main([*args, str(data), "--out", str(tmp_path / "b"), "--strict"]) == 2
    assert (tmp_path / "b" / "predictions.csv").is_file()  # results are still written
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"garbage")
    with pytest.raises(ValueError, match="no usable image"):
        run_sensitivity(weights, empty, tmp_path / "c", network_config=cfg, **FAST)
    assert cli_main([*args, str(empty), "--out", str(tmp_path / "d")]) == 2


def test_saturated_model_report_says_so(tmp_path: Path, small) -> None:
    from monai.networks.nets import Classifier

    data, labels, _, _ = small
    torch.manual_seed(0)
    net = Classifier(in_shape=(1, 32, 32), classes=2, channels=(4,), strides=(2,))
    with torch.no_grad():
        last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.bias.copy_(torch.tensor([-40.0, 40.0]))
    res = run_sensitivity(net, data, tmp_path / "sat", labels=labels, **{**FAST, "severities": [0.5]})
    codes = {f.code for f in res.findings}
    assert {"saturated_clean", "one_class_clean", "few_cases", "few_labels"} <= codes
    head = (res.out / "report.md").read_text().split("## Families")[0]
    assert "Read this first" in head and "Saturated model" in head
    s = res.summary[(res.summary.severity == 0.5) & (res.summary.subgroup == "all")].iloc[0]
    assert s["mean_abs_delta_p"] == 0 and s["mean_abs_delta_margin"] > 0  # the margin still shows the move
    assert {w["code"] for w in json.loads((res.out / "summary.json").read_text())["warnings"]} == codes
