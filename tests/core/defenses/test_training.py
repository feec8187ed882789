"""Every defense, run through MONAI's SupervisedTrainer, lowers its robust loss on a tiny task
(2-D classification for all, 3-D and segmentation-loss cases for several)."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from medrobust.core.defenses import build_defense

EPS = 0.08  # toy images are in [0, 1] with a 0.5 signal: a radius that hurts but can be learnt against

ALL = ["pgd-at", "fast-fgsm", "fgm", "trades", "mart", "at-awp", "trades-awp", "adt-exp", "adt-exp-am", "fisher-at"]
OPTIONS = {"pgd-at": {"steps": 2}, "trades": {"steps": 2}, "mart": {"steps": 2}, "at-awp": {"steps": 2},
           "trades-awp": {"steps": 2}, "adt-exp": {"steps": 2, "mc_samples": 2}, "fisher-at": {"steps": 2, "fraction": 0.5},
           "adt-exp-am": {"generator_lr": 1e-3}}


def _first_last(losses: list[float], k: int = 3) -> tuple[float, float]:
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


@pytest.mark.parametrize("name", ALL)
def test_defense_lowers_robust_loss_2d(toy, name):
    x, y = toy.classification(16)
    net = toy.classifier(2)
    before = toy.robust_ce(net, x, y, EPS)
    step = build_defense(name, eps=EPS, seed=1, **OPTIONS.get(name, {}))
    x0 = x.clone()
    _, losses = toy.train(net, x, y, step, iters=15, lr=0.08)
    after = toy.robust_ce(net, x, y, EPS)
    assert torch.equal(x, x0), "training must not modify the input batch"
    first, last = _first_last(losses)
    assert last < first, f"{name}: its own training loss did not fall ({first:.3f} -> {last:.3f})"
    assert after < 0.8 * before, f"{name}: PGD robust CE {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("name", ["pgd-at", "fast-fgsm", "trades", "mart", "trades-awp", "adt-exp", "adt-exp-am", "fisher-at"])
def test_defense_lowers_robust_loss_3d(toy, name):
    x, y = toy.classification(8, spatial=(6, 6, 6))
    net = toy.classifier(3)
    before = toy.robust_ce(net, x, y, EPS)
    _, losses = toy.train(net, x, y, build_defense(name, eps=EPS, seed=2, **OPTIONS.get(name, {})), iters=30,
                            lr=0.03)
    after = toy.robust_ce(net, x, y, EPS)
    first, last = _first_last(losses)
    assert last < first and after < 0.8 * before, f"{name} 3-D: loss {first:.3f}->{last:.3f}, robust {before:.3f}->{after:.3f}"


@pytest.mark.parametrize("name", ["pgd-at", "fast-fgsm", "fgm", "trades", "mart", "at-awp", "trades-awp", "adt-exp",
                                  "adt-exp-am"])
def test_defense_with_segmentation_loss(toy, name):
    x, y = toy.segmentation(6)
    net = toy.segmenter()
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    before = toy.robust_ce(net, x, y, EPS, loss_fn="dicece")
    step = build_defense(name, eps=EPS, attack_loss="dicece", seed=3, **OPTIONS.get(name, {}))
    _, losses = toy.train(net, x, y, step, iters=15, lr=0.08, loss=loss)
    after = toy.robust_ce(net, x, y, EPS, loss_fn="dicece")
    first, last = _first_last(losses)
    assert last < first, f"{name} seg: training loss {first:.3f} -> {last:.3f}"
    assert after < before, f"{name} seg: robust Dice-CE {before:.3f} -> {after:.3f}"


def test_same_seed_same_weights(toy):
    x, y = toy.classification(8)
    nets = []
    for _ in range(2):
        net = toy.classifier(2)
        toy.train(net, x, y, build_defense("trades", eps=EPS, steps=2, seed=7), iters=4)
        nets.append(net)
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a, b)


def test_batchnorm_statistics_not_updated_by_the_attack(toy):
    x, y = toy.classification(8)
    net = toy.classifier(2, norm=True)
    bn = net[1]
    toy.train(net, x, y, build_defense("pgd-at", eps=EPS, steps=3), iters=2)
    assert int(bn.num_batches_tracked) == 2, "only the training forward (one per step) may update BatchNorm statistics"
