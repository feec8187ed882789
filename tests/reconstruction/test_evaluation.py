"""medrobust.reconstruction.evaluation: multi-coil measurement, k-space models (VarNet) and the
FN-rate threshold sweep."""

from __future__ import annotations

import pytest
import torch

from medrobust.core.attacks.fnaf import false_negatives, fnaf
from medrobust.reconstruction import evaluation as ev
from medrobust.reconstruction.data import KspaceSliceDataset, prepare_volume
from medrobust.reconstruction.networks import VarNet


def _batch(num_coils: int, n: int = 3, size: int = 32):
    vol = prepare_volume("v0", torch.rand(n, 40, 40, generator=torch.Generator().manual_seed(0)) * 900, size=(size, size))
    ds = KspaceSliceDataset([vol], num_coils=num_coils, acceleration=4, seed=0)
    return torch.utils.data.default_collate([ds[i] for i in range(n)])


@pytest.mark.parametrize("num_coils", [1, 4])
def test_measure_reproduces_dataset_kspace(num_coils):
    b = _batch(num_coils)
    k = ev.measure(b["target"], b["mask"], ev.batch_phase(b), num_coils=num_coils)
    assert k.shape == b["kspace"].shape
    torch.testing.assert_close(k, b["kspace"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ev.acquire(b["target"], b["mask"], ev.batch_phase(b), num_coils=num_coils),
                               b["zero_filled"], atol=1e-5, rtol=1e-5)


def test_measure_rejects_bad_coils():
    with pytest.raises(ValueError, match="num_coils"):
        ev.measure(torch.rand(2, 1, 8, 8), torch.ones(1, 8), num_coils=0)


def test_prepare_kspace_batch_shares_first_mask():
    b = _batch(4)
    k, y, args, kw = ev.prepare_kspace_batch(b)
    assert k.shape == (3, 4, 32, 32, 2) and y.shape == (3, 1, 32, 32) and kw == {}
    (mask,) = args
    assert mask.shape == (1, 1, 1, 32, 1)
    torch.testing.assert_close(k, b["kspace_full"] * b["mask"][:1])
    assert (k[..., mask[0, 0, 0, :, 0] == 0, :] == 0).all()


def test_kspace_model_fn_uses_each_slice_mask():
    seen = []

    def net(k, m):
        seen.append(m.clone())
        return k[:, :1, ..., 0].abs()

    masks = torch.zeros(2, 1, 1, 8, 1)
    masks[0, ..., :4, :] = 1
    masks[1, ..., 4:, :] = 1
    out = ev.kspace_model_fn(net, masks)(torch.rand(2, 3, 8, 8, 2))
    assert out.shape == (2, 1, 8, 8) and len(seen) == 2
    assert torch.equal(seen[0], masks[:1]) and torch.equal(seen[1], masks[1:])


def test_evaluate_volume_varnet_and_fn_sweep():
    b = _batch(4, n=2)
    net = VarNet(num_cascades=1).eval()
    out = ev.evaluate_volume(net, b["target"], b["mask"], ev.batch_phase(b), num_coils=4, kspace_model=True,
                             fnaf_restarts=2, pgd_steps=1, fn_thresholds=(1e-3, 0.05, 1e9))
    assert 0 < out["ssim"] <= 1 and out["pgd_nmse"] == out["pgd_nmse"]
    assert out[ev.fn_rate_key(1e-3)] == out["fn_rate"]  # same criterion as fnaf() at its default threshold
    assert out["fn_rate@0.001"] >= out["fn_rate@0.05"] >= out["fn_rate@1e+09"] == 0.0


def test_fn_sweep_matches_false_negatives_on_zero_filled():
    b = _batch(1, n=2)
    thresholds = (1e-3, 0.02, 0.2)
    out = ev.evaluate_volume(None, b["target"], b["mask"], ev.batch_phase(b), fnaf_restarts=3, pgd_steps=0,
                             fn_thresholds=thresholds)
    res = fnaf(ev.zero_filled, b["target"], size=10, restarts=3, generator=0,
                  forward_op=lambda img: ev.measure(img, b["mask"], ev.batch_phase(b)))
    for t in thresholds:
        _, fn = false_negatives(res.info["recon"], res.x_adv, res.info["weight"], threshold=t)
        assert out[ev.fn_rate_key(t)] == pytest.approx(float(fn.double().mean()))


def test_fn_thresholds_must_be_positive():
    b = _batch(1, n=2)
    with pytest.raises(ValueError, match="fn_thresholds"):
        ev.evaluate_volume(None, b["target"], b["mask"], fnaf_restarts=1, pgd_steps=0, fn_thresholds=(0.0,))
