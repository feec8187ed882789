"""Fixtures shared by the whole suite. Subpackages keep their own fixtures in their conftest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_root() -> Path:
    env = os.environ.get("MEDROBUST_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or $MEDROBUST_SHARED_DATA); skips the test when it is absent."""
    root = _shared_root()
    if not root.is_dir():
        pytest.skip(f"shared development data not found at {root}")
    return root


@pytest.fixture(scope="session")
def meta_schema() -> Path:
    """The offline MONAI bundle metadata schema; skips when absent."""
    p = REPO_ROOT.parent / "shared" / "monai" / "meta_schema_20240725.json"
    if not p.is_file():
        pytest.skip(f"MONAI meta schema not found at {p}")
    return p


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The suite's models are tiny: one intra-op thread is faster than two, and far faster on a
    loaded 2-core machine where OpenMP threads spin against other processes (small 3-D training
    steps took ~6x the CPU time). Per test, because bundle workflows may set their own
    ``num_threads``; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
