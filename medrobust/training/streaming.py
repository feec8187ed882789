"""Sequential self-supervised training on streaming data (Hu et al., ICLR 2022, arXiv 2104.12081).

Data arrive as a sequence of *chunks* on disk (``.npz`` files with an ``images`` array
``(N, C, *spatial)``, 2-D or 3-D, values in ``[0, 1]``). :class:`StreamingTrainer` trains a
SimCLR-style contrastive learner (MONAI's :class:`~monai.losses.ContrastiveLoss` on two augmented
views, through a projection head) chunk by chunk: each chunk is read from disk when its turn
comes (only that chunk and the bounded replay buffer are in memory), trained for
``epochs_per_chunk`` epochs with a MONAI ``SupervisedTrainer`` whose ``iteration_update`` is the
contrastive step, starting from the previous chunk's weights and optimiser state. Two remedies
for forgetting, as in the paper:

- data replay: a reservoir-sampled buffer of at most ``replay_size`` past images; every batch is
  topped up with ``replay_fraction`` of its size drawn from the buffer;
- MAS (Aljundi et al., 2018): after each chunk, the importance of every parameter is the mean
  absolute gradient of the squared L2 norm of the encoder's output over that chunk; the
  importances are averaged over chunks and the loss gets
  ``mas_lambda * sum_k Omega_k (theta_k - theta*_k)^2`` with ``theta*`` the weights after the
  previous chunk.

After every chunk a checkpoint (encoder, head, optimiser, replay buffer, MAS state, generator
state, chunks done) is written atomically to ``checkpoint_dir``; a new trainer pointed at the same
directory resumes after the last finished chunk (a killed run repeats at most the chunk it was in).
Joint training is the same learner run on one "chunk" holding everything.

Example:
    >>> import tempfile, numpy as np, torch
    >>> d = tempfile.mkdtemp()
    >>> paths = write_chunks(np.random.default_rng(0).random((24, 1, 8, 8), dtype=np.float32), d, chunk_size=12)
    >>> enc = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    >>> tr = StreamingTrainer(enc, feature_dim=4, checkpoint_dir=d, epochs_per_chunk=1, batch_size=6, replay_size=8)
    >>> tr.fit(paths)
    >>> tr.chunks_done, len(tr.replay)
    (2, 8)
    >>> import shutil; shutil.rmtree(d)
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.losses import ContrastiveLoss
from monai.utils import CommonKeys as Keys
from torch import nn

from medrobust.core.validation import check_nonnegative, check_number, check_positive

__all__ = ["write_chunks", "read_chunk", "augment", "ReplayBuffer", "mas_importance", "StreamingTrainer"]

logger = logging.getLogger(__name__)


def write_chunks(images: np.ndarray, directory: str | Path, *, chunk_size: int, prefix: str = "chunk") -> list[Path]:
    """Split ``images`` ``(N, C, *spatial)`` into ``.npz`` chunk files ``{prefix}_{i:04d}.npz`` (in order); returns the paths."""
    images = np.asarray(images)
    if images.ndim < 4:
        raise ValueError(f"images must be (N, C, *spatial) with 2 or 3 spatial dims, got shape {images.shape}.")
    check_positive("chunk_size", chunk_size, integer=True)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, s in enumerate(range(0, len(images), chunk_size)):
        p = d / f"{prefix}_{i:04d}.npz"
        np.savez(p, images=images[s:s + chunk_size])
        paths.append(p)
    return paths


def read_chunk(path: str | Path) -> torch.Tensor:
    """The ``images`` array of one chunk file as float32 ``(N, C, *spatial)``.

    Raises:
        FileNotFoundError: no such file. ValueError: no ``images`` key or a bad shape.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"chunk {p} not found.")
    with np.load(p, allow_pickle=False) as f:
        if "images" not in f.files:
            raise ValueError(f"chunk {p}: expected an 'images' array, found {sorted(f.files)}.")
        x = f["images"]
    if x.ndim not in (4, 5) or len(x) == 0:
        raise ValueError(f"chunk {p}: images must be (N, C, H, W[, D]) with N > 0, got shape {x.shape}.")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def augment(x: torch.Tensor, g: torch.Generator, *, noise: float = 0.05, shift: int = 2) -> torch.Tensor:
    """One random view per sample: flips along every spatial axis, a circular shift of up to ``shift``
    voxels, brightness/contrast jitter (x0.8-1.2, +-0.1) and Gaussian noise, clipped to ``[0, 1]``."""
    b, d = x.shape[0], x.ndim - 2
    out = torch.empty_like(x)
    for i in range(b):
        v = x[i]
        for ax in range(1, d + 1):
            if bool(torch.rand((), generator=g) < 0.5):
                v = v.flip(ax)
        shifts = [int(s) for s in torch.randint(-shift, shift + 1, (d,), generator=g)]
        v = torch.roll(v, shifts, dims=tuple(range(1, d + 1)))
        c = 0.8 + 0.4 * torch.rand((), generator=g)
        bright = 0.2 * torch.rand((), generator=g) - 0.1
        out[i] = v * c + bright
    out = out + noise * torch.randn(out.shape, generator=g)
    return out.clamp_(0.0, 1.0)


