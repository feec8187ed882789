"""Adversarial training of registration networks through the core defenses (fixed-image threat)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from monai.utils import CommonKeys as Keys

from medrobust.core.defenses import PGDAdversarialTraining
from medrobust.registration.defenses import RobustRegistrationIteration, ddf_change
from medrobust.registration.losses import label_loss
from medrobust.registration.networks import GlobalLocalNet


def _engine(seed=0):
    torch.manual_seed(seed)  # test-side initialisation
    net = GlobalLocalNet((16, 16, 16), num_channel_initial=2, global_depth=2, extract_levels=(0, 1, 2), global_stage="translation")
    return SimpleNamespace(network=net, optimizer=torch.optim.Adam(net.parameters(), 1e-3),
                           state=SimpleNamespace(device=torch.device("cpu"), iteration=1), inferer=None)


def _batch(b=2):
    g = torch.Generator().manual_seed(1)
    lab = torch.zeros(b, 2, 16, 16, 16)
    lab[:, :, 4:11, 5:12, 4:10] = 1
    return {"moving_image": torch.rand(b, 1, 16, 16, 16, generator=g), "fixed_image": torch.rand(b, 1, 16, 16, 16, generator=g),
            "moving_label": lab, "fixed_label": lab.roll(2, dims=2), "case_id": [f"c{i}" for i in range(b)]}


@pytest.mark.parametrize("mode,clean_weight", [("pgd-at", 0.5), ("pgd-at", 0.0), ("trades", 0.0)])
def test_robust_step_trains_on_bounded_fixed_image_attacks(mode, clean_weight):
    engine = _engine()
    before = [p.detach().clone() for p in engine.network.parameters()]
    step = RobustRegistrationIteration(label_loss([0, 1]), defense=PGDAdversarialTraining(eps=0.02, steps=2, clean_weight=clean_weight),
                                       mode=mode, regulariser="bending", weight=0.5)
    batch = _batch()
    out = step(engine, batch)
    assert torch.isfinite(out[Keys.LOSS])
    assert any(not torch.equal(a, p) for a, p in zip(before, engine.network.parameters()))
    fixed_seen = out[Keys.IMAGE]
    if mode == "pgd-at":
        assert fixed_seen.shape[0] == (4 if clean_weight > 0 else 2)  # clean + attacked stacked, or attacked alone
        adv = fixed_seen[-2:]
        assert 0 < (adv - batch["fixed_image"]).abs().max() <= 0.02 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    else:
        torch.testing.assert_close(fixed_seen, batch["fixed_image"])  # trades: clean loss + consistency term
        assert step._extra is None


def test_robust_step_rejects_bad_settings():
    with pytest.raises(ValueError, match="mode must be"):
        RobustRegistrationIteration(label_loss([0]), defense=PGDAdversarialTraining(eps=0.01), mode="mart")
    with pytest.raises(ValueError, match="beta must be"):
        RobustRegistrationIteration(label_loss([0]), defense=PGDAdversarialTraining(eps=0.01), mode="trades", beta=-1.0)
    with pytest.raises(ValueError, match="PGDAdversarialTraining"):
        RobustRegistrationIteration(label_loss([0]), defense=object(), mode="pgd-at")
    a = torch.zeros(2, 3, 4, 4, 4)
    assert ddf_change(a + 1.0, a).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("iteration,expected", [(1, 0.005), (2, 0.01), (4, 0.02), (40, 0.02)])
def test_eps_ramp_grows_the_training_radius_linearly(iteration, expected):
    engine = _engine()
    engine.state.iteration = iteration
    step = RobustRegistrationIteration(label_loss([0, 1]), defense=PGDAdversarialTraining(eps=0.02, steps=2, clean_weight=0.5),
                                       mode="pgd-at", eps_ramp=4)
    assert step.eps_at(iteration) == pytest.approx(expected)
    batch = _batch()
    out = step(engine, batch)
    adv = out[Keys.IMAGE][-2:]
    assert 0 < (adv - batch["fixed_image"]).abs().max() <= expected + 1e-6  # the ramped radius, not the full one
    assert step.defense.alpha == pytest.approx(2.5 * expected / 2)  # the PGD step follows the radius


def test_eps_ramp_rejects_bad_values():
    with pytest.raises(ValueError, match="eps_ramp must be"):
        RobustRegistrationIteration(label_loss([0]), defense=PGDAdversarialTraining(eps=0.01), eps_ramp=-1)
    with pytest.raises(ValueError, match="eps_ramp must be"):
        RobustRegistrationIteration(label_loss([0]), defense=PGDAdversarialTraining(eps=0.01), eps_ramp=2.5)
