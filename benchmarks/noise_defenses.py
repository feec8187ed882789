"""Evidence for the randomised and private defenses (docs/noise_defenses.md) on BreastMNIST
(official split: train for training, test for every number), 3 seeds, one thread.

Rows: natural, PGD-AT, PNI-W, PNI-C, CNI, BLL (natural extractor), BLL (AT extractor), SIDP,
Opacus DP-SGD. Columns (all judged by the model's prediction: the mean over 8 draws for the
stochastic rows): clean AUC / accuracy, PGD-10 at 2/255 with one draw per step (no EOT), PGD-10
with EOT (K draws per step), PGD-10 on the predictive mean, Square (200 queries), PGD-10
transferred from the natural model of the same seed and from the row's own deterministic model,
and Opacus' epsilon at delta 1e-5 for the private rows.

Writes one CSV row per (method, seed) to ``--out`` and skips rows already there (resume), with
each row's trained weights and clean test probabilities, then prints the markdown table: mean +- sd
over the seeds whose model is not degenerate (a model predicting one class for every test case is
marked, and its robustness is not averaged in), and a case-bootstrap 95 % interval of the clean
accuracy (test cases resampled, per-case correctness averaged over seeds;
:mod:`medrobust.sensitivity.intervals`).

``--tune`` instead trains on the train split and scores on the *validation* split only (seed 0):
CNI's initial noise scale (``--cni_scales``) and the private rows' (lr, C, epochs) grid
(``--dp_lrs``, ``--clips``, ``--dp_epochs_grid``), both SIDP and DP-SGD at each setting; it prints
the choice (highest validation balanced accuracy; for the private rows the mean over the two
methods, so they stay matched). ``--prob_robustness`` runs the probabilistic-robustness estimator
(Cardelli et al.; (eps, delta) guarantee) on the BLL posteriors of the first seed.

The commands behind docs/noise_defenses.md (``--tune --table_only`` prints the tuning table)::

    python benchmarks/noise_defenses.py --out runs/noise_defenses_v2 --tune --epochs 6 --predict_samples 4
    python benchmarks/noise_defenses.py --out runs/noise_defenses_v2 --tune --epochs 6 --predict_samples 4 \
        --cni_scales 0.03 0.01 --dp_lrs 0.1 --clips 1 --dp_epochs_grid 40
    python benchmarks/noise_defenses.py --out runs/noise_defenses_v2 --seeds 0 1 2 --epochs 6 --head_epochs 6 \
        --cni_scale 0.1 --dp_lr 0.1 --clip 1 --dp_epochs 40 --eot 10 --predict_samples 4 --queries 100
    python benchmarks/noise_defenses.py --out runs/noise_defenses_v2 --prob_robustness --seeds 1 --predict_samples 4
    python benchmarks/noise_defenses.py --out runs/noise_defenses_v2 --table_only
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
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
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
from medrobust.core.attacks.eot import PredictiveMean
from medrobust.core.defenses.bayesian import LastLayerPosterior, last_bayesian_layer
from medrobust.core.metrics.probabilistic import probabilistic_robustness
from medrobust.core.utils import append_csv_row
from medrobust.data.medmnist import BREASTMNIST_MALIGNANT_POSITIVE, load_medmnist
from medrobust.models.bundle import load_bundle_network
from medrobust.sensitivity.intervals import bootstrap_indices, percentile_interval

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


_TEMPLATE: list[nn.Module] = []


def lesion_cnn(seed: int) -> nn.Module:
    """The lesion bundle's network (configs/train.json), freshly initialised with ``seed``.

    The config is parsed once per process (a long run does not depend on the file staying
    parseable); every call re-initialises a copy: ``reset_parameters`` of each module in order.
    """
    if not _TEMPLATE:
        _TEMPLATE.append(load_bundle_network(BUNDLE, config_files=("train",), weights=None))
    net = copy.deepcopy(_TEMPLATE[0])
    torch.manual_seed(seed)  # script-level seeding (library code never seeds globally)
    for m in net.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
    return net.train()


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
        # CNI's initial noise: the SIAM code's d = 0.25^2, F = 0.1^2, with its standard deviation scaled by cni_scale
        extra = {"diag_init": 0.25**2 * args.cni_scale**2, "factor_init": 0.1**2 * args.cni_scale} if method == "cni" else {}
        net = inject_noise(lesion_cnn(seed), kind="cni" if method == "cni" else "pni", per_channel=method == "pni-c",
                           **extra)
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
    # private rows: matched (q, sigma, T, C, lr), Poisson sampling for both; Opacus' Poisson loader samples at
    # rate 1 / (batches per epoch) = 1 / ceil(N / B) and runs that many steps per epoch
    batches = -(-len(x) // args.dp_batch)
    q, steps = 1.0 / batches, batches * args.dp_epochs
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


def clean_probabilities(model: nn.Module, x: torch.Tensor, stochastic: bool, samples: int) -> np.ndarray:
    """Class probabilities ``(N, 2)`` of the model's prediction (the mean over ``samples`` draws if stochastic)."""
    predictor = PredictiveMean(model, samples=samples) if stochastic else model
    with torch.no_grad():
        return torch.softmax(predictor.eval()(x), 1).numpy()


