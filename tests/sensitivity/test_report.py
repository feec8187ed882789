"""The report's choices are parameters (:class:`ReportOptions`), not knowledge of one bundle."""

from __future__ import annotations

import pandas as pd
import pytest

from medrobust.models import load_model
from medrobust.sensitivity.report import ReportOptions, _first_example, write_outputs
from medrobust.sensitivity.summary import summarise


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"example_subgroups": "calc"}, ValueError, "unknown keys"),
        ([("crop_families", "x")], TypeError, "a mapping or None"),
        ({"crop_families": [1, 2]}, TypeError, "crop_families should be family names"),
        ({"example_subgroup": 3}, TypeError, "example_subgroup"),
    ],
)
def test_report_options_reject_bad_values(options, error, match) -> None:
    with pytest.raises(error, match=match):
        ReportOptions.from_any(options)


def test_report_options_defaults_and_strings() -> None:
    assert ReportOptions.from_any(None) == ReportOptions()
    assert ReportOptions(crop_families="fourier_lowpass").crop_families == ("fourier_lowpass",)


@pytest.mark.parametrize("subgroup, expected", [(None, "case_01"), ("calc", "case_03"), ("SOFT", "case_01")])
def test_example_case_prefers_the_given_subgroup(tmp_path, builders, subgroup, expected) -> None:
    data, labels = builders.make_dataset(tmp_path / "mammo", corrupt=False)
    weights, cfg = builders.make_model_files(tmp_path / "model")
    model = load_model(weights, network_config=cfg, input_size=(32, 32))
    table = pd.read_csv(labels)  # labels i % 2, subgroup calcification for i % 3 == 0: positives 01, 03 (calc), 05
    first = _first_example(table.assign(family="f", severity=0.0), data, model, None, subgroup)
    assert first is not None and first[0] == expected


@pytest.mark.parametrize("cnr_families, shown", [(None, {"blur", "fourier_lowpass"}), (("fourier_lowpass",), {"fourier_lowpass"})])
def test_cnr_table_lists_the_chosen_families(tmp_path, builders, cnr_families, shown) -> None:
    weights, cfg = builders.make_model_files(tmp_path / "model")
    model = load_model(weights, network_config=cfg, input_size=(32, 32))
    cnr = pd.DataFrame({"case_id": ["a", "a", "b", "b"] * 2, "family": ["blur"] * 4 + ["fourier_lowpass"] * 4,
                        "severity": [0.0, 1.0] * 4, "cnr": [4.0, 2.0, 3.0, 1.0] * 2, "subgroup": [None] * 8})
    predictions = pd.DataFrame(columns=["case_id", "family", "severity", "p_positive", "predicted_class", "label", "subgroup"])
    (tmp_path / "run").mkdir()
    report = write_outputs(tmp_path / "run", predictions=predictions,
                           summary=summarise(predictions), errors=pd.DataFrame(), cnr=cnr, manifest={}, plan={}, model=model,
                           data_root=tmp_path, seed=0, examples=False, options={"cnr_families": cnr_families})
    section = report.read_text().split("## ROI contrast-to-noise ratio", 1)[1]
    listed = {f for f in ("blur", "fourier_lowpass") if f"| {f} |" in section}
    assert listed == shown


def test_crop_lands_in_the_foreground_not_on_a_marker() -> None:
    import torch

    from medrobust.sensitivity.report import _crop_box, foreground_mask

    g = torch.Generator().manual_seed(0)
    x = torch.zeros(1, 400, 300)
    x[:, :, :180] = 0.5 + 0.05 * torch.rand(1, 400, 180, generator=g)  # 'breast' on the left
    x[:, 20:30, 260:290] = 1.0  # a burned-in laterality marker in the air: the brightest specks
    x[:, 20:30, 260:290:2] = 0.0
    rows, cols = _crop_box(x, 64)
    assert cols.stop <= 180 and float(foreground_mask(x)[rows, cols].float().mean()) > 0.95
    assert _crop_box(x, 64, centre=(300, 100)) == (slice(268, 332), slice(68, 132))
