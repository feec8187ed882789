"""A tiny trained classifier (TorchScript) and a labelled synthetic dataset, 2-D (PNG) or 3-D (NIfTI); a tiny
trained segmentation UNet with images and masks (``seg_inputs``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from medrobust.card import CardBudget

#: the smallest budget that still runs every measure of the card
TINY = CardBudget(attack_cases=8, eps=(2 / 255, 16 / 255), pgd_steps=(3, 5), restarts=2, square_queries=20,
                  autoattack_iterations=5, prob_cases=2, prob_eps=0.25, prob_delta=0.25, prob_attack_steps=2,
                  intrinsic_steps=3, nmutant_cases=16, nmutant_mutants=10, families=("gaussian_noise",),
                  severities=[0, 0.2], n_boot=50)  # fmt: skip


def make_dataset(root: Path, dims: int, n: int = 24, size: int = 12) -> Path:
    """``n`` images whose class is the brightness of their right half; ``labels.csv`` beside them."""
    import nibabel as nib
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["case_id,label"]
    for i in range(n):
        lab = i % 2
        img = rng.random((size,) * dims) * 0.6
        img[size // 2:] += 0.4 * lab
        if dims == 2:
            Image.fromarray((img / img.max() * 255).astype("uint8")).save(root / f"c{i:02d}.png")
        else:
            nib.save(nib.Nifti1Image(img.astype(np.float32), np.eye(4)), str(root / f"c{i:02d}.nii.gz"))
        rows.append(f"c{i:02d},{lab}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def make_model(path: Path, dims: int, size: int = 8) -> Path:
    """A two-class linear model on the two halves' means, trained on the dataset's rule, saved as TorchScript."""
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    pool = torch.nn.AdaptiveAvgPool2d((2, 1)) if dims == 2 else torch.nn.AdaptiveAvgPool3d((2, 1, 1))
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(conv(1, 2, 1), pool, torch.nn.Flatten(), torch.nn.Dropout(0.1), torch.nn.Linear(4, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    for _ in range(60):
        y = torch.randint(0, 2, (32,), generator=g)
        x = torch.rand((32, 1) + (size,) * dims, generator=g) * 0.6
        x[:, :, size // 2:] += 0.4 * y.view(-1, *([1] * (dims + 1)))
        x = (x - x.amin(dim=tuple(range(1, dims + 2)), keepdim=True))
        x = x / x.amax(dim=tuple(range(1, dims + 2)), keepdim=True)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.jit.script(net.eval()).save(str(path))
    return path


@pytest.fixture(scope="session", params=[2, 3], ids=["2d", "3d"])
def card_inputs(request, tmp_path_factory) -> tuple[Path, Path, int]:
    """``(model.ts, data folder, dims)``."""
    dims = request.param
    root = tmp_path_factory.mktemp(f"card{dims}d")
    return make_model(root / "model.ts", dims), make_dataset(root / "data", dims), dims


SIZE = 16


def _disc(dims: int, rng: np.random.Generator) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(SIZE)] * dims, indexing="ij"))
    c = rng.uniform(5, SIZE - 5, size=(dims,) + (1,) * dims)
    return (np.sqrt(((grid - c) ** 2).sum(0)) < rng.uniform(2.5, 4.5)).astype(np.uint8)


def seg_net(dims: int) -> torch.nn.Module:
    """A tiny UNet trained for a few steps to segment bright discs."""
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():  # seeded weight init without touching the global RNG state
        torch.manual_seed(0)
        net = UNet(dims, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    rng = np.random.default_rng(1)
    for _ in range(30):
        m = torch.as_tensor(np.stack([_disc(dims, rng) for _ in range(8)]))[:, None]
        x = 0.2 + 0.6 * m + 0.1 * torch.rand(m.shape, generator=g)
        loss = torch.nn.functional.cross_entropy(net(x.float()), m[:, 0].long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def seg_inputs(request, tmp_path_factory):
    import nibabel as nib
    from PIL import Image

    dims = request.param
    root = tmp_path_factory.mktemp(f"seg{dims}d")
    (root / "data").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(2)
    for i in range(6):
        m = _disc(dims, rng)
        img = 0.2 + 0.6 * m + 0.1 * rng.random(m.shape)
        if dims == 2:
            Image.fromarray((img * 255).astype("uint8")).save(root / "data" / f"c{i}.png")
            Image.fromarray(m * 255).save(root / "masks" / f"c{i}.png")
        else:
            nib.save(nib.Nifti1Image(img.astype(np.float32), np.eye(4)), str(root / "data" / f"c{i}.nii.gz"))
            nib.save(nib.Nifti1Image(m, np.eye(4)), str(root / "masks" / f"c{i}.nii.gz"))
    return seg_net(dims), root, dims


@pytest.fixture
def ranks(monkeypatch):
    """``set_rank(r, n)``: this process is rank r of an n-process torchrun job."""

    def set_rank(rank: int, world: int) -> None:
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test-job")

    return set_rank
