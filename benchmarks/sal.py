"""SAL vs ERM vs PGD-AT on BreastMNIST with a spurious marker that flips at test time.

A constructed but honest benchmark: the BreastMNIST training split (546 images) is cut at random
into two environments; a bright 4 x 4 marker in the top-left corner is drawn on an image with a
probability that depends on its label and environment:

- environment 0: P(marker | malignant) = 0.9, P(marker | benign) = 0.1;
- environment 1: P(marker | malignant) = 0.7, P(marker | benign) = 0.3;
- flipped test (BreastMNIST test, 156): P(marker | malignant) = 0.1, P(marker | benign) = 0.9;
- clean test: no marker at all.

The lesion bundle's network is trained from scratch (AdamW 1e-3, batch 64, MONAI
``SupervisedTrainer``) by ERM, PGD-AT (L-inf eps 8/255, 5 steps), penalised AT with uniform costs
(SAL with ``learn_w=False``) and SAL (:class:`medrobust.core.defenses.SAL`); SAL's cost features
are the 49 cells of a 7 x 7 grid of 4 x 4 patches (cell 0 is exactly the marker). Reported: AUC
and accuracy on both tests, and for SAL the learned cost of the marker cell (rank among 49, ratio
to the median cell).

Results go to a JSONL file after every run (resumable). Run from the repository root::

    nice -n 10 python -m benchmarks.sal --seeds 0 1 2 --epochs 15
    python -m benchmarks.sal --report
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from benchmarks._evidence import add_results_arguments, run_or_report

__all__ = ["add_marker", "environments", "method_step", "run", "report", "main"]

REPO = Path(__file__).resolve().parents[1]
BREASTMNIST = REPO.parent / "shared" / "data" / "breastmnist" / "breastmnist.npz"
RESULTS = REPO / "docs" / "data" / "sal_runs.jsonl"
METHODS = ("erm", "pgd-at", "penalised-at", "sal")
ENV_P = ((0.9, 0.1), (0.7, 0.3))  # (P(marker | malignant), P(marker | benign)) per training environment
TEST_P = (0.1, 0.9)

logger = logging.getLogger("benchmarks.sal")


def add_marker(x: torch.Tensor, y: torch.Tensor, p: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """Copy of ``x`` ``(N, 1, 28, 28)`` with the top-left 4 x 4 set to 1 where a draw says so (``p`` by label 1/0)."""
    prob = torch.where(y == 1, torch.tensor(p[0]), torch.tensor(p[1]))
    on = torch.rand(len(y), generator=g) < prob
    out = x.clone()
    out[on, :, :4, :4] = 1.0
    return out


def environments(seed: int):
    from medrobust.data.medmnist import BREASTMNIST_MALIGNANT_POSITIVE, load_medmnist

    tr = load_medmnist(BREASTMNIST, "train", label_map=BREASTMNIST_MALIGNANT_POSITIVE)
    te = load_medmnist(BREASTMNIST, "test", label_map=BREASTMNIST_MALIGNANT_POSITIVE)
    g = torch.Generator().manual_seed(1000 + seed)
    x, y = torch.from_numpy(tr.images), torch.from_numpy(tr.labels)
    env = (torch.randperm(len(y), generator=g) % 2)
    xm = x.clone()
    for e, p in enumerate(ENV_P):
        xm[env == e] = add_marker(x[env == e], y[env == e], p, g)
    xte, yte = torch.from_numpy(te.images), torch.from_numpy(te.labels)
    return xm, y, env, add_marker(xte, yte, TEST_P, g), xte, yte


def _network() -> nn.Module:
    """The lesion bundle's network (fresh initialisation, train mode)."""
    from medrobust.models.bundle import load_bundle_network

    return load_bundle_network(REPO / "bundles" / "lesion_classification", config_files=("train",), weights=None).train()


