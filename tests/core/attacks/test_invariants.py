"""The invariants of ANCHORS.md, for every attack, in 2-D and 3-D."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.core.attacks import cw_l2, deepfool, fgm, fgsm, pgd, sparse_pso, square

EPS = {"inf": 0.05, "2": 0.5}

# name -> (attack, kwargs); every entry takes bounds/mask (and generator where random)
ATTACKS = {
    "fgsm": (fgsm, dict(eps=0.05)),
    "fgm": (fgm, dict(eps=0.5)),
    "pgd_inf": (pgd, dict(eps=0.05, steps=3, restarts=2, generator=0)),
    "pgd_l2": (pgd, dict(eps=0.5, steps=3, norm="2", generator=0)),
    "cw_l2": (cw_l2, dict(steps=5)),
    "deepfool": (deepfool, dict(steps=3)),
    "square": (square, dict(eps=0.05, queries=8, generator=0)),
    "sparse_pso": (sparse_pso, dict(k=4, swarm=6, iterations=2, extra_iterations=1, generator=0)),
}


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def setup(request, classifier_3d):
    """(model, x, y) with batch 4 in 2-D (1x8x8) or 3-D (1x8x8x8)."""
    if request.param == 3:
        model, x, y = classifier_3d
        return model, x[:4], y[:4]
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3)).eval()
    g = torch.Generator().manual_seed(0)
    return model, torch.rand(4, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 0])


@pytest.mark.parametrize("norm", ["inf", "2"])
@pytest.mark.parametrize("attack", ["fgsm_like", "pgd"])
def test_perturbation_inside_eps_ball(setup, norm, attack):
    model, x, y = setup
    eps = EPS[norm]
    if attack == "pgd":
        res = pgd(model, x, y, eps=eps, norm=norm, steps=5, alpha=eps / 2, generator=1)
    else:
        res = fgsm(model, x, y, eps=eps, norm=norm)
    d = (res.x_adv - x).flatten(1)
    n = d.abs().amax(1) if norm == "inf" else d.norm(dim=1)
    assert bool((n <= eps + 1e-6).all())
    assert bool((n > 0.5 * eps).all())  # it did move
    torch.testing.assert_close(res.info["norm"], n)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1


@pytest.mark.parametrize("name", list(ATTACKS))
def test_common_invariants(setup, name):
    """Bounds kept, inputs not mutated, model untouched, mask respected, global RNG untouched."""
    model, x, y = setup
    fn, kw = ATTACKS[name]
    model.train()  # no dropout/BN here: the attack must leave the mode as it finds it
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[-1].grad = torch.full_like(params[-1], 0.5)
    x_before, y_before = x.clone(), y.clone()
    mask = torch.zeros_like(x[:1])
    mask[..., 2:6, 2:6] = 1
    mask_before = mask.clone()
    rng = torch.get_rng_state()
    res = fn(model, x, y, bounds=(0.0, 1.0), mask=mask, **kw)
    assert model.training
    assert not params[0].requires_grad and all(p.requires_grad for p in params[1:])
    assert params[0].grad is None and all(p.grad is None for p in params[1:-1])
    torch.testing.assert_close(params[-1].grad, torch.full_like(params[-1], 0.5))
    assert torch.equal(x, x_before) and torch.equal(y, y_before) and torch.equal(mask, mask_before)
    assert torch.equal(torch.get_rng_state(), rng)
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert res.success.shape == (x.shape[0],) and res.success.dtype == torch.bool
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert torch.equal(res.x_adv * (1 - mask), x * (1 - mask))  # zero change outside the ROI
    assert bool(((res.x_adv - x) * mask).abs().sum() > 0)
    for key in ("norm", "grad_calls"):
        assert key in res.info
    model.eval()
    params[0].requires_grad_(True)
    params[-1].grad = None


def test_per_channel_hu_bounds(setup):
    """Per-channel tensor bounds in HU (a 2-window CT input): every channel stays in its window."""
    _, x, _ = setup
    nd = x.ndim - 2
    conv = nn.Conv2d if nd == 2 else nn.Conv3d
    lo, hi = torch.tensor([-1000.0, -160.0]), torch.tensor([400.0, 240.0])
    shape = (1, 2) + (1,) * nd

    class Normalising(nn.Module):  # normalises internally: the attack works in HU
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(conv(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))

        def forward(self, v):
            return self.body((v - lo.reshape(shape)) / (hi - lo).reshape(shape))

    torch.manual_seed(0)
    model = Normalising()
    g = torch.Generator().manual_seed(2)
    xs = lo.reshape(shape) + (hi - lo).reshape(shape) * torch.rand((4, 2) + x.shape[2:], generator=g)
    xs[:, :, 0] = lo.reshape(1, 2, *([1] * (nd - 1)))  # some voxels sit exactly on the window edges
    xs[:, :, -1] = hi.reshape(1, 2, *([1] * (nd - 1)))
    model(xs)
    model.eval()
    y = torch.tensor([0, 1, 2, 0])
    for norm, eps in (("inf", 50.0), ("2", 400.0)):
        res = pgd(model, xs, y, eps=eps, norm=norm, steps=5, bounds=(lo, hi), generator=0)
        assert bool((res.x_adv >= lo.reshape(shape)).all()) and bool((res.x_adv <= hi.reshape(shape)).all())
        assert float(res.info["norm"].max()) <= eps * (1 + 1e-6)
        assert float((res.x_adv - xs).abs().max()) > 1.0  # moved in HU
    res_sq = square(model, xs, y, eps=50.0, queries=5, bounds=(lo, hi))
    assert bool((res_sq.x_adv >= lo.reshape(shape)).all()) and bool((res_sq.x_adv <= hi.reshape(shape)).all())


def test_per_sample_bounds_and_eps(setup):
    model, x, y = setup
    eps = torch.tensor([0.01, 0.02, 0.03, 0.04])
    hi = torch.tensor([0.9, 1.0, 0.95, 1.0]).reshape(4, 1)  # (B, 1): per sample, aligned with (B, C, ...)
    xc = torch.minimum(x, hi.reshape(4, *[1] * (x.ndim - 1)))
    res = pgd(model, xc, y, eps=eps, steps=4, bounds=(0.0, hi))
    linf = (res.x_adv - xc).flatten(1).abs().amax(1)
    assert bool((linf <= eps + 1e-6).all()) and bool((linf >= eps - 1e-6).any())
    assert bool((res.x_adv <= hi.reshape(4, *[1] * (x.ndim - 1))).all())


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_scalar_and_tensor_eps_agree(setup, norm):
    model, x, y = setup
    eps = EPS[norm]
    a = pgd(model, x, y, eps=eps, norm=norm, steps=3, generator=4)
    b = pgd(model, x, y, eps=torch.full((x.shape[0],), eps), alpha=torch.full((x.shape[0],), 2.5 * eps / 3),
            norm=norm, steps=3, generator=4)
    torch.testing.assert_close(a.x_adv, b.x_adv, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["pgd_inf", "pgd_l2", "square", "sparse_pso"])
def test_same_seed_same_result(setup, name):
    model, x, y = setup
    fn, kw = ATTACKS[name]
    kw = {**kw, "generator": None}
    a = fn(model, x, y, generator=torch.Generator().manual_seed(7), **{k: v for k, v in kw.items() if k != "generator"})
    b = fn(model, x, y, generator=torch.Generator().manual_seed(7), **{k: v for k, v in kw.items() if k != "generator"})
    c = fn(model, x, y, generator=torch.Generator().manual_seed(8), **{k: v for k, v in kw.items() if k != "generator"})
    assert torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(a.x_adv, c.x_adv)


@pytest.mark.parametrize("name", ["pgd_inf", "pgd_l2", "square", "sparse_pso", "cw_l2", "deepfool"])
def test_batch_consistency(setup, name):
    """A sample alone equals its slice of the batch with the same (per-sample) seeds."""
    model, x, y = setup
    fn, kw = ATTACKS[name]
    kw = {k: v for k, v in kw.items() if k != "generator"}
    random = name not in ("cw_l2", "deepfool")
    gens = {"generator": [torch.Generator().manual_seed(100 + i) for i in range(4)]} if random else {}
    full = fn(model, x, y, **gens, **kw)
    for i in range(x.shape[0]):
        one = {"generator": [torch.Generator().manual_seed(100 + i)]} if random else {}
        alone = fn(model, x[i:i + 1], y[i:i + 1], **one, **kw)
        torch.testing.assert_close(alone.x_adv[0], full.x_adv[i], atol=1e-5, rtol=0)
        assert bool(alone.success[0] == full.success[i])


def test_int_seed_batch_consistency(setup):
    """With one seed s, sample i of the batch equals running it alone with seed s + i."""
    model, x, y = setup
    full = pgd(model, x, y, eps=0.05, steps=2, generator=42)
    for i in range(x.shape[0]):
        alone = pgd(model, x[i:i + 1], y[i:i + 1], eps=0.05, steps=2, generator=42 + i)
        torch.testing.assert_close(alone.x_adv[0], full.x_adv[i], atol=1e-5, rtol=0)


def test_no_grad_context_and_requires_grad_input(setup):
    """Works under torch.no_grad() and with an input that requires grad (left as it was)."""
    model, x, y = setup
    xr = x.clone().requires_grad_(True)
    with torch.no_grad():
        res = pgd(model, xr, y, eps=0.03, steps=2)
    assert xr.grad is None and xr.requires_grad
    assert not res.x_adv.requires_grad


def test_errors_name_the_argument(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match="outside bounds"):
        pgd(model, x * 2, y, eps=0.1)
    with pytest.raises(ValueError, match="bounds"):
        pgd(model, x, y, eps=0.1, bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="eps"):
        pgd(model, x, y, eps=torch.ones(3))
    with pytest.raises(ValueError, match="eps"):
        pgd(model, x, y, eps=-0.1)
    with pytest.raises(ValueError, match="norm"):
        pgd(model, x, y, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="steps"):
        pgd(model, x, y, eps=0.1, steps=0)
    with pytest.raises(ValueError, match="mask"):
        pgd(model, x, y, eps=0.1, mask=torch.ones(x.shape[2:]))
    with pytest.raises(ValueError, match="per channel"):
        pgd(model, x, y, eps=0.1, bounds=(torch.zeros(3), 1.0))
    with pytest.raises(ValueError, match="reduction='none'"):
        pgd(model, x, y, eps=0.1, loss_fn=lambda out, t: nn.functional.cross_entropy(out, t))
    with pytest.raises(ValueError, match="schedule"):
        pgd(model, x, y, eps=0.1, schedule="exp")
    with pytest.raises(TypeError, match="generator"):
        pgd(model, x, y, eps=0.1, generator="seed")
    with pytest.raises(ValueError, match="generator"):
        pgd(model, x, y, eps=0.1, generator=[torch.Generator()])
    with pytest.raises(ValueError, match="unknown name"):
        pgd(model, x, y, eps=0.1, loss_fn="dcie")
    with pytest.raises(ValueError, match=r"\(B, C, \*spatial\)"):
        pgd(model, x.flatten(1), y, eps=0.1)
