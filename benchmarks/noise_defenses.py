"""Evidence for the randomised and private defenses (docs/noise_defenses.md) on BreastMNIST
(official split: train for training, test for every number), 3 seeds, one thread.

Rows: natural, PGD-AT, PNI-W, PNI-C, CNI, BLL (natural extractor), BLL (AT extractor), SIDP,
Opacus DP-SGD. Columns (all judged by the model's prediction: the mean over 8 draws for the
stochastic rows): clean AUC / accuracy, PGD-10 at 2/255 with one draw per step (no EOT), PGD-10
with EOT (K draws per step), PGD-10 on the predictive mean, Square (200 queries), PGD-10
transferred from the natural model of the same seed and from the row's own deterministic model,
and Opacus' epsilon at delta 1e-5 for the private rows.

Writes one CSV row per (method, seed) to ``--out`` and skips rows already there (resume), then
prints the markdown table (mean +- sd over seeds).

    python benchmarks/noise_defenses.py --out runs/noise_defenses --seeds 0 1 2 --epochs 6 --head_epochs 6 \
        --dp_epochs 6 --eot 10 --predict_samples 4 --queries 100
    python benchmarks/noise_defenses.py --out runs/noise_defenses --table_only
"""

from __future__ import annotations

import argparse
import copy
import csv
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from monai.engines import SupervisedTrainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medrobust.core.defenses import (
    NoiseInjectionTraining,
    PGDAdversarialTraining,
    SIDPTraining,
    bayesian_last_layer,
    dp_epsilon,
    elbo_loss,
    inject_noise,
    make_dp_sgd,
    noise_disabled,
    noise_parameter_groups,
    non_affine_normalization,
    opacus_compatible,
    randomized_robustness,
)
from medrobust.core.defenses.bayesian import last_bayesian_layer
from medrobust.data.medmnist import BREASTMNIST_MALIGNANT_POSITIVE, load_medmnist
from medrobust.models.bundle import load_bundle_network

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "lesion_classification"
DATA = Path(os.environ.get("MEDROBUST_BREASTMNIST", REPO.parent / "shared" / "data" / "breastmnist" / "breastmnist.npz"))
EPS = 2 / 255
METHODS = ("natural", "pgd-at", "pni-w", "pni-c", "cni", "bll-natural", "bll-at", "sidp", "dp-sgd")
STOCHASTIC = {"pni-w", "pni-c", "cni", "bll-natural", "bll-at"}
logger = logging.getLogger("noise_defenses")


def breastmnist(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    s = load_medmnist(DATA, split, label_map=BREASTMNIST_MALIGNANT_POSITIVE)
    return torch.as_tensor(s.images), torch.as_tensor(s.labels).long()


def lesion_cnn(seed: int) -> nn.Module:
    """The lesion bundle's network (configs/train.json), freshly initialised with ``seed``."""
    torch.manual_seed(seed)  # script-level seeding (library code never seeds globally)
    return load_bundle_network(BUNDLE, config_files=("train",), weights=None).train()


def loader(x: torch.Tensor, y: torch.Tensor, seed: int, batch: int = 64) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed))


def fit(net: nn.Module, data: DataLoader, *, epochs: int, step=None, optimizer=None, loss=None) -> nn.Module:
    """MONAI SupervisedTrainer; ``step`` is the defense's iteration_update (None: natural)."""
    if optimizer is None:
        optimizer = torch.optim.AdamW(noise_parameter_groups(net, weight_decay=1e-4), lr=1e-3)
    SupervisedTrainer(device="cpu", max_epochs=epochs, train_data_loader=data, network=net, optimizer=optimizer,
                      loss_function=loss or nn.CrossEntropyLoss(), iteration_update=step).run()
    return net.eval()


