"""Accuracy and robustness of band-limited CNNs vs compression (BreastMNIST 2-D, synthetic 3-D).

Every convolution of the network is swapped for :class:`medrobust.core.layers.BandLimitedConv`
(:func:`~medrobust.core.layers.bandlimit_convs`) *before* training, and the network is trained
naturally with MONAI's ``SupervisedTrainer`` (AdamW 1e-3, batch 64, random horizontal flips in 2-D),
once per compression rate and seed; "direct" is the same network with torch's convolutions.

- 2-D: BreastMNIST official split (546 train / 156 test, 28 x 28, 1 = malignant), the
  lesion_classification bundle's network (4 conv layers, 61k parameters).
- 3-D: a synthetic shape task (sphere vs cube of about the same volume, random position, radius
  and contrast, Gaussian noise, 20^3 voxels; 256 train / 256 test), a 3-layer 3-D CNN; compressions
  direct, 0, 40, 80 % only (CPU budget).

Test metrics: AUC and accuracy (clean); PGD-10 accuracy and AUC (L-inf, eps 1/255 and 2/255, the
library's PGD, true labels; 3-D: first 128 test volumes); AUC under the perturbation registry's ``fourier_noise``
(one random plane wave of amplitude 0.1 and 0.2 of the intensity range), ``gaussian_noise``
(sigma 0.05) and ``fourier_lowpass`` (severity 1 and 2, the mammogram study's low-pass filter).

Results are appended to a JSONL file after every run (resumable: finished runs are skipped) and
summarised (mean +- sd over seeds) into a markdown table. Run from the repository root::

    nice -n 10 python -m benchmarks.bandlimited_evidence --task breastmnist --seeds 0 1 2 --epochs 20
    nice -n 10 python -m benchmarks.bandlimited_evidence --task synthetic3d --seeds 0 1 2 --epochs 15
    python -m benchmarks.bandlimited_evidence --report --out docs/bandlimited.md
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks._data import seeded_batches

__all__ = ["load_task", "network", "train", "evaluate", "run", "report", "main"]

REPO = Path(__file__).resolve().parents[1]
BREASTMNIST = REPO.parent / "shared" / "data" / "breastmnist" / "breastmnist.npz"
RESULTS = REPO / "docs" / "data" / "bandlimited_runs.jsonl"
COMPRESSIONS = ("direct", 0.0, 20.0, 40.0, 60.0, 80.0)
COMPRESSIONS_3D = ("direct", 0.0, 40.0, 80.0)
PGD_EPS = (1 / 255, 2 / 255)
NOISE = (("fourier_noise", 0.1), ("fourier_noise", 0.2), ("gaussian_noise", 0.05), ("fourier_lowpass", 1.0),
         ("fourier_lowpass", 2.0))

logger = logging.getLogger("benchmarks.bandlimited_evidence")


def _shapes(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` volumes ``(n, 1, size, size, size)``: label 0 a sphere, 1 a cube of about the same volume."""
    g = np.indices((size,) * 3).astype(np.float32)
    x = np.empty((n, 1, size, size, size), dtype=np.float32)
    y = rng.integers(0, 2, n)
    for i in range(n):
        r = rng.uniform(3.0, 5.0)
        c = rng.uniform(r + 1, size - r - 1, 3)[:, None, None, None]
        if y[i] == 0:
            inside = ((g - c) ** 2).sum(0) <= r * r
        else:
            half = r * (4 * math.pi / 3) ** (1 / 3) / 2  # cube of the sphere's volume
            inside = (np.abs(g - c) <= half).all(0)
        vol = 0.3 + rng.uniform(0.2, 0.5) * inside + rng.normal(0, 0.08, inside.shape)
        x[i, 0] = np.clip(vol, 0, 1)
    return x, y


def load_task(task: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """``(x_train, y_train, x_test, y_test, description)``."""
    if task == "breastmnist":
        from medrobust.data.medmnist import BREASTMNIST_MALIGNANT_POSITIVE, load_medmnist

        if not BREASTMNIST.is_file():
            raise FileNotFoundError(f"BreastMNIST not found at {BREASTMNIST}")
        tr = load_medmnist(BREASTMNIST, "train", label_map=BREASTMNIST_MALIGNANT_POSITIVE)
        te = load_medmnist(BREASTMNIST, "test", label_map=BREASTMNIST_MALIGNANT_POSITIVE)
        return (torch.from_numpy(tr.images), torch.from_numpy(tr.labels), torch.from_numpy(te.images),
                torch.from_numpy(te.labels), "BreastMNIST (546 train / 156 test, 28 x 28)")
    if task == "synthetic3d":
        rng = np.random.default_rng(1234)
        xtr, ytr = _shapes(256, 20, rng)
        xte, yte = _shapes(256, 20, rng)
        return (torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte), torch.from_numpy(yte),
                "synthetic 3-D sphere vs cube (256 train / 256 test, 20^3)")
    raise ValueError(f"task must be 'breastmnist' or 'synthetic3d', got {task!r}.")


