"""Sequential vs joint self-supervised training on a BreastMNIST stream (linear-probe AUC, forgetting).

The BreastMNIST training split (546 images) is sorted by mean image intensity and cut into 3
chunks of 182 written to ``.npz`` files (a stream with a distribution shift: dark, medium,
bright images). A SimCLR-style learner (:class:`medrobust.training.StreamingTrainer`, MONAI
``ContrastiveLoss``, the lesion bundle's convolutional trunk as encoder, 64-d features) is
trained

- jointly: one chunk holding all 546 images, ``E`` epochs;
- sequentially: chunk by chunk, ``E`` epochs each (the same number of gradient steps), plain,
  with replay (reservoir of 128 images, half a batch of replay per batch), with MAS
  (``--mas_lambda``), and with both.

Evaluation after every chunk: linear-probe AUC (logistic regression on standardised frozen
features of the 546 training images, scored on the 156 test images; 1 = malignant), and the
contrastive loss on every chunk's images (fixed augmentation seed). Forgetting of chunk ``i`` =
its loss after the last chunk minus its loss right after it was trained (positive = forgot).
A randomly initialised encoder's probe AUC is the floor.

Results go to a JSONL file after every run (resumable). Run from the repository root::

    nice -n 10 python -m benchmarks.streaming --seeds 0 1 2 --epochs 10
    python -m benchmarks.streaming --report
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks._evidence import add_results_arguments, run_or_report

__all__ = ["RUNS", "encoder", "probe_auc", "chunk_losses", "run", "report", "main"]

REPO = Path(__file__).resolve().parents[1]
BREASTMNIST = REPO.parent / "shared" / "data" / "breastmnist" / "breastmnist.npz"
RESULTS = REPO / "docs" / "data" / "streaming_runs.jsonl"
#: name -> (joint?, replay_size, use MAS)
RUNS = {"joint": (True, 0, False), "sequential": (False, 0, False), "sequential+replay": (False, 128, False),
        "sequential+MAS": (False, 0, True), "sequential+replay+MAS": (False, 128, True)}

logger = logging.getLogger("benchmarks.streaming")


def encoder() -> nn.Module:
    """The lesion bundle's network up to its global pooling + flatten (64-d features)."""
    from medrobust.models.bundle import load_bundle_network

    net = load_bundle_network(REPO / "bundles" / "lesion_classification", config_files=("train",), weights=None)
    return nn.Sequential(*list(net.children())[:-2]).train()


def _features(enc: nn.Module, x: torch.Tensor) -> np.ndarray:
    enc.eval()
    with torch.no_grad():
        return torch.cat([enc(x[i:i + 128]) for i in range(0, len(x), 128)]).numpy()


