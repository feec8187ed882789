"""Evidence for docs/pruning.md: Taylor vs magnitude vs random, natural vs robustness-aware, pruned 3-D UNet.

Run (one thread; resumable: finished runs are rows of OUT/runs.csv and are not redone)::

    nice -n 10 .venv/bin/python benchmarks/pruning_evidence.py --out runs/pruning --seeds 0 1 2

Parts (``--parts``): ``criteria`` (BreastMNIST, lesion-bundle network, natural training),
``robust`` (FGSM-RS adversarially trained network, natural vs PGD Taylor criterion),
``unet`` (synthetic 3-D segmentation). Prints markdown tables with bootstrap 95 % CIs over test cases.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medrobust.core.attacks import pgd
from medrobust.core.defenses import FastFGSMTraining
from medrobust.core.pruning import adversarial_loss, count_flops, iterative_prune, natural_loss
from medrobust.data.medmnist import medmnist_datalist
from medrobust.models.bundle import load_bundle_network
from medrobust.sensitivity.intervals import auc_rows, bootstrap_indices, percentile_interval

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "lesion_classification"
DATA = ROOT.parent / "shared" / "data" / "breastmnist" / "breastmnist.npz"
TARGETS = (0.75, 0.5, 0.25)  # MACs kept: 25 / 50 / 75 % reduction
EPS = 2 / 255


def bundle_network() -> nn.Module:
    """The lesion bundle's network (``train.json``), freshly initialised (global RNG), in train mode."""
    return load_bundle_network(BUNDLE, config_files=["train.json"], weights=None,
                               overrides={"device": "$torch.device('cpu')"}).train()


def split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    dl = medmnist_datalist(DATA, name, label_map={0: 1, 1: 0}, spatial_dims=2)
    return (torch.stack([torch.as_tensor(d["image"]) for d in dl]).float(),
            torch.as_tensor([int(d["label"]) for d in dl]))


def batches(x: torch.Tensor, y: torch.Tensor, seed: int, bs: int = 64):
    """Endless shuffled minibatches with random horizontal flips (the bundle's augmentation)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - bs + 1, bs):
            idx = perm[i:i + bs]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            yield xb, y[idx]


def fgsm_rs_loss(seed: int):
    """Fast adversarial training loss: FGSM from a random start, step 1.25 eps (the library's ``fast-fgsm`` attack)."""
    step = FastFGSMTraining(eps=EPS, early_stop=False, seed=seed)

    def loss(model, x, y):
        was = model.training
        model.eval()
        xa = step.attack(model, x, y).detach()
        model.train(was)
        return nn.functional.cross_entropy(model(xa), y)

    return loss


def train(model, stream, n_batches: int, loss_fn, lr: float = 1e-3, cosine: bool = True) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(n_batches, 1)) if cosine else None
    model.train()
    for _ in range(n_batches):
        x, y = next(stream)
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step()
        if sched:
            sched.step()


def predict(model, x, y, *, robust: bool, seed: int) -> dict:
    model.eval()
    with torch.no_grad():
        p = model(x).softmax(1)[:, 1].numpy()
    out = {"p": p.tolist()}
    if robust:
        xa = pgd(model, x, y, eps=EPS, steps=10, alpha=2.5 * EPS / 10, generator=seed).x_adv
        with torch.no_grad():
            out["correct_adv"] = (model(xa).argmax(1) == y).numpy().astype(int).tolist()
    return out


