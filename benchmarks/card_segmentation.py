"""A real segmentation model for the segmentation card's run time: a small MONAI UNet on PROMISE12 slices.

Writes the axial slices of the PROMISE12 dev volumes (``../shared/data/promise12_dev``) as 8-bit
PNGs (intensities clipped to the volume's 1st-99th percentile, resized to 64 x 64) with 0/255
gland masks, split by volume (patient): the first 12 volumes (sorted) train, the other 4 are the
card's data. Trains a 2-D MONAI UNet (channels 8, 16, 32, one residual unit; 12,062 parameters) with Dice + CE
for ``--steps`` steps on the training slices read back exactly as ``medrobust card`` reads them
(:func:`medrobust.data.load_image`, per-image min-max), and saves it as TorchScript. Then run the
card and time it::

    .venv/bin/python -m benchmarks.card_segmentation --out /tmp/seg_bench
    /usr/bin/time -v .venv/bin/python -m medrobust card --model /tmp/seg_bench/unet.ts --input-size 64 64 \\
        --data /tmp/seg_bench/test/images --masks /tmp/seg_bench/test/masks --out /tmp/seg_bench/card \\
        --num-threads 1 --no-progress --no-tracking

Prints the held-out Dice of the trained network (the card measures it again, with its interval).
"""

from __future__ import annotations

import argparse
import gzip
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger("benchmarks.card_segmentation")

SIZE = 64
N_TRAIN_VOLUMES = 12


def _write_slices(src: Path, out: Path) -> dict[str, list[str]]:
    from PIL import Image

    names = sorted(p.name[len("image_"):-len(".npy.gz")] for p in src.glob("image_*.npy.gz"))
    split = {"train": names[:N_TRAIN_VOLUMES], "test": names[N_TRAIN_VOLUMES:]}
    for part, vols in split.items():
        (out / part / "images").mkdir(parents=True, exist_ok=True)
        (out / part / "masks").mkdir(parents=True, exist_ok=True)
        for v in vols:
            img = np.load(gzip.open(src / f"image_{v}.npy.gz")).astype(np.float32)
            lab = np.load(gzip.open(src / f"label_{v}.npy.gz")).astype(np.float32)
            lo, hi = np.percentile(img, [1, 99])
            img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
            x = F.interpolate(torch.from_numpy(img)[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
            m = F.interpolate(torch.from_numpy(lab)[:, None], size=(SIZE, SIZE), mode="nearest")
            for k in range(x.shape[0]):
                if float(x[k].max()) <= float(x[k].min()):
                    continue  # a constant slice cannot be normalised by the card's reader
                Image.fromarray((x[k, 0].numpy() * 255).round().astype(np.uint8)).save(out / part / "images" / f"{v}_s{k:02d}.png")
                Image.fromarray((m[k, 0].numpy() * 255).astype(np.uint8)).save(out / part / "masks" / f"{v}_s{k:02d}.png")
    return split


def _read(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and masks read the way the card reads them."""
    from medrobust.card.segmentation import load_masks
    from medrobust.data import load_image, scan_dataset
    from medrobust.data.preprocess import match_spatial_dims, normalise_image, to_model_input

    items = sorted(scan_dataset(folder / "images")[0], key=lambda i: i.case_id)
    y, ids = load_masks(folder / "masks", [it.case_id for it in items], (SIZE, SIZE))
    keep = {c: i for i, c in enumerate(ids)}
    xs = [to_model_input(match_spatial_dims(normalise_image(load_image(it).array), 2)[None], (SIZE, SIZE), 1)[0]
          for it in items if it.case_id in keep]  # fmt: skip
    return torch.stack(xs).float(), y


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "promise12_dev")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.data.is_dir():
        raise SystemExit(f"PROMISE12 dev data not found at {args.data}")
    torch.set_num_threads(1)
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    split = _write_slices(args.data, args.out)
    x, y = _read(args.out / "train")
    xt, yt = _read(args.out / "test")
    logger.info("train: %d slices of %d volumes; test: %d slices of %d volumes", len(x), len(split["train"]), len(xt), len(split["test"]))
    g = torch.Generator().manual_seed(args.seed)
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        net = UNet(2, 1, 2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    t = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(0, len(x), (16,), generator=g)
        xb = x[idx]
        if step % 2:  # horizontal flip: the gland is roughly symmetric
            xb, yb = xb.flip(-1), y[idx].flip(-1)
        else:
            yb = y[idx]
        loss = loss_fn(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            logger.info("step %d loss %.3f", step, float(loss))
    net.eval()
    from medrobust.card.segmentation import dice_per_case

    d = dice_per_case(net, xt, yt)
    logger.info("trained %d steps in %.1f s; held-out mean Dice %.3f over %d slices (empty-vs-empty slices score 1)",
                args.steps, time.perf_counter() - t, float(d.mean()), len(d))  # fmt: skip
    with torch.no_grad():
        torch.jit.trace(net, xt[:2]).save(str(args.out / "unet.ts"))
    print(f"model: {args.out / 'unet.ts'} ({sum(p.numel() for p in net.parameters())} parameters); "  # noqa: T201
          f"held-out Dice {float(d.mean()):.3f} on {len(d)} slices")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