def probe_auc(enc: nn.Module, xtr: torch.Tensor, ytr: np.ndarray, xte: torch.Tensor, yte: np.ndarray) -> float:
    """Linear-probe test AUC (scikit-learn logistic regression on standardised frozen features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(_features(enc, xtr), ytr)
    return float(roc_auc_score(yte, clf.predict_proba(_features(enc, xte))[:, 1]))


def chunk_losses(trainer, chunks: list[torch.Tensor], seed: int = 123) -> list[float]:
    """Contrastive loss of the current encoder + head on every chunk (fixed views)."""
    from medrobust.training.streaming import augment

    out = []
    enc, head = trainer.encoder, trainer.head
    enc.eval()
    with torch.no_grad():
        for x in chunks:
            g = torch.Generator().manual_seed(seed)
            vals = []
            for i in range(0, len(x), 64):
                xb = x[i:i + 64]
                vals.append(float(trainer.criterion(head(enc(augment(xb, g))), head(enc(augment(xb, g))))))
            out.append(float(np.mean(vals)))
    enc.train()
    return out


def run(args: argparse.Namespace) -> None:
    from medrobust.data.medmnist import BREASTMNIST_MALIGNANT_POSITIVE, load_medmnist
    from medrobust.training import StreamingTrainer, read_chunk, write_chunks

    tr = load_medmnist(BREASTMNIST, "train", label_map=BREASTMNIST_MALIGNANT_POSITIVE)
    te = load_medmnist(BREASTMNIST, "test", label_map=BREASTMNIST_MALIGNANT_POSITIVE)
    xtr, ytr = torch.from_numpy(tr.images), tr.labels
    xte, yte = torch.from_numpy(te.images), te.labels
    order = np.argsort(tr.images.reshape(len(tr.images), -1).mean(1), kind="stable")
    work = Path(tempfile.mkdtemp(prefix="medrobust_streaming_"))
    seq_paths = write_chunks(tr.images[order], work / "seq", chunk_size=int(np.ceil(len(order) / 3)))
    joint_paths = write_chunks(tr.images[order], work / "joint", chunk_size=len(order))
    chunks = [read_chunk(p) for p in seq_paths]  # evaluation copies only; training reads from disk
    done = set()
    if args.results.is_file():
        done = {(r["run"], r["seed"]) for r in map(json.loads, args.results.read_text().splitlines())}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    try:
        for seed in args.seeds:
            if ("random-init", seed) not in done:
                torch.manual_seed(seed)
                row = {"run": "random-init", "seed": seed, "probe_auc": probe_auc(encoder(), xtr, ytr, xte, yte)}
                with args.results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            for name, (joint, replay, mas) in RUNS.items():
                if (name, seed) in done:
                    continue
                torch.manual_seed(seed)  # benchmark script: same initial encoder for every run at a seed
                trainer = StreamingTrainer(encoder(), feature_dim=64, checkpoint_dir=work / f"ckpt_{name}_{seed}",
                                           epochs_per_chunk=args.epochs, batch_size=64, lr=1e-3, replay_size=replay,
                                           mas_lambda=args.mas_lambda if mas else 0.0, seed=seed)
                after: list[list[float]] = []
                probes: list[float] = []

                def evaluate(t, i):
                    after.append(chunk_losses(t, chunks))
                    probes.append(probe_auc(t.snapshot(), xtr, ytr, xte, yte))

                t0 = time.perf_counter()
                trainer.fit(joint_paths if joint else seq_paths, callback=evaluate)
                final = after[-1]
                row = {"run": name, "seed": seed, "epochs": args.epochs, "mas_lambda": args.mas_lambda if mas else 0.0,
                       "train_s": time.perf_counter() - t0, "probe_auc": probes[-1], "probe_auc_per_chunk": probes,
                       "chunk_loss_after_each": after}
                if not joint:
                    row["forgetting"] = [final[i] - after[i][i] for i in range(len(seq_paths) - 1)]
                    row["mean_forgetting"] = float(np.mean(row["forgetting"]))
                with args.results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                logger.info("%s seed %d: probe AUC per chunk %s, forgetting %s", name, seed,
                            [round(p, 3) for p in probes], row.get("forgetting"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(results: Path) -> str:
    rows = [json.loads(line) for line in results.read_text().splitlines()]

    def ms(v: list[float]) -> str:
        return f"{v[0]:.3f}" if len(v) == 1 else f"{statistics.mean(v):.3f} +- {statistics.stdev(v):.3f}"

    trained = [r for r in rows if r["run"] != "random-init"]
    lines = [f"Seeds {sorted({r['seed'] for r in rows})}; {trained[0]['epochs'] if trained else '?'} epochs per chunk "
             "(joint: the same number of epochs over all data); mean +- sd over seeds.", "",
             "| run | linear-probe AUC (test) | probe AUC after chunk 1 / 2 / 3 | mean forgetting (loss increase on chunks 1-2) "
             "| final loss on chunk 1 / 2 / 3 | train s |", "|---|---|---|---|---|---|"]
    for name in ("random-init", *RUNS):
        rn = [r for r in rows if r["run"] == name]
        if not rn:
            continue
        if name == "random-init":
            lines.append(f"| random-init encoder | {ms([r['probe_auc'] for r in rn])} | - | - | - | - |")
            continue
        per_chunk = " / ".join(ms([r["probe_auc_per_chunk"][i] for r in rn]) for i in range(len(rn[0]["probe_auc_per_chunk"])))
        final = " / ".join(ms([r["chunk_loss_after_each"][-1][i] for r in rn]) for i in range(3))
        forg = ms([r["mean_forgetting"] for r in rn]) if "mean_forgetting" in rn[0] else "-"
        lines.append(f"| {name} | {ms([r['probe_auc'] for r in rn])} | {per_chunk} | {forg} | {final} "
                     f"| {ms([r['train_s'] for r in rn])} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--mas_lambda", type=float, default=100.0)
    add_results_arguments(p, RESULTS)
    return run_or_report(p.parse_args(argv), run, report)


if __name__ == "__main__":
    sys.exit(main())
