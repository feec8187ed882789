"""MONAI-style Perturb / Perturbd wrappers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from medrobust.perturbations import registry
from medrobust.perturbations.registry import PerturbationContext, PerturbationFamily, get_family, sample_seed
from medrobust.perturbations.transforms import Perturb, Perturbd


def test_array_transform_2d_3d_numpy_and_identity() -> None:
    for shape in [(1, 20, 24), (2, 10, 12, 8)]:
        x = torch.rand(shape)
        assert torch.equal(Perturb("gaussian_noise", 0.0)(x), x)
        y = Perturb("gaussian_noise", 0.1, seed=4)(x)
        assert y.shape == x.shape and not torch.equal(y, x)
        assert torch.equal(Perturb("gaussian_noise", 0.1, seed=4)(x), y)
    arr = np.random.default_rng(0).random((1, 16, 16)).astype(np.float32)
    out = Perturb("fourier_lowpass", 2.0)(arr)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == arr.shape


def test_dict_transform_uses_the_sweep_seed() -> None:
    x = torch.rand(1, 24, 24)
    t = Compose([Perturbd(keys="image", family="fourier_noise", severity=0.05, seed=7, seed_key="case_id")])
    got = t({"image": x, "case_id": "case_03"})["image"]
    ctx = PerturbationContext.from_seeds([sample_seed("case_03", "fourier_noise", 0.05, base_seed=7)])
    want = get_family("fourier_noise").apply(x[None], 0.05, ctx)[0]
    torch.testing.assert_close(got, want)
    other = t({"image": x, "case_id": "case_04"})["image"]
    assert not torch.equal(other, got)
    with pytest.raises(KeyError, match="seed_key"):
        Perturbd(keys="image", family="fourier_noise", severity=0.05, seed_key="case_id")({"image": x})


def test_model_families_rejected(monkeypatch) -> None:
    fam = PerturbationFamily("needs_model_dummy", lambda x, s, ctx: x, (0.0, 1.0), "dummy; severity unused", needs_model=True)
    monkeypatch.setitem(registry._REGISTRY, fam.name, fam)
    with pytest.raises(ValueError, match="needs a model"):
        Perturb("needs_model_dummy", 1.0)
