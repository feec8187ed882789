"""Segmentation cards: a tiny MONAI UNet on synthetic discs, 2-D (PNG masks) and 3-D (NIfTI masks)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from medrobust.card import CardBudget, make_card
from medrobust.card.segmentation import dice_per_case, is_segmentation_output, load_masks

SIZE = 16
BUDGET = CardBudget(attack_cases=4, eps=(2 / 255, 32 / 255), pgd_steps=(3, 3), restarts=2,
                    families=("gaussian_noise",), severities=[0.0, 0.3], n_boot=50)  # fmt: skip


def _disc(dims: int, rng: np.random.Generator) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(SIZE)] * dims, indexing="ij"))
    c = rng.uniform(5, SIZE - 5, size=(dims,) + (1,) * dims)
    return (np.sqrt(((grid - c) ** 2).sum(0)) < rng.uniform(2.5, 4.5)).astype(np.uint8)


def _net(dims: int) -> torch.nn.Module:
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
    return _net(dims), root, dims


def test_segmentation_card(seg_inputs, tmp_path):
    net, root, dims = seg_inputs
    assert is_segmentation_output(net, (1,) + (SIZE,) * dims)
    res = make_card(net, root / "data", tmp_path / "card", masks=root / "masks", budget=BUDGET,
                    input_size=(SIZE,) * dims, progress=False)  # fmt: skip
    card = json.loads(res.json.read_text())
    assert card["task"]["type"] == "segmentation" and card["clean"]["n"] == 6
    d = card["clean"]["dice"]
    assert 0.5 < d["value"] <= 1.0 and d["lo"] <= d["value"] <= d["hi"]
    rows = card["sensitivity"]["families"]["gaussian_noise"]
    assert [r["severity"] for r in rows] == [0.0, 0.3]
    assert rows[0]["dice"]["value"] == pytest.approx(d["value"])  # severity 0 is the clean image
    adv = card["adversarial"]["rows"]
    assert [round(r["eps"] * 255) for r in adv] == [2, 32]
    assert set(adv[0]["attacks"]) == {"PGD-3", "PGD-3 x 2"}
    assert adv[1]["worst_case"]["value"] < card["adversarial"]["clean"]["value"]  # a large eps hurts
    assert all(r["worst_case"]["value"] <= min(e["value"] for e in r["attacks"].values()) + 1e-9 for r in adv)
    assert {"autoattack", "square", "nmutant", "probabilistic"} <= set(card["not_measured"])
    html = res.html.read_text()
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html)
    assert {a for a, _ in imgs} == {"Dice vs severity per family", "robust Dice vs eps"}
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for _, b in imgs)
    assert "Not measured for segmentation" in html


def test_segmentation_card_errors(seg_inputs, tmp_path):
    net, root, dims = seg_inputs
    with pytest.raises(ValueError, match="masks: a segmentation card needs"):
        make_card(net, root / "data", tmp_path / "o", input_size=(SIZE,) * dims, task="segmentation", budget=BUDGET)
    with pytest.raises(FileNotFoundError, match="masks: folder"):
        load_masks(tmp_path / "nope", ["c0"], (SIZE,) * dims)
    (tmp_path / "m").mkdir()
    with pytest.raises(ValueError, match="no file under"):
        load_masks(tmp_path / "m", ["c0"], (SIZE,) * dims)


def test_dice_per_case_batch():
    net = UNet(3, 1, 3, channels=(4, 8), strides=(2,)).eval()
    x = torch.rand(2, 1, 8, 8, 8)
    y = net(x).argmax(1, keepdim=True)
    assert np.allclose(dice_per_case(net, x, y), 1.0)
    with pytest.raises(ValueError, match="label 5 found"):
        dice_per_case(net, x, torch.full_like(y, 5))


@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean")  # MONAI UNet under torch.jit.trace
def test_segmentation_card_cli_auto_detects(seg_inputs, tmp_path):
    from medrobust.cli import main

    net, root, dims = seg_inputs
    ts = tmp_path / "unet.ts"
    torch.jit.trace(net, torch.rand(2, 1, *(SIZE,) * dims)).save(str(ts))
    out = tmp_path / "card"
    argv = ["card", "--model", str(ts), "--input-size", *[str(SIZE)] * dims, "--data", str(root / "data"),
            "--masks", str(root / "masks"), "--out", str(out), "--attack-cases", "2", "--eps", "4",
            "--pgd-steps", "2", "--no-sensitivity", "--n-boot", "20", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["task"]["type"] == "segmentation" and "sensitivity" not in card
    assert card["headline"]["robust_dice_worst_case"].keys() == {"eps_4_255"}