def method_step(method: str, args: argparse.Namespace, seed: int):
    from medrobust.core.defenses import SAL, PGDAdversarialTraining

    grid = (torch.arange(28)[:, None] // 4) * 7 + torch.arange(28)[None, :] // 4  # 7 x 7 cells of 4 x 4
    sal = {"num_features": 49, "features": grid, "cost_scale": args.cost_scale, "inner_steps": args.inner_steps,
           "inner_lr": args.inner_lr, "alpha": args.alpha, "w_lr": args.w_lr, "seed": seed}
    if method == "erm":
        return None
    if method == "pgd-at":
        return PGDAdversarialTraining(eps=8 / 255, steps=5, seed=seed)
    if method == "penalised-at":
        return SAL(learn_w=False, **sal)
    if method == "sal":
        return SAL(**sal)
    raise ValueError(method)


def _metrics(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    from medrobust.core.metrics.classification import accuracy, roc_auc

    net.eval()
    with torch.no_grad():
        z = net(x)
    return float(roc_auc(z, y)), float(accuracy(z, y))


def run(args: argparse.Namespace) -> None:
    from monai.engines import SupervisedTrainer

    done = set()
    if args.results.is_file():
        done = {(r["method"], r["seed"]) for r in map(json.loads, args.results.read_text().splitlines())}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        x, y, env, x_flip, x_clean, yte = environments(seed)
        for method in args.methods:
            if (method, seed) in done:
                continue
            torch.manual_seed(seed)  # benchmark script: the seed fixes the initial weights
            net = _network()
            g = torch.Generator().manual_seed(seed)
            batches = []
            for _ in range(args.epochs):
                perm = torch.randperm(len(y), generator=g)
                batches += [{"image": x[perm[i:i + 64]], "label": y[perm[i:i + 64]], "env": env[perm[i:i + 64]]}
                            for i in range(0, len(y), 64)]
            step = method_step(method, args, seed)
            kw = {} if step is None else {"iteration_update": step}
            t0 = time.perf_counter()
            SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=batches, network=net, decollate=False,
                              optimizer=torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4),
                              loss_function=nn.CrossEntropyLoss(), **kw).run()
            row = {"method": method, "seed": seed, "epochs": args.epochs, "train_s": time.perf_counter() - t0,
                   "cost_scale": args.cost_scale, "inner_steps": args.inner_steps, "inner_lr": args.inner_lr,
                   "alpha": args.alpha}
            row["flip_auc"], row["flip_acc"] = _metrics(net, x_flip, yte)
            row["clean_auc"], row["clean_acc"] = _metrics(net, x_clean, yte)
            if method == "sal":
                w = step.w
                row["w"] = w.tolist()
                row["marker_w_rank"] = int((w < w[0]).sum()) + 1  # 1 = the cheapest feature
                row["marker_w_over_median"] = float(w[0] / w.median())
            with args.results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            logger.info("%s seed %d: %s", method, seed,
                        {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items() if k != "w"})


def report(results: Path) -> str:
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    cols = [("flip_auc", "flipped-test AUC"), ("flip_acc", "flipped-test acc"), ("clean_auc", "no-marker AUC"),
            ("clean_acc", "no-marker acc"), ("train_s", "train s")]
    lines = [f"Seeds {sorted({r['seed'] for r in rows})}, {rows[0]['epochs']} epochs; mean +- sd over seeds; "
             "n_test = 156 (42 malignant).", "",
             "| method | " + " | ".join(h for _, h in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for m in METHODS:
        rm = [r for r in rows if r["method"] == m]
        if not rm:
            continue
        cells = [f"{rm[0][k]:.3f}" if len(rm) == 1 else
                 f"{statistics.mean(r[k] for r in rm):.3f} +- {statistics.stdev(r[k] for r in rm):.3f}" for k, _ in cols]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    sal = [r for r in rows if r["method"] == "sal"]
    if sal:
        lines += ["", "SAL's learned cost of the marker cell (rank 1 = the cheapest of 49 cells to perturb; "
                  "ratio to the median cell's cost), per seed: "
                  + "; ".join(f"seed {r['seed']}: rank {r['marker_w_rank']}, x{r['marker_w_over_median']:.3f}"
                              for r in sal)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--cost_scale", type=float, default=0.05)
    p.add_argument("--inner_steps", type=int, default=5)
    p.add_argument("--inner_lr", type=float, default=1.0)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--w_lr", type=float, default=0.2)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    add_results_arguments(p, RESULTS)
    return run_or_report(p.parse_args(argv), run, report)


if __name__ == "__main__":
    sys.exit(main())
