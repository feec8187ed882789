"""Keep torch on one thread here: on the shared 2-core machine, OpenMP threads spinning against other
processes made small 3-D training steps ~6x slower in CPU time."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
