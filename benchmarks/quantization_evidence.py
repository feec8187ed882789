"""Evidence for medrobust.core.quantization (docs/quantization.md): unbiasedness, variance
ordering, the 4-8 bit sweep and the robustness of compressed models, on BreastMNIST (official
split; test split only for the final numbers) and a small 3-D model on synthetic data.

Every part writes CSV rows to ``--out`` as it goes and skips rows already there (resume), then
prints its markdown table. One thread (``torch.set_num_threads(1)``).

    python -m benchmarks.quantization_evidence unbiased
    python -m benchmarks.quantization_evidence variance
    python -m benchmarks.quantization_evidence sweep --epochs 6
    python -m benchmarks.quantization_evidence robustness
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import bootstrap

from benchmarks._data import seeded_batches
from medrobust.core.attacks import pgd
from medrobust.core.defenses import PGDAdversarialTraining
from medrobust.core.metrics.classification import binary_auc
from medrobust.core.quantization import BinaryDenseNet, OnnxClassifier, export_int8, quantize
from medrobust.core.robustness import AttackSpec, default_attacks, robust_accuracy
from medrobust.data.medmnist import load_medmnist
from medrobust.models.bundle import load_bundle_network

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "lesion_classification"
DATA = Path(os.environ.get("MEDROBUST_BREASTMNIST", REPO.parent / "shared" / "data" / "breastmnist" / "breastmnist.npz"))
LABEL_MAP = {0: 1, 1: 0}  # BreastMNIST stores 0 = malignant; ours: 1 = malignant
BITS = (4, 5, 6, 7, 8)
QUANTIZERS = ("ptq", "psq", "bhq")

logger = logging.getLogger("quantization_evidence")


# ----------------------------------------------------------------------------- data, models, training
def breastmnist(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    s = load_medmnist(DATA, split, label_map=LABEL_MAP)
    return torch.as_tensor(s.images), torch.as_tensor(s.labels).long()


def lesion_cnn(seed: int) -> torch.nn.Module:
    """The lesion bundle's network (configs/train.json), freshly initialised with ``seed``."""
    torch.manual_seed(seed)  # script-level seeding of the initialisation (library code never seeds globally)
    return load_bundle_network(BUNDLE, config_files=("train",), weights=None).train()


def binary_net(seed: int, spatial_dims: int = 2) -> torch.nn.Module:
    torch.manual_seed(seed)
    return BinaryDenseNet(spatial_dims=spatial_dims, in_channels=1, out_channels=2, init_features=16, growth_rate=8,
                          block_config=(3, 3, 3))


def synthetic_3d(n: int, seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Volumes with a bright blob in one corner for class 1 (shape coverage only)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, size, generator=g) * 0.5
    y = torch.arange(n) % 2
    x[y == 1, :, : size // 2, : size // 2, : size // 2] += 0.3
    return x.clamp(0, 1), y


def small_3d(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.BatchNorm3d(8), torch.nn.ReLU(), torch.nn.MaxPool3d(2),
        torch.nn.Conv3d(8, 16, 3, padding=1), torch.nn.BatchNorm3d(16), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(16, 2))


def train(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int, lr: float = 1e-3,
          weight_decay: float = 1e-4, batch_size: int = 64, defense: object = None) -> torch.nn.Module:
    """MONAI SupervisedTrainer, AdamW + cosine, random flips of the last axis, seeded shuffling."""
    from monai.engines import SupervisedTrainer
    from monai.handlers import LrScheduleHandler

    batches = seeded_batches(x, y, epochs=epochs, batch_size=batch_size, seed=seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, len(batches)))
    trainer = SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=batches, network=net, optimizer=opt,
                                loss_function=torch.nn.CrossEntropyLoss(), iteration_update=defense,
                                train_handlers=[LrScheduleHandler(sched, print_lr=False, epoch_level=False)],
                                decollate=False)
    trainer.run()
    return net.eval()


