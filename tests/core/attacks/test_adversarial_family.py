"""The "fgsm" and "pgd" perturbation families (medrobust/perturbations/adversarial.py)."""

from __future__ import annotations

import pytest
import torch

from medrobust.perturbations.registry import PerturbationContext, get_family, sample_seed


def _ctx(model, y, n, *, bounds=(0.0, 1.0), ids=None):
    ids = ids if ids is not None else range(n)
    return PerturbationContext.from_seeds([sample_seed(f"case{i}", "pgd") for i in ids], model=model, target=y,
                                          bounds=bounds)


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_registered_and_severity_semantics(trained_classifier, acc, name):
    model, x, y = trained_classifier
    fam = get_family(name)
    assert fam.needs_model and fam.severities[0] == 0 and 8 / 255 in fam.severities
    assert fam.spatial_dims == (2, 3)
    assert torch.equal(fam.apply(x, 0.0, _ctx(model, y, len(x))), x)
    accs = []
    for sev in fam.severities:
        out = fam.apply(x, sev, _ctx(model, y, len(x)))
        assert float((out - x).abs().max()) <= sev + 1e-6
        accs.append(acc(model, out, y))
    assert accs[-1] < accs[0]


def test_severity_is_a_fraction_of_the_range(trained_classifier):
    """On 12-bit data in (0, 4095), severity 4/255 means eps = 4/255 * 4095."""
    model, x, y = trained_classifier

    def scaled(v):
        return model(v / 4095.0)

    x12 = x[:8] * 4095.0
    out = get_family("pgd").apply(x12, 4 / 255, _ctx(scaled, y[:8], 8, bounds=(0.0, 4095.0)))
    linf = (out - x12).flatten(1).abs().amax(1)
    assert float(linf.max()) <= 4 / 255 * 4095 * (1 + 1e-6)
    assert float(linf.max()) >= 0.9 * 4 / 255 * 4095
    assert float(out.min()) >= 0 and float(out.max()) <= 4095


def test_pgd_family_is_batch_independent(trained_classifier):
    """A sample's result depends on its own generator only (resumable sweeps)."""
    model, x, y = trained_classifier
    fam = get_family("pgd")
    full = fam.apply(x[:6], 8 / 255, _ctx(model, y[:6], 6))
    part = fam.apply(x[2:4], 8 / 255, _ctx(model, y[2:4], 2, ids=[2, 3]))
    torch.testing.assert_close(part, full[2:4], atol=1e-6, rtol=0)


def test_uses_clean_prediction_without_target_and_3d(classifier_3d):
    model, x, y = classifier_3d
    fam = get_family("fgsm")
    with torch.no_grad():
        pred = model(x).argmax(1)
    a = fam.apply(x, 4 / 255, _ctx(model, None, len(x)))
    b = fam.apply(x, 4 / 255, _ctx(model, pred, len(x)))
    assert torch.equal(a, b) and a.shape == x.shape


def test_errors(trained_classifier):
    _, x, y = trained_classifier
    with pytest.raises(ValueError, match="ctx.model"):
        get_family("pgd").apply(x, 1 / 255, _ctx(None, y, len(x)))
    with pytest.raises(ValueError, match="severity"):
        get_family("fgsm").apply(x, -1.0, _ctx(lambda v: v, y, len(x)))
