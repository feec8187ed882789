"""One input contract for every public entry point (issue 16): a table of attacks, defenses'
hooks, metrics and detectors crossed with bad inputs; each must raise a ValueError/TypeError that
names the argument. Also: a model in train mode keeps its BatchNorm statistics and its mode, and
core.attacks does not import core.metrics.

Shapes: 2-D ``(2, 1, 8, 8)`` and 3-D ``(2, 1, 6, 6, 6)`` batches, 3 classes, tiny BN nets.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from medrobust.core import attacks as A
from medrobust.core import defenses as D
from medrobust.core.detectors import InputMutants, ModelMutants, NMutantDetector, label_change_rate
from medrobust.core.fisher import image_fisher_information, pixel_fisher_information
from medrobust.core.metrics.attribution import fisher_sensitivity, integrated_gradients, occlusion
from medrobust.core.metrics.flatness import average_flatness, robust_loss
from medrobust.core.metrics.intrinsic import intrinsic_robustness, loss_surface

NAN, INF = float("nan"), float("inf")


def bn_net(dims: int, classes: int = 3) -> nn.Module:
    """Conv + BatchNorm classifier (~100 params); 2-D or 3-D."""
    conv, bn, pool = ((nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d) if dims == 2
                      else (nn.Conv3d, nn.BatchNorm3d, nn.AdaptiveAvgPool3d))  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(conv(1, 4, 3, padding=1), bn(4), nn.ReLU(), pool(1), nn.Flatten(), nn.Linear(4, classes))


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def case(request) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    dims = request.param
    x = torch.rand((2, 1) + (8 if dims == 2 else 6,) * dims, generator=torch.Generator().manual_seed(1))
    return bn_net(dims).eval(), x, torch.tensor([0, 2])


# entry point: (model, x, y) -> anything; light settings so each call takes milliseconds
Entry = Callable[[nn.Module, torch.Tensor, Any], Any]
ATTACKS: dict[str, Entry] = {
    "fgsm": lambda m, x, y: A.fgsm(m, x, y, eps=0.03),
    "fgm": lambda m, x, y: A.fgm(m, x, y, eps=0.1),
    "pgd": lambda m, x, y: A.pgd(m, x, y, eps=0.03, steps=2),
    "pgd_eot": lambda m, x, y: A.pgd(m, x, y, eps=0.03, steps=2, eot_samples=2),
    "square": lambda m, x, y: A.square(m, x, y, eps=0.03, queries=3),
    "cw_l2": lambda m, x, y: A.cw_l2(m, x, y, steps=2),
    "deepfool": lambda m, x, y: A.deepfool(m, x, y, steps=2),
    "sparse_pso": lambda m, x, y: A.sparse_pso(m, x, y, k=2, swarm=4, iterations=1, extra_iterations=0),
    "PGD": lambda m, x, y: A.PGD(eps=0.03, steps=2)(m, x, y),
}
DEFENSES: dict[str, Callable[[], D.AdversarialTrainingStep]] = {
    "pgd-at": lambda: D.PGDAdversarialTraining(eps=0.03, steps=2),
    "fast-fgsm": lambda: D.FastFGSMTraining(eps=0.03),
    "fgm": lambda: D.FGMTraining(eps=0.03),
    "trades": lambda: D.TRADES(eps=0.03, steps=2),
    "mart": lambda: D.MART(eps=0.03, steps=2),
    "awp": lambda: D.AWP(D.PGDAdversarialTraining(eps=0.03, steps=2)),
    "adt-exp": lambda: D.ADTEXP(eps=0.03, steps=1, mc_samples=1),
    "adt-exp-am": lambda: D.ADTEXPAM(eps=0.03),
    "fisher-at": lambda: D.FisherTargetedTraining(eps=0.03, steps=2),
    "noise-injection-at": lambda: D.NoiseInjectionTraining(eps=0.03, steps=2),
}
HOOKS: dict[str, Entry] = {
    f"defense:{name}": (lambda make: lambda m, x, y: make().make_adversarial(m, x, y, None))(make)
    for name, make in DEFENSES.items()
}
METRICS: dict[str, Entry] = {
    "image_fisher_information": lambda m, x, y: image_fisher_information(m, x, y),
    "pixel_fisher_information": lambda m, x, y: pixel_fisher_information(m, x, y),
    "fisher_sensitivity": lambda m, x, y: fisher_sensitivity(m, x, y),
    "integrated_gradients": lambda m, x, y: integrated_gradients(m, x, y, steps=2),
    "occlusion": lambda m, x, y: occlusion(m, x, y, window=4),
    "robust_loss": lambda m, x, y: robust_loss(m, x, y, eps=0.03, steps=1),
    "average_flatness": lambda m, x, y: average_flatness(m, x, y, eps=0.0, samples=1),
    "loss_surface": lambda m, x, y: loss_surface(m, x, y, span=0.05, resolution=2),
    "randomized_robustness": lambda m, x, y: D.randomized_robustness(m, x, y, eps=0.03, steps=1, eot_samples=2,
                                                                     predict_samples=2, queries=2),
}
# entry points that take no labels
UNLABELLED: dict[str, Entry] = {
    "intrinsic_robustness": lambda m, x, y: intrinsic_robustness(m, x, eps=0.03, steps=1),
    "label_change_rate": lambda m, x, y: label_change_rate(m, InputMutants(m, seed=0), x, 2),
    "InputMutants.mutate": lambda m, x, y: InputMutants(m).mutate(0, x),
}
LABELLED = {**ATTACKS, **HOOKS, **METRICS}
ALL = {**LABELLED, **UNLABELLED}
# labels are classes of a 3-class model for these (metrics name them "target")
LABEL_NAME = {n: "target" for n in ("image_fisher_information", "pixel_fisher_information", "fisher_sensitivity",
                                    "integrated_gradients", "occlusion")}  # fmt: skip


def _y(name: str) -> str:
    return LABEL_NAME.get(name, "y")


@pytest.mark.parametrize("name", list(ALL))
def test_good_input_passes(name, case):
    model, x, y = case
    ALL[name](model, x, y)


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_x(name, bad, case):
    model, x, y = case
    x = x.clone()
    x[1, 0, 0, 0] = float(bad)
    with pytest.raises(ValueError, match=r"\bx must be finite"):
        ALL[name](model, x, y)


@pytest.mark.parametrize("name", list(ALL))
def test_empty_batch(name, case):
    model, x, y = case
    with pytest.raises(ValueError, match=r"\bx is empty"):
        ALL[name](model, x[:0], y[:0])


@pytest.mark.parametrize("name", list(ALL))
def test_unbatched_image(name, case):
    """A single 2-D image (C, H, W) is refused; a single 3-D volume (C, D, H, W) has the dims of a
    2-D batch, and is caught by its labels' length where the entry point takes labels."""
    model, x, y = case
    if x.ndim == 4:
        with pytest.raises(ValueError, match=r"\bx must be a batch .*single image"):
            ALL[name](model, x[0], y[:1])
    elif name in LABELLED:
        with pytest.raises(ValueError, match=rf"\b{_y(name)}\b.*single image"):
            ALL[name](model, x[0], y)


