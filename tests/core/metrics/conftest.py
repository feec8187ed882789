"""Fixtures for the metric tests: tiny synthetic 2-D/3-D classification data and small models."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def blobs(n: int, spatial: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 = a bright square in the centre on noise; class 0 = noise only. In [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(n, 1, *spatial, generator=g)
    y = torch.arange(n) % 2
    sl = tuple(slice(s // 4, 3 * s // 4) for s in spatial)
    for i in range(n):
        if y[i] == 1:
            x[(i, 0, *sl)] += 0.5
    return x.clamp(0, 1), y


def small_cnn(spatial_dims: int, width: int = 8, out: int = 2, dropout: float = 0.0) -> nn.Module:
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
    layers: list[nn.Module] = [conv(1, width, 3, padding=1), nn.ReLU(), conv(width, width, 3, padding=1), nn.ReLU(),
                               pool(2), nn.Flatten()]  # fmt: skip
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(width * 2**spatial_dims, 16), nn.ReLU(), nn.Linear(16, out)]
    return nn.Sequential(*layers)


def seeded(factory, seed: int = 0):
    """Build a model with torch's default init under a fixed seed, leaving the global RNG as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return factory()


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 25) -> nn.Module:
    """Full-batch Adam (deterministic: no shuffling, no dropout noise unless the model has some)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss() if model[-1].out_features > 1 else nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        opt.zero_grad()
        out = model(x)
        loss = loss_fn(out, y) if out.shape[1] > 1 else loss_fn(out[:, 0], y.float())
        loss.backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()


@pytest.fixture(scope="session")
def data2d() -> tuple[torch.Tensor, torch.Tensor]:
    return blobs(64, (12, 12), seed=0)


@pytest.fixture(scope="session")
def model2d(data2d) -> nn.Module:
    return train(seeded(lambda: small_cnn(2)), *data2d)


@pytest.fixture(scope="session")
def data3d() -> tuple[torch.Tensor, torch.Tensor]:
    return blobs(16, (8, 8, 8), seed=1)


@pytest.fixture(scope="session")
def model3d(data3d) -> nn.Module:
    return train(seeded(lambda: small_cnn(3, width=4)), *data3d)
