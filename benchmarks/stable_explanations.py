"""Attribution sparseness and stability of natural, PGD-AT, IG-NORM and IG-SUM-NORM models on BreastMNIST.

Protocol (CPU budget): per seed, one natural model is trained from scratch (``--base_epochs``
epochs, AdamW 1e-3, batch 64, random flips) with MONAI's ``SupervisedTrainer``; each method then
fine-tunes a copy of it for ``--ft_epochs`` epochs with its ``iteration_update`` (natural = plain
training continued, so every model has seen the same number of epochs):

- PGD-AT: :class:`medrobust.core.defenses.PGDAdversarialTraining` (eps, ``--pgd_steps`` steps);
- IG-NORM (lambda 1) and IG-SUM-NORM (beta 0.1): :mod:`medrobust.core.defenses.stable_explanations`
  with ``--pgd_steps`` inner PGD steps, ``--attack_ig_steps`` IG points inside and ``--ig_steps``
  in the training term (the paper: ~50 and 10; fewer here for time).

Test metrics (BreastMNIST test, n = 156, 1 = malignant): AUC, accuracy, PGD-10 accuracy at eps;
attribution Gini (:func:`medrobust.core.metrics.gini_index` of Captum IG, zero baseline, 100
steps, true class); top-k intersection (k = 10 % of the pixels) between IG maps of x and of
x' from :func:`medrobust.core.metrics.topk_attribution_attack` (eps, 10 steps), on the samples
whose label the attack kept, and for uniform random noise of the same radius (reference).

Results go to a JSONL file after every model (resumable). Run from the repository root::

    nice -n 10 python -m benchmarks.stable_explanations --seeds 0 1 2
    python -m benchmarks.stable_explanations --report
"""

from __future__ import annotations

import argparse
import copy
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

__all__ = ["METHODS", "make_step", "fit", "evaluate", "run", "report", "main"]

REPO = Path(__file__).resolve().parents[1]
BREASTMNIST = REPO.parent / "shared" / "data" / "breastmnist" / "breastmnist.npz"
RESULTS = REPO / "docs" / "data" / "stable_explanations_runs.jsonl"
METHODS = ("natural", "pgd-at", "ig-norm", "ig-sum-norm")

logger = logging.getLogger("benchmarks.stable_explanations")


def _data():
    from medrobust.data.medmnist import BREASTMNIST_MALIGNANT_POSITIVE, load_medmnist

    if not BREASTMNIST.is_file():
        raise FileNotFoundError(f"BreastMNIST not found at {BREASTMNIST}")
    tr = load_medmnist(BREASTMNIST, "train", label_map=BREASTMNIST_MALIGNANT_POSITIVE)
    te = load_medmnist(BREASTMNIST, "test", label_map=BREASTMNIST_MALIGNANT_POSITIVE)
    return (torch.from_numpy(tr.images), torch.from_numpy(tr.labels), torch.from_numpy(te.images),
            torch.from_numpy(te.labels))


def _network() -> nn.Module:
    """The lesion bundle's network (fresh initialisation, train mode)."""
    from medrobust.models.bundle import load_bundle_network

    return load_bundle_network(REPO / "bundles" / "lesion_classification", config_files=("train",), weights=None).train()


def make_step(method: str, args: argparse.Namespace, seed: int):
    """The ``iteration_update`` of ``method`` (``None`` for natural training)."""
    from medrobust.core.defenses import IGNorm, IGSumNorm, PGDAdversarialTraining

    common = {"eps": args.eps, "steps": args.pgd_steps, "seed": seed}
    ig = {"ig_steps": args.ig_steps, "attack_ig_steps": args.attack_ig_steps}
    if method == "natural":
        return None
    if method == "pgd-at":
        return PGDAdversarialTraining(**common)
    if method == "ig-norm":
        return IGNorm(lam=args.lam, **common, **ig)
    if method == "ig-sum-norm":
        return IGSumNorm(beta=args.beta, **common, **ig)
    raise ValueError(f"unknown method {method!r}")


def fit(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int, step=None) -> None:
    """``epochs`` epochs of MONAI ``SupervisedTrainer`` (seeded shuffles and flips) with ``iteration_update=step``."""
    from monai.engines import SupervisedTrainer

    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            xb = x[idx].clone()
            f = torch.rand(len(idx), generator=g) < 0.5
            xb[f] = xb[f].flip(-1)
            batches.append({"image": xb, "label": y[idx]})
    kw = {} if step is None else {"iteration_update": step}
    SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=batches, network=net,
                      optimizer=torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4),
                      loss_function=nn.CrossEntropyLoss(), decollate=False, **kw).run()


