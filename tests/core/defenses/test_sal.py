"""SAL: reduction to penalised adversarial training, environment risk, learned w, MONAI trainer (2-D/3-D)."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer
from torch import nn

from medrobust.core.attacks.losses import resolve_objective
from medrobust.core.defenses.sal import SAL, environment_risk, feature_cost, penalized_attack


def _two_feature_envs(seed: int = 0):
    """Pixel 0 predicts y equally in both environments; pixel 1 agrees with y 95 % / 70 % of the time."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for e, p in enumerate((0.95, 0.7)):
        y = torch.randint(0, 2, (128,), generator=g)
        s = y.float() * 0.5 + 0.25 + 0.25 * torch.randn(128, generator=g)
        z = torch.where(torch.rand(128, generator=g) > p, 1 - y, y).float() * 0.5 + 0.25 + 0.05 * torch.randn(128, generator=g)
        out.append((torch.stack([s, z], 1).clamp(0, 1).reshape(128, 1, 1, 2), y, torch.full((128,), e)))
    return [torch.cat(t) for t in zip(*out)]


def test_uniform_w_is_penalised_adversarial_objective():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 16, 2)).eval()
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 0, 1])
    step = SAL(num_features=16, w_init=torch.full((16,), 5.0), learn_w=False, cost_scale=0.1, inner_steps=4, inner_lr=0.2)
    assert step.gamma == pytest.approx(0.2)
    a = step.make_adversarial(net, x, y, None)
    b = penalized_attack(net, x, y, resolve_objective(None).loss, torch.full((4, 4), 0.1), gamma=1.0, steps=4, lr=0.2)
    assert torch.allclose(a, b)
    assert not torch.allclose(a, x)  # the adversary moved
    # the penalty bounds the move: the objective at x' is at least the clean loss
    loss = resolve_objective(None).loss
    obj = lambda z: loss(net(z), y) - 0.1 * feature_cost(x, z, torch.ones(4, 4))  # noqa: E731
    assert bool((obj(a) >= obj(x) - 1e-6).all())


def test_environment_risk():
    losses = torch.tensor([1.0, 3.0, 2.0, 2.0])
    assert environment_risk(losses, torch.zeros(4, dtype=torch.long), alpha=5.0) == pytest.approx(2.0)
    # env 0: mean 2, env 1: mean 2 -> no spread; env split 0/1 by position: means 2 and 2
    assert environment_risk(losses, torch.tensor([0, 0, 1, 1]), alpha=5.0) == pytest.approx(4.0)
    assert environment_risk(losses, torch.tensor([0, 1, 1, 1]), alpha=1.0) == pytest.approx(1.0 + 7 / 3 + (7 / 3 - 1.0))


def test_learned_w_separates_stable_from_spurious():
    x, y, env = _two_feature_envs()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    step = SAL(num_features=2, features=torch.tensor([[0, 1]]), cost_scale=0.05, inner_steps=5, inner_lr=0.5, w_lr=0.1)
    perm = torch.randperm(256, generator=torch.Generator().manual_seed(0))
    batches = [{"image": x[perm[i:i + 64]], "label": y[perm[i:i + 64]], "env": env[perm[i:i + 64]]}
               for i in range(0, 256, 64)] * 6
    SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=batches, network=net, decollate=False,
                      optimizer=torch.optim.Adam(net.parameters(), 0.05), loss_function=nn.CrossEntropyLoss(),
                      iteration_update=step).run()
    assert len(step.history) == len(batches)
    assert step.w[0] > 3 * step.w[1]  # the stable pixel costs more to perturb


@pytest.mark.parametrize("dims", [2, 3])
def test_trainer_3d_feature_grid(dims):
    torch.manual_seed(0)
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    net = nn.Sequential(conv(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 ** dims, 2))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, *([4] * dims), generator=g)
    feats = (torch.arange(4 ** dims).reshape([4] * dims) % 3)
    step = SAL(num_features=3, features=feats, inner_steps=2)
    batch = {"image": x, "label": torch.tensor([0, 1] * 3), "env": torch.tensor([0, 0, 0, 1, 1, 1])}
    SupervisedTrainer(device="cpu", max_epochs=2, train_data_loader=[batch], network=net, decollate=False,
                      optimizer=torch.optim.SGD(net.parameters(), 0.1), loss_function=nn.CrossEntropyLoss(),
                      iteration_update=step).run()
    assert len(step.history) == 2 and bool((step.w > 0).all()) and not torch.equal(step.w, torch.ones(3))


def test_errors():
    with pytest.raises(ValueError, match="features must hold feature indices"):
        SAL(num_features=2, features=torch.tensor([[0, 2]]))
    with pytest.raises(ValueError, match="w_init must be"):
        SAL(num_features=2, w_init=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="num_features = voxels"):
        SAL(num_features=3).w_map((2, 2))
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    trainer = SupervisedTrainer(device="cpu", max_epochs=1, network=net, decollate=False,
                                train_data_loader=[{"image": torch.rand(2, 1, 2, 2), "label": torch.tensor([0, 1])}],
                                optimizer=torch.optim.SGD(net.parameters(), 0.1), loss_function=nn.CrossEntropyLoss(),
                                iteration_update=SAL(num_features=4))
    with pytest.raises(ValueError, match="environment ids under batch key 'env'"):
        trainer.run()


def test_stable_step_is_per_voxel():
    from medrobust.core.defenses.sal import stable_step

    step = stable_step(1.0, 2.0, torch.tensor([[0.01, 1.0], [10.0, 0.1]]))
    assert torch.allclose(step, torch.tensor([[1.0, 0.225], [0.0225, 1.0]]))
