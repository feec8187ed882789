"""medrobust.tracking: runs recorded in the local MLflow store (SQLite ``OUT/mlflow.db``, artifacts ``OUT/mlruns``)."""

from __future__ import annotations

import os

import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")

from medrobust.tracking import default_uri, log_run, log_sensitivity, tracking_client  # noqa: E402


@pytest.fixture(scope="module")
def shared_uri(tmp_path_factory) -> str:
    """One store for the tests that do not check the default layout (creating an SQLite store costs ~1 s of CPU)."""
    return default_uri(tmp_path_factory.mktemp("store"))


def _runs(uri: str, experiment: str):
    client = tracking_client(uri)
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_log_run_records_params_metrics_artifacts(tmp_path):
    art = tmp_path / "report.md"
    art.write_text("# r\n")
    uri = default_uri(tmp_path)
    rid = log_run(experiment="e", run_name="r", uri=uri, params={"seed": 3, "families": ["a", "b"]},
                  metrics=[("fam/flip_rate", 0.25, 0), ("fam/flip_rate", 0.5, 1), ("bad", float("nan"), 0)],
                  artifacts=[art, tmp_path / "missing.png"])  # fmt: skip
    client, runs = _runs(uri, "e")
    assert [r.info.run_id for r in runs] == [rid] and runs[0].info.status == "FINISHED"
    assert runs[0].data.params == {"seed": "3", "families": "['a', 'b']"}
    hist = client.get_metric_history(rid, "fam/flip_rate")
    assert [(m.step, m.value) for m in hist] == [(0, 0.25), (1, 0.5)] and "bad" not in runs[0].data.metrics
    assert [a.path for a in client.list_artifacts(rid)] == ["report.md"]
    assert (tmp_path / "mlflow.db").is_file() and list((tmp_path / "mlruns").rglob("report.md"))  # MONAI's layout


def test_log_sensitivity_per_severity(tmp_path, shared_uri):
    class Result:
        out = tmp_path
        summary = pd.DataFrame({"family": ["g", "g"], "severity": [0.0, 0.5], "subgroup": ["all", "all"],
                                "accuracy": [0.9, 0.7], "flip_rate": [0.0, 0.2], "auc": [0.95, 0.8],
                                "mean_abs_delta_p": [0.0, 0.1]})  # fmt: skip
        predictions = pd.DataFrame({"case_id": ["a", "b"]})

    (tmp_path / "report.md").write_text("x")
    rid = log_sensitivity(Result(), uri=shared_uri, params={"seed": 0})
    client, runs = _runs(shared_uri, "medrobust-sensitivity")
    assert [(m.step, m.value) for m in client.get_metric_history(rid, "g/accuracy")] == [(0, 0.9), (1, 0.7)]
    assert [(m.step, m.value) for m in client.get_metric_history(rid, "g/severity")] == [(0, 0.0), (1, 0.5)]


def test_log_card_names_segmentation_rows_by_dice(tmp_path, shared_uri):
    """A segmentation card's adversarial rows are Dice, not accuracy; its Dice-vs-severity rows are logged."""
    from medrobust.tracking import log_card

    (tmp_path / "card.html").write_text("<html></html>")
    (tmp_path / "card.json").write_text("{}")
    entry = lambda v: {"value": v, "lo": v - 0.1, "hi": v + 0.1}  # noqa: E731

    class Result:
        out, html, json = tmp_path, tmp_path / "card.html", tmp_path / "card.json"
        card = {"task": {"type": "segmentation", "model": "unet.ts"}, "headline": {"n_cases": 4},
                "provenance": {"model_sha256": "m", "data_sha256": "d"},
                "adversarial": {"rows": [{"eps": 2 / 255, "attacks": {"pgd": entry(0.6)}, "worst_case": entry(0.55)}]},
                "sensitivity": {"families": {"gaussian_blur": [{"severity": 0.0, "dice": entry(0.8)},
                                                               {"severity": 1.0, "dice": entry(0.7)}]}}}  # fmt: skip

    rid = log_card(Result(), uri=shared_uri)
    client, runs = _runs(shared_uri, "medrobust-card")
    metrics = client.get_run(rid).data.metrics
    assert "robust_dice/worst_case" in metrics and not any(k.startswith("robust_accuracy") for k in metrics)
    assert [(m.step, m.value) for m in client.get_metric_history(rid, "gaussian_blur/dice")] == [(0, 0.8), (1, 0.7)]


@pytest.mark.parametrize("rank, track, expected", [(0, True, True), (1, True, False), (0, False, False), (0, "false", False),
                                                   (0, "True", True), (1, "on", False)])
def test_bundle_handlers_enabled_on_rank_0_only(monkeypatch, rank, track, expected):
    """The bundles' MLFlowHandler is disabled by ``not enabled(@track)``: only rank 0 of a torchrun job records."""
    from medrobust.tracking import enabled, run_name

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    assert enabled(track) is expected
    assert run_name("train").startswith("train_") and run_name("train").endswith(f"_{os.getpid()}")


def test_track_word_is_checked():
    from medrobust.tracking import enabled

    with pytest.raises(ValueError, match="track: expected true/false"):
        enabled("maybe")