@pytest.mark.parametrize("name", list(LABELLED))
def test_wrong_length_labels(name, case):
    model, x, y = case
    with pytest.raises(ValueError, match=rf"\b{_y(name)}\b.*(one|per sample|labels for)"):
        LABELLED[name](model, x, torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("name", [n for n in LABELLED if n != "average_flatness"])
def test_out_of_range_class(name, case):
    """(average_flatness with eps=0 never attacks: it is covered through robust_loss with eps > 0.)"""
    model, x, y = case
    with pytest.raises(ValueError, match=rf"\b{_y(name)} must be class indices in \[0, 3\)"):
        LABELLED[name](model, x, torch.tensor([0, 3]))


@pytest.mark.parametrize("name", list(ALL))
def test_train_mode_model_keeps_bn_stats_and_mode(name, case):
    """Entry points run an nn.Module in eval mode: BatchNorm statistics are not updated and the
    caller's train/eval flags are restored (a submodule's own flag too)."""
    model, x, y = case
    model.train()
    model[-1].eval()  # a mixed-mode model: its flags must come back as they were
    bn = model[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    ALL[name](model, x, y)
    assert model.training and bn.training and not model[-1].training
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert int(bn.num_batches_tracked) == stats[2]


# ------------------------------------------------------------------------- scalar settings
# (entry, setting name, bad value): the call must fail naming the setting
SETTINGS = [
    *[(n, "eps", v) for n in ("fgsm", "fgm", "pgd", "square") for v in (INF, NAN, -0.1)],
    ("pgd", "alpha", NAN), ("pgd", "alpha", -1.0), ("pgd", "steps", 0), ("pgd", "steps", 2.0),
    ("pgd", "restarts", 0), ("pgd", "eot_samples", 0), ("pgd", "eot_samples", 1.5), ("square", "queries", 0), ("square", "p_init", 0.0),
    ("cw_l2", "kappa", -1.0), ("cw_l2", "c", NAN), ("cw_l2", "lr", 0.0), ("cw_l2", "steps", 0),
    ("deepfool", "steps", 0), ("deepfool", "overshoot", -0.1), ("deepfool", "candidates", 1),
    ("sparse_pso", "box", -0.1), ("sparse_pso", "swarm", 1), ("sparse_pso", "p_target", 1.5),
    ("sparse_pso", "velocity_clip", 0.0), ("sparse_pso", "iterations", 0),
]  # fmt: skip
FUNCTIONS = {"fgsm": A.fgsm, "fgm": A.fgm, "pgd": A.pgd, "square": A.square, "cw_l2": A.cw_l2,
             "deepfool": A.deepfool, "sparse_pso": A.sparse_pso}  # fmt: skip
CLASSES = {"fgsm": A.FGSM, "fgm": A.FGM, "pgd": A.PGD, "square": A.Square, "cw_l2": A.CarliniWagnerL2,
           "deepfool": A.DeepFool, "sparse_pso": A.SparsePSO}  # fmt: skip


@pytest.mark.parametrize(("attack", "setting", "value"), SETTINGS)
def test_bad_setting_raises_in_function_and_constructor(attack, setting, value, case):
    model, x, y = case
    kw = {"eps": 0.03} if attack in ("fgsm", "fgm", "pgd", "square") else {}
    kw[setting] = value
    with pytest.raises((ValueError, TypeError), match=rf"\b{setting}\b"):
        FUNCTIONS[attack](model, x, y, **kw)
    with pytest.raises((ValueError, TypeError), match=rf"\b{setting}\b"):
        CLASSES[attack](**kw)


@pytest.mark.parametrize("attack", list(CLASSES))
def test_reversed_bounds_raise_at_construction(attack):
    with pytest.raises(ValueError, match="bounds must be .*low < high"):
        CLASSES[attack](bounds=(1.0, 0.0))


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: D.PGDAdversarialTraining(eps=-1.0), "eps"),
        (lambda: D.PGDAdversarialTraining(eps=INF), "eps"),
        (lambda: D.PGDAdversarialTraining(eps=0.1, steps=0), "steps"),
        (lambda: D.PGDAdversarialTraining(eps=0.1, alpha=NAN), "alpha"),
        (lambda: D.PGDAdversarialTraining(eps=0.1, norm="l1"), "norm"),
        (lambda: D.TRADES(eps=0.1, bounds=(1.0, 0.0)), "bounds"),
        (lambda: D.TRADES(eps=0.1, beta=NAN), "beta"),
        (lambda: D.MART(eps=0.1, beta=-1.0), "beta"),
        (lambda: D.FastFGSMTraining(eps=NAN), "eps"),
        (lambda: D.FGMTraining(eps=0.1, l2_eps=-1.0), "l2_eps"),
        (lambda: D.ADTEXP(eps=0.1, lam=NAN), "lam"),
        (lambda: D.ADTEXPAM(eps=0.1, generator_lr=0.0), "generator_lr"),
        (lambda: D.FisherTargetedTraining(eps=0.1, fraction=2.0), "fraction"),
        (lambda: D.AWP(D.TRADES(eps=0.1), gamma=-0.1), "gamma"),
        (lambda: D.CatastrophicOverfittingStop(eps=0.1, bounds=(1.0, 0.0)), "bounds"),
        (lambda: D.build_defense("pgd-at", eps=math.inf), "eps"),
    ],
)
def test_defense_constructors(build, name):
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b"):
        build()


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda m, x, y: InputMutants(m, step=0.0), "step"),
        (lambda m, x, y: InputMutants(m, bounds=(1.0, 0.0)), "bounds"),
        (lambda m, x, y: ModelMutants(m, x, y, gamma=NAN), "gamma"),
        (lambda m, x, y: ModelMutants(m, x, y[:1]), "y_val"),
        (lambda m, x, y: NMutantDetector(m, x, y, mutation="input", alpha=1.5), "alpha"),
        (lambda m, x, y: intrinsic_robustness(m, x, eps=NAN), "eps"),
    ],
)
def test_detector_and_metric_settings(build, name, case):
    model, x, y = case
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b"):
        build(model, x, y)


def test_defense_in_trainer_still_attacks_in_train_mode_when_asked(case):
    """attack_in_eval_mode=False: inside a trainer the hook gets a closure, so BN sees train mode."""
    model, x, y = case
    step = D.PGDAdversarialTraining(eps=0.03, steps=1, attack_in_eval_mode=False)
    model.train()
    before = int(model[1].num_batches_tracked)
    step.make_adversarial(lambda z: model(z), x, y, None)
    assert int(model[1].num_batches_tracked) > before and model.training


def test_attacks_do_not_import_metrics():
    """Module-level imports: core.metrics may use core.attacks, never the reverse (issue 16)."""
    root = Path(__file__).resolve().parents[2] / "medrobust" / "core" / "attacks"
    offenders = set()
    for path in root.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])  # fmt: skip
            if any(n.startswith("medrobust.core.metrics") for n in names):
                offenders.add(path.name)
    assert offenders == set()
    fisher = ast.parse((root.parent / "fisher.py").read_text())
    assert not any(isinstance(n, ast.ImportFrom) and (n.module or "").startswith(("medrobust.core.attacks",
                   "medrobust.core.metrics")) for n in fisher.body)  # fmt: skip