def degenerate(pred_malignant: float) -> str:
    """"" for a model that predicts both classes on the test set, else which single class it predicts."""
    return "all benign" if pred_malignant == 0 else "all malignant" if pred_malignant == 1 else ""


def tune(args: argparse.Namespace) -> None:
    """Validation-split grid (seed 0): CNI's initial noise scale; the private rows' (lr, C, epochs)."""
    path = args.out / "tuning.csv"
    done = set()
    if path.exists():
        with open(path) as f:
            done = {(r["method"], r["setting"]) for r in csv.DictReader(f)}
    xtr, ytr = breastmnist("train")
    xva, yva = breastmnist("val")
    seed, cache = 0, {}
    grid = [("cni", {"cni_scale": s}) for s in args.cni_scales]
    grid += [(m, {"dp_lr": lr, "clip": c, "dp_epochs": e}) for e in args.dp_epochs_grid for lr in args.dp_lrs
             for c in args.clips for m in ("sidp", "dp-sgd")]
    keys = ["method", "setting", "val_balanced_accuracy", "val_auc", "val_accuracy", "val_pred_malignant", "epsilon",
            "train_s"]
    for method, setting in grid:
        name = " ".join(f"{k}={v:g}" for k, v in setting.items())
        if (method, name) in done:
            continue
        run_args = argparse.Namespace(**{**vars(args), **setting})
        torch.manual_seed(1000 + seed)
        t0 = time.time()
        res = train(method, seed, xtr, ytr, run_args, cache)
        train_s = time.time() - t0
        torch.manual_seed(3000 + seed)
        p = clean_probabilities(res["model"], xva, method in STOCHASTIC, args.predict_samples)
        pred = p.argmax(1)
        row = {"method": method, "setting": name, "val_balanced_accuracy": balanced_accuracy_score(yva.numpy(), pred),
               "val_auc": roc_auc_score(yva.numpy(), p[:, 1]), "val_accuracy": float((pred == yva.numpy()).mean()),
               "val_pred_malignant": float(pred.mean()), "epsilon": res.get("epsilon", ""), "train_s": round(train_s, 1)}
        append_csv_row(path, row, keys)
        print(f"tune {method} {name}: val balanced acc {row['val_balanced_accuracy']:.3f} auc {row['val_auc']:.3f} "
              f"pred malignant {row['val_pred_malignant']:.2f} ({train_s:.0f}s)", flush=True)
    tuning_table(path)


