"""Registration baselines and attack-row summaries, on synthetic pairs with a known shift."""

from __future__ import annotations

import math

import pytest
import torch

from medrobust.registration.baselines import (
    ddf_rows,
    mean_translation_rows,
    network_ddf_fn,
    no_registration_rows,
)
from medrobust.registration.robustness import summarise_attack_rows

S = (16, 16, 16)


def _pair(case_id: str, shift: int) -> dict:
    """Gland + one landmark; the moving labels are the fixed ones shifted by ``shift`` voxels along x (2 mm voxels)."""
    fixed = torch.zeros(2, *S)
    fixed[0, 4:10, 4:12, 4:12] = 1
    fixed[1, 6:8, 6:8, 6:8] = 1
    moving = torch.roll(fixed, shift, dims=1)
    affine = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0]))
    return {"case_id": case_id, "fixed_image": torch.rand(1, *S), "moving_image": torch.rand(1, *S),
            "moving_label": moving, "fixed_label": fixed, "affine": affine}


class _Shift(torch.nn.Module):
    """A 'network' predicting a constant voxel DDF along x."""

    in_channels = 2

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ddf = torch.zeros(x.shape[0], 3, *x.shape[2:])
        ddf[:, 0] = self.shift
        return ddf


@pytest.mark.parametrize("shift", [1, 3])
def test_no_registration_scores_the_offset(shift) -> None:
    rows = no_registration_rows([_pair("a", shift), _pair("b", shift)])
    assert [r["case_id"] for r in rows] == ["a", "b"]
    assert rows[0]["tre_mean_mm"] == pytest.approx(2.0 * shift) and rows[0]["seconds"] == 0.0
    assert rows[0]["dice_gland"] < 1.0


@pytest.mark.parametrize("shift", [1, 2])
def test_mean_translation_undoes_a_shared_shift(shift) -> None:
    train = [_pair("t0", shift), _pair("t1", shift)]
    rows = mean_translation_rows(train, [_pair("x", shift), _pair("y", shift)])
    assert all(r["tre_mean_mm"] == pytest.approx(0.0, abs=1e-4) for r in rows)
    with pytest.raises(ValueError, match="train_pairs"):
        mean_translation_rows([], train)


def test_network_rows_are_timed_and_match_the_shift() -> None:
    rows = ddf_rows([_pair("a", 2), _pair("b", 2)], network_ddf_fn(_Shift(2.0)), timed=True)
    assert all(r["tre_mean_mm"] == pytest.approx(0.0, abs=1e-4) and r["cpu_s"] >= 0 and r["wall_s"] >= 0 for r in rows)
    assert "cpu_s" not in ddf_rows([_pair("a", 2)], network_ddf_fn(_Shift(0.0), ["moving_image"]))[0]


def test_attack_rows_summary() -> None:
    rows = [{"dice_gland": 0.9, "dice_gland_adv": 0.5, "tre_landmarks_mm": [1.0, 2.0], "tre_landmarks_mm_adv": [4.0, math.nan]},
            {"dice_gland": 0.7, "dice_gland_adv": 0.3, "tre_landmarks_mm": [3.0], "tre_landmarks_mm_adv": [6.0]}]
    s = summarise_attack_rows(rows)
    assert s == pytest.approx({"dice_gland": 0.8, "dice_gland_adv": 0.4, "tre_median_mm": 2.0, "tre_median_mm_adv": 5.0})
    with pytest.raises(ValueError, match="rows"):
        summarise_attack_rows([])
