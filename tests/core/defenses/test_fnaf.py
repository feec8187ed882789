"""FNAF robust training: plugs into MONAI's SupervisedTrainer, changes weights, lowers the masked
feature loss on a fixed batch, works in 3-D, checks its settings."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.engines import SupervisedTrainer

from medrobust.core.attacks import fnaf
from medrobust.core.defenses.fnaf import FNAFTraining


def _lowpass(img: torch.Tensor, keep: int = 8) -> torch.Tensor:
    """Test acquisition: centred FFT, keep the central ``keep`` columns, IFFT, magnitude."""
    k = torch.fft.fftshift(torch.fft.fft2(img, norm="ortho"), dim=(-2, -1))
    w = k.shape[-1]
    m = torch.zeros(w)
    m[w // 2 - keep // 2: w // 2 + keep // 2] = 1
    return torch.fft.ifft2(torch.fft.ifftshift(k * m, dim=(-2, -1)), norm="ortho").abs()


class _Residual(torch.nn.Module):
    def __init__(self, nd: int = 2) -> None:
        super().__init__()
        conv = torch.nn.Conv2d if nd == 2 else torch.nn.Conv3d
        self.body = torch.nn.Sequential(conv(1, 8, 3, padding=1), torch.nn.ReLU(), conv(8, 1, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


def _trainer(net, data, step, epochs=1, decollate=False):
    return SupervisedTrainer(device="cpu", max_epochs=epochs, train_data_loader=data, network=net,
                             optimizer=torch.optim.Adam(net.parameters(), 3e-3), loss_function=torch.nn.L1Loss(),
                             iteration_update=step, decollate=decollate)


def _masked_loss(net, y, acq):
    net.eval()
    res = fnaf(net, y, forward_op=acq, size=10, restarts=3, generator=123)  # the same features every call
    return float(res.info["loss"].mean())


def test_robust_step_changes_weights_and_lowers_masked_loss():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(4, 1, 24, 24, generator=g) * 0.3
    acq = lambda img, batch=None: _lowpass(img)  # noqa: E731
    data = [{"image": acq(y), "label": y}]
    net = _Residual()
    before_w = copy.deepcopy(net.state_dict())
    before = _masked_loss(net, y, acq)
    step = FNAFTraining(acquisition=acq, size=(10, 30), fnaf_weight=1.0, seed=0)
    _trainer(net, data, step, epochs=40).run()
    assert any(not torch.equal(before_w[k], v) for k, v in net.state_dict().items())
    after = _masked_loss(net, y, acq)
    assert after < 0.8 * before, (before, after)


def test_fnaf_step_differs_from_clean_training_and_reports_losses():
    y = torch.rand(3, 1, 20, 20, generator=torch.Generator().manual_seed(1))
    acq = lambda img, batch: _lowpass(img)  # noqa: E731
    data = [{"image": acq(y, None), "label": y}]
    torch.manual_seed(0)
    a = _Residual()
    b = copy.deepcopy(a)
    t = _trainer(a, data, FNAFTraining(acquisition=acq, size=10, seed=0), decollate=True)
    t.run()
    _trainer(b, data, None).run()
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    out = t.state.output[0] if isinstance(t.state.output, list) else t.state.output
    assert set(out) >= {"clean_loss", "fnaf_loss", "fnaf_masked_loss"}


def test_acquisition_receives_the_batch_and_3d():
    seen = []

    def acq(img, batch):
        seen.append(batch is not None and "label" in batch)
        return img * 0.5

    y = torch.rand(2, 1, 12, 12, 10)
    data = [{"image": y * 0.5, "label": y}]
    _trainer(_Residual(3), data, FNAFTraining(acquisition=acq, size=(5, 8), restarts=2)).run()
    assert seen and all(seen)


def test_settings_are_checked():
    with pytest.raises(TypeError, match="acquisition must be callable"):
        FNAFTraining(acquisition=None)
    with pytest.raises(ValueError, match="fnaf_weight must be"):
        FNAFTraining(acquisition=lambda i, b: i, fnaf_weight=-1.0)
    with pytest.raises(ValueError, match="restarts must be"):
        FNAFTraining(acquisition=lambda i, b: i, restarts=0)
    assert "FNAFTraining(size=(10, 100)" in repr(FNAFTraining(acquisition=lambda i, b: i))