def tuning_table(path: Path) -> None:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    print("| method | setting | val balanced acc | val AUC | val acc | val predicted malignant | Opacus eps | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        eps = f"{float(r['epsilon']):.2f}" if r["epsilon"] else "—"
        print(f"| {r['method']} | {r['setting']} | {float(r['val_balanced_accuracy']):.3f} | {float(r['val_auc']):.3f} "
              f"| {float(r['val_accuracy']):.3f} | {float(r['val_pred_malignant']):.2f} | {eps} | {r['train_s']} |")
    cni = [r for r in rows if r["method"] == "cni"]
    if cni:  # ties -> the larger noise (the defense), i.e. the first of the descending scales
        best = max(cni, key=lambda r: (round(float(r["val_balanced_accuracy"]), 6), float(r["setting"].split("=")[1])))
        print(f"\nCNI choice (highest validation balanced accuracy): {best['setting']}")
    private: dict[str, list[float]] = {}
    for r in rows:
        if r["method"] in ("sidp", "dp-sgd"):
            private.setdefault(r["setting"], []).append(float(r["val_balanced_accuracy"]))
    full = {k: v for k, v in private.items() if len(v) == 2}
    if full:  # ties -> fewer epochs (less privacy spent)
        best_p = max(full, key=lambda k: (round(float(np.mean(full[k])), 6), -float(k.split("dp_epochs=")[1])))
        print(f"Private choice (highest mean validation balanced accuracy of SIDP and DP-SGD): {best_p} "
              f"(SIDP, DP-SGD: {full[best_p][0]:.3f}, {full[best_p][1]:.3f})")


def rebuild(method: str, seed: int, out: Path) -> nn.Module:
    """A saved BLL row's network (variational head on the base network) with its trained weights."""
    base = lesion_cnn(seed)
    net = bayesian_last_layer(base, kind="variational")
    net.load_state_dict(torch.load(out / f"{method}_seed{seed}.pt", weights_only=True))
    return net.eval()


def prob_robustness(args: argparse.Namespace) -> None:
    """(eps, delta) probabilistic robustness of the BLL posteriors (first seed), label criterion, PGD-10 at 2/255."""
    torch.set_num_threads(1)
    xte, yte = breastmnist("test")
    seed = args.seeds[0]
    path = args.out / "prob_robustness.csv"
    keys = ["method", "seed", "input_eps", "eps", "delta", "method_bound", "mean_p_safe", "mean_p_safe_correct",
            "share_p_safe_ge_0.9", "mean_samples", "max_samples", "n", "seconds", "guarantee"]
    done = set()
    if path.exists():
        with open(path) as f:
            done = {r["method"] for r in csv.DictReader(f)}
    for method in ("bll-at", "bll-natural"):
        if method in done or not (args.out / f"{method}_seed{seed}.pt").exists():
            continue
        net = rebuild(method, seed, args.out)
        with torch.no_grad():
            correct = (PredictiveMean(net, samples=args.predict_samples)(xte).argmax(1) == yte).numpy()
        t0 = time.time()
        r = probabilistic_robustness(LastLayerPosterior(net), xte, input_eps=EPS, criterion="label", eps=args.pr_eps,
                                     delta=args.pr_delta, sequential=True, alpha=args.pr_delta / 3, attack_steps=10,
                                     generator=seed)
        est = r.estimate.numpy()
        row = {"method": method, "seed": seed, "input_eps": EPS, "eps": r.eps, "delta": r.delta, "method_bound": r.method,
               "mean_p_safe": float(est.mean()), "mean_p_safe_correct": float(est[correct].mean()),
               "share_p_safe_ge_0.9": float((est >= 0.9).mean()), "mean_samples": float(r.n_samples.double().mean()),
               "max_samples": int(r.n_samples.max()), "n": len(est), "seconds": round(time.time() - t0, 1),
               "guarantee": r.guarantee}
        append_csv_row(path, row, keys)
        print({k: row[k] for k in keys[:-1]}, "\n", r.guarantee, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/noise_defenses"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--attack_steps", type=int, default=3, help="PGD steps inside adversarial training")
    p.add_argument("--head_epochs", type=int, default=10)
    p.add_argument("--cni_scale", type=float, default=1.0, help="scale of CNI's initial noise std (1: the SIAM code's)")
    p.add_argument("--dp_epochs", type=int, default=10)
    p.add_argument("--dp_batch", type=int, default=64)
    p.add_argument("--dp_lr", type=float, default=0.1)
    p.add_argument("--sigma", type=float, default=1.0)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--eot", type=int, default=16)
    p.add_argument("--predict_samples", type=int, default=8)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--table_only", action="store_true", help="print the table of --out and exit")
    p.add_argument("--tune", action="store_true", help="validation-split grid for CNI's noise and the private rows")
    p.add_argument("--cni_scales", type=float, nargs="+", default=[1.0, 0.3, 0.1])
    p.add_argument("--dp_lrs", type=float, nargs="+", default=[0.1, 0.02])
    p.add_argument("--clips", type=float, nargs="+", default=[1.0, 0.1])
    p.add_argument("--dp_epochs_grid", type=int, nargs="+", default=[6, 20])
    p.add_argument("--prob_robustness", action="store_true", help="(eps, delta) estimate on the BLL posteriors")
    p.add_argument("--pr_eps", type=float, default=0.075)
    p.add_argument("--pr_delta", type=float, default=0.075)
    args = p.parse_args()
    if args.table_only:
        tuning_table(args.out / "tuning.csv") if args.tune else table(args.out)
        return
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tune:
        tune(args)
        return
    if args.prob_robustness:
        prob_robustness(args)
        return
    csv_path = args.out / f"noise_defenses_seeds{'-'.join(map(str, args.seeds))}.csv"
    done = set()
    for path in args.out.glob("noise_defenses*.csv"):
        with open(path) as f:
            done |= {(r["method"], int(r["seed"])) for r in csv.DictReader(f)}
    xtr, ytr = breastmnist("train")
    xte, yte = breastmnist("test")
    cache: dict = {}
    keys = ["method", "seed", "n", "eps", "clean_auc", "clean_accuracy", "pred_malignant", "degenerate", "pgd", "pgd_eot",
            "pgd_mean", "square", "transfer_natural", "transfer_own", "worst_attack", "gradient_masking", "reasons",
            "epsilon", "dp_steps", "train_s", "eval_s", "head_kl", "settings"]
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
                                        stochastic=method in STOCHASTIC, transfer_from=sources, seed=seed,
                                        return_probabilities=True)
            probs = row.pop("clean_probabilities").numpy()
            np.save(args.out / f"{method}_seed{seed}_clean_probabilities.npy", probs)
            pm = float(probs.argmax(1).mean())
            settings = {"cni": f"cni_scale={args.cni_scale:g}",
                        "sidp": f"dp_lr={args.dp_lr:g} clip={args.clip:g} dp_epochs={args.dp_epochs}"}
            row.update(method=method, seed=seed, train_s=round(train_s, 1), eval_s=round(time.time() - t1, 1),
                       epsilon=res.get("epsilon", ""), dp_steps=res.get("steps", ""), pred_malignant=pm,
                       degenerate=degenerate(pm), settings=settings.get("sidp" if method == "dp-sgd" else method, ""))
            if method.startswith("bll"):
                row["head_kl"] = float(last_bayesian_layer(res["model"]).kl())
            append_csv_row(csv_path, row, keys)
            print(f"{method} seed {seed}: clean {row['clean_accuracy']:.3f} (pred malignant {pm:.2f}) pgd {row['pgd']:.3f} "
                  f"eot {row.get('pgd_eot', float('nan')):.3f} square {row['square']:.3f} "
                  f"train {train_s:.0f}s eval {row['eval_s']}s", flush=True)
    table(args.out)