def seed_stats(per_seed: list[np.ndarray], y: np.ndarray, *, auc: bool, idx: np.ndarray) -> dict:
    """Per-seed values, their mean and sd over seeds, and the 95 % case-bootstrap CI of the seed mean.

    Every seed is scored on the same resampled case sets ``idx`` (``(n_boot, n)`` from
    :func:`medrobust.sensitivity.intervals.bootstrap_indices`), so the CI is of the mean over seeds.
    ``auc``: values are probabilities scored by AUC; otherwise 0/1 correctness averaged.
    """
    score = (lambda v, i: auc_rows(v[i], y[i])) if auc else (lambda v, i: v[i].mean(-1))  # noqa: E731
    full = np.arange(len(y))[None]
    values = [float(score(np.asarray(v, dtype=float), full)[0]) for v in per_seed]
    boots = np.mean([score(np.asarray(v, dtype=float), idx) for v in per_seed], axis=0)
    lo, hi = percentile_interval(boots)
    return {"values": values, "mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else
            float("nan"), "lo": lo, "hi": hi, "boots": boots}


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = {}
        if path.is_file():
            with open(path, newline="") as f:
                for r in csv.DictReader(f):
                    self.rows[r["key"]] = json.loads(r["data"])

    def get(self, key):
        return self.rows.get(key)

    def put(self, key, data) -> None:
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["key", "data"])
            if new:
                w.writeheader()
            w.writerow({"key": key, "data": json.dumps(data)})
        self.rows[key] = data


