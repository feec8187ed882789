"""IG-NORM / IG-SUM-NORM: inner maximisation, reductions, MONAI trainer integration (2-D and 3-D)."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer
from torch import nn

from medrobust.core.defenses import PGDAdversarialTraining
from medrobust.core.defenses.stable_explanations import IGNorm, IGSumNorm, ig_l1
from medrobust.core.attacks.losses import resolve_objective


def _net(dims: int) -> nn.Module:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
    return nn.Sequential(conv(1, 4, 3, padding=1), bn(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 ** dims, 2))


def _data(dims: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, 1, *([4] * dims), generator=g), torch.tensor([0, 1, 0, 1])


@pytest.mark.parametrize("dims", [2, 3])
def test_ig_norm_inner_max_beats_random_start(dims):
    torch.manual_seed(0)
    net = _net(dims).eval()
    x, y = _data(dims)
    step = IGNorm(eps=8 / 255, steps=5, attack_ig_steps=4)
    x_adv = step.make_adversarial(net, x, y, None)
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    loss = resolve_objective(None).loss
    rand = (x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(5)) * 2 - 1) * 8 / 255).clamp(0, 1)
    v_adv = ig_l1(net, x, x_adv, y, loss, steps=4, create_graph=False)
    v_rand = ig_l1(net, x, rand, y, loss, steps=4, create_graph=False)
    assert v_adv.sum() > v_rand.sum()


def test_ig_sum_norm_with_beta_zero_is_pgd_at():
    torch.manual_seed(0)
    net = _net(2).eval()
    x, y = _data(2)
    a = IGSumNorm(eps=4 / 255, beta=0.0, steps=3, seed=7).make_adversarial(net, x, y, None)
    b = PGDAdversarialTraining(eps=4 / 255, steps=3, seed=7).make_adversarial(net, x, y, None)
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("cls,kw", [(IGNorm, {"lam": 1.0}), (IGSumNorm, {"beta": 0.1})])
@pytest.mark.parametrize("dims", [2, 3])
def test_trainer_step_and_regulariser_gradient(cls, kw, dims):
    torch.manual_seed(0)
    net = _net(dims)
    x, y = _data(dims)
    step = cls(eps=4 / 255, steps=2, ig_steps=3, attack_ig_steps=2, **kw)
    before = [p.detach().clone() for p in net.parameters()]
    trainer = SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=[{"image": x, "label": y}], network=net,
                                optimizer=torch.optim.SGD(net.parameters(), 0.1), loss_function=nn.CrossEntropyLoss(),
                                iteration_update=step)
    trainer.run()
    assert step.last_terms["ig_norm"] > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
    # the attribution term has its own weight gradient
    net.eval()
    adv = step.make_adversarial(net, x, y, None)
    reg = step.ig_term(net, x, adv, y)
    (gw,) = torch.autograd.grad(reg, net[0].weight)
    assert gw.abs().sum() > 0


def test_ig_norm_lambda_zero_is_natural_loss():
    torch.manual_seed(0)
    net = _net(2).eval()
    x, y = _data(2)
    step = IGNorm(eps=4 / 255, lam=0.0, steps=1, ig_steps=2, attack_ig_steps=2)
    loss, _ = step.training_loss(net, x, x.clone(), y, nn.CrossEntropyLoss())
    assert torch.allclose(loss, nn.CrossEntropyLoss()(net(x), y))


def test_errors():
    with pytest.raises(ValueError, match="weight must be"):
        IGNorm(eps=0.1, lam=-1.0)
    with pytest.raises(ValueError, match="ig_steps must be > 0"):
        IGSumNorm(eps=0.1, ig_steps=0)
    with pytest.raises(ValueError, match="eps must be"):
        IGNorm(eps=-1.0)


def test_stable_explanation_defenses_are_bundle_options():
    """``defense: ig-norm`` / ``ig-sum-norm`` in a bundle config builds the training step."""
    from medrobust.core.defenses import build_defense, defense_names
    from medrobust.core.defenses.stable_explanations import IGNorm, IGSumNorm

    assert {"ig-norm", "ig-sum-norm"} <= set(defense_names())
    d = build_defense("IG_NORM", eps=2 / 255, steps=3, lam=0.5)
    assert isinstance(d, IGNorm) and d.steps == 3
    assert isinstance(build_defense("ig-sum-norm", eps=2 / 255, beta=0.2), IGSumNorm)
    with pytest.raises(ValueError, match="eps"):
        build_defense("ig-norm")
