"""Training images shared by the cost benchmarks: BreastMNIST when the development data is
present, else seeded synthetic images of the same shape (the timings need only the shape)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["BREASTMNIST", "breastmnist_train", "seeded_batches"]

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


def seeded_batches(x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int, seed: int,
                   flip: bool = True) -> list[dict[str, torch.Tensor]]:
    """All training batches up front (``epochs`` seeded shuffles; a random half of each batch
    flipped along the last axis when ``flip``), as a list MONAI's SupervisedTrainer runs in one
    "epoch". One generator drives shuffles and flips, so a seed fixes the whole sequence."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            xb = x[idx].clone()
            if flip:
                f = torch.rand(len(idx), generator=g) < 0.5
                xb[f] = xb[f].flip(-1)
            batches.append({"image": xb, "label": y[idx]})
    return batches
