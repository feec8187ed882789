"""medrobust.card end to end on a tiny trained model: card.json contents, a self-contained HTML page, metadata."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from medrobust.card import CardBudget, make_card, write_robustness_metadata
from medrobust.card.sections import adversarial_section, bootstrap_statistic, proportion

from .conftest import TINY


@pytest.fixture(scope="module")
def card(card_inputs, tmp_path_factory):
    model, data, dims = card_inputs
    torch.set_num_threads(1)  # a module fixture is set up before the per-test one-thread fixture
    out = tmp_path_factory.mktemp("card_out")
    budget = TINY if dims == 2 else CardBudget(**{**TINY.__dict__, "sensitivity": False})
    return make_card(model, data, out, labels=data / "labels.csv", budget=budget, input_size=(8,) * dims,
                     progress=False), dims  # fmt: skip


def _within(e):
    return e["lo"] <= e["value"] <= e["hi"]


def test_card_json_contents(card):
    res, dims = card
    c = json.loads(res.json.read_text())
    assert c == json.loads(json.dumps(res.card))
    assert c["clean"]["n"] == 24 and c["clean"]["accuracy"]["value"] >= 0.9 and _within(c["clean"]["accuracy"])
    assert _within(c["clean"]["auc"]) and c["clean"]["ece"]["value"] >= 0
    assert sum(c["clean"]["reliability"]["count"]) == 24
    prov = c["provenance"]
    assert len(prov["model_sha256"]) == 64 and len(prov["data_sha256"]) == 64 and prov["n_files"] == 24
    assert prov["versions"]["torch"].startswith(torch.__version__.split("+")[0]) and prov["seed"] == 0
    adv = c["adversarial"]
    assert [r["eps"] for r in adv["rows"]] == list(TINY.eps)
    assert set(adv["rows"][0]["attacks"]) == {"pgd3", "pgd5x2", "square"}
    for r in adv["rows"]:  # robust accuracy never exceeds clean, worst case never exceeds any attack
        assert all(e["value"] <= r["clean"]["value"] for e in r["attacks"].values())
        assert r["worst_case"]["value"] <= min(e["value"] for e in r["attacks"].values())
    # the large radius (16/255) breaks this near-linear model more than the small one
    assert adv["rows"][1]["worst_case"]["value"] <= adv["rows"][0]["worst_case"]["value"]
    assert adv["masking_check"].startswith(("passed (Square with 20 queries, a weak check below 1000)", "FLAGGED"))
    aa = c["autoattack"]
    assert aa["skipped"] is False and aa["attacks"] == ["apgd-ce"] and len(aa["rows"]) == 2
    pr = c["probabilistic"]
    assert pr["posterior"].startswith("Gaussian weight noise")  # TorchScript: no nn.Dropout to switch on
    assert "upper bound" in pr["guarantee"] and "Upper bound" in pr["statement"]
    assert all(0 <= p <= 1 for p in pr["per_case_p_safe"]) and pr["n_cases"] == 2
    assert pr["max_posterior_draws"] == 17 and max(pr["posterior_samples"]) <= 17  # ceil(ln(8) / (2 x 0.25^2))
    assert "at most 17 posterior draws" in pr["statement"]
    notes = c["budget_notes"]  # the card states its own budget and the precision it allows
    assert notes[0].startswith("Attacked cases: 8 of 24 labelled") and "+-0.34" in notes[0]
    assert "Square with 20 queries (below 1000 queries" in notes[1] and "at most 17 posterior draws" in notes[2]
    assert notes[-1].startswith("This is a custom budget")
    assert c["intrinsic"]["score"]["value"] > 0
    nm = c["nmutant"]
    assert nm["skipped"] or (0 <= nm["false_positive_rate"]["value"] <= 1 and nm["detection_rate"]["n"] >= 0)
    if dims == 2:
        sens = c["sensitivity"]["families"]["gaussian_noise"]
        assert [r["severity"] for r in sens] == [0.0, 0.2] and sens[0]["flip_rate"] == 0.0
    else:
        assert "sensitivity" not in c
    assert c["headline"]["clean_accuracy"] == c["clean"]["accuracy"]["value"]


def test_html_self_contained(card):
    res, dims = card
    page = res.html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"(src|href)=\"(?!data:)", page), "only data: URIs may be referenced"
    assert "http://" not in page and "https://" not in page and "<script" not in page
    n_fig = len(re.findall(r'<img [^>]*src="data:image/png;base64,', page))
    assert n_fig == (3 if dims == 2 else 2)  # reliability, robustness (+ sensitivity in 2-D)
    assert "upper bound on robustness" in page.lower() and "Gradient-masking check" in page
    assert "Budget and precision" in page and "at most 17 posterior draws per case" in page


def test_card_is_reproducible(card_inputs, card, tmp_path):
    model, data, dims = card_inputs
    if dims == 3:
        pytest.skip("one reproducibility run (2-D) is enough")
    budget = CardBudget(**{**TINY.__dict__, "sensitivity": False})
    again = make_card(model, data, tmp_path, labels=data / "labels.csv", budget=budget, input_size=(8, 8), progress=False)
    first = card[0].card
    for key in ("clean", "adversarial", "autoattack", "probabilistic", "intrinsic", "nmutant"):
        assert again.card[key] == first[key], key


def test_bootstrap_and_proportion():
    p = proportion(3, 4)
    assert p["value"] == 0.75 and 0 < p["lo"] < 0.75 < p["hi"] <= 1
    assert proportion(0, 0)["value"] is None
    b = bootstrap_statistic(lambda i: float(i.mean()), 10, n_boot=200, seed=0)
    assert b["value"] == 4.5 and b["lo"] < 4.5 < b["hi"]
    assert bootstrap_statistic(lambda i: float("nan"), 5, n_boot=10, seed=0)["value"] is None


def test_masking_flagged_for_a_gradient_masking_model():
    """A model whose input gradient is zero (a step function before the head) fools PGD, not Square."""

    class Steps(torch.nn.Module):
        def forward(self, x):
            m = x.flatten(1).mean(1, keepdim=True)
            q = (m > 0.5).float()  # a step: zero input gradient everywhere
            return torch.cat([0.5 - q, q - 0.5], 1) * 20 + 0 * m

    x = torch.rand(8, 1, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.1 + torch.tensor([0.4, 0.55] * 4).view(-1, 1, 1, 1, 1)
    y = torch.tensor([0, 1] * 4)
    s = adversarial_section(Steps(), x, y, eps=[0.2], steps=[3], restarts=1, queries=50)
    assert s["gradient_masking"] is True and s["masking_check"].startswith("FLAGGED")
    row = s["rows"][0]
    assert row["attacks"]["square"]["value"] < row["attacks"]["pgd3"]["value"]  # gradient-free beats PGD
    assert any("gradient" in r for r in row["reasons"])


def test_write_metadata_valid(tmp_path, repo_root, meta_schema, card):
    res, _ = card
    bundle = tmp_path / "b"
    shutil.copytree(repo_root / "bundles" / "lesion_classification" / "configs", bundle / "configs")
    path = write_robustness_metadata(bundle, res.card, schema=meta_schema)
    meta = json.loads(path.read_text())
    assert meta["robustness"]["clean_accuracy"] == res.card["headline"]["clean_accuracy"]
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(path), filepath=str(meta_schema))
    with pytest.raises(ValueError, match="fails"):
        bad = json.loads(meta_schema.read_text())
        bad["properties"]["robustness"] = {"type": "string"}
        (tmp_path / "schema.json").write_text(json.dumps(bad))
        write_robustness_metadata(bundle, res.card, schema=tmp_path / "schema.json")
    assert json.loads(path.read_text()) == meta  # a failed validation leaves the file as it was


@pytest.mark.parametrize("bad", [{"eps": ()}, {"eps": (2.0,)}, {"pgd_steps": (0,)}, {"autoattack": "full"}, {"restarts": 0}])
def test_budget_rejects_bad_settings(bad):
    with pytest.raises(ValueError, match="CardBudget"):
        CardBudget(**bad)


def test_default_budget_statement():
    from medrobust.card.budget import budget_statement

    notes = budget_statement(CardBudget(), n_labelled=40)
    assert notes[0].startswith("Attacked cases: 40 of 40") and notes[-1].startswith("This is the default screening budget")
    assert "at most 67 posterior draws" in notes[2]  # eps 0.15, delta 0.1