class ReplayBuffer:
    """Reservoir sample (Vitter's algorithm R) of at most ``capacity`` past images (uniform over everything seen)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(check_nonnegative("replay_size", capacity, integer=True))
        self.items: torch.Tensor | None = None
        self.seen = 0

    def __len__(self) -> int:
        return 0 if self.items is None else len(self.items)

    def add(self, x: torch.Tensor, g: torch.Generator) -> None:
        """Offer every image of ``x`` ``(N, C, *spatial)`` to the reservoir."""
        if self.capacity == 0:
            return
        for img in x:
            self.seen += 1
            if len(self) < self.capacity:
                img = img.unsqueeze(0).clone()
                self.items = img if self.items is None else torch.cat([self.items, img])
            else:
                j = int(torch.randint(0, self.seen, (1,), generator=g))
                if j < self.capacity:
                    self.items[j] = img  # type: ignore[index]

    def sample(self, n: int, g: torch.Generator) -> torch.Tensor | None:
        if self.items is None or n <= 0:
            return None
        return self.items[torch.randint(0, len(self), (n,), generator=g)]

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "items": self.items, "seen": self.seen}

    def load_state_dict(self, s: dict) -> None:
        self.capacity, self.items, self.seen = int(s["capacity"]), s["items"], int(s["seen"])


def mas_importance(encoder: nn.Module, x: torch.Tensor, *, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """MAS importance per parameter: mean over samples of ``|d ||f(x)||_2^2 / d theta|`` (batched approximation:
    the gradient of the batch mean, in absolute value, averaged over batches)."""
    params = {k: p for k, p in encoder.named_parameters() if p.requires_grad}
    imp = {k: torch.zeros_like(p) for k, p in params.items()}
    nb = 0
    was = encoder.training
    encoder.eval()
    for s in range(0, len(x), batch_size):
        out = encoder(x[s:s + batch_size])
        val = out.pow(2).reshape(out.shape[0], -1).sum(1).mean()
        grads = torch.autograd.grad(val, list(params.values()), allow_unused=True)
        for (k, _), gr in zip(params.items(), grads):
            if gr is not None:
                imp[k] += gr.abs()
        nb += 1
    encoder.train(was)
    return {k: v / max(nb, 1) for k, v in imp.items()}


class _ContrastiveStep:
    """MONAI ``iteration_update``: contrastive loss of two views (+ replay images, + MAS penalty)."""

    def __init__(self, trainer: StreamingTrainer) -> None:
        self.t = trainer

    def __call__(self, engine: Any, batchdata: dict) -> dict:
        t = self.t
        x = batchdata[Keys.IMAGE]
        extra = t.replay.sample(int(round(t.replay_fraction * len(x))), t.generator) if t.chunks_done else None
        if extra is not None:
            x = torch.cat([x, extra])
        v1, v2 = augment(x, t.generator), augment(x, t.generator)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        z1, z2 = t.head(engine.network(v1)), t.head(engine.network(v2))
        loss = t.criterion(z1, z2)
        engine.state.output = {Keys.IMAGE: x, Keys.LABEL: None, Keys.PRED: z1}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        if t.mas_lambda > 0 and t.mas_omega:
            pen = sum((t.mas_omega[k] * (p - t.mas_anchor[k]) ** 2).sum()
                      for k, p in engine.network.named_parameters() if k in t.mas_omega)
            loss = loss + t.mas_lambda * pen
        engine.state.output[Keys.LOSS] = loss.detach()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class StreamingTrainer:
    """Sequential contrastive training over chunk files, with replay and MAS, resumable (see the module docstring).

    Args:
        encoder: ``(B, C, *spatial) -> (B, feature_dim)`` (trained in place).
        feature_dim: the encoder's output size.
        checkpoint_dir: where ``checkpoint.pt`` is written after every chunk and resumed from.
        epochs_per_chunk: passes over each chunk.
        batch_size: new images per batch (replay images come on top).
        lr: Adam learning rate (the optimiser state carries over chunks).
        temperature: contrastive-loss temperature.
        replay_size: replay-buffer capacity (0 disables replay); ``replay_fraction``: replay images
            added per batch, as a fraction of the batch size.
        mas_lambda: MAS penalty weight (0 disables it).
        proj_dim: projection-head output size.
        seed: seed of the trainer's generator (shuffles, augmentations, reservoir, replay draws).

    Attributes:
        chunks_done: chunks finished (restored on resume); ``history``: per chunk, the mean loss of its last epoch.
    """

    def __init__(self, encoder: nn.Module, *, feature_dim: int, checkpoint_dir: str | Path, epochs_per_chunk: int = 5,
                 batch_size: int = 64, lr: float = 1e-3, temperature: float = 0.5, replay_size: int = 0,
                 replay_fraction: float = 0.5, mas_lambda: float = 0.0, proj_dim: int = 32, seed: int = 0) -> None:
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(check_positive("feature_dim", feature_dim, integer=True), feature_dim),
                                  nn.ReLU(), nn.Linear(feature_dim, check_positive("proj_dim", proj_dim, integer=True)))
        self.checkpoint_dir = Path(checkpoint_dir)
        self.epochs_per_chunk = check_positive("epochs_per_chunk", epochs_per_chunk, integer=True)
        self.batch_size = check_positive("batch_size", batch_size, integer=True)
        self.replay = ReplayBuffer(replay_size)
        self.replay_fraction = float(check_number("replay_fraction", replay_fraction, low=0, high=1))
        self.mas_lambda = float(check_nonnegative("mas_lambda", mas_lambda))
        self.criterion = ContrastiveLoss(temperature=check_positive("temperature", temperature))
        self.optimizer = torch.optim.Adam(list(encoder.parameters()) + list(self.head.parameters()),
                                          lr=check_positive("lr", lr))
        self.generator = torch.Generator().manual_seed(int(seed))
        self.mas_omega: dict[str, torch.Tensor] = {}
        self.mas_anchor: dict[str, torch.Tensor] = {}
        self.chunks_done = 0
        self.history: list[float] = []

    @property
    def checkpoint_path(self) -> Path:
        return self.checkpoint_dir / "checkpoint.pt"

    def state_dict(self) -> dict:
        return {"encoder": self.encoder.state_dict(), "head": self.head.state_dict(),
                "optimizer": self.optimizer.state_dict(), "replay": self.replay.state_dict(),
                "mas_omega": self.mas_omega, "mas_anchor": self.mas_anchor, "chunks_done": self.chunks_done,
                "history": self.history, "generator": self.generator.get_state()}

    def load_state_dict(self, s: dict) -> None:
        self.encoder.load_state_dict(s["encoder"])
        self.head.load_state_dict(s["head"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.replay.load_state_dict(s["replay"])
        self.mas_omega, self.mas_anchor = s["mas_omega"], s["mas_anchor"]
        self.chunks_done, self.history = int(s["chunks_done"]), list(s["history"])
        self.generator.set_state(s["generator"])

    def save(self) -> None:
        """Write the checkpoint atomically (temporary file, then rename)."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, self.checkpoint_path)

    def resume(self) -> bool:
        """Load ``checkpoint.pt`` if present (``weights_only=True``); returns whether it did."""
        if not self.checkpoint_path.is_file():
            return False
        self.load_state_dict(torch.load(self.checkpoint_path, weights_only=True))
        logger.info("streaming: resumed after chunk %d from %s", self.chunks_done, self.checkpoint_path)
        return True

    def train_chunk(self, x: torch.Tensor) -> float:
        """``epochs_per_chunk`` epochs over ``x`` with a MONAI trainer; returns the last epoch's mean loss."""
        batches = []
        for _ in range(self.epochs_per_chunk):
            perm = torch.randperm(len(x), generator=self.generator)
            batches += [{Keys.IMAGE: x[perm[i:i + self.batch_size]]} for i in range(0, len(x), self.batch_size)
                        if len(perm[i:i + self.batch_size]) > 1]
        losses: list[float] = []
        trainer = SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=batches, network=self.encoder,
                                    optimizer=self.optimizer, loss_function=self.criterion,
                                    iteration_update=_ContrastiveStep(self), decollate=False)

        @trainer.on(IterationEvents.LOSS_COMPLETED)
        def _keep(engine: Any) -> None:
            losses.append(float(engine.state.output[Keys.LOSS]))

        trainer.run()
        per_epoch = max(1, len(batches) // self.epochs_per_chunk)
        return float(np.mean(losses[-per_epoch:])) if losses else float("nan")

    def end_chunk(self, x: torch.Tensor) -> None:
        """Replay and MAS bookkeeping after a chunk."""
        self.replay.add(x, self.generator)
        if self.mas_lambda > 0:
            omega = mas_importance(self.encoder, x)
            n = self.chunks_done  # running mean over the chunks seen so far
            self.mas_omega = {k: (self.mas_omega.get(k, torch.zeros_like(v)) * n + v) / (n + 1) for k, v in omega.items()}
            self.mas_anchor = {k: p.detach().clone() for k, p in self.encoder.named_parameters() if k in self.mas_omega}

    def fit(self, chunk_paths: Sequence[str | Path], *, callback: Any = None) -> None:
        """Train over ``chunk_paths`` in order, resuming from the checkpoint when there is one.

        Args:
            chunk_paths: chunk files; chunks already done (per the checkpoint) are skipped unread.
            callback: optional ``callback(trainer, chunk_index)`` after each chunk (e.g. evaluation).
        """
        self.resume()
        for i, path in enumerate(chunk_paths):
            if i < self.chunks_done:
                continue
            x = read_chunk(path)  # only this chunk (and the replay buffer) is in memory
            loss = self.train_chunk(x)
            self.end_chunk(x)
            self.chunks_done = i + 1
            self.history.append(loss)
            self.save()
            logger.info("streaming: chunk %d (%s, %d images) done, loss %.4f", i, Path(path).name, len(x), loss)
            del x
            if callback is not None:
                callback(self, i)

    def snapshot(self) -> nn.Module:
        """A frozen copy of the encoder in eval mode (for probes)."""
        enc = copy.deepcopy(self.encoder).eval()
        for p in enc.parameters():
            p.requires_grad_(False)
        return enc
