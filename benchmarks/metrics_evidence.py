"""Evidence for docs/metrics.md on BreastMNIST: natural vs adversarially trained lesion classifiers.

Stages (each writes ``<out>/results/<stage>_<model>.json`` as soon as it finishes and is skipped
when that file exists, so an interrupted run resumes):

- ``train``: the lesion bundle's own training config (``bundles/lesion_classification``, copied
  to ``<out>/configs`` on the first run; 40 epochs by default) once per defense (none, fast-FGSM, PGD-AT, TRADES,
  MART; eps 2/255) plus a PGD-AT *fine-tune* of the natural model (for feature purification);
- ``robustness``: clean accuracy/AUC/ECE, PGD robust accuracy, intrinsic robustness under several
  attack settings, average/worst flatness (test split);
- ``gini``: IG and DeepSHAP Gini sparseness of attributions (test split);
- ``nmutant``: nMutant LCR and SPRT on FGSM / PGD / CW adversarials of the natural and PGD-AT models;
- ``purification``: clean vs AT-fine-tuned first-layer filters;
- ``report``: ``<out>/report.md`` with the tables (also printed).

Run (about 1-2 h on 2 busy CPU cores):

    nice -n 10 .venv/bin/python benchmarks/metrics_evidence.py --out runs/metrics_evidence > runs/metrics_evidence.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "lesion_classification"
DATA = ROOT.parent / "shared" / "data" / "breastmnist" / "breastmnist.npz"
EPS = 2 / 255
MODELS = {"natural": "none", "fast-fgsm": "fast-fgsm", "pgd-at": "pgd-at", "trades": "trades", "mart": "mart"}
EVALUATED = [*MODELS, "natural-seed1"]  # a second natural run (another seed) shows seed-to-seed spread
log = logging.getLogger("metrics_evidence")


def _save(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))
    log.info("wrote %s", path)


def _done(path: Path) -> bool:
    return path.is_file()


def configs(out: Path) -> Path:
    """The bundle configs this run uses, copied once into ``<out>/configs`` (the bundle may change)."""
    import shutil

    cfg = out / "configs"
    if not cfg.is_dir():
        cfg.mkdir(parents=True)
        for name in ("train.json", "inference.json"):
            shutil.copy(BUNDLE / "configs" / name, cfg / name)
    return cfg


def train(out: Path, epochs: int) -> None:
    cfg = configs(out)
    runs = [(name, defense, 0) for name, defense in MODELS.items()] + [("natural-seed1", "none", 1)]
    for name, defense, seed in runs:
        ckpt = out / "models" / name / "model.pt"
        if ckpt.is_file():
            continue
        t = time.time()
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(cfg / "train.json"),
               "--bundle_root", str(BUNDLE), "--ckpt_dir", str(ckpt.parent), "--defense", defense, "--seed", str(seed),
               "--epochs", str(epochs), "--num_threads", "1", "--dataset_dir", str(DATA)]  # fmt: skip
        log.info("training %s: %s", name, " ".join(cmd))
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        _save(out / "results" / f"train_{name}.json", {"model": name, "defense": defense, "epochs": epochs,
                                                        "seconds": time.time() - t})  # fmt: skip
    for tag, n_epochs, lr in (("natural-at-finetune", max(1, epochs // 4), 2e-4), ("natural-at-finetune-lr1e-3", max(1, epochs // 2), 1e-3)):
        ft = out / "models" / tag / "model.pt"
        if ft.is_file():
            continue
        from medrobust.models import bundle_imports, load_weights, run_bundle_workflow

        t = time.time()  # PGD-AT fine-tune of the natural model, with the bundle's trainer
        wf = run_bundle_workflow(BUNDLE, [cfg / "train.json"], run=False, ckpt_dir=str(ft.parent), defense="pgd-at",
                                 epochs=n_epochs, learning_rate=lr, num_threads=1, dataset_dir=str(DATA))
        load_weights(wf.parser.get_parsed_content("network"), out / "models" / "natural" / "model.pt")
        with bundle_imports(BUNDLE):
            wf.run()
            wf.finalize()
        _save(out / "results" / f"train_{tag}.json", {"seconds": time.time() - t, "epochs": n_epochs, "lr": lr})


def load(out: Path, name: str) -> torch.nn.Module:
    from medrobust.models import load_state_dict_model

    m = load_state_dict_model(out / "models" / name / "model.pt", configs(out) / "inference.json", input_size=(28, 28))
    return m.network.eval()


LIMIT: int | None = None  # --limit: a quick smoke run on the first N images of each split


def split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    from medrobust.data.medmnist import BREASTMNIST_MALIGNANT_POSITIVE, load_medmnist

    s = load_medmnist(DATA, name, label_map=BREASTMNIST_MALIGNANT_POSITIVE)
    return torch.from_numpy(s.images[:LIMIT]), torch.from_numpy(s.labels[:LIMIT]).long()


def robust_accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **kw) -> float:
    from medrobust.core.attacks import pgd
    from medrobust.core.metrics import accuracy
    from medrobust.core.metrics._utils import predict_logits

    adv = pgd(net, x, y, generator=0, **kw).x_adv
    return accuracy(predict_logits(net, adv), y)


def robustness(out: Path) -> None:
    from medrobust.core.metrics import average_flatness, classification_metrics, intrinsic_robustness, worst_flatness
    from medrobust.core.metrics._utils import predict_logits

    x, y = split("test")
    for name in EVALUATED:
        path = out / "results" / f"robustness_{name}.json"
        if _done(path):
            continue
        net, t = load(out, name), time.time()
        r: dict = {"model": name, **classification_metrics(predict_logits(net, x), y)}
        for tag, kw in {"pgd10_1": dict(eps=1 / 255, steps=10), "pgd10_2": dict(eps=2 / 255, steps=10),
                        "pgd20r2_2": dict(eps=2 / 255, steps=20, restarts=2), "pgd10_4": dict(eps=4 / 255, steps=10),
                        "pgd10_8": dict(eps=8 / 255, steps=10)}.items():  # fmt: skip
            r[f"robust_acc_{tag}"] = robust_accuracy(net, x, y, **kw)
            r[f"intrinsic_{tag}"] = float(intrinsic_robustness(net, x, generator=0, **kw).mean())
        fl = dict(eps=EPS, steps=10, generator=0)
        a = average_flatness(net, x[:100], y[:100], xi=0.5, samples=5, **fl)
        w = worst_flatness(net, x[:100], y[:100], xi=0.003, iterations=10, **fl)
        r.update(robust_loss=a.reference_loss, average_flatness=a.flatness, worst_flatness=w.flatness,
                 seconds=time.time() - t)  # fmt: skip
        _save(path, r)


def gini(out: Path) -> None:
    from medrobust.core.metrics import deep_lift_shap, gini_index, integrated_gradients

    x, y = split("test")
    xtr, _ = split("train")
    refs = xtr[torch.randperm(len(xtr), generator=torch.Generator().manual_seed(0))[:50]]
    for name in EVALUATED:
        path = out / "results" / f"gini_{name}.json"
        if _done(path):
            continue
        net, t = load(out, name), time.time()
        ig = gini_index(integrated_gradients(net, x, y, steps=100))
        ds = torch.cat([gini_index(deep_lift_shap(net, x[i : i + 16], y[i : i + 16], baselines=refs))
                        for i in range(0, len(x), 16)])  # fmt: skip
        _save(path, {"model": name, "gini_ig": ig.tolist(), "gini_deepshap": ds.tolist(), "seconds": time.time() - t})


def nmutant(out: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from medrobust.core.attacks import cw_l2, fgsm, pgd
    from medrobust.core.detectors import NMutantDetector, fixed_sample_size
    from medrobust.core.metrics._utils import predicted_labels

    x, y = split("test")
    xv, yv = split("val")
    xtr, ytr = split("train")
    for name in ("natural", "pgd-at"):
        net = load(out, name)
        ok = predicted_labels(net, x) == y
        xn, yn = x[ok], y[ok]
        ok_tr = predicted_labels(net, xtr) == ytr
        calib = xtr[ok_tr][:200]
        attacks = {
            "fgsm_2": lambda: fgsm(net, xn, yn, eps=EPS),
            "fgsm_8": lambda: fgsm(net, xn, yn, eps=8 / 255),
            "pgd_2": lambda: pgd(net, xn, yn, eps=EPS, steps=10, generator=0),
            "pgd_8": lambda: pgd(net, xn, yn, eps=8 / 255, steps=10, generator=0),
            "cw": lambda: cw_l2(net, xn, yn, steps=100, binary_search_steps=5, lr=0.01),
        }
        advs = {}
        for k, f in attacks.items():
            res = f()
            advs[k] = res.x_adv[res.success]
        for op in ("nai", "gf", "ws", "ns"):
            path = out / "results" / f"nmutant_{name}_{op}.json"
            if _done(path):
                continue
            t = time.time()
            det = NMutantDetector(net, xv, yv, operator=op, gamma=0.01, max_mutants=500, seed=0)
            try:
                kappa = det.fit(calib, n_mutants=200)
            except RuntimeError as e:  # too few mutants pass the accuracy test: a result too
                _save(path, {"model": name, "operator": op, "gamma": 0.01, "error": str(e)})
                continue
            p0, p1 = det.hypotheses
            n_fixed, c_fixed = fixed_sample_size(p0, p1, det.alpha, det.beta)
            lcr_n = det.lcr(xn, 200)
            r_n = det.detect(xn)
            r: dict = {"model": name, "operator": op, "gamma": 0.01, "kappa": kappa, "p0": p0, "p1": p1,
                       "n_fixed": n_fixed, "c_fixed": c_fixed, "n_normal": len(xn),
                       "mutant_acceptance": len(det.mutants.seeds) / max(1, det.mutants._next),
                       "normal": {"lcr_mean": float(lcr_n.mean()), "flagged": float(r_n.adversarial.float().mean()),
                                  "undecided": float((~r_n.decided).float().mean()),
                                  "mutants_mean": float(r_n.n_used.float().mean())}}  # fmt: skip
            thr = float(np.quantile(lcr_n.numpy(), 0.95))
            for k, xa in advs.items():
                if len(xa) < 5:
                    r[k] = {"n": len(xa)}
                    continue
                lcr_a = det.lcr(xa, 200)
                ra = det.detect(xa)
                r[k] = {"n": len(xa), "lcr_mean": float(lcr_a.mean()),
                        "auroc": float(roc_auc_score([1] * len(xa) + [0] * len(xn), torch.cat([lcr_a, lcr_n]).numpy())),
                        "detect_at_5fpr": float((lcr_a > thr).float().mean()),
                        "sprt_flagged": float(ra.adversarial.float().mean()),
                        "sprt_undecided": float((~ra.decided).float().mean()),
                        "sprt_mutants_mean": float(ra.n_used.float().mean())}  # fmt: skip
            r["seconds"] = time.time() - t
            _save(path, r)


def purification(out: Path) -> None:
    from medrobust.core.metrics import plot_filters, purification_decomposition

    path = out / "results" / "purification.json"
    if _done(path):
        return
    nat, ft = load(out, "natural"), load(out, "natural-at-finetune")
    r = {"finetuned": purification_decomposition(nat, ft).summary(),
         "finetuned_lr1e-3": purification_decomposition(nat, load(out, "natural-at-finetune-lr1e-3")).summary(),
         "pgd_at_same_init": purification_decomposition(nat, load(out, "pgd-at")).summary(),
         "natural_other_init": purification_decomposition(nat, load(out, "natural-seed1")).summary()}  # fmt: skip
    x, y = split("test")
    for k, name in (("finetuned", "natural-at-finetune"), ("finetuned_lr1e-3", "natural-at-finetune-lr1e-3")):
        r[k]["robust_acc_pgd10_2"] = robust_accuracy(load(out, name), x, y, eps=EPS, steps=10)
    plot_filters(nat, ft, out / "filters_natural_vs_finetuned.png")
    _save(path, r)


def report(out: Path) -> str:
    res = out / "results"
    lines = ["## Robustness, intrinsic robustness and flatness (BreastMNIST test, 156 images)", "",
             "| model | acc | AUC | ECE | PGD-10 acc 1/255 | 2/255 | 4/255 | psi 1/255 | psi 2/255 | psi 2/255 (20 st., 2 restarts) | psi 4/255 | avg flat. | worst flat. |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    rows = {}
    for name in EVALUATED:
        p = res / f"robustness_{name}.json"
        if p.is_file():
            r = json.loads(p.read_text())
            if name in MODELS:
                rows[name] = r
            lines.append(f"| {name} | {r['accuracy']:.3f} | {r['auc']:.3f} | {r['ece']:.3f} | {r['robust_acc_pgd10_1']:.3f} | "
                         f"{r['robust_acc_pgd10_2']:.3f} | {r['robust_acc_pgd10_4']:.3f} | {r['intrinsic_pgd10_1']:.4f} | "
                         f"{r['intrinsic_pgd10_2']:.4f} | {r['intrinsic_pgd20r2_2']:.4f} | {r['intrinsic_pgd10_4']:.4f} | "
                         f"{r['average_flatness']:.4f} | {r['worst_flatness']:.4f} |")  # fmt: skip
    if len(rows) >= 3:
        from scipy.stats import spearmanr

        lines.append("")
        for tag in ("pgd10_1", "pgd10_2", "pgd20r2_2", "pgd10_4", "pgd10_8"):
            psi = [rows[m][f"intrinsic_{tag}"] for m in rows]
            acc = [rows[m][f"robust_acc_{tag}"] for m in rows]
            lines.append(f"- Spearman(psi, robust accuracy) at {tag}: {spearmanr(psi, acc).statistic:.2f} (n = {len(rows)} models)")
        ref = [rows[m]["intrinsic_pgd10_2"] for m in rows]
        for tag in ("pgd20r2_2", "pgd10_1", "pgd10_4", "pgd10_8"):
            other = [rows[m][f"intrinsic_{tag}"] for m in rows]
            lines.append(f"- ranking stability: Spearman(psi at pgd10_2, psi at {tag}) = {spearmanr(ref, other).statistic:.2f}")
    lines += ["", "## Gini sparseness of attributions (test set, mean +- sd; paired difference to natural, Wilcoxon p)", "",
              "| model | IG Gini | IG: AT - natural (p) | DeepSHAP Gini | DeepSHAP: AT - natural (p) |", "|---|---|---|---|---|"]  # fmt: skip
    ginis = {n: json.loads((res / f"gini_{n}.json").read_text()) for n in EVALUATED if (res / f"gini_{n}.json").is_file()}
    for name, g in ginis.items():
        cells = []
        for key in ("gini_ig", "gini_deepshap"):
            v = np.array(g[key])
            cells.append(f"{v.mean():.3f} +- {v.std():.3f}")
            if name != "natural" and "natural" in ginis:
                from scipy.stats import wilcoxon

                d = v - np.array(ginis["natural"][key])
                cells.append(f"{d.mean():+.3f} (p = {wilcoxon(d).pvalue:.1e})")
            else:
                cells.append("-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## nMutant (gamma 0.01, kappa from 200 training images x 200 mutants; alpha = beta = 0.05, max 500)", "",
              "| model | op | kappa | fixed-n | normal: flagged / undecided / mutants | attack | n | LCR AUROC | detect @5% FPR | SPRT flagged | SPRT mutants |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for p in sorted(res.glob("nmutant_*.json")):
        r = json.loads(p.read_text())
        if "error" in r:
            lines.append(f"| {r['model']} | {r['operator']} | - | - | {r['error']} | | | | | | |")
            continue
        nm = r["normal"]
        head = (f"| {r['model']} | {r['operator']} | {r['kappa']:.3f} | {r['n_fixed']} | {nm['flagged']:.2f} / "
                f"{nm['undecided']:.2f} / {nm['mutants_mean']:.0f}")  # fmt: skip
        for k in ("fgsm_2", "fgsm_8", "pgd_2", "pgd_8", "cw"):
            a = r.get(k, {})
            if "auroc" in a:
                lines.append(f"{head} | {k} | {a['n']} | {a['auroc']:.3f} | {a['detect_at_5fpr']:.2f} | "
                             f"{a['sprt_flagged']:.2f} | {a['sprt_mutants_mean']:.0f} |")  # fmt: skip
            else:
                lines.append(f"{head} | {k} | {a.get('n', 0)} | - | - | - | - |")
            head = "| | | | | "
    p = res / "purification.json"
    if p.is_file():
        r = json.loads(p.read_text())
        lines += ["", "## Feature purification (first-layer filters of the natural model w vs w')", "",
                  "| w' | residual ratio norm(v)/norm(w), mean | median | relative change norm(w - w')/norm(w), mean | PGD-10 acc 2/255 of w' |", "|---|---|---|---|---|"]
        names = {"finetuned": "PGD-AT fine-tune of natural (10 ep., lr 2e-4)",
                 "finetuned_lr1e-3": "PGD-AT fine-tune of natural (20 ep., lr 1e-3)",
                 "pgd_at_same_init": "PGD-AT from scratch, same initialisation (seed 0)",
                 "natural_other_init": "natural, other initialisation (seed 1; control)"}  # fmt: skip
        for k, label in names.items():
            if k in r:
                acc = f"{r[k]['robust_acc_pgd10_2']:.3f}" if "robust_acc_pgd10_2" in r[k] else "see above"
                lines.append(f"| {label} | {r[k]['residual_ratio_mean']:.3f} | {r[k]['residual_ratio_median']:.3f} | "
                             f"{r[k].get('relative_change_mean', float('nan')):.3f} | {acc} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "runs" / "metrics_evidence"))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--stages", default="train,robustness,gini,nmutant,purification,report")
    ap.add_argument("--limit", type=int, help="smoke test: first N images of each split")
    args = ap.parse_args()
    global LIMIT
    LIMIT = args.limit
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # small models on a shared machine: one thread is fastest and polite
    if not DATA.is_file():
        log.error("BreastMNIST not found at %s", DATA)
        return 2
    out = Path(args.out)
    stages = {"train": lambda: train(out, args.epochs), "robustness": lambda: robustness(out), "gini": lambda: gini(out),
              "nmutant": lambda: nmutant(out), "purification": lambda: purification(out),
              "report": lambda: print(report(out))}  # fmt: skip
    for s in args.stages.split(","):
        log.info("stage %s", s)
        stages[s.strip()]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
