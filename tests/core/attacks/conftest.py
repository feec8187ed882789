"""Small models trained in seconds on synthetic data, shared by the attack tests."""

from __future__ import annotations

import contextlib

import pytest
import torch
from monai.networks.nets import UNet
from torch import nn


@contextlib.contextmanager
def single_thread():
    """Tiny models run fastest on one thread, and far faster on a shared, loaded 2-core machine
    (intra-op threads spin against each other); the previous setting is restored."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with single_thread():
        yield


def blob_images(n: int, size: int, spatial_dims: int, g: torch.Generator, *, radius: float | None = None,
                centers: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy images ``(n, 1, *[size] * dims)`` in [0, 1] with one bright ball each, and its mask."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * spatial_dims, indexing="ij"))
    if centers is None:
        centers = size * 0.3 + torch.rand(n, spatial_dims, generator=g) * size * 0.4
    r = radius if radius is not None else size / 5
    d2 = ((grid[None] - centers.reshape(n, spatial_dims, *[1] * spatial_dims)) ** 2).sum(1, keepdim=True)
    mask = (d2 <= r * r).float()
    img = 0.2 * torch.rand(mask.shape, generator=g) + 0.6 * mask
    return img.clamp(0, 1), mask


class SmallCNN(nn.Module):
    """~3k-parameter 2-D/3-D classifier."""

    def __init__(self, spatial_dims: int = 2, classes: int = 3) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        pool = nn.AdaptiveAvgPool2d(2) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(2)
        self.net = nn.Sequential(
            conv(1, 8, 3, padding=1, stride=2), nn.ReLU(), conv(8, 16, 3, padding=1, stride=2), nn.ReLU(), pool,
            nn.Flatten(), nn.Linear(16 * 2**spatial_dims, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def classification_data(n: int, seed: int, spatial_dims: int = 2, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """3 classes: the ball sits in the left, middle or right third along the last axis."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centers = size * 0.3 + torch.rand(n, spatial_dims, generator=g) * size * 0.4
    centers[:, -1] = (y.float() + 0.5) * size / 3 + (torch.rand(n, generator=g) - 0.5) * 2
    x, _ = blob_images(n, size, spatial_dims, g, radius=size / 6, centers=centers)
    return x, y


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, steps: int, lr: float = 1e-2,
           batch: int = 64) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with single_thread():  # session fixtures are built before the module-scoped autouse one
        for _ in range(steps):
            idx = torch.randint(0, x.shape[0], (batch,), generator=g)
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


@pytest.fixture(scope="session")
def trained_classifier() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model, x_test (64, 1, 16, 16), y_test): a 2-D 3-class CNN, test accuracy ~1."""
    torch.manual_seed(0)  # test-side seeding only: the initial weights
    x, y = classification_data(512, seed=1)
    model = _train(SmallCNN(2), x, y, nn.functional.cross_entropy, steps=100)
    xt, yt = classification_data(64, seed=2)
    return model, xt, yt


@pytest.fixture(scope="session")
def classifier_3d() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model, x (8, 1, 8, 8, 8), y): an untrained 3-D CNN, enough for invariants."""
    torch.manual_seed(1)
    x, y = classification_data(8, seed=3, spatial_dims=3, size=8)
    return SmallCNN(3).eval(), x, y


def _seg_unet(spatial_dims: int) -> nn.Module:
    return UNet(spatial_dims=spatial_dims, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,),
                num_res_units=0)


def dice_score(pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample hard Dice ``(B,)`` of argmax predictions ``(B, 2, ...)`` against masks ``(B, 1, ...)``."""
    p = pred.argmax(1, keepdim=True).float()
    inter = (p * mask).flatten(1).sum(1)
    return 2 * inter / (p.flatten(1).sum(1) + mask.flatten(1).sum(1)).clamp_min(1e-6)


@pytest.fixture(scope="session", params=[2, 3], ids=["2d", "3d"])
def trained_segmenter(request) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(MONAI UNet, x_test, mask_test) on synthetic balls; 2-D 24^2 or 3-D 12^3; Dice ~0.9."""
    dims = request.param
    size = 24 if dims == 2 else 12
    torch.manual_seed(2)
    g = torch.Generator().manual_seed(4)
    x, m = blob_images(128, size, dims, g)
    model = _train(_seg_unet(dims), x, m[:, 0].long(), nn.functional.cross_entropy, steps=60, batch=8)
    xt, mt = blob_images(8, size, dims, torch.Generator().manual_seed(5))
    return model, xt, mt


class CentroidRegistration(nn.Module):
    """Analytic registration model: x = [moving, fixed] ``(B, 2, *spatial)`` -> constant DDF
    ``(B, nd, *spatial)`` = centroid(moving) - centroid(fixed) (intensity-weighted, differentiable),
    which aligns a translated ball exactly under MONAI ``Warp`` (ddf in voxels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        grids = torch.meshgrid(*[torch.arange(s, dtype=x.dtype, device=x.device) for s in spatial], indexing="ij")
        grid = torch.stack(grids)  # (nd, *spatial)

        def centroid(img: torch.Tensor) -> torch.Tensor:
            w = img.flatten(1)
            return (w[:, None] * grid.flatten(1)[None]).sum(-1) / w.sum(-1, keepdim=True)

        shift = centroid(x[:, 0]) - centroid(x[:, 1])  # (B, nd)
        return shift.reshape(*shift.shape, *[1] * len(spatial)).expand(-1, -1, *spatial)


@pytest.fixture(scope="session", params=[2, 3], ids=["2d", "3d"])
def registration_pairs(request) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model, x = [moving, fixed] images, y = [moving, fixed] labels) for translated balls."""
    dims = request.param
    size = 32 if dims == 2 else 16
    g = torch.Generator().manual_seed(7)
    n = 4
    c_fixed = size / 2 + (torch.rand(n, dims, generator=g) - 0.5) * size * 0.2
    c_moving = c_fixed + (torch.rand(n, dims, generator=g) - 0.5) * size * 0.3
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * dims, indexing="ij"))

    def ball(c: torch.Tensor) -> torch.Tensor:
        d2 = ((grid[None] - c.reshape(n, dims, *[1] * dims)) ** 2).sum(1, keepdim=True)
        return (d2 <= (size / 5) ** 2).float()

    lm, lf = ball(c_moving), ball(c_fixed)
    x = torch.cat([0.8 * lm, 0.8 * lf], 1)
    return CentroidRegistration(), x, torch.cat([lm, lf], 1)


@pytest.fixture()
def logistic_model() -> nn.Module:
    """A fixed single-logit linear model on (1, 6, 6) inputs: z = w . x + b."""
    g = torch.Generator().manual_seed(11)
    lin = nn.Linear(36, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(1, 36, generator=g))
        lin.bias.fill_(0.3)
    return nn.Sequential(nn.Flatten(), lin).eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.fixture()
def acc():
    """``acc(model, x, y) -> float`` accuracy."""
    return accuracy


@pytest.fixture()
def dice():
    """``dice(pred_logits, mask) -> (B,)`` hard Dice."""
    return dice_score
