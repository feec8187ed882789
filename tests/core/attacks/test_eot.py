"""EOT in the one PGD loop: K = 1 is plain PGD, the averaged gradient recovers the expected
gradient of a randomised linear model, the predictive-mean wrapper, 2-D and 3-D, bad settings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.core.attacks import fgsm, pgd
from medrobust.core.attacks.eot import PredictiveMean, eot_input_gradient, eot_output


class RandomLinear(nn.Module):
    """Logits ``(W + s Z) x`` with a fresh ``Z ~ N(0, I)`` per call (own generator): E[grad] = W^T e_k."""

    def __init__(self, d: int, k: int = 3, s: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(100 + seed)
        self.weight = nn.Parameter(torch.randn(k, d, generator=g) * 0.1, requires_grad=False)
        self.s = s
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.randn(self.weight.shape, generator=self.gen)
        return x.flatten(1) @ (self.weight + self.s * z).T


def deterministic_net(dims: int) -> nn.Module:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    torch.manual_seed(0)
    return nn.Sequential(conv(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))


def batch(dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand((3, 1) + (6,) * dims, generator=g), torch.tensor([0, 1, 2])


@pytest.mark.parametrize("dims", [2, 3])
def test_k1_is_plain_pgd_and_deterministic_model_ignores_k(dims):
    x, y = batch(dims)
    net = deterministic_net(dims)
    net(x)  # materialise the lazy layer
    plain = pgd(net, x, y, eps=0.05, steps=4, generator=3)
    k1 = pgd(net, x, y, eps=0.05, steps=4, generator=3, eot_samples=1)
    assert torch.equal(plain.x_adv, k1.x_adv) and torch.equal(plain.info["loss"], k1.info["loss"])
    k2 = pgd(net, x, y, eps=0.05, steps=4, generator=3, eot_samples=2)  # g + g = 2g exactly
    assert torch.equal(plain.x_adv, k2.x_adv)
    assert k2.info["grad_calls"] == 8 and plain.info["grad_calls"] == 4


@pytest.mark.parametrize("dims", [2, 3])
def test_k1_on_stochastic_model_equals_pgd(dims):
    x, y = batch(dims)
    a = pgd(RandomLinear(x[0].numel(), s=0.5), x, y, eps=0.05, steps=3, generator=1)
    b = pgd(RandomLinear(x[0].numel(), s=0.5), x, y, eps=0.05, steps=3, generator=1, eot_samples=1)
    assert torch.equal(a.x_adv, b.x_adv)


def test_eot_recovers_expected_gradient_of_random_linear_model():
    x, _ = batch(2)
    model = RandomLinear(x[0].numel(), s=1.0)

    def objective(out: torch.Tensor) -> torch.Tensor:
        return out[:, 0]  # linear in x: gradient of one draw = row 0 of (W + sZ)

    expected = model.weight[0].reshape(1, *x.shape[1:]).expand_as(x)
    one = eot_input_gradient(model, x, objective, samples=1)
    many = eot_input_gradient(model, x, objective, samples=4000)
    err_one = (one - expected).abs().max()
    err_many = (many - expected).abs().max()
    assert err_many < 0.1 < err_one  # s / sqrt(4000) = 0.016 per entry; one draw is off by O(s)
    # through PGD: one sign step of size eps follows sign(E[grad]) with EOT, not with one draw
    y = torch.zeros(3, dtype=torch.long)
    sign_true = -torch.sign(expected)  # the loss -logit_0 increases along -w_0
    agree = {}
    for k in (1, 1000):
        res = pgd(RandomLinear(x[0].numel(), s=0.3), x * 0 + 0.5, y, eps=0.01, alpha=0.01, steps=1,
                  random_start=False, eot_samples=k, loss_fn=lambda out, t: -out[:, 0])
        agree[k] = float((torch.sign(res.x_adv - 0.5) == sign_true).float().mean())
    assert agree[1000] > 0.9 > 0.75 > agree[1]


@pytest.mark.parametrize("dims", [2, 3])
def test_eot_transform_is_seeded_and_applied(dims):
    x, y = batch(dims)
    net = deterministic_net(dims)
    net(x)

    def jitter(z: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return z + 0.05 * torch.randn(z.shape, generator=g)

    a = pgd(net, x, y, eps=0.05, steps=3, generator=5, eot_samples=3, eot_transform=jitter)
    b = pgd(net, x, y, eps=0.05, steps=3, generator=5, eot_samples=3, eot_transform=jitter)
    c = pgd(net, x, y, eps=0.05, steps=3, generator=5, eot_samples=3)
    assert torch.equal(a.x_adv, b.x_adv) and not torch.equal(a.x_adv, c.x_adv)
    f = fgsm(net, x, y, eps=0.05, eot_samples=2, eot_transform=jitter)
    assert f.info["grad_calls"] == 2


def test_predictive_mean_converges_and_is_a_distribution():
    x, _ = batch(3)
    model = RandomLinear(x[0].numel(), s=2.0)
    ref = PredictiveMean(model, samples=20000)(x).exp()
    assert torch.allclose(ref.sum(1), torch.ones(3), atol=1e-5)
    errs = [float((PredictiveMean(model, samples=s)(x).exp() - ref).abs().max()) for s in (4, 400)]
    assert errs[1] < errs[0] and errs[1] < 0.05
    assert eot_output(model, x, samples=5).shape == (3, 3)


@pytest.mark.parametrize("bad, err, match", [
    (0, ValueError, "eot_samples must be > 0"),
    (1.5, TypeError, "eot_samples must be an int"),
    ("4", TypeError, "eot_samples must be an int"),
])
def test_bad_eot_samples_raise(bad, err, match):
    x, y = batch(2)
    with pytest.raises(err, match=match):
        pgd(nn.Sequential(nn.Flatten(), nn.Linear(36, 3)), x, y, eps=0.05, steps=1, eot_samples=bad)


def test_bad_transform_and_samples_raise():
    x, y = batch(2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    with pytest.raises(TypeError, match="eot_transform must be a callable"):
        pgd(net, x, y, eps=0.05, steps=1, eot_transform=3)
    with pytest.raises(ValueError, match="samples must be > 0"):
        PredictiveMean(net, samples=0)