def base_model(out: Path, kind: str, seed: int, xtr, ytr, epochs: int = 40) -> nn.Module:
    path = out / f"base_{kind}_{seed}.pt"
    torch.manual_seed(seed)  # the bundle network's init (script, not library: global seeding is fine here)
    net = bundle_network()
    if path.is_file():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net
    n = epochs * (len(xtr) // 64)
    train(net, batches(xtr, ytr, seed), n, natural_loss() if kind == "natural" else fgsm_rs_loss(seed))
    torch.save(net.state_dict(), path)
    return net


def criteria_part(out, store, seeds, data, budget):
    (xtr, ytr), (xte, yte) = data
    for seed in seeds:
        for target in TARGETS:
            for crit in ("taylor", "magnitude", "random"):
                key = f"criteria/{crit}/{target}/{seed}"
                if store.get(key):
                    continue
                net = base_model(out, "natural", seed, xtr, ytr)
                t0 = time.perf_counter()
                stream = batches(xtr, ytr, 1000 + seed)
                res = iterative_prune(net, stream, example_inputs=xtr[:1], criterion=crit, target_flops=target,
                                      channels_per_step=8, batches_per_step=5, seed=seed,
                                      optimizer=lambda ps: torch.optim.AdamW(ps, lr=3e-4, weight_decay=1e-4))
                train(net, stream, budget - res.train_batches, natural_loss(), lr=3e-4)
                store.put(key, {"flops_ratio": res.flops_ratio, "params_ratio": res.params_ratio,
                                "s": time.perf_counter() - t0, **predict(net, xte, yte, robust=False, seed=seed)})
        key = f"criteria/dense/1.0/{seed}"
        if not store.get(key):
            net = base_model(out, "natural", seed, xtr, ytr)
            store.put(key, {"flops_ratio": 1.0, "params_ratio": 1.0, **predict(net, xte, yte, robust=False, seed=seed)})


def robust_part(out, store, seeds, data, budget):
    (xtr, ytr), (xte, yte) = data
    for seed in seeds:
        key = f"robust/dense/1.0/{seed}"
        if not store.get(key):
            net = base_model(out, "fgsm", seed, xtr, ytr)
            store.put(key, {"flops_ratio": 1.0, **predict(net, xte, yte, robust=True, seed=seed)})
        for target in TARGETS:
            for crit in ("natural", "robust"):
                key = f"robust/{crit}/{target}/{seed}"
                if store.get(key):
                    continue
                net = base_model(out, "fgsm", seed, xtr, ytr)
                stream = batches(xtr, ytr, 2000 + seed)
                train_loss = fgsm_rs_loss(3000 + seed)
                closs = natural_loss() if crit == "natural" else adversarial_loss(eps=EPS, steps=5, seed=seed)
                t0 = time.perf_counter()
                res = iterative_prune(net, stream, example_inputs=xtr[:1], criterion="taylor", target_flops=target,
                                      channels_per_step=8, batches_per_step=5, train_loss=train_loss,
                                      criterion_loss=closs,
                                      optimizer=lambda ps: torch.optim.AdamW(ps, lr=3e-4, weight_decay=1e-4))
                train(net, stream, budget - res.train_batches, train_loss, lr=3e-4)
                store.put(key, {"flops_ratio": res.flops_ratio, "s": time.perf_counter() - t0,
                                **predict(net, xte, yte, robust=True, seed=seed)})


def synthetic_seg(n: int, seed: int, size: int = 32):
    """Bright noisy ellipsoids on a noisy background; label = inside the ellipsoid."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, size)] * 3, indexing="ij"))
    xs, ys = [], []
    for _ in range(n):
        c = (torch.rand(3, generator=g) - 0.5) * 0.8
        r = 0.25 + 0.3 * torch.rand(3, generator=g)
        inside = (((grid - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) <= 1
        img = 0.3 * inside.float() + 0.15 * torch.randn(grid.shape[1:], generator=g) + 0.35
        xs.append(img[None]), ys.append(inside.long())
    return torch.stack(xs), torch.stack(ys)


def unet_part(out, store, seeds):
    from monai.losses import DiceCELoss
    from monai.metrics import DiceMetric
    from monai.networks.nets import UNet

    xtr, ytr = synthetic_seg(48, 100)
    xte, yte = synthetic_seg(16, 200)
    dice_loss = DiceCELoss(to_onehot_y=True, softmax=True)
    loss = lambda m, x, y: dice_loss(m(x), y[:, None])  # noqa: E731

    def dice(net):
        net.eval()
        with torch.no_grad():
            pred = net(xte).argmax(1, keepdim=True)
        m = DiceMetric(include_background=False, reduction="none")
        return m(torch.nn.functional.one_hot(pred[:, 0], 2).movedim(-1, 1),
                 torch.nn.functional.one_hot(yte, 2).movedim(-1, 1))[:, 0].tolist()

    for seed in seeds:
        key = f"unet/{seed}"
        if store.get(key):
            continue
        torch.manual_seed(seed)
        net = UNet(3, 1, 2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1, norm="batch")

        def stream(s):
            g = torch.Generator().manual_seed(s)
            while True:
                idx = torch.randperm(len(xtr), generator=g)[:4]
                yield xtr[idx], ytr[idx]

        t0 = time.perf_counter()
        train(net, stream(seed), 150, loss, lr=3e-3)
        dense = dice(net)
        macs0, params0 = count_flops(net, xtr[:1])
        st = stream(500 + seed)
        res = iterative_prune(net, st, example_inputs=xtr[:1], criterion="taylor", target_flops=0.5,
                              channels_per_step=4, batches_per_step=3, train_loss=loss,
                              optimizer=lambda ps: torch.optim.AdamW(ps, lr=1e-3))
        train(net, st, 60 - res.train_batches, loss, lr=1e-3)
        store.put(key, {"dense": dense, "pruned": dice(net), "flops_ratio": res.flops_ratio,
                        "params_ratio": res.params_ratio, "macs0": macs0, "s": time.perf_counter() - t0})


def _fmt(st: dict) -> str:
    return f"{st['mean']:.3f} ± {st['sd']:.3f} | [{st['lo']:.3f}, {st['hi']:.3f}] | " + ", ".join(f"{v:.3f}" for v in st["values"])


def report(store, seeds, yte) -> None:
    y = yte.numpy()
    idx = bootstrap_indices(len(y), seed=0)

    def runs_of(prefix, name, target):
        runs = [store.get(f"{prefix}/{name}/{target}/{s}") for s in seeds]
        return [r for r in runs if r]

    def macs(runs):
        fl = [r["flops_ratio"] for r in runs]
        return f"{np.mean(fl):.3f} [{min(fl):.3f}, {max(fl):.3f}]"

    print("\n| criterion | target reduction | MACs kept, mean [min, max] | seeds | clean AUC mean ± sd over seeds | "
          "95% CI (test cases) | AUC per seed |\n|---|---|---|---|---|---|---|")
    stats = {}
    for target in (1.0, *TARGETS):
        for name in ("dense", "taylor", "magnitude", "random"):
            runs = runs_of("criteria", name, target)
            if runs:
                stats[name, target] = st = seed_stats([r["p"] for r in runs], y, auc=True, idx=idx)
                print(f"| {name} | {1 - target:.0%} | {macs(runs)} | {len(runs)} | {_fmt(st)} |")
    print("\n| target reduction | comparison | AUC difference, mean over seeds | 95% CI (paired, test cases) | "
          "seeds Taylor >= other |\n|---|---|---|---|---|")
    for target in TARGETS:
        for other in ("magnitude", "random"):
            t, m = stats.get(("taylor", target)), stats.get((other, target))
            if t and m and len(t["values"]) == len(m["values"]):
                lo, hi = percentile_interval(t["boots"] - m["boots"])
                wins = sum(a >= b for a, b in zip(t["values"], m["values"]))
                print(f"| {1 - target:.0%} | Taylor - {other} | {t['mean'] - m['mean']:+.3f} | [{lo:+.3f}, {hi:+.3f}] | "
                      f"{wins} of {len(t['values'])} |")

    print("\n| criterion | target reduction | MACs kept, mean [min, max] | seeds | clean AUC mean ± sd | 95% CI | per seed "
          "| PGD-10 acc 2/255 mean ± sd | 95% CI | per seed |\n|---|---|---|---|---|---|---|---|---|---|")
    rob = {}
    for target in (1.0, *TARGETS):
        for name in ("dense", "natural", "robust"):
            runs = runs_of("robust", name, target)
            if runs:
                auc = seed_stats([r["p"] for r in runs], y, auc=True, idx=idx)
                rob[name, target] = ra = seed_stats([r["correct_adv"] for r in runs], y, auc=False, idx=idx)
                print(f"| {name} | {1 - target:.0%} | {macs(runs)} | {len(runs)} | {_fmt(auc)} | {_fmt(ra)} |")
    print("\n| target reduction | robust - natural criterion, PGD-10 acc | 95% CI (paired) | seeds robust >= natural |"
          "\n|---|---|---|---|")
    for target in TARGETS:
        r, n = rob.get(("robust", target)), rob.get(("natural", target))
        if r and n and len(r["values"]) == len(n["values"]):
            lo, hi = percentile_interval(r["boots"] - n["boots"])
            wins = sum(a >= b for a, b in zip(r["values"], n["values"]))
            print(f"| {1 - target:.0%} | {r['mean'] - n['mean']:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {wins} of {len(r['values'])} |")

    un = [(s, store.get(f"unet/{s}")) for s in seeds]
    un = [(s, u) for s, u in un if u]
    if un:
        print("\n| seed | MACs kept | params kept | Dice dense | Dice pruned | difference |\n|---|---|---|---|---|---|")
        diffs = []
        for s, u in un:
            d0, d1 = np.mean(u["dense"]), np.mean(u["pruned"])
            diffs.append(d1 - d0)
            print(f"| {s} | {u['flops_ratio']:.3f} | {u['params_ratio']:.3f} | {d0:.3f} | {d1:.3f} | {d1 - d0:+.3f} |")
        print(f"\nDice difference over {len(diffs)} seeds: mean {np.mean(diffs):+.3f}, min {min(diffs):+.3f}, max {max(diffs):+.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--parts", nargs="+", default=["criteria", "robust", "unet"],
                    choices=["criteria", "robust", "unet", "report"], help="'report' alone: only print the tables")
    ap.add_argument("--budget", type=int, default=120, help="minibatches of training after the dense model (all criteria)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    store = Store(args.out / "runs.csv")
    data = (split("train"), split("test"))
    t0 = time.perf_counter()
    if "criteria" in args.parts:
        criteria_part(args.out, store, args.seeds, data, args.budget)
    if "robust" in args.parts:
        robust_part(args.out, store, args.seeds, data, args.budget)
    if "unet" in args.parts:
        unet_part(args.out, store, args.seeds)
    report(store, args.seeds, data[1][1])
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
