"""Fixtures for the mri_reconstruction bundle tests: a synthetic PROMISE12-format folder and a
ConfigWorkflow runner."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BUNDLE = Path(__file__).resolve().parents[3] / "bundles" / "mri_reconstruction"


@pytest.fixture
def bundle_root() -> Path:
    return BUNDLE


@pytest.fixture
def run_workflow():
    """``run_workflow(config_files, **overrides) -> ConfigWorkflow`` (initialize, check, run, finalize)."""
    from monai.bundle import ConfigWorkflow

    saved_path = list(sys.path)

    def run(config_files: list[str], workflow_type: str = "train", check: bool = True, **overrides):
        files = [str(BUNDLE / "configs" / f) for f in config_files]
        wf = ConfigWorkflow(config_file=files if len(files) > 1 else files[0], workflow_type=workflow_type,
                            meta_file=str(BUNDLE / "configs" / "metadata.json"), logging_file=False,
                            bundle_root=str(BUNDLE), num_threads=1, **overrides)
        wf.initialize()
        if check:
            missing = wf.check_properties()
            assert not missing, f"bundle lacks required {workflow_type} properties: {missing}"
        wf.run()
        wf.finalize()
        return wf

    yield run
    sys.path[:] = saved_path


def write_promise12_like(root: Path, n: int = 4, slices: int = 3, size: int = 40, seed: int = 0) -> Path:
    """``image_trainNN.npy.gz`` int16 volumes: a bright disc with small spots on a darker background."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        vol = np.zeros((slices, size, size), np.int16)
        for s in range(slices):
            disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2).astype(float)
            img = 300 * disc + 60 * rng.random((size, size))
            img[rng.integers(8, size - 8), rng.integers(8, size - 8)] += 500
            vol[s] = img.astype(np.int16)
        with gzip.open(root / f"image_train{i:02d}.npy.gz", "wb") as f:
            np.save(f, vol)
    return root


@pytest.fixture
def promise_dir(tmp_path) -> Path:
    return write_promise12_like(tmp_path / "promise")
