"""Peak memory of a sweep on one full-field (3328 x 2560, 16-bit) mammogram stays a small multiple of it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import json, resource, sys, time
import torch
from monai.networks.nets import Classifier
from medrobust.sensitivity import run_sensitivity

torch.manual_seed(0)
net = Classifier(in_shape=(1, 320, 256), classes=2, channels=(4, 8), strides=(4, 4))
net.eval()(torch.rand(2, 1, 320, 256))  # warm the network's own buffers into the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.time()
res = run_sensitivity(
    net, sys.argv[1], sys.argv[2], input_size=(320, 256), batch_size=4, progress=False, report=False,
    families=["fourier_lowpass", "fourier_highpass", "gaussian_blur", "gaussian_noise", "fourier_noise"],
    severities={"fourier_lowpass": [0.5, 4.0], "fourier_highpass": [1.0], "gaussian_blur": [8.0],
                "gaussian_noise": [0.05], "fourier_noise": [0.1]},
)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"delta_mb": (peak - base) / 1024, "seconds": time.time() - t, "n": len(res.predictions)}))
"""


@pytest.mark.slow
def test_full_field_mammogram_peak_memory(tmp_path: Path, builders, repo_root: Path) -> None:
    data = tmp_path / "full"
    data.mkdir()
    shape = (3328, 2560)
    builders.write_dicom(data / "full.dcm", builders.synthetic_mammo(shape, 0, calcs=True))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(data), str(tmp_path / "run")],
        cwd=repo_root, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    image_mb = shape[0] * shape[1] * 4 / 2**20  # the image as float32: 32.5 MB
    assert result["n"] == 5 + 6  # 5 families x severity 0 + 6 perturbed
    # loading (16-bit -> float32), the normalised copy, one FFT chunk and its outputs: ~5-6x measured
    assert result["delta_mb"] < 12 * image_mb, result
