"""medrobust.core.schedules: LRBench policy values against the formulas, scheduler behaviour, metrics, sweep."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from medrobust.core.schedules import (
    POLICIES,
    LRBenchScheduler,
    confidence,
    cost_to_target,
    lr_at,
    plot_sweep,
    robustness,
    select_policy,
    sweep,
    train_test_gap,
    utility,
)

K0, K1, G, L, P = 0.01, 0.1, 0.9, 4, 2.0
ARGS = dict(k0=K0, k1=K1, gamma=G, l=L, p=P, milestones=[3, 7])

# hand-written values at chosen iterations (t = 0, 2, 5, 8, 10), from the LRBench formulas
EXPECTED = {
    "fix": [K0] * 5,
    "step": [K0, K0, K0 * G, K0 * G**2, K0 * G**2],
    "nstep": [K0, K0, K0 * G, K0 * G**2, K0 * G**2],
    "exp": [K0 * G**t for t in (0, 2, 5, 8, 10)],
    "inv": [K0 * (1 + G * t) ** -P for t in (0, 2, 5, 8, 10)],
    "poly": [K0, K0 * 0.5**P, 0.0, 0.0, 0.0],
    # TRI: 0 at t=0, peak 1 at t=l=4, 0 at 2l=8; t=2 -> 0.5, t=5 -> 0.75, t=10 -> 0.5
    "tri": [K0, K0 + (K1 - K0) * 0.5, K0 + (K1 - K0) * 0.75, K0, K0 + (K1 - K0) * 0.5],
    "tri2": [K0, K0 + (K1 - K0) * 0.5, K0 + (K1 - K0) * 0.75, K0, K0 + (K1 - K0) * 0.25],
    "triexp": [K0, K0 + (K1 - K0) * 0.5 * G**2, K0 + (K1 - K0) * 0.75 * G**5, K0, K0 + (K1 - K0) * 0.5 * G**10],
    "sin": [K0 + (K1 - K0) * abs(math.sin(math.pi * t / 8)) for t in (0, 2, 5, 8, 10)],
    "sin2": [K0 + (K1 - K0) * abs(math.sin(math.pi * t / 8)) / 2 ** (t // 8) for t in (0, 2, 5, 8, 10)],
    "sinexp": [K0 + (K1 - K0) * G**t * abs(math.sin(math.pi * t / 8)) for t in (0, 2, 5, 8, 10)],
    # COS with pi t / l: k1 at t=0, midpoint at t=l/2=2, k0 at t=l=4, back to k1 at t=2l=8
    "cos": [K1, (K0 + K1) / 2, K0 + (K1 - K0) * (1 + math.cos(math.pi * 5 / 4)) / 2, K1, (K0 + K1) / 2],
}


def test_all_13_policies_covered():
    assert set(EXPECTED) == set(POLICIES) and len(POLICIES) == 13


@pytest.mark.parametrize("policy", sorted(EXPECTED))
def test_lr_at_matches_formula(policy):
    got = [lr_at(policy.upper(), t, **ARGS) for t in (0, 2, 5, 8, 10)]
    assert got == pytest.approx(EXPECTED[policy], abs=1e-12)


@pytest.mark.parametrize("policy", sorted(EXPECTED))
def test_scheduler_follows_lr_at_over_steps(policy):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))], lr=K0)
    sched = LRBenchScheduler(opt, policy, **{k: v for k, v in ARGS.items() if k != "k0"})
    seen = []
    for _ in range(11):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [seen[t] for t in (0, 2, 5, 8, 10)] == pytest.approx(EXPECTED[policy], abs=1e-12)


def test_cos_equals_torch_cosine_annealing():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    ref_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    ours, ref = LRBenchScheduler(opt, "cos", k0=0.0, k1=1e-3, l=10), torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, 10)
    for _ in range(10):
        assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        opt.step(), ref_opt.step(), ours.step(), ref.step()


def test_scheduler_from_bundle_style_config():
    from monai.bundle import ConfigParser

    cfg = ConfigParser({
        "net": {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 1},
        "optimizer": {"_target_": "torch.optim.SGD", "params": "$@net.parameters()", "lr": 0.1},
        "sched": {"_target_": "medrobust.core.schedules.LRBenchScheduler", "optimizer": "@optimizer", "policy": "EXP",
                  "gamma": 0.5},
    })
    sched = cfg.get_parsed_content("sched")
    sched.optimizer.step()
    sched.step()
    assert sched.get_last_lr() == [pytest.approx(0.05)]


@pytest.mark.parametrize("kwargs,match", [
    (dict(policy="warmup"), "policy must be one of"),
    (dict(policy="step", gamma=0.5), "needs l"),
    (dict(policy="tri", l=4), "needs k1"),
    (dict(policy="sinexp", k1=0.1, l=4), "needs gamma"),
    (dict(policy="nstep", gamma=0.5, milestones=[5, 2]), "increasing"),
    (dict(policy="poly", l=0, p=1), "l must be > 0"),
])
def test_bad_settings_raise(kwargs, match):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=match):
        LRBenchScheduler(opt, **kwargs)


def test_negative_t_raises():
    with pytest.raises(ValueError, match="t must be >= 0"):
        lr_at("fix", -1, k0=0.1)


def test_selection_metrics():
    assert utility([0.5, 0.7, 0.6]) == 0.6
    assert cost_to_target([0.5, 0.7, 0.9], 0.7) == 2 and cost_to_target([0.1], 0.5) is None
    assert robustness([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert train_test_gap(0.2, 0.5) == pytest.approx(0.3)
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    mean, sd = confidence(probs, torch.tensor([0, 1, 1, 1]))  # third is wrong
    assert mean == pytest.approx((0.9 + 0.7 + 0.8) / 3) and sd == pytest.approx(torch.tensor([0.9, 0.7, 0.8]).std().item())
    with pytest.raises(ValueError, match="matching labels"):
        confidence(probs, torch.tensor([0, 1]))


def test_sweep_resumes_selects_and_plots(tmp_path):
    calls = []

    def run(name, settings, seed):
        calls.append((name, seed))
        return {"val_auc": settings["k0"] * 10 + 0.01 * seed, "test_auc": 0.0}

    policies = {"fix": {"policy": "fix", "k0": 0.05}, "exp": {"policy": "exp", "k0": 0.08, "gamma": 0.9}}
    out = tmp_path / "sweep.csv"
    rows = sweep(run, policies, [0, 1], out, progress=False)
    assert len(rows) == 4 and len(calls) == 4
    rows = sweep(run, policies, [0, 1, 2], out, progress=False)  # resumes: only seed 2 runs
    assert calls[4:] == [("fix", 2), ("exp", 2)]
    with open(out, newline="") as f:
        assert len(list(csv.DictReader(f))) == 6
    assert select_policy(rows, metric="val_auc") == "exp"
    assert select_policy(rows, metric="val_auc", higher_is_better=False) == "fix"
    with pytest.raises(ValueError, match="no row has a value"):
        select_policy(rows, metric="val_loss")
    png = plot_sweep(rows, tmp_path / "s.png", metric="val_auc")
    assert png.stat().st_size > 1000
