"""Summary metrics on hand-made predictions; the results store's crash tolerance and identity checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medrobust.sensitivity import ResultsStore, RunIdentityError, resolve_plan, summarise, summarise_cnr
from medrobust.sensitivity.store import PREDICTION_COLUMNS


def _pred() -> pd.DataFrame:
    rows = []
    # 4 cases: a, b positive; c, d negative. Clean p separates perfectly; severity 1 swaps b and c.
    clean = {"a": 0.9, "b": 0.7, "c": 0.3, "d": 0.1}
    pert = {"a": 0.8, "b": 0.2, "c": 0.6, "d": 0.1}
    labels = {"a": 1, "b": 1, "c": 0, "d": 0}
    sub = {"a": "calc", "b": "mass", "c": "calc", "d": None}
    for sev, ps in ((0.0, clean), (1.0, pert)):
        for cid, p in ps.items():
            rows.append({"case_id": cid, "family": "f", "severity": sev, "p_positive": p,
                         "predicted_class": int(p >= 0.5), "label": labels[cid], "subgroup": sub[cid]})
    return pd.DataFrame(rows)


def test_summary_hand_computed() -> None:
    s = summarise(_pred()).set_index(["severity", "subgroup"])
    clean, pert = s.loc[(0.0, "all")], s.loc[(1.0, "all")]
    assert clean["auc"] == 1.0 and clean["ks"] == 1.0 and clean["flip_rate"] == 0 and clean["accuracy"] == 1.0
    assert pert["flip_rate"] == 0.5  # b and c flipped
    assert pert["mean_abs_delta_p"] == pytest.approx((0.1 + 0.5 + 0.3 + 0.0) / 4)
    assert pert["auc"] == pytest.approx(0.75)  # pairs (a,c),(a,d),(b,d) right, (b,c) wrong
    assert pert["ks"] == pytest.approx(0.5)
    assert pert["accuracy"] == 0.5
    calc = s.loc[(1.0, "calc")]
    assert calc["n"] == 2 and calc["flip_rate"] == 0.5 and calc["auc"] == 1.0
    assert np.isnan(s.loc[(1.0, "mass")]["auc"])  # one class only


def test_summary_without_labels_and_empty() -> None:
    df = _pred().assign(label=np.nan, subgroup=None)
    s = summarise(df)
    assert s["auc"].isna().all() and s["ks"].isna().all() and set(s["subgroup"]) == {"all"}
    assert summarise(df.iloc[0:0]).empty


def test_cnr_summary_ratio() -> None:
    cnr = pd.DataFrame({"case_id": ["a", "a", "b", "b"], "family": ["f"] * 4, "severity": [0.0, 2.0, 0.0, 2.0],
                        "cnr": [10.0, 5.0, 4.0, 1.0], "roi_pixels": [4] * 4, "subgroup": ["calc"] * 4})
    s = summarise_cnr(cnr)
    row = s[(s["severity"] == 2.0) & (s["subgroup"] == "all")].iloc[0]
    assert row["mean_cnr"] == 3.0 and row["mean_cnr_ratio"] == pytest.approx((0.5 + 0.25) / 2)


def test_store_cuts_partial_line_and_dedupes(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.open({"seed": 0}, provenance={})
    row = {"case_id": "a", "family": "f", "severity": "0.0", "p_positive": "0.5", "predicted_class": 1, "label": 1, "subgroup": "x"}
    store.add_predictions([row, {**row, "severity": "1.0"}, {**row, "severity": "1.0", "p_positive": "0.25"}])
    store.close()
    with open(tmp_path / "predictions.csv", "a") as f:
        f.write("b,f,0.0,0.12")  # what a SIGKILL mid-write leaves
    store = ResultsStore(tmp_path)
    assert store.open({"seed": 0}, provenance={}) is True
    assert store.done_keys() == {("a", "f", 0.0), ("a", "f", 1.0)}
    store.add_predictions([{**row, "case_id": "b"}])
    preds = store.read_predictions()
    assert len(preds) == 3 and preds[preds["severity"] == 1.0]["p_positive"].item() == 0.25
    assert (tmp_path / "predictions.csv").read_text().splitlines()[0] == ",".join(PREDICTION_COLUMNS)
    store.close()


def test_store_identity_errors(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r")
    store.open({"seed": 0, "plan": {"f": [0.0, 1.0]}}, provenance={})
    store.close()
    with pytest.raises(RunIdentityError, match=r"seed: 0 -> 1"):
        ResultsStore(tmp_path / "r").open({"seed": 1, "plan": {"f": [0.0, 1.0]}}, provenance={})
    (tmp_path / "r" / "keep.txt").write_text("user file")
    ResultsStore(tmp_path / "r").open({"seed": 1}, provenance={}, overwrite=True)
    assert (tmp_path / "r" / "keep.txt").is_file()  # overwrite removes only run outputs
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["identity"] == {"seed": 1}
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "predictions.csv").write_text("case_id\n")
    with pytest.raises(RunIdentityError, match="no manifest"):
        ResultsStore(tmp_path / "q").open({"seed": 0}, provenance={})


def test_resolve_plan() -> None:
    plan = resolve_plan("fourier_lowpass, gaussian_noise", {"gaussian_noise": [0.2, 0.1, 0.1]})
    assert plan["gaussian_noise"] == (0.0, 0.1, 0.2)
    assert plan["fourier_lowpass"][0] == 0.0 and len(plan["fourier_lowpass"]) == 9
    assert resolve_plan(["gaussian_blur"], [2, 1])["gaussian_blur"] == (0.0, 1.0, 2.0)
    with pytest.raises(ValueError, match="not swept"):
        resolve_plan(["gaussian_blur"], {"gaussian_noise": [1]})
    with pytest.raises(ValueError, match=">= 0"):
        resolve_plan(["gaussian_blur"], [-1])
    with pytest.raises(ValueError, match="Did you mean"):
        resolve_plan(["gausian_blur"])