def table(out: Path) -> None:
    """The markdown table over every ``noise_defenses*.csv`` in ``out``."""
    rows = []
    for path in sorted(out.glob("noise_defenses*.csv")):
        with open(path) as f:
            rows += list(csv.DictReader(f))
    _, yte = breastmnist("test")
    y = yte.numpy()
    cols = [("PGD-10 (1 draw)", "pgd"), ("PGD-10 EOT", "pgd_eot"), ("PGD-10 on mean", "pgd_mean"), ("Square", "square"),
            ("transfer from natural", "transfer_natural"), ("transfer from own det.", "transfer_own")]
    print("| method | seeds (degenerate) | clean AUC | clean acc | clean acc 95% CI | predicted malignant | sensitivity | "
          + " | ".join(c for c, _ in cols) + " | Opacus eps (delta 1e-5) | train s |")
    print("|---" * (len(cols) + 9) + "|")
    idx = bootstrap_indices(len(y), n_boot=2000, seed=0)

    def cell(vals: list[float]) -> str:
        return f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1) if len(vals) > 1 else 0:.3f}" if vals else "—"

    for m in METHODS:
        rs = sorted((r for r in rows if r["method"] == m), key=lambda r: int(r["seed"]))
        if not rs:
            continue
        deg = [r for r in rs if r.get("degenerate")]
        ok = [r for r in rs if not r.get("degenerate")]
        # case bootstrap of the clean accuracy: per-case correctness averaged over the seeds, cases resampled
        files = [out / f"{m}_seed{r['seed']}_clean_probabilities.npy" for r in rs]
        sens: list[float] = []
        if all(f.exists() for f in files):
            preds = [np.load(f).argmax(1) for f in files]
            correct = np.mean([pr == y for pr in preds], axis=0)
            lo, hi = percentile_interval(correct[idx].mean(1))
            ci = f"[{lo:.3f}, {hi:.3f}]"
            sens = [float((pr[y == 1] == 1).mean()) for pr in preds]  # recall of the malignant class
        else:
            ci = "—"
        cells = [cell([float(r["clean_auc"]) for r in rs]), cell([float(r["clean_accuracy"]) for r in rs]), ci,
                 cell([float(r["pred_malignant"]) for r in rs if r.get("pred_malignant")]), cell(sens)]
        for _, k in cols:
            vals = [float(r[k]) for r in ok if r.get(k) not in ("", None)]
            has = any(r.get(k) not in ("", None) for r in rs)
            cells.append(cell(vals) if vals else (deg[0]["degenerate"] if deg and has else "—"))
        eps = [float(r["epsilon"]) for r in rs if r.get("epsilon") not in ("", None)]
        cells.append(f"{np.mean(eps):.2f}" if eps else "—")
        cells.append(f"{np.mean([float(r['train_s']) for r in rs]):.0f}")
        note = f"{len(rs)} ({len(deg)}: {', '.join(sorted({r['degenerate'] for r in deg}))})" if deg else f"{len(rs)} (0)"
        print(f"| {m} | {note} | " + " | ".join(cells) + " |")
    settings = sorted({(r["method"], r["settings"]) for r in rows if r.get("settings")})
    if settings:
        print("\nSettings: " + "; ".join(f"{m}: {s}" for m, s in settings))


if __name__ == "__main__":
    main()
