"""nMutant: mutation operators, mutants, the detector, and detection of PGD adversarials."""

from __future__ import annotations

import copy

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from medrobust.core.attacks import pgd
from medrobust.core.detectors.nmutant import InputMutants, ModelMutants, NMutantDetector, label_change_rate, mutate_


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two overlapping classes: bright vs dark centre on noise (10x10), so some inputs are near the boundary."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = 0.5 * torch.rand(n, 1, 10, 10, generator=g)
    x[:, :, 3:7, 3:7] += (y.float() * 0.3 + 0.1).reshape(n, 1, 1, 1) * torch.rand(n, 1, 1, 1, generator=g) * 1.5
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained():
    x, y = _data(256, 0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(800, 32), nn.ReLU(),
                            nn.Linear(32, 2))  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    for p in net.parameters():
        p.grad = None
    return net.eval(), x, y


def test_operators_on_2d_and_3d():
    for conv in (nn.Conv2d, nn.Conv3d):
        net = nn.Sequential(conv(1, 20, 3), nn.ReLU(), conv(20, 12, 3))
        ref = copy.deepcopy(net)
        for op in ("gf", "ws", "ns", "nai"):
            m = mutate_(copy.deepcopy(net), op, 0.1, torch.Generator().manual_seed(1))
            assert not torch.equal(m[0].weight, ref[0].weight) or not torch.equal(m[2].weight, ref[2].weight), op
        w = ref[0].weight
        ws = mutate_(copy.deepcopy(net), "ws", 0.2, torch.Generator().manual_seed(2))[0].weight
        # weight shuffling keeps each neuron's multiset of incoming weights
        assert torch.allclose(ws.flatten(1).sort(1).values, w.flatten(1).sort(1).values)
        nai = mutate_(copy.deepcopy(net), "nai", 0.2, torch.Generator().manual_seed(3))
        neg = [(nai[i].weight.flatten(1) == -ref[i].weight.flatten(1)).all(1) for i in (0, 2)]
        same = [(nai[i].weight.flatten(1) == ref[i].weight.flatten(1)).all(1) for i in (0, 2)]
        assert int(sum(n.sum() for n in neg)) == int(32 * 0.2) and all(bool((a | b).all()) for a, b in zip(neg, same))
        ns = mutate_(copy.deepcopy(net), "ns", 0.3, torch.Generator().manual_seed(4))[0].weight
        assert torch.allclose(ns.flatten(1).sort(0).values, w.flatten(1).sort(0).values)  # rows permuted
        gf = mutate_(copy.deepcopy(net), "gf", 0.1, torch.Generator().manual_seed(5))
        changed = sum(int((a != b).sum()) for a, b in zip(gf.parameters(), ref.parameters()))
        total = sum(p.numel() for p in ref.parameters())
        assert changed == int(total * 0.1)


def test_mutants_accepted_reproducible_and_model_untouched(trained):
    net, x, y = trained
    state = copy.deepcopy(net.state_dict())
    rng = torch.get_rng_state()
    m1 = ModelMutants(net, x[:64], y[:64], operator="gf", gamma=0.05, seed=3)
    m2 = ModelMutants(net, x[:64], y[:64], operator="gf", gamma=0.05, seed=3)
    m1.generate(6)
    assert all(a >= 0.9 * m1.original_accuracy for a in m1.accuracies)
    assert torch.equal(m1.labels(5, x[64:96]), m2.labels(5, x[64:96]))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    assert torch.equal(torch.get_rng_state(), rng)
    with pytest.raises(RuntimeError, match="lower gamma"):
        ModelMutants(net, x[:64], y[:64], operator="nai", gamma=1.0, max_tries=2).generate(3)


def test_kappa_zero_still_gives_a_valid_test(trained):
    net, x, y = trained
    det = NMutantDetector(net, x[:32], y[:32], operator="gf", gamma=0.01, max_mutants=30)
    det.kappa = 0.0  # normal inputs that never change label
    p0, p1 = det.hypotheses
    assert 0 < p0 < p1 < 1
    r = det.detect(x[:3])
    assert r.n_used.shape == (3,) and bool((r.n_used <= 30).all())


def test_input_mutants_stay_in_bounds_and_change_a_box():
    x = torch.full((3, 1, 8, 8, 8), 0.5)
    im = InputMutants(nn.Sequential(nn.Flatten(), nn.Linear(512, 2)), step=0.2, box=0.25, seed=1)
    xm = im.mutate(0, x)
    changed = (xm != x).flatten(1).sum(1)
    assert bool((changed > 0).all()) and bool((changed <= 8).all())  # a 2x2x2 box
    assert xm.min() >= 0.3 - 1e-6 and xm.max() <= 0.7 + 1e-6
    assert torch.equal(im.mutate(0, x[1:2], torch.tensor([1])), xm[1:2])  # per-sample: batch-independent


def test_detects_pgd_adversarials_better_than_chance(trained):
    # nMutant's premise: adversarial inputs sit just across the boundary. A small PGD radius gives
    # such inputs; (high-confidence adversarials from a large radius are not detected: see docs/metrics.md)
    net, x, y = trained
    xt, yt = _data(400, 1)
    with torch.no_grad():
        ok = net(xt).argmax(1) == yt
    xt, yt = xt[ok], yt[ok]
    res = pgd(net, xt, yt, eps=0.03, steps=10, generator=0)
    adv = res.x_adv[res.success][:30]
    normal = xt[:30]
    assert len(adv) >= 15
    det = NMutantDetector(net, x[:128], y[:128], operator="nai", gamma=0.05, max_mutants=200, seed=0)
    kappa = det.fit(x[128:192], n_mutants=40)
    lcr_adv, lcr_norm = det.lcr(adv, 40), det.lcr(normal, 40)
    auc = roc_auc_score([1] * len(lcr_adv) + [0] * len(lcr_norm), torch.cat([lcr_adv, lcr_norm]).numpy())
    assert auc > 0.75
    r_adv, r_norm = det.detect(adv), det.detect(normal)
    assert float(r_adv.adversarial.float().mean()) > float(r_norm.adversarial.float().mean()) + 0.3
    assert bool((r_adv.n_used >= 1).all()) and bool((r_adv.n_used <= 200).all())
    assert 0 < kappa < 1
    assert torch.allclose(label_change_rate(net, det.mutants, adv[:4], 40), lcr_adv[:4])


def test_bad_inputs(trained):
    net, x, y = trained
    with pytest.raises(ValueError, match="operator"):
        mutate_(copy.deepcopy(net), "flip", 0.1, torch.Generator())
    with pytest.raises(RuntimeError, match="fit"):
        NMutantDetector(net, x[:16], y[:16]).detect(x[:2])
    with pytest.raises(ValueError, match="mutation"):
        NMutantDetector(net, x[:16], y[:16], mutation="weights")
