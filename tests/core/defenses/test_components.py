"""Pieces of the defenses: factory, AWP perturb/restore, fast-FGSM early stop, ADT sampling, FI
selection, TRADES/MART objectives against independent formulas, and the robust evaluation step."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from monai.engines import SupervisedEvaluator
from monai.losses import DiceCELoss

from medrobust.core.defenses import (
    ADTEXP,
    ADTEXPAM,
    AWP,
    MART,
    TRADES,
    AdversarialEvaluationStep,
    CatastrophicOverfittingStop,
    FastFGSMTraining,
    FisherTargetedTraining,
    PGDAdversarialTraining,
    awp_directions,
    build_defense,
    class_indices,
    defense_names,
    mart_loss,
    robustness_metrics,
    tanh_gaussian_sample,
)


# ----------------------------------------------------------------------------------- factory
def test_build_defense_names_and_defaults():
    assert build_defense("none", eps=0.1) is None and build_defense(None) is None
    assert set(defense_names()) >= {"pgd-at", "fast-fgsm", "fgm", "trades", "mart", "at-awp", "trades-awp",
                                    "adt-exp", "adt-exp-am", "fisher-at"}
    assert build_defense("TRADES", eps=2 / 255).beta == 6.0
    assert isinstance(build_defense("fast_fgsm", eps=0.1), FastFGSMTraining)
    assert build_defense("fast-fgsm", eps=0.1, steps=10).alpha == pytest.approx(0.125)
    at_awp, tr_awp = build_defense("at-awp", eps=0.1), build_defense("trades-awp", eps=0.1)
    assert isinstance(at_awp.inner, PGDAdversarialTraining) and at_awp.gamma == 0.01
    assert isinstance(tr_awp.inner, TRADES) and tr_awp.gamma == 0.005
    assert build_defense("at-awp", eps=0.1, awp_gamma=0.02).gamma == 0.02
    assert build_defense("pgd-at", eps=8 / 255, steps=10).alpha == pytest.approx(2 / 255)


def test_build_defense_errors_and_warnings():
    with pytest.raises(ValueError, match="unknown name 'pdg'"):
        build_defense("pdg", eps=0.1)
    with pytest.raises(ValueError, match="needs eps"):
        build_defense("trades", beta=6)
    with pytest.warns(UserWarning, match=r"ignores options \['beta'\]"):
        build_defense("pgd-at", eps=0.1, beta=6.0)
    with pytest.raises(ValueError, match="eps must be"):
        TRADES(eps=-1.0)
    with pytest.raises(ValueError, match="bounds"):
        TRADES(eps=0.1, bounds=(0.0,))
    with pytest.raises(ValueError, match="fraction"):
        FisherTargetedTraining(eps=0.1, fraction=0.0)
    with pytest.raises(TypeError, match="AdversarialTrainingStep"):
        AWP(torch.nn.Linear(2, 2))


def test_class_indices_layouts():
    logits = torch.randn(2, 3, 4, 4)
    assert class_indices(torch.zeros(2, 1, 4, 4), logits).shape == (2, 4, 4)
    onehot = F.one_hot(torch.randint(0, 3, (2, 4, 4)), 3).movedim(-1, 1).float()
    assert torch.equal(class_indices(onehot, logits), onehot.argmax(1))
    with pytest.raises(ValueError, match="labels"):
        class_indices(torch.zeros(2, 1, 5, 5), logits)
    with pytest.raises(ValueError, match="labels"):
        class_indices(torch.zeros(3), torch.randn(2, 2))


# ---------------------------------------------------------------------------------------- AWP
def test_awp_directions_are_layer_relative(toy):
    net = toy.classifier(2, norm=True)
    proxy = copy.deepcopy(net)
    with torch.no_grad():
        for p in proxy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    d = awp_directions(net, proxy)
    names = {n for n, p in net.named_parameters() if p.ndim > 1}
    assert set(d) == names, "conv/linear weights only (no BatchNorm, no biases)"
    params = dict(net.named_parameters())
    for n, v in d.items():
        assert float(v.norm()) == pytest.approx(float(params[n].detach().norm()), rel=1e-5)


def test_awp_perturbs_during_the_step_and_restores(toy):
    x, y = toy.classification(8)
    net = toy.classifier(2)
    w0 = {k: v.clone() for k, v in net.state_dict().items()}
    seen = []
    net.register_forward_pre_hook(lambda m, inp: seen.append(m[0].weight.detach().clone()) if m.training else None)
    step = AWP(PGDAdversarialTraining(eps=0.05, steps=2), gamma=0.5)
    trainer, _ = toy.train(net, x, y, step, iters=1, lr=0.0)  # lr 0: only AWP could move the weights
    assert not torch.allclose(seen[-1], w0["0.weight"]), "the training forward must see perturbed weights"
    for k, v in net.state_dict().items():
        assert torch.allclose(v, w0[k], atol=1e-6), f"{k} not restored after the step"


# --------------------------------------------------------------------------------- fast FGSM
def test_catastrophic_overfitting_stop_restores_and_terminates(toy):
    x, y = toy.classification(16)
    net = toy.classifier(2)
    toy.train(net, x, y, None, iters=40)  # a model that is right on (x, y)
    stop = CatastrophicOverfittingStop(eps=0.01, steps=2, drop=0.2)
    stop._batch = (x, y)
    good = copy.deepcopy(net.state_dict())
    engine = SimpleNamespace(network=net, state=SimpleNamespace(epoch=1), terminated=False)
    engine.terminate = lambda: setattr(engine, "terminated", True)
    stop(engine)
    assert stop.history[0] > 0.7 and not engine.terminated
    with torch.no_grad():  # simulate the collapse: flip the decision
        net[-1].weight.neg_()
        net[-1].bias.neg_()
    engine.state.epoch = 2
    stop(engine)
    assert engine.terminated and stop.stopped_epoch == 2
    assert stop.history[1] < stop.history[0] - 0.2
    for k, v in net.state_dict().items():
        assert torch.equal(v, good[k]), "the last good epoch's weights must be restored"


def test_fast_fgsm_attaches_its_stopper(toy):
    x, y = toy.classification(8)
    net = toy.classifier(2)
    step = build_defense("fast-fgsm", eps=0.05, seed=0)
    toy.train(net, x, y, step, iters=2, epochs=2)
    assert len(step.stopper.history) == 2, "one PGD check per epoch"


# --------------------------------------------------------------------------------------- ADT
def test_tanh_gaussian_entropy_formula():
    mu, omega, z = torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    pert, ent = tanh_gaussian_sample(mu, omega, z)
    sigma = F.softplus(torch.tensor(0.0))
    assert torch.equal(pert, torch.zeros_like(pert))
    assert float(ent) == pytest.approx(float(torch.log(sigma + 1e-8) + torch.log(torch.tensor(1 + 1e-8))), abs=1e-6)


@pytest.mark.parametrize("shape", [(3, 1, 6, 6), (2, 1, 4, 4, 4)])
def test_adt_exp_samples_inside_ball_and_bounds(toy, shape):
    net = toy.classifier(len(shape) - 2)
    x = torch.rand(shape)
    adt = ADTEXP(eps=0.1, steps=2, mc_samples=2, bounds=(0.0, 1.0))
    x_adv = adt.make_adversarial(net, x, torch.zeros(shape[0], dtype=torch.long), None)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(p.grad is None for p in net.parameters()), "the inner maximisation must not touch parameter grads"


def test_adt_exp_am_trains_its_generator(toy):
    x, y = toy.classification(8)
    net = toy.classifier(2)
    step = ADTEXPAM(eps=0.05, seed=0)
    toy.train(net, x, y, step, iters=1)
    g0 = copy.deepcopy(step.net_g.state_dict())
    toy.train(net, x, y, step, iters=2)
    changed = [k for k, v in step.net_g.state_dict().items() if v.is_floating_point() and not torch.equal(v, g0[k])]
    assert changed, "the generator's optimiser must step"


# ------------------------------------------------------------------------------------ Fisher
def test_fisher_selection_picks_least_confident(toy):
    x, y = toy.classification(8)
    net = toy.classifier(2)
    toy.train(net, x, y, None, iters=10)
    step = FisherTargetedTraining(eps=0.05, fraction=0.25, steps=2)
    net.eval()
    fi, idx = step.select(net, x, y)
    p_true = net(x).softmax(1)[torch.arange(8), y]
    assert idx.numel() == 2
    assert set(idx.tolist()) == set(torch.argsort(p_true)[:2].tolist()), "2 classes: FI = (1 - p_y) / p_y"
    assert torch.allclose(fi, (1 - p_true) / p_true, rtol=1e-3, atol=1e-6)
    high = FisherTargetedTraining(eps=0.05, fraction=1.0, min_fi=float(fi.max()) + 1.0)
    sel = high.make_adversarial(net, x, y, None)
    assert sel.x_adv.shape[0] == 0 and sel.selected.numel() == 0


def test_fisher_rejects_segmentation_labels(toy):
    x, y = toy.segmentation(2)
    with pytest.raises(ValueError, match="classification only"):
        FisherTargetedTraining(eps=0.05).select(toy.classifier(2), x, y)


# ------------------------------------------------------------------------- TRADES and MART
def test_trades_inner_maximisation_raises_kl(toy):
    x, y = toy.classification(8)
    net = toy.classifier(2)
    t = TRADES(eps=0.1, steps=5)
    x_adv = t.make_adversarial(net, x, y, None)
    loss, pred = t.training_loss(net, x, x_adv, y, torch.nn.CrossEntropyLoss())
    with torch.no_grad():
        p = net(x).softmax(1)
        kl = F.kl_div(net(x_adv).log_softmax(1), p, reduction="batchmean")
        ce = F.cross_entropy(net(x), y)
    assert float(kl) > 1e-4 and (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert float(loss.detach()) == pytest.approx(float(ce + 6.0 * kl), rel=1e-4)


def test_mart_loss_matches_reference_formula():
    g = torch.Generator().manual_seed(0)
    zc, za = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    y = torch.tensor([0, 1, 2, 1, 0])
    pa, pc = za.softmax(1), zc.softmax(1)
    # the MART paper / reference code, written out independently
    top2 = torch.argsort(pa, dim=1)[:, -2:]
    y_wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    bce = F.cross_entropy(za, y) + F.nll_loss(torch.log(1.0001 - pa + 1e-12), y_wrong)
    kl = torch.nn.KLDivLoss(reduction="none")(torch.log(pa + 1e-12), pc).sum(1)
    ref = bce + 6.0 * (kl * (1.0000001 - pc.gather(1, y[:, None])[:, 0])).sum() / 5
    assert float(mart_loss(zc, za, y, beta=6.0)) == pytest.approx(float(ref), rel=1e-5)


def test_mart_segmentation_shapes(toy):
    x, y = toy.segmentation(2)
    net = toy.segmenter()
    m = MART(eps=0.05, steps=2, attack_loss="dicece")
    loss, pred = m.training_loss(net, x, m.make_adversarial(net, x, y, None), y,
                                 DiceCELoss(to_onehot_y=True, softmax=True))
    assert loss.ndim == 0 and pred.shape == (2, 2, 8, 8)


# ------------------------------------------------------------------------- robust evaluation
def test_adversarial_evaluation_step_in_monai_evaluator(toy):
    x, y = toy.classification(16)
    net = toy.classifier(2)
    toy.train(net, x, y, None, iters=40)
    eps = [0.01, 0.3]
    ev = SupervisedEvaluator(device="cpu", val_data_loader=[{"image": x[:8], "label": y[:8]}, {"image": x[8:], "label": y[8:]}],
                             network=net, iteration_update=AdversarialEvaluationStep(eps, steps=5),
                             key_val_metric=robustness_metrics(eps, key="robust_auc_eps2.55"), decollate=False)
    ev.run()
    m = ev.state.metrics
    assert ev.state.key_metric_name == "robust_auc_eps2.55"
    assert set(m) == {"auc", "accuracy", "ece", "robust_accuracy_eps2.55", "robust_auc_eps2.55",
                      "robust_accuracy_eps76.5", "robust_auc_eps76.5"}
    assert all(0.0 <= v <= 1.0 for v in m.values())
    assert m["accuracy"] > 0.9 and m["robust_accuracy_eps76.5"] < m["accuracy"] - 0.3
    assert net.training, "the evaluation step restores the network's mode"
    with pytest.raises(ValueError, match="key"):
        robustness_metrics(eps, key="robust_auc_eps3")
