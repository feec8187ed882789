"""Attacks on the fixed image of a registration network: PGD (restarts), noise, Square, transfer."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import LocalNet

from medrobust.core.attacks import registration_objective
from medrobust.registration.crossval import cv_summary
from medrobust.registration.robustness import adversarial_rows, attack_fixed_image, attack_rows


def _net(seed=0):
    torch.manual_seed(seed)  # test-side initialisation
    return LocalNet(spatial_dims=3, in_channels=2, out_channels=3, num_channel_initial=2, extract_levels=(0, 1))


def _pair(b=2, n=12):
    g = torch.Generator().manual_seed(3)
    lab = torch.zeros(b, 2, n, n, n)
    lab[:, 0, 2:10, 2:10, 2:10] = 1
    lab[:, 1, 4:7, 4:7, 5:8] = 1
    return torch.rand(b, 1, n, n, n, generator=g), torch.rand(b, 1, n, n, n, generator=g), lab, lab.roll(1, 2)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("attack", ["pgd", "noise", "square", "transfer"])
def test_attacks_stay_in_the_ball_and_leave_the_network_alone(attack, train):
    net, src = _net(0), _net(1)
    net.train(train)
    params = [p.detach().clone() for p in net.parameters()]
    mi, fi, ml, fl = _pair()
    x_adv, ddf_adv, info = attack_fixed_image(net, mi, fi, ml, fl, eps=0.03, steps=2, attack=attack, restarts=2, queries=5,
                                              source=src if attack == "transfer" else None)
    assert x_adv.shape == fi.shape and ddf_adv.shape == (2, 3, 12, 12, 12)
    assert 0 < (x_adv - fi).abs().max() <= 0.03 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert info["loss"].shape == (2,) and info["attack"] == attack
    assert all(torch.equal(a, p) for a, p in zip(params, net.parameters()))
    assert all(m.training == train for m in net.modules())  # every flag restored (BatchNorm stays in eval mode)


@pytest.mark.parametrize("attack", ["pgd", "noise"])
def test_more_restarts_never_find_a_weaker_example(attack):
    net = _net()
    mi, fi, ml, fl = _pair()
    one = attack_fixed_image(net, mi, fi, ml, fl, eps=0.05, steps=2, attack=attack, restarts=1, seed=4)[2]["loss"]
    more = attack_fixed_image(net, mi, fi, ml, fl, eps=0.05, steps=2, attack=attack, restarts=4, seed=4)[2]["loss"]
    assert (more >= one - 1e-6).all() and (more > one).any()  # the first restart/draw is the same run


def test_transfer_scores_the_target_network_on_the_source_examples():
    net, src = _net(0), _net(1)
    mi, fi, ml, fl = _pair()
    x_t, ddf_t, _ = attack_fixed_image(net, mi, fi, ml, fl, eps=0.05, steps=2, attack="transfer", source=src, seed=1)
    x_s, _, _ = attack_fixed_image(src, mi, fi, ml, fl, eps=0.05, steps=2, attack="pgd", seed=1)
    torch.testing.assert_close(x_t, x_s)  # the examples are PGD's on the source ...
    with torch.no_grad():
        torch.testing.assert_close(ddf_t, net.eval()(torch.cat([mi, x_t], 1)))  # ... and the DDF the target's (eval mode)


def test_attack_settings_are_checked():
    mi, fi, ml, fl = _pair()
    with pytest.raises(ValueError, match="attack must be one of"):
        attack_fixed_image(_net(), mi, fi, ml, fl, eps=0.01, attack="fgsm")
    with pytest.raises(ValueError, match="needs source"):
        attack_fixed_image(_net(), mi, fi, ml, fl, eps=0.01, attack="transfer")
    with pytest.raises(ValueError, match="restarts must be"):
        attack_fixed_image(_net(), mi, fi, ml, fl, eps=0.01, restarts=0)


def test_attack_rows_feed_the_per_pair_summary_with_cis():
    mi, fi, ml, fl = _pair(b=3)
    items = [{"case_id": f"c{i}", "moving_image": mi[i], "fixed_image": fi[i], "moving_label": ml[i], "fixed_label": fl[i],
              "affine": torch.eye(4)} for i in range(3)]
    rows = attack_rows(_net(), items, eps=0.05, steps=2, restarts=2)
    adv, clean = adversarial_rows(rows), adversarial_rows(rows, adversarial=False)
    assert [r["case_id"] for r in adv] == ["c0", "c1", "c2"]
    assert adv[0]["dice_gland"] == rows[0]["dice_gland_adv"] and clean[0]["dice_gland"] == rows[0]["dice_gland"]
    assert "attack_loss" not in adv[0] and "perturbation_linf" not in adv[0]
    s = cv_summary(adv)
    assert s["n_pairs"] == 3 and s["tre_median_ci"][0] <= s["tre_median_mm"] <= s["tre_median_ci"][1]


def test_swap_scores_each_pair_with_the_next_pairs_fixed_image():
    mi, fi, ml, fl = _pair(b=3)
    fi[1] = 1.0 - fi[0]
    items = [{"case_id": f"c{i}", "moving_image": mi[i], "fixed_image": fi[i], "moving_label": ml[i], "fixed_label": fl[i],
              "affine": torch.eye(4)} for i in range(3)]
    net = _net().eval()
    rows = attack_rows(net, items, eps=0.0, attack="swap")
    assert rows[0]["perturbation_linf"] == pytest.approx(float((fi[1] - fi[0]).abs().max()))  # unbounded: another image
    with torch.no_grad():
        ddf = net(torch.cat([mi[:1], fi[1:2]], 1))
    assert rows[0]["attack_loss_adv"] == pytest.approx(float(registration_objective("dice").loss(ddf, torch.cat([ml[:1], fl[:1]], 1))),
                                                       rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 items"):
        attack_rows(net, items[:1], eps=0.0, attack="swap")
    with pytest.raises(ValueError, match="attack must be one of"):
        attack_rows(net, items, eps=0.01, attack="blur")
