"""Per-case metrics rows, their files, the evaluator handler, and the fixed-image attack."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from monai.engines import SupervisedEvaluator

from medrobust.registration.engine import RegistrationEvalIteration
from medrobust.registration.evaluation import RegistrationMetricsHandler, case_metrics, summarise, write_rows
from medrobust.registration.robustness import attack_rows


def _labels(shape=(16, 16, 16), shift=0):
    lab = torch.zeros(1, 3, *shape)
    lab[:, 0, 3:13, 3:13, 3:13] = 1  # gland
    lab[:, 1, 5:8, 5:8, 5:8] = 1
    lab[:, 2, 9:12, 8:11, 6:9] = 1
    return torch.roll(lab, shift, 2)


def test_case_metrics_and_summary_pool_landmarks(tmp_path):
    affine = torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0]))
    zero = torch.zeros(1, 3, 16, 16, 16)
    rows = [{"case_id": "a", **case_metrics(zero, _labels(shift=1), _labels(), affine), "seconds": 0.1},
            {"case_id": "b", **case_metrics(zero, _labels(shift=2), _labels(), affine), "seconds": 0.3}]
    assert rows[0]["tre_landmarks_mm"] == pytest.approx([2.0, 2.0]) and rows[1]["tre_mean_mm"] == pytest.approx(4.0)
    assert rows[0]["dice_gland"] == pytest.approx(0.9) and rows[0]["hd95_gland_mm"] == pytest.approx(2.0)
    s = summarise(rows)
    assert s["n_landmarks"] == 4 and s["tre_median_mm"] == pytest.approx(3.0) and s["seconds"] == pytest.approx(0.2)
    write_rows(rows, tmp_path)
    assert [r["case_id"] for r in csv.DictReader(open(tmp_path / "cases.csv"))] == ["a", "b"]
    assert len(list(csv.DictReader(open(tmp_path / "landmarks.csv")))) == 4
    assert json.loads((tmp_path / "summary.json").read_text())["tre_mean_mm"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="one case"):
        case_metrics(torch.zeros(2, 3, 16, 16, 16), _labels(), _labels(), affine)


def test_point_tre_counts_a_landmark_pushed_off_the_grid():
    affine = torch.eye(4)
    moving, fixed = _labels(shift=1), _labels()
    ddf = torch.zeros(1, 3, 16, 16, 16)
    ddf[:, 0] = 1.0  # the right registration: fixed x samples moving x + 1
    good = case_metrics(ddf, torch.roll(moving, -1, 2), fixed, affine, moving_label=moving)
    assert good["tre_landmarks_mm"] == pytest.approx([0.0, 0.0], abs=1e-6)
    ddf[:, 0] = 40.0  # samples far outside the grid: every warped label is empty
    warped = torch.zeros_like(moving)
    bad = case_metrics(ddf, warped, fixed, affine, moving_label=moving)
    assert bad["tre_landmarks_mm"] == pytest.approx([39.0, 39.0], abs=1e-6)  # a failure, not a NaN that drops out
    assert all(np.isnan(case_metrics(ddf, warped, fixed, affine)["tre_landmarks_mm"]))  # the label-centroid fallback
    with pytest.raises(ValueError, match="must match"):
        case_metrics(ddf, warped, fixed, affine, moving_label=moving[:, :2])


class _ShiftNet(torch.nn.Module):
    """Predicts a constant DDF of ``shift`` voxels along axis 0 (a stand-in registration network)."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = torch.nn.Parameter(torch.tensor(float(shift)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ddf = torch.zeros(x.shape[0], 3, *x.shape[2:])
        ddf[:, 0] = self.shift + 0.0 * x[:, 1]
        return ddf


def test_metrics_handler_in_a_monai_evaluator(tmp_path):
    item = {"moving_image": _labels(shift=2)[:, :1], "fixed_image": _labels()[:, :1], "moving_label": _labels(shift=2),
            "fixed_label": _labels(), "affine": torch.eye(4)[None], "case_id": ["x"]}
    ev = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=[item], network=_ShiftNet(2.0),
                             iteration_update=RegistrationEvalIteration())
    RegistrationMetricsHandler(tmp_path).attach(ev)
    ev.run()
    assert ev.state.metrics["tre_median_mm"] == pytest.approx(0.0, abs=1e-6)  # the shift undoes the misalignment
    assert ev.state.metrics["dice_gland"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "summary.json").read_text())["n_cases"] == 1


def test_attack_on_fixed_image_is_bounded_and_raises_the_loss():
    torch.manual_seed(0)
    from monai.networks.nets import LocalNet

    net = LocalNet(spatial_dims=3, in_channels=2, out_channels=3, num_channel_initial=2, extract_levels=(0, 1))
    fixed = _labels()[0]
    items = [{"case_id": "x", "moving_image": fixed[:1].roll(1, 1) * 0.8, "fixed_image": fixed[:1] * 0.8,
              "moving_label": fixed.roll(1, 1), "fixed_label": fixed, "affine": torch.eye(4)}]
    params = [p.detach().clone() for p in net.parameters()]
    rows = attack_rows(net, items, eps=0.05, steps=3)
    assert rows[0]["perturbation_linf"] <= 0.05 + 1e-6
    assert rows[0]["attack_loss_adv"] >= rows[0]["attack_loss_clean"]
    assert {"dice_gland", "dice_gland_adv", "tre_mean_mm_adv"} <= set(rows[0])
    assert all(torch.equal(a, b) for a, b in zip(params, net.parameters()))
    assert np.isfinite(rows[0]["tre_mean_mm_adv"])
