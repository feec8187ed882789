"""Streaming SSL trainer: chunk-by-chunk reading, resume after a kill, replay reservoir, MAS, 3-D."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import medrobust.training.streaming as streaming
from medrobust.training.streaming import ReplayBuffer, StreamingTrainer, read_chunk, write_chunks


def _encoder(dims: int = 2) -> nn.Module:
    torch.manual_seed(0)
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d
    return nn.Sequential(conv(1, 4, 3), nn.ReLU(), pool(1), nn.Flatten())


def _chunks(tmp_path, dims: int = 2, n: int = 36, size: int = 12):
    x = np.random.default_rng(0).random((n, 1, *([8] * dims)), dtype=np.float32)
    return write_chunks(x, tmp_path / "data", chunk_size=size)


class _Kill(RuntimeError):
    pass


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    paths = _chunks(tmp_path)
    kw = {"feature_dim": 4, "epochs_per_chunk": 1, "batch_size": 6, "replay_size": 5, "mas_lambda": 0.1}
    full = StreamingTrainer(_encoder(), checkpoint_dir=tmp_path / "a", **kw)
    full.fit(paths)

    def kill(tr, i):
        if i == 1:
            raise _Kill
    first = StreamingTrainer(_encoder(), checkpoint_dir=tmp_path / "b", **kw)
    with pytest.raises(_Kill):
        first.fit(paths, callback=kill)
    second = StreamingTrainer(_encoder(), checkpoint_dir=tmp_path / "b", **kw)  # a fresh process
    assert second.resume() and second.chunks_done == 2
    second.fit(paths)
    assert second.chunks_done == 3 and second.history == pytest.approx(full.history)
    for a, b in zip(full.encoder.state_dict().values(), second.encoder.state_dict().values()):
        assert torch.equal(a, b)


def test_reads_one_chunk_at_a_time_and_skips_done(tmp_path, monkeypatch):
    paths = _chunks(tmp_path)
    calls = []
    monkeypatch.setattr(streaming, "read_chunk", lambda p: calls.append(p) or read_chunk(p))
    tr = StreamingTrainer(_encoder(), feature_dim=4, checkpoint_dir=tmp_path / "c", epochs_per_chunk=1, batch_size=6)
    tr.fit(paths[:2])
    tr2 = StreamingTrainer(_encoder(), feature_dim=4, checkpoint_dir=tmp_path / "c", epochs_per_chunk=1, batch_size=6)
    tr2.fit(paths)
    assert calls == [paths[0], paths[1], paths[2]]  # chunks 0 and 1 not re-read after resuming


def test_replay_reservoir():
    g = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(10)
    for k in range(20):
        buf.add(torch.full((5, 1, 2, 2), float(k)), g)
    assert len(buf) == 10 and buf.seen == 100
    vals = buf.items[:, 0, 0, 0]
    assert vals.max() >= 10  # later chunks replace earlier items
    s = buf.sample(7, g)
    assert s.shape == (7, 1, 2, 2)
    other = ReplayBuffer(0)
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.items, buf.items)
    assert ReplayBuffer(0).sample(3, g) is None


def test_mas_keeps_weights_near_anchor(tmp_path):
    paths = _chunks(tmp_path)
    drift = {}
    for lam in (0.0, 1e4):
        tr = StreamingTrainer(_encoder(), feature_dim=4, checkpoint_dir=tmp_path / f"m{lam}", epochs_per_chunk=2,
                              batch_size=6, mas_lambda=lam, lr=1e-2)
        tr.fit(paths[:1])
        anchor = [p.detach().clone() for p in tr.encoder.parameters()]
        tr.fit(paths[:2])
        drift[lam] = sum(float((p.detach() - a).abs().sum()) for p, a in zip(tr.encoder.parameters(), anchor))
        if lam:
            assert tr.mas_omega and all(v.shape == tr.mas_anchor[k].shape for k, v in tr.mas_omega.items())
    assert drift[1e4] < 0.5 * drift[0.0]


def test_3d_chunks(tmp_path):
    paths = _chunks(tmp_path, dims=3, n=12, size=6)
    tr = StreamingTrainer(_encoder(3), feature_dim=4, checkpoint_dir=tmp_path / "d", epochs_per_chunk=1, batch_size=4,
                          replay_size=4)
    tr.fit(paths)
    assert tr.chunks_done == 2 and len(tr.replay) == 4 and all(np.isfinite(tr.history))


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_chunk(tmp_path / "nope.npz")
    np.savez(tmp_path / "bad.npz", pixels=np.zeros((2, 1, 4, 4)))
    with pytest.raises(ValueError, match="expected an 'images' array"):
        read_chunk(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match=r"\(N, C, \*spatial\)"):
        write_chunks(np.zeros((4, 4)), tmp_path, chunk_size=2)
    with pytest.raises(ValueError, match="replay_fraction"):
        StreamingTrainer(_encoder(), feature_dim=4, checkpoint_dir=tmp_path, replay_fraction=2.0)