def network(task: str) -> nn.Module:
    """The lesion bundle's network (2-D) or a small 3-D CNN."""
    if task == "breastmnist":
        from medrobust.models.bundle import load_bundle_network

        return load_bundle_network(REPO / "bundles" / "lesion_classification", config_files=("train",),
                                   weights=None).train()
    from monai.networks.blocks import Convolution

    return nn.Sequential(
        Convolution(3, 1, 8, kernel_size=3, norm="batch"), nn.MaxPool3d(2),
        Convolution(3, 8, 16, kernel_size=3, norm="batch"), nn.MaxPool3d(2),
        Convolution(3, 16, 16, kernel_size=3, norm="batch"),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(16, 2),
    )


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int, flip: bool,
          batch_size: int = 64) -> None:
    """Natural training with MONAI's SupervisedTrainer (seeded shuffles and flips)."""
    from monai.engines import SupervisedTrainer

    batches = seeded_batches(x, y, epochs=epochs, batch_size=batch_size, seed=seed, flip=flip)
    trainer = SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=batches, network=net,
                                optimizer=torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4),
                                loss_function=nn.CrossEntropyLoss(), decollate=False)
    trainer.run()


def _predict(net: nn.Module, x: torch.Tensor, bs: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([net(x[i:i + bs]) for i in range(0, len(x), bs)])


def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, n_adv: int | None = None) -> dict:
    """Clean AUC/accuracy, PGD-10 accuracy (on the first ``n_adv`` test items), accuracy under registry perturbations."""
    from medrobust.core.attacks import pgd
    from medrobust.core.metrics.classification import accuracy, roc_auc
    from medrobust.perturbations.registry import PerturbationContext, get_family

    net.eval()
    out = {}
    logits = _predict(net, x)
    out["auc"] = float(roc_auc(logits, y))
    out["accuracy"] = float(accuracy(logits, y))
    xa, ya = x[:n_adv], y[:n_adv]
    for e in PGD_EPS:
        adv = torch.cat([pgd(net, xa[i:i + 64], ya[i:i + 64], eps=e, steps=10, generator=seed + i).x_adv
                         for i in range(0, len(xa), 64)])
        z = _predict(net, adv)
        out[f"pgd_acc_eps{e * 255:g}"] = float(accuracy(z, ya))
        out[f"pgd_auc_eps{e * 255:g}"] = float(roc_auc(z, ya))
    for fam, sev in NOISE:
        xs = []
        for i in range(0, len(x), 64):
            ctx = PerturbationContext.from_seeds([seed * 100003 + j for j in range(i, min(i + 64, len(x)))])
            xs.append(get_family(fam).apply(x[i:i + 64].clone(), sev, ctx))
        out[f"{fam}_{sev:g}_auc"] = float(roc_auc(_predict(net, torch.cat(xs)), y))
    return out


def run(task: str, seeds: Sequence[int], epochs: int, results: Path, compressions: Sequence = COMPRESSIONS) -> None:
    from medrobust.core.layers import bandlimit_convs

    xtr, ytr, xte, yte, desc = load_task(task)
    done = set()
    if results.is_file():
        for line in results.read_text().splitlines():
            r = json.loads(line)
            done.add((r["task"], str(r["compression"]), r["seed"], r["epochs"]))
    results.parent.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for c in compressions:
            if (task, str(c), seed, epochs) in done:
                continue
            if task == "synthetic3d" and c not in COMPRESSIONS_3D:
                continue
            torch.manual_seed(seed)  # benchmark script: same initial weights for every compression at a seed
            net = network(task)
            if c != "direct":
                bandlimit_convs(net, compression=float(c))
            t0 = time.perf_counter()
            train(net, xtr, ytr, epochs=epochs, seed=seed, flip=task == "breastmnist")
            t_train = time.perf_counter() - t0
            row = {"task": task, "data": desc, "compression": c, "seed": seed, "epochs": epochs,
                   "train_s": t_train, **evaluate(net, xte, yte, seed, None if task == "breastmnist" else 128)}
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            logger.info("%s c=%s seed=%d: %s", task, c, seed, {k: round(v, 3) for k, v in row.items()
                                                                if isinstance(v, float)})


def _fmt(vals: list[float]) -> str:
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} +- {statistics.stdev(vals):.3f}"


def report(results: Path) -> str:
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    metrics = ["auc", "accuracy", *[f"pgd_{m}_eps{e * 255:g}" for e in PGD_EPS for m in ("acc", "auc")],
               *[f"{f}_{s:g}_auc" for f, s in NOISE], "train_s"]
    heads = ["AUC", "acc", *[f"PGD {m} {e * 255:g}/255" for e in PGD_EPS for m in ("acc", "AUC")],
             *[f"{f.replace('_', ' ')} {s:g} AUC" for f, s in NOISE], "train s"]
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        rt = [r for r in rows if r["task"] == task]
        seeds = sorted({r["seed"] for r in rt})
        epochs = sorted({r["epochs"] for r in rt})
        lines += [f"### {rt[0]['data']}", "",
                  f"Seeds {seeds} (mean +- sd over the seeds a row has), {epochs} epochs, n_test = "
                  f"{156 if task == 'breastmnist' else '256 (PGD columns: the first 128)'}.", "",
                  "| compression % | seeds | " + " | ".join(heads) + " |", "|---" * (len(heads) + 2) + "|"]
        for c in COMPRESSIONS:
            rc = [r for r in rt if str(r["compression"]) == str(c)]
            if not rc:
                continue
            label = c if isinstance(c, str) else f"{c:g}"
            lines.append(f"| {label} | {len(rc)} | " + " | ".join(_fmt([r[m] for r in rc]) for m in metrics) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["breastmnist", "synthetic3d"], default="breastmnist")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--report", action="store_true", help="print/write the summary table only")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("ignite").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    if not args.report:
        run(args.task, args.seeds, args.epochs, args.results)
    text = report(args.results)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
