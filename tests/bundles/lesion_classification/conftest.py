"""Fixtures for the lesion_classification bundle tests: synthetic MedMNIST-format data and the
library's workflow runner (:func:`medrobust.models.run_bundle_workflow`) bound to this bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

BUNDLE = Path(__file__).resolve().parents[3] / "bundles" / "lesion_classification"


@pytest.fixture
def bundle_root() -> Path:
    return BUNDLE


@pytest.fixture
def run_workflow():
    """``run_workflow(config_files, **overrides) -> ConfigWorkflow`` (initialize, check, run, finalize)."""
    from medrobust.models import run_bundle_workflow

    threads = torch.get_num_threads()

    def run(config_files: list[str], workflow_type: str = "train", **overrides):
        return run_bundle_workflow(BUNDLE, config_files, workflow_type=workflow_type, num_threads=1, **overrides)

    yield run
    torch.set_num_threads(threads)  # the configs set num_threads


def write_synthetic_npz(path: Path, spatial: tuple[int, ...], n: tuple[int, int, int] = (48, 16, 24), seed: int = 0,
                        medmnist_labels: bool = True) -> Path:
    """A MedMNIST-format file: uint8 images (N, *spatial), labels (N, 1); class "malignant" has a
    bright block in the first corner. With ``medmnist_labels`` the stored label of that class is 0
    (BreastMNIST's convention), else 1."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, m in zip(("train", "val", "test"), n):
        malignant = np.arange(m) % 2 == 0
        img = rng.integers(40, 90, size=(m, *spatial)).astype(np.uint8)
        block = tuple(slice(0, s // 2) for s in spatial)
        for i in np.flatnonzero(malignant):
            img[(i, *block)] += 120
        stored = np.where(malignant, 0, 1) if medmnist_labels else malignant.astype(int)
        arrays[f"{split}_images"] = img
        arrays[f"{split}_labels"] = stored.astype(np.uint8)[:, None]
    np.savez(path, **arrays)
    return path


@pytest.fixture
def synthetic_npz(tmp_path) -> Path:
    return write_synthetic_npz(tmp_path / "synthetic2d.npz", (16, 16))


@pytest.fixture
def synthetic_npz_3d(tmp_path) -> Path:
    return write_synthetic_npz(tmp_path / "synthetic3d.npz", (8, 8, 8), n=(16, 8, 8))