def logits_of(model, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def auc_ci(logits: torch.Tensor, y: torch.Tensor, seed: int = 0) -> tuple[float, float, float]:
    """AUC of p(malignant) with a 95% percentile bootstrap CI over test cases (scipy, 1000 resamples)."""
    p = torch.softmax(logits.float(), 1)[:, 1].numpy()
    t = y.numpy()
    auc = binary_auc(p, t)
    res = bootstrap((p, t), lambda a, b: binary_auc(a, b) if 0 < b.sum() < len(b) else np.nan, paired=True,
                    vectorized=False, n_resamples=1000, method="percentile", random_state=seed)
    return auc, float(res.confidence_interval.low), float(res.confidence_interval.high)


def acc_ci(correct: int, n: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap CI of an accuracy over test cases (the 0/1 outcomes resampled)."""
    if n == 0:
        return float("nan"), float("nan")
    outcomes = np.r_[np.ones(correct), np.zeros(n - correct)]
    res = bootstrap((outcomes,), np.mean, n_resamples=1000, method="percentile", random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


class Rows:
    """An append-only CSV with resume: ``done(key)`` tells whether a row with that key exists."""

    def __init__(self, path: Path, fields: list[str]) -> None:
        self.path, self.fields = path, fields
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        if path.is_file():
            with open(path, newline="") as f:
                self.rows = list(csv.DictReader(f))

    @staticmethod
    def _norm(v) -> str:
        return "" if v is None or str(v) == "None" else str(v)

    def done(self, **key) -> bool:
        return any(all(self._norm(r.get(k)) == self._norm(v) for k, v in key.items()) for r in self.rows)

    def add(self, row: dict) -> None:
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            if new:
                w.writeheader()
            w.writerow({k: row.get(k) for k in self.fields})
        self.rows.append({k: str(row.get(k)) for k in self.fields})


def _param_grad(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    return torch.cat([p.grad.reshape(-1).clone() for p in net.parameters()])


def _fqt_twin(trained: torch.nn.Module, **kw) -> torch.nn.Module:
    """A quantised copy in train mode (batch-norm on batch statistics) with dropout off, so that
    QAT and FQT gradients differ only by the gradient quantisation."""
    net = quantize(copy.deepcopy(trained).train(), **kw)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.eval()
    return net


# ----------------------------------------------------------------------------- parts
def part_unbiased(out: Path, args) -> None:
    """Relative error of the mean of n FQT gradients against the QAT gradient (n = 1 ... 256)."""
    rows = Rows(out / "unbiased.csv", ["model", "quantizer", "bits", "n", "rel_error", "rel_error_x_sqrt_n"])
    cases = []
    x, y = breastmnist("train")
    cases.append(("lesion CNN 2-D (BreastMNIST train batch)", lesion_cnn(0), x[:64], y[:64]))
    x3, y3 = synthetic_3d(16, 0)
    cases.append(("small CNN 3-D (synthetic 16^3)", small_3d(0), x3, y3))
    for name, net, xb, yb in cases:
        qat = _fqt_twin(net, bits=8, mode="qat")
        g_qat = _param_grad(qat, xb, yb)
        for q in ("ptq", "bhq"):
            if rows.done(model=name, quantizer=q):
                continue
            fqt = _fqt_twin(net, bits=8, grad_bits=4, grad_quantizer=q, seed=1)
            draws = torch.stack([_param_grad(fqt, xb, yb) for _ in range(256)])
            for n in (1, 4, 16, 64, 256):
                e = float((draws[:n].mean(0) - g_qat).norm() / g_qat.norm())
                rows.add({"model": name, "quantizer": q, "bits": 4, "n": n, "rel_error": f"{e:.4f}",
                          "rel_error_x_sqrt_n": f"{e * n ** 0.5:.3f}"})
    print("| model | grad quantiser (4-bit) | n=1 | n=4 | n=16 | n=64 | n=256 |\n|---|---|---|---|---|---|---|")
    for name in dict.fromkeys(r["model"] for r in rows.rows):
        for q in ("ptq", "bhq"):
            es = [r["rel_error"] for r in rows.rows if r["model"] == name and r["quantizer"] == q]
            print(f"| {name} | {q.upper()} | " + " | ".join(es) + " |")


def part_variance(out: Path, args) -> None:
    """Variance of the FQT parameter gradient (relative to ||QAT gradient||^2) per quantiser and bits."""
    rows = Rows(out / f"variance_wg{args.weight_grad_bits}.csv", ["model", "bits", "quantizer", "rel_variance", "draws"])
    x, y = breastmnist("train")
    net = train(lesion_cnn(0), x, y, epochs=args.variance_epochs, seed=0)
    x3, y3 = synthetic_3d(32, 1)
    net3 = train(small_3d(0), x3, y3, epochs=3, seed=0, batch_size=16)
    g = torch.Generator().manual_seed(1)
    idx = torch.randperm(len(x), generator=g)[:64]
    cases = [(f"lesion CNN 2-D, trained {args.variance_epochs} epochs (64 BreastMNIST train images)", net, x[idx], y[idx]),
             ("small CNN 3-D (16 synthetic 16^3 volumes)", net3, x3[:16], y3[:16])]
    draws = args.draws
    for name, model, xb, yb in cases:
        g_qat = _param_grad(_fqt_twin(model, bits=8, mode="qat"), xb, yb)
        for bits in BITS:
            for q in QUANTIZERS:
                if rows.done(model=name, bits=bits, quantizer=q):
                    continue
                fqt = _fqt_twin(model, bits=8, grad_bits=bits, grad_quantizer=q, seed=bits,
                                weight_grad_bits=args.weight_grad_bits)
                d = torch.stack([_param_grad(fqt, xb, yb) for _ in range(draws)])
                v = float((d - g_qat).pow(2).sum(1).mean() / g_qat.pow(2).sum())
                rows.add({"model": name, "bits": bits, "quantizer": q, "rel_variance": f"{v:.3e}", "draws": draws})
    for name in dict.fromkeys(r["model"] for r in rows.rows):
        print(f"\n{name}\n\n| grad bits | PTQ | PSQ | BHQ | BHQ <= PSQ <= PTQ |\n|---|---|---|---|---|")
        for bits in BITS:
            v = {r["quantizer"]: float(r["rel_variance"]) for r in rows.rows if r["model"] == name and r["bits"] == str(bits)}
            if len(v) == 3:
                ok = v["bhq"] <= v["psq"] <= v["ptq"]
                print(f"| {bits} | {v['ptq']:.2e} | {v['psq']:.2e} | {v['bhq']:.2e} | {'yes' if ok else 'NO'} |")


def part_sweep(out: Path, args) -> None:
    """Clean test AUC of float, QAT (8-bit) and FQT (8-bit forward, 4-8-bit PTQ/PSQ/BHQ gradients), 3 seeds."""
    rows = Rows(out / "sweep.csv", ["method", "grad_bits", "seed", "epochs", "test_auc", "ci_low", "ci_high", "seconds"])
    x, y = breastmnist("train")
    xt, yt = breastmnist("test")
    configs = [("float", None, {}), ("qat8", None, {"bits": 8, "mode": "qat"})]
    configs += [(f"fqt-{q}", b, {"bits": 8, "grad_bits": b, "grad_quantizer": q}) for b in args.bits for q in QUANTIZERS]
    start = time.time()
    for seed in args.seeds:
        for method, bits, kw in configs:
            if rows.done(method=method, grad_bits=bits, seed=seed, epochs=args.epochs):
                continue
            t0 = time.time()
            net = lesion_cnn(seed)
            if kw:
                quantize(net, seed=seed, **kw)
            train(net, x, y, epochs=args.epochs, seed=seed, lr=args.lr)
            auc, lo, hi = auc_ci(logits_of(net, xt), yt, seed)
            rows.add({"method": method, "grad_bits": bits, "seed": seed, "epochs": args.epochs, "test_auc": f"{auc:.4f}",
                      "ci_low": f"{lo:.4f}", "ci_high": f"{hi:.4f}", "seconds": f"{time.time() - t0:.1f}"})
            logger.info("%s bits=%s seed=%s AUC %.3f (%.0f s so far)", method, bits, seed, auc, time.time() - start)
    sel, seen = [], set()
    for r in rows.rows:  # first row per (method, bits, seed): reruns of a finished run are skipped
        key = (r["method"], Rows._norm(r["grad_bits"]), r["seed"])
        if r["epochs"] == str(args.epochs) and key not in seen:
            seen.add(key)
            sel.append(r)

    def cell(method: str, bits) -> str:
        match = [r for r in sel if r["method"] == method and Rows._norm(r["grad_bits"]) == Rows._norm(bits)]
        if not match:
            return "-"
        v = [float(r["test_auc"]) for r in match]
        ci = [(float(r["ci_low"]), float(r["ci_high"])) for r in match]
        return f"{np.mean(v):.3f} ± {np.std(v):.3f} [{np.mean([c[0] for c in ci]):.2f}, {np.mean([c[1] for c in ci]):.2f}]"

    print(f"float: {cell('float', None)}; QAT 8-bit: {cell('qat8', None)}  "
          f"(total {sum(float(r['seconds']) for r in sel):.0f} s of training + evaluation)\n")
    print("| grad bits | FQT-PTQ | FQT-PSQ | FQT-BHQ |\n|---|---|---|---|")
    for b in sorted({int(r["grad_bits"]) for r in sel if Rows._norm(r["grad_bits"])}):
        print(f"| {b} | " + " | ".join(cell(f"fqt-{q}", b) for q in QUANTIZERS) + " |")


def part_robustness(out: Path, args) -> None:
    """Clean / PGD-10 / PGD-50x5 / Square accuracy of float, int8 (ONNX Runtime) and binary models,
    natural and PGD adversarially trained, with the gradient-masking check."""
    rows = Rows(out / "robustness.csv", ["model", "training", "eps", "n", "clean_accuracy", "pgd10", "pgd50", "square",
                                         "worst_case", "ci_pgd10", "ci_square", "gradient_masking", "reasons", "test_auc"])
    x, y = breastmnist("train")
    xt, yt = breastmnist("test")
    eps = args.eps
    ckpt = out / "models"
    ckpt.mkdir(parents=True, exist_ok=True)
    suite = default_attacks(steps=(10, 50), restarts=args.restarts, queries=args.queries)
    strong = suite[1].name  # "pgd50x5", or "pgd50" with one restart

    def trained(kind: str, training: str) -> torch.nn.Module:
        path = ckpt / f"{kind}_{training}.pt"
        net = lesion_cnn(0) if kind == "float" else binary_net(0)
        if path.is_file():
            net.load_state_dict(torch.load(path, weights_only=True))
            return net.eval()
        defense = PGDAdversarialTraining(eps=eps, steps=args.at_steps, seed=0) if training == "pgd-at" else None
        epochs = args.robust_epochs if kind == "float" else args.binary_epochs
        train(net, x, y, epochs=epochs, seed=0, defense=defense, weight_decay=1e-4 if kind == "float" else 0.0)
        torch.save(net.state_dict(), path)
        return net.eval()

    def record(model_name: str, training: str, r, auc: float) -> None:
        n = r.n
        c10 = acc_ci(round(r.accuracy.get("pgd10", float("nan")) * n), n) if "pgd10" in r.accuracy else (None, None)
        csq = acc_ci(round(r.accuracy["square"] * n), n)
        rows.add({"model": model_name, "training": training, "eps": f"{eps * 255:g}/255", "n": n,
                  "clean_accuracy": f"{r.clean_accuracy:.3f}", "pgd10": f"{r.accuracy.get('pgd10', float('nan')):.3f}",
                  "pgd50": f"{r.accuracy.get(strong, float('nan')):.3f}", "square": f"{r.accuracy['square']:.3f}",
                  "worst_case": f"{r.worst_case_accuracy:.3f}",
                  "ci_pgd10": f"[{c10[0]:.2f}, {c10[1]:.2f}]" if c10[0] is not None else "",
                  "ci_square": f"[{csq[0]:.2f}, {csq[1]:.2f}]", "gradient_masking": r.gradient_masking,
                  "reasons": "; ".join(r.reasons), "test_auc": f"{auc:.3f}"})

    for training in ("natural", "pgd-at"):
        net = None
        if not rows.done(model="float", training=training) or not rows.done(model="int8 (ONNX Runtime)", training=training):
            net = trained("float", training)
        if not rows.done(model="float", training=training):
            r = robust_accuracy(net, xt, yt, eps=eps, attacks=suite, seed=0)
            record("float", training, r, auc_ci(logits_of(net, xt), yt)[0])
        if not rows.done(model="int8 (ONNX Runtime)", training=training):
            with tempfile.TemporaryDirectory() as d:
                g = torch.Generator().manual_seed(0)
                calib = x[torch.randperm(len(x), generator=g)[:256]]  # training images only
                int8 = OnnxClassifier(export_int8(net, calib, Path(d) / "net")["int8"])
                # Square on the deployed int8 model itself; PGD cannot differentiate through ONNX Runtime,
                # so its examples come from the float weights (BPDA: quantisation as identity backward)
                r_sq = robust_accuracy(int8, xt, yt, eps=eps, attacks=[s for s in suite if s.gradient_free], seed=0)
                clean = logits_of(int8, xt).argmax(1) == yt
                transfer = {}
                for spec in suite:
                    if spec.gradient_free:
                        continue
                    adv = pgd(net, xt, yt, eps=eps, generator=0, **dict(spec.options)).x_adv
                    transfer[spec.name] = float(((logits_of(int8, adv).argmax(1) == yt) & clean).float().mean())
                acc = {**transfer, "square": r_sq.accuracy["square"]}
                reasons = tuple(f"gradient-free square ({acc['square']:.3f}) beats transferred {k} ({v:.3f}) by > 0.01"
                                for k, v in transfer.items() if acc["square"] < min(transfer.values()) - 0.01)[:1]

                class _R:  # the same fields as RobustAccuracy
                    pass
                r = _R()
                r.n, r.clean_accuracy, r.accuracy = len(yt), float(clean.float().mean()), acc
                r.worst_case_accuracy = min(acc.values())
                r.gradient_masking, r.reasons = bool(reasons), reasons
                record("int8 (ONNX Runtime)", training, r, auc_ci(logits_of(int8, xt), yt)[0])
        if not rows.done(model="binary (BinaryDenseNet)", training=training):
            bnet = trained("binary", training)
            r = robust_accuracy(bnet, xt, yt, eps=eps, attacks=suite, seed=0)
            record("binary (BinaryDenseNet)", training, r, auc_ci(logits_of(bnet, xt), yt)[0])
    print(f"| model | training | test AUC | clean acc | PGD-10 [95% CI] | {strong} | Square [95% CI] | worst case | "
          "gradient masking |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows.rows:
        flag = "**flagged**: " + r["reasons"] if r["gradient_masking"] == "True" else "no"
        print(f"| {r['model']} | {r['training']} | {r['test_auc']} | {r['clean_accuracy']} | {r['pgd10']} {r['ci_pgd10']} | "
              f"{r['pgd50']} | {r['square']} {r['ci_square']} | {r['worst_case']} | {flag} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["unbiased", "variance", "sweep", "robustness"])
    p.add_argument("--out", type=Path, default=REPO / "runs" / "quantization_evidence")
    p.add_argument("--epochs", type=int, default=6, help="sweep: training epochs per run")
    p.add_argument("--bits", type=int, nargs="+", default=list(BITS), help="sweep: gradient bit widths")
    p.add_argument("--lr", type=float, default=3e-3, help="sweep: AdamW learning rate (short cosine schedule)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variance-epochs", type=int, default=5)
    p.add_argument("--draws", type=int, default=32, help="variance: FQT gradient draws per cell")
    p.add_argument("--weight-grad-bits", type=int, default=16,
                   help="variance: bits of the weight-gradient path (16: isolates the input-gradient quantiser)")
    p.add_argument("--eps", type=float, default=2 / 255)
    p.add_argument("--queries", type=int, default=1000, help="Square queries")
    p.add_argument("--restarts", type=int, default=5, help="restarts of the PGD-50 attack")
    p.add_argument("--robust-epochs", type=int, default=20, help="robustness: float model epochs")
    p.add_argument("--binary-epochs", type=int, default=20, help="robustness: binary model epochs")
    p.add_argument("--at-steps", type=int, default=5, help="PGD steps inside adversarial training")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    if not DATA.is_file():
        raise SystemExit(f"BreastMNIST not found at {DATA} (set MEDROBUST_BREASTMNIST)")
    t0 = time.time()
    {"unbiased": part_unbiased, "variance": part_variance, "sweep": part_sweep, "robustness": part_robustness}[args.part](
        args.out, args)
    print(f"\n({args.part}: {time.time() - t0:.0f} s wall, 1 thread; settings {json.dumps({k: str(v) for k, v in vars(args).items()})})")


if __name__ == "__main__":
    main()
