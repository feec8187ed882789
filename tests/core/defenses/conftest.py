"""Tiny synthetic tasks and networks for the defense tests (2-D / 3-D classification, 2-D segmentation)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer

from medrobust.core.attacks import pgd


def toy_classification(n: int = 16, spatial: tuple[int, ...] = (8, 8), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1: bright first-corner block; class 0: bright last-corner block; plus noise. In [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = 0.2 + 0.1 * torch.rand((n, 1, *spatial), generator=g)
    h = [s // 2 for s in spatial]
    for i in range(n):
        if y[i] == 1:
            x[(i, 0, *[slice(0, k) for k in h])] += 0.5
        else:
            x[(i, 0, *[slice(s - k, s) for s, k in zip(spatial, h)])] += 0.5
    return x.clamp(0, 1), y


def toy_segmentation(n: int = 8, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground = bright pixels; labels ``(B, 1, H, W)`` indices."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand((n, 1, size, size), generator=g) > 0.5).float()
    x = (0.25 + 0.5 * mask + 0.05 * torch.rand((n, 1, size, size), generator=g)).clamp(0, 1)
    return x, mask


def toy_classifier(spatial_dims: int = 2, seed: int = 0, norm: bool = False) -> torch.nn.Module:
    conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
    bn = torch.nn.BatchNorm2d if spatial_dims == 2 else torch.nn.BatchNorm3d
    pool = torch.nn.AdaptiveAvgPool2d if spatial_dims == 2 else torch.nn.AdaptiveAvgPool3d
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [conv(1, 4, 3, padding=1)] + ([bn(4)] if norm else []) + [torch.nn.ReLU(), pool(2), torch.nn.Flatten(),
                                                                         torch.nn.Linear(4 * 2**spatial_dims, 2)]
        return torch.nn.Sequential(*layers)


def toy_segmenter(seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))


def train(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, step, *, iters: int = 20, lr: float = 0.05,
          loss=None, epochs: int = 1, handlers=None) -> tuple[SupervisedTrainer, list[float]]:
    """Run a MONAI SupervisedTrainer with ``iteration_update=step`` on the same batch ``iters`` times per epoch."""
    losses: list[float] = []
    data = [{"image": x, "label": y}] * iters
    trainer = SupervisedTrainer(
        device="cpu", max_epochs=epochs, train_data_loader=data, network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=lr),
        loss_function=loss if loss is not None else torch.nn.CrossEntropyLoss(),
        iteration_update=step, decollate=False, train_handlers=handlers,
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"].detach())))
    trainer.run()
    return trainer, losses


def robust_ce(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, loss_fn=None, steps: int = 5) -> float:
    """Mean loss at PGD examples (net in eval mode)."""
    net.eval()
    res = pgd(net, x, y, eps=eps, steps=steps, loss_fn=loss_fn, generator=123)
    net.train()
    return float(res.info["loss"].mean())


@pytest.fixture
def toy() -> SimpleNamespace:
    """The helpers above as one fixture (tests run with --import-mode=importlib, so no sibling imports)."""
    return SimpleNamespace(classification=toy_classification, segmentation=toy_segmentation,
                           classifier=toy_classifier, segmenter=toy_segmenter, train=train, robust_ce=robust_ce)