def train(method: str, seed: int, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace, cache: dict) -> dict:
    """Returns {"model", "deterministic" (own transfer source or None), "epsilon"}."""
    at = dict(eps=EPS, steps=args.attack_steps, seed=seed)
    if method in ("natural", "pgd-at"):
        net = lesion_cnn(seed)
        step = None if method == "natural" else PGDAdversarialTraining(clean_weight=0.5, **at)
        return {"model": fit(net, loader(x, y, seed), epochs=args.epochs, step=step), "deterministic": None}
    if method in ("pni-w", "pni-c", "cni"):
        net = inject_noise(lesion_cnn(seed), kind="cni" if method == "cni" else "pni", per_channel=method == "pni-c")
        fit(net, loader(x, y, seed), epochs=args.epochs, step=NoiseInjectionTraining(**at))
        det = copy.deepcopy(net)
        for m in det.modules():
            if hasattr(m, "enabled"):
                m.enabled = False
        return {"model": net, "deterministic": det}
    if method.startswith("bll"):
        base = cache[("natural" if method == "bll-natural" else "pgd-at", seed)]
        net = bayesian_last_layer(copy.deepcopy(base), kind="variational")
        fit(net, loader(x, y, seed), epochs=args.head_epochs, loss=elbo_loss(net, n_train=len(x)),
            optimizer=torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2))
        return {"model": net, "deterministic": base}
    # private rows: matched (q, sigma, T, C, lr), Poisson sampling for both
    q = args.dp_batch / len(x)
    steps = int(round(args.dp_epochs / q))
    eps_dp = dp_epsilon(sample_rate=q, noise_multiplier=args.sigma, steps=steps, delta=1e-5)
    if method == "sidp":
        from opacus.data_loader import DPDataLoader

        net = non_affine_normalization(lesion_cnn(seed))
        data = DPDataLoader.from_data_loader(loader(x, y, seed, args.dp_batch), generator=torch.Generator().manual_seed(seed))
        opt = torch.optim.SGD(net.parameters(), lr=args.dp_lr, momentum=0.9)
        step = SIDPTraining(max_grad_norm=args.clip, noise_multiplier=args.sigma, batch_size=args.dp_batch, seed=seed)
        SupervisedTrainer(device="cpu", max_epochs=args.dp_epochs, train_data_loader=data, network=net, optimizer=opt,
                          loss_function=nn.CrossEntropyLoss(), iteration_update=step).run()
        return {"model": net.eval(), "deterministic": None, "epsilon": eps_dp, "steps": steps}
    net = opacus_compatible(lesion_cnn(seed))
    opt = torch.optim.SGD(net.parameters(), lr=args.dp_lr, momentum=0.9)
    engine, gsm, opt, data = make_dp_sgd(net, opt, loader(x, y, seed, args.dp_batch), noise_multiplier=args.sigma,
                                         max_grad_norm=args.clip, seed=seed)
    SupervisedTrainer(device="cpu", max_epochs=args.dp_epochs, train_data_loader=data, network=gsm, optimizer=opt,
                      loss_function=nn.CrossEntropyLoss()).run()
    gsm.remove_hooks()  # a plain network again (Opacus per-sample hooks off) for the attacks
    return {"model": gsm._module.eval(), "deterministic": None, "epsilon": float(engine.get_epsilon(1e-5)),
            "steps": steps, "epsilon_formula": eps_dp}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/noise_defenses"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--attack_steps", type=int, default=3, help="PGD steps inside adversarial training")
    p.add_argument("--head_epochs", type=int, default=10)
    p.add_argument("--dp_epochs", type=int, default=10)
    p.add_argument("--dp_batch", type=int, default=64)
    p.add_argument("--dp_lr", type=float, default=0.1)
    p.add_argument("--sigma", type=float, default=1.0)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--eot", type=int, default=16)
    p.add_argument("--predict_samples", type=int, default=8)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--table_only", action="store_true", help="print the table of --out and exit")
    args = p.parse_args()
    if args.table_only:
        table(args.out / "noise_defenses.csv")
        return
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / "noise_defenses.csv"
    done = set()
    if csv_path.exists():
        with open(csv_path) as f:
            done = {(r["method"], int(r["seed"])) for r in csv.DictReader(f)}
    xtr, ytr = breastmnist("train")
    xte, yte = breastmnist("test")
    cache: dict = {}
    for seed in args.seeds:
        for method in args.methods:
            saved = args.out / f"{method}_seed{seed}.pt"
            if method in ("natural", "pgd-at") and saved.exists():  # resume: reload the base models
                net = lesion_cnn(seed)
                net.load_state_dict(torch.load(saved, weights_only=True))
                cache[(method, seed)] = net.eval()
            if (method, seed) in done:
                continue
            torch.manual_seed(1000 + seed)  # the stochastic layers draw from torch's RNG: seed the script
            t0 = time.time()
            res = train(method, seed, xtr, ytr, args, cache)
            train_s = time.time() - t0
            if method in ("natural", "pgd-at"):
                cache[(method, seed)] = res["model"]
                torch.save(res["model"].state_dict(), saved)
            sources = {"natural": cache[("natural", seed)]} if ("natural", seed) in cache and method != "natural" else {}
            if res["deterministic"] is not None:
                sources["own"] = res["deterministic"]
            torch.manual_seed(2000 + seed)
            t1 = time.time()
            row = randomized_robustness(res["model"], xte, yte, eps=EPS, steps=10, eot_samples=args.eot,
                                        predict_samples=args.predict_samples, queries=args.queries,
                                        stochastic=method in STOCHASTIC, transfer_from=sources, seed=seed)
            row.update(method=method, seed=seed, train_s=round(train_s, 1), eval_s=round(time.time() - t1, 1),
                       epsilon=res.get("epsilon", ""), dp_steps=res.get("steps", ""))
            if method.startswith("bll"):
                row["head_kl"] = float(last_bayesian_layer(res["model"]).kl())
            new = not csv_path.exists()
            keys = ["method", "seed", "n", "eps", "clean_auc", "clean_accuracy", "pgd", "pgd_eot", "pgd_mean", "square",
                    "transfer_natural", "transfer_own", "worst_attack", "gradient_masking", "reasons", "epsilon",
                    "dp_steps", "train_s", "eval_s", "head_kl"]
            with open(csv_path, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerow(row)
            print(f"{method} seed {seed}: clean {row['clean_accuracy']:.3f} pgd {row['pgd']:.3f} "
                  f"eot {row.get('pgd_eot', float('nan')):.3f} square {row['square']:.3f} "
                  f"train {train_s:.0f}s eval {row['eval_s']}s", flush=True)
    table(csv_path)


def table(csv_path: Path) -> None:
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    cols = [("clean AUC", "clean_auc"), ("clean acc", "clean_accuracy"), ("PGD-10 (1 draw)", "pgd"),
            ("PGD-10 EOT", "pgd_eot"), ("PGD-10 on mean", "pgd_mean"), ("Square", "square"),
            ("transfer from natural", "transfer_natural"), ("transfer from own det.", "transfer_own"),
            ("Opacus eps (delta 1e-5)", "epsilon"), ("train s", "train_s")]
    print("| method | seeds | " + " | ".join(c for c, _ in cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    for m in METHODS:
        rs = [r for r in rows if r["method"] == m]
        if not rs:
            continue
        cells = []
        for _, k in cols:
            vals = [float(r[k]) for r in rs if r.get(k) not in ("", None)]
            if not vals:
                cells.append("—")
            elif k == "train_s":
                cells.append(f"{np.mean(vals):.0f}")
            elif k == "epsilon":
                cells.append(f"{np.mean(vals):.2f}")
            else:
                cells.append(f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1) if len(vals) > 1 else 0:.3f}")
        print(f"| {m} | {len(rs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
