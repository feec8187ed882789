"""Resume after SIGKILL equals an uninterrupted run (with another batch size); the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from medrobust.cli import main as cli_main
from medrobust.sensitivity import run_sensitivity

FAMILIES = ["gaussian_noise", "fourier_lowpass", "fourier_noise"]
SEVERITIES = {"gaussian_noise": [0.05, 0.1], "fourier_lowpass": [1.0, 4.0], "fourier_noise": [0.1]}


def _rows(path: Path) -> int:
    if not path.is_file():
        return 0
    return max(0, path.read_text().count("\n") - 1)


def test_resume_after_sigkill_equals_clean_run(tmp_path: Path, builders, repo_root: Path) -> None:
    data, labels = builders.make_dataset(tmp_path / "d", n=6)
    slow_w, slow_cfg = builders.make_model_files(tmp_path / "slow", slow=True, seed=0)
    fast_w, fast_cfg = builders.make_model_files(tmp_path / "fast", seed=0)  # same weights, no sleep
    run = tmp_path / "run"
    sev_args = [f"{k}={','.join(map(str, v))}" for k, v in SEVERITIES.items()]
    cmd = [
        sys.executable, "-m", "medrobust", "sensitivity", "--model", str(slow_w), "--network-config", str(slow_cfg),
        "--input-size", "32", "32", "--data", str(data), "--labels", str(labels), "--families", *FAMILIES,
        "--severities", *sev_args, "--batch-size", "2", "--seed", "5", "--out", str(run), "--no-progress", "--no-examples",
    ]
    total = 6 * sum(len(v) + 1 for v in SEVERITIES.values())
    log = tmp_path / "subprocess.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=repo_root, stdout=f, stderr=subprocess.STDOUT)
        deadline = time.time() + 240
        while _rows(run / "predictions.csv") < 8 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = _rows(run / "predictions.csv")
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    assert 8 <= done < total, f"kill came too late or too early ({done} of {total} rows)"

    resumed = run_sensitivity(
        slow_w, data, run, labels=labels, network_config=slow_cfg, input_size=(32, 32), families=FAMILIES,
        severities=SEVERITIES, batch_size=3, seed=5, progress=False, examples=False,
    )
    assert resumed.resumed and 0 < resumed.n_computed <= total - done + 2
    clean = run_sensitivity(
        fast_w, data, tmp_path / "clean", labels=labels, network_config=fast_cfg, input_size=(32, 32),
        families=FAMILIES, severities=SEVERITIES, batch_size=5, seed=5, progress=False, examples=False,
    )
    key = ["case_id", "family", "severity"]
    a = resumed.predictions.sort_values(key).reset_index(drop=True)
    b = clean.predictions.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) == total
    pd.testing.assert_frame_equal(a[key], b[key])
    assert (a["predicted_class"].to_numpy() == b["predicted_class"].to_numpy()).all()
    assert abs(a["p_positive"].to_numpy() - b["p_positive"].to_numpy()).max() < 1e-5
    pd.testing.assert_frame_equal(
        resumed.summary.drop(columns=["mean_abs_delta_p", "mean_p"]), clean.summary.drop(columns=["mean_abs_delta_p", "mean_p"])
    )
    text = log.read_text().lower()
    assert all(ident.lower() not in text for ident in builders.identifiers)


def test_cli_torchscript_run_and_errors(tmp_path: Path, builders, capsys) -> None:
    from monai.networks.nets import Classifier

    data, labels = builders.make_dataset(tmp_path / "d", n=3, corrupt=False)
    torch.manual_seed(0)
    net = Classifier(in_shape=(1, 32, 32), classes=2, channels=(4,), strides=(2,)).eval()
    ts = tmp_path / "model.ts"
    torch.jit.trace(net, torch.rand(1, 1, 32, 32)).save(str(ts))
    out = tmp_path / "run"
    rc = cli_main([
        "sensitivity", "--model", str(ts), "--input-size", "32", "32", "--data", str(data), "--labels", str(labels),
        "--families", "gaussian_blur,fourier_highpass", "--severities", "gaussian_blur=2", "fourier_highpass=1",
        "--out", str(out), "--no-progress", "--no-examples",
    ])
    assert rc == 0
    pred = pd.read_csv(out / "predictions.csv")
    assert len(pred) == 3 * 4 and set(pred["family"]) == {"gaussian_blur", "fourier_highpass"}
    assert (out / "report.md").is_file()

    assert cli_main(["sensitivity", "--list-families"]) == 0
    listing = capsys.readouterr().out
    assert "fourier_lowpass" in listing and "0.17" in listing and "for MR" in listing

    assert cli_main(["sensitivity", "--data", str(data)]) == 2
    assert "--model" in capsys.readouterr().err
    rc = cli_main(["sensitivity", "--model", str(ts), "--input-size", "32", "32", "--data", str(data),
                   "--families", "fourier_lowpas", "--out", str(tmp_path / "x"), "--no-progress"])
    assert rc == 2 and "fourier_lowpass" in capsys.readouterr().err  # the suggestion
    rc = cli_main(["sensitivity", "--model", str(ts), "--data", str(data), "--out", str(tmp_path / "y")])
    assert rc == 2 and "input size" in capsys.readouterr().err


@pytest.mark.parametrize(
    "given, expected",
    [
        (None, None),
        (["0", "0.5", "1"], [0.0, 0.5, 1.0]),
        (["0,0.5"], [0.0, 0.5]),
        (["fourier_lowpass=0,1,4", "gaussian_noise=0.1"], {"fourier_lowpass": [0.0, 1.0, 4.0], "gaussian_noise": [0.1]}),
    ],
)
def test_parse_severities(given, expected) -> None:
    from medrobust.commands.sensitivity import parse_severities

    assert parse_severities(given) == expected


def test_parse_severities_errors() -> None:
    from medrobust.commands.sensitivity import parse_severities

    with pytest.raises(ValueError, match="not both"):
        parse_severities(["1", "fourier_lowpass=2"])
    with pytest.raises(ValueError, match="numbers"):
        parse_severities(["low"])
