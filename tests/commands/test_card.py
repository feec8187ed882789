"""``medrobust card`` from the command line: card.html + card.json, user errors as one line, MLflow tracking."""

from __future__ import annotations

import json

import pytest

from medrobust.cli import main

from ..card.conftest import make_dataset, make_model

FAST = ["--attack-cases", "6", "--eps", "2", "8", "--pgd-steps", "2", "3", "--restarts", "1", "--square-queries", "10",
        "--autoattack-iterations", "3", "--prob-cases", "2", "--prob-eps", "0.3", "--prob-delta", "0.3",
        "--nmutant-cases", "12", "--nmutant-mutants", "8", "--no-sensitivity", "--n-boot", "20", "--no-progress",
        "--num-threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cardcli")
    return make_model(root / "m.ts", 3), make_dataset(root / "data", 3)


def test_card_cli_writes_card_and_tracks(inputs, tmp_path):
    pytest.importorskip("mlflow")
    model, data = inputs
    out = tmp_path / "card"
    argv = ["card", "--model", str(model), "--input-size", "8", "8", "8", "--data", str(data),
            "--labels", str(data / "labels.csv"), "--out", str(out), *FAST]  # fmt: skip
    assert main(argv) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["provenance"]["budget"]["attack_cases"] == 6 and card["provenance"]["budget"]["eps"] == [2 / 255, 8 / 255]
    assert (out / "card.html").read_text().startswith("<!DOCTYPE html>")
    from medrobust.tracking import default_uri, tracking_client

    client = tracking_client(default_uri(out))
    runs = client.search_runs([client.get_experiment_by_name("medrobust-card").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["clean_accuracy"] == card["headline"]["clean_accuracy"]
    assert runs[0].data.params["attack_cases"] == "6"
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} == {"card.html", "card.json"}


def test_card_cli_user_errors(inputs, tmp_path, capsys):
    model, data = inputs
    base = ["card", "--model", str(model), "--input-size", "8", "8", "8", "--out", str(tmp_path / "o"), "--no-tracking"]
    assert main([*base, "--data", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*base, "--data", str(data)]) == 2  # no labels: nothing labelled to measure
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no labels CSV" in err
    assert main([*base, "--data", str(data), "--labels", str(data / "labels.csv"), "--eps", "0"]) == 2
    assert "--eps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["card", "--data", str(data)])
    assert "required" in capsys.readouterr().err


def test_cli_defaults_are_the_budget_defaults(tmp_path):
    """The command's flags carry no defaults of their own: an empty budget command line is ``CardBudget()``."""
    from medrobust.card import CardBudget
    from medrobust.cli import build_parser
    from medrobust.commands.card import _config

    args = build_parser().parse_args(["card", "--model", "m", "--data", "d", "--out", str(tmp_path)])
    assert _config(args).budget == CardBudget()
    args = build_parser().parse_args(["card", "--model", "m", "--data", "d", "--out", str(tmp_path), "--eps", "3",
                                      "--pgd-steps", "4", "7", "--families", "gaussian_noise", "--no-sensitivity"])
    b = _config(args).budget
    assert b.eps == (3 / 255,) and b.pgd_steps == (4, 7) and b.families == ("gaussian_noise",) and not b.sensitivity


def test_thread_count_from_flag_or_environment(monkeypatch, tmp_path, capsys):
    from medrobust.commands.card import _threads

    monkeypatch.delenv("MEDROBUST_NUM_THREADS", raising=False)
    assert _threads(None) is None and _threads(3) == 3  # no flag, no variable: torch's own default
    monkeypatch.setenv("MEDROBUST_NUM_THREADS", "2")
    assert _threads(None) == 2 and _threads(1) == 1  # the flag wins
    monkeypatch.setenv("MEDROBUST_NUM_THREADS", "two")
    argv = ["card", "--model", "m", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--no-tracking"]
    assert main(argv) == 2
    assert "MEDROBUST_NUM_THREADS: expected a positive integer, got 'two'" in capsys.readouterr().err
