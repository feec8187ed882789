"""Training images shared by the cost benchmarks: BreastMNIST when the development data is
present, else seeded synthetic images of the same shape (the timings need only the shape)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["BREASTMNIST", "breastmnist_train"]

REPO = Path(__file__).resolve().parents[1]
BREASTMNIST = Path(os.environ.get("MEDROBUST_SHARED_DATA", REPO.parent / "shared" / "data")) / "breastmnist" / "breastmnist.npz"


def breastmnist_train(n_max: int | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(x (N, 1, 28, 28) float32 in [0, 1], y (N,) int64 with 1 = malignant, description)``."""
    if BREASTMNIST.is_file():
        from medrobust.data.medmnist import BREASTMNIST_MALIGNANT_POSITIVE, load_medmnist

        s = load_medmnist(BREASTMNIST, "train", label_map=BREASTMNIST_MALIGNANT_POSITIVE)
        x, y, name = torch.from_numpy(s.images), torch.from_numpy(s.labels).long(), "BreastMNIST train (546 x 1 x 28 x 28)"
    else:
        rng = np.random.default_rng(0)
        x = torch.from_numpy(rng.random((546, 1, 28, 28), dtype=np.float32))
        y = torch.from_numpy(rng.integers(0, 2, 546)).long()
        name = "synthetic (546 x 1 x 28 x 28; BreastMNIST not found)"
    if n_max:
        x, y = x[:n_max], y[:n_max]
        name += f", first {len(x)} images"
    return x, y, name