def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int) -> dict:
    from medrobust.core.attacks import pgd
    from medrobust.core.metrics import gini_index, integrated_gradients, topk_attribution_attack, topk_intersection
    from medrobust.core.metrics.classification import accuracy, roc_auc

    net.eval()
    with torch.no_grad():
        logits = net(x)
    out = {"auc": float(roc_auc(logits, y)), "accuracy": float(accuracy(logits, y))}
    adv = pgd(net, x, y, eps=eps, steps=10, generator=seed).x_adv
    with torch.no_grad():
        out["pgd_accuracy"] = float(accuracy(net(adv), y))
    ig = integrated_gradients(net, x, y, steps=100)
    out["gini"] = float(gini_index(ig).mean())
    x_att, kept = topk_attribution_attack(net, x, y, eps=eps, k=0.1, steps=10, ig_steps=5, generator=seed)
    ig_att = integrated_gradients(net, x_att, y, steps=100)
    inter = topk_intersection(ig, ig_att, k=0.1)
    out["topk_attack"] = float(inter[kept].mean()) if bool(kept.any()) else float("nan")
    out["attack_label_kept"] = float(kept.float().mean())
    g = torch.Generator().manual_seed(seed)
    x_rand = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps).clamp(0, 1)
    out["topk_random"] = float(topk_intersection(ig, integrated_gradients(net, x_rand, y, steps=100), k=0.1).mean())
    return out


def run(args: argparse.Namespace) -> None:
    xtr, ytr, xte, yte = _data()
    done = set()
    if args.results.is_file():
        done = {(r["method"], r["seed"]) for r in map(json.loads, args.results.read_text().splitlines())}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        if all((m, seed) in done for m in METHODS):
            continue
        torch.manual_seed(seed)  # benchmark script: the seed fixes the initial weights
        base = _network()
        t0 = time.perf_counter()
        fit(base, xtr, ytr, epochs=args.base_epochs, seed=seed)
        logger.info("seed %d: base model %.0f s", seed, time.perf_counter() - t0)
        for method in METHODS:
            if (method, seed) in done:
                continue
            net = copy.deepcopy(base)
            t0 = time.perf_counter()
            fit(net, xtr, ytr, epochs=args.ft_epochs, seed=seed + 1, step=make_step(method, args, seed))
            row = {"method": method, "seed": seed, "base_epochs": args.base_epochs, "ft_epochs": args.ft_epochs,
                   "eps": args.eps, "pgd_steps": args.pgd_steps, "ig_steps": args.ig_steps,
                   "attack_ig_steps": args.attack_ig_steps, "train_s": time.perf_counter() - t0,
                   **evaluate(net, xte, yte, eps=args.eps, seed=seed)}
            with args.results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            logger.info("%s seed %d: %s", method, seed, {k: round(v, 3) for k, v in row.items() if isinstance(v, float)})


def report(results: Path) -> str:
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    cols = [("auc", "AUC"), ("accuracy", "acc"), ("pgd_accuracy", "PGD-10 acc"), ("gini", "IG Gini"),
            ("topk_attack", "top-10% intersection, attribution attack"), ("attack_label_kept", "attack kept label"),
            ("topk_random", "top-10% intersection, random noise"), ("train_s", "fine-tune s")]
    r0 = rows[0]
    lines = [f"Seeds {sorted({r['seed'] for r in rows})}; base {r0['base_epochs']} natural epochs + {r0['ft_epochs']} "
             f"fine-tuning epochs per method; eps {r0['eps'] * 255:g}/255, {r0['pgd_steps']} PGD steps, IG "
             f"{r0['ig_steps']} (training term) / {r0['attack_ig_steps']} (inner max) points; mean +- sd over seeds.", "",
             "| method | " + " | ".join(h for _, h in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for m in METHODS:
        rm = [r for r in rows if r["method"] == m]
        if not rm:
            continue
        cells = []
        for k, _ in cols:
            v = [r[k] for r in rm if r[k] == r[k]]
            cells.append("-" if not v else f"{v[0]:.3f}" if len(v) == 1 else
                         f"{statistics.mean(v):.3f} +- {statistics.stdev(v):.3f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    nat = {r["seed"]: r["gini"] for r in rows if r["method"] == "natural"}
    for m in METHODS[1:]:
        d = [r["gini"] - nat[r["seed"]] for r in rows if r["method"] == m and r["seed"] in nat]
        if d:
            lines.append(f"\nGini({m}) - Gini(natural), paired by seed: "
                         + ", ".join(f"{v:+.3f}" for v in d))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--base_epochs", type=int, default=20)
    p.add_argument("--ft_epochs", type=int, default=4)
    p.add_argument("--eps", type=float, default=4 / 255)
    p.add_argument("--pgd_steps", type=int, default=3)
    p.add_argument("--ig_steps", type=int, default=8)
    p.add_argument("--attack_ig_steps", type=int, default=4)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--beta", type=float, default=0.1)
    add_results_arguments(p, RESULTS)
    return run_or_report(p.parse_args(argv), run, report)


if __name__ == "__main__":
    sys.exit(main())
