"""sample_data.kspace: one seeded case in every k-space format, all readable and consistent."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sample_data.generate as gen
from medrobust.reconstruction import read_kspace, zero_filled
from sample_data.kspace import NUM_COILS, SHAPE, generate


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("ks"), n=1, seed=3)


def test_every_format_reads_back_consistently(root):
    s, h, w = SHAPE
    fm = read_kspace(root / "fastmri" / "case000.h5")
    ism = read_kspace(root / "ismrmrd" / "case000.h5")
    bart = read_kspace(root / "bart" / "case000.cfl")
    single = read_kspace(root / "fastmri_singlecoil" / "case000.h5")
    nii = read_kspace(root / "nifti" / "case000.nii.gz", num_coils=NUM_COILS, seed=0)
    assert fm.kspace.shape == (s, NUM_COILS, h, w, 2) and single.kspace.shape == (s, 1, h, w, 2)
    assert torch.equal(fm.kspace, ism.kspace) and torch.equal(fm.kspace, bart.kspace)
    assert [v.metadata["format"] for v in (fm, ism, bart, single)] == ["fastmri", "ismrmrd", "bart", "fastmri"]
    assert nii.kspace.shape == fm.kspace.shape and nii.metadata["simulated"] is True
    # the stored reference is the phantom; the noisy zero-filled recon is close to it
    ref = fm.reference
    assert ref.shape == (s, h, w) and float(ref.max()) == pytest.approx(1.0)
    for v in (fm, single):
        err = float((zero_filled(v.kspace)[:, 0] - ref).norm() / ref.norm())
        assert err < 0.05
    # the NIfTI holds the same magnitude (read back rescaled: 99.5th percentile -> 1, clipped)
    expect = (ref / torch.quantile(ref.flatten(), 0.995)).clamp(0, 1)
    assert torch.allclose(nii.reference, expect, atol=1e-3)
    assert fm.metadata["encoded_fov_mm"][:2] == pytest.approx([h * 0.6, w * 0.6])


def test_seeded(tmp_path, root):
    again = generate(tmp_path / "a", n=1, seed=3)
    other = generate(tmp_path / "b", n=1, seed=4)
    for rel in ("bart/case000.cfl", "nifti/case000.nii.gz"):
        a, b = (root / rel).read_bytes(), (again / rel).read_bytes()
        assert a == b or rel.endswith(".gz")  # gzip stamps a time; compare arrays below
    assert torch.equal(read_kspace(again / "bart" / "case000").kspace, read_kspace(root / "bart" / "case000").kspace)
    assert not torch.equal(read_kspace(other / "bart" / "case000").kspace, read_kspace(root / "bart" / "case000").kspace)
    with pytest.raises(ValueError, match="n must be >= 1"):
        generate(tmp_path / "c", n=0)


def test_wired_into_generate(tmp_path):
    done = gen.generate_all(tmp_path, only=["kspace"], n=1, seed=0)
    folder = done["kspace"]
    assert json.loads((folder / "manifest.json").read_text())["name"] == "kspace"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["bart", "fastmri", "fastmri_singlecoil", "ismrmrd", "nifti"]
    assert np.isfinite(read_kspace(folder / "ismrmrd" / "case000.h5").kspace.numpy()).all()
