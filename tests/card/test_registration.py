"""Registration cards: the shipped mrus_registration bundle on 2 pairs (../shared/data/mrus_dev, else synthetic pairs)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from dataclasses import replace

import pytest
import torch

from medrobust.card import CardBudget, make_card
from medrobust.card.registration import (
    REGISTRATION_DEFAULTS,
    clean_pairs,
    is_registration_bundle,
    load_registration_bundle,
    registration_budget,
)

#: the smallest budget that runs every registration measure (1 attacked pair, 1 PGD step, <= 4 posterior draws)
TINY = CardBudget(max_cases=2, attack_cases=1, eps=(4 / 255,), pgd_steps=(1,), restarts=1, square_queries=2, prob_cases=1,
                  prob_eps=0.45, prob_delta=0.45, prob_attack_steps=1, families=("gaussian_noise",), severities=[0.0, 0.08],
                  n_boot=50, block_cases=1)  # fmt: skip


@pytest.fixture(scope="module")
def pairs(repo_root, tmp_path_factory):
    """A paired folder: the shared dev data when present, else 2 synthetic pairs."""
    real = repo_root.parent / "shared" / "data" / "mrus_dev"
    if real.is_dir():
        return real
    from sample_data.mrus import generate

    return generate(tmp_path_factory.mktemp("mrus"), n=2, seed=0)


@pytest.fixture(scope="module")
def bundle(repo_root, tmp_path_factory):
    """A copy of the shipped bundle (configs and weights), so metadata can be written."""
    src = repo_root / "bundles" / "mrus_registration"
    if not (src / "models" / "model.pt").is_file():
        pytest.skip("mrus_registration weights not shipped")
    dst = tmp_path_factory.mktemp("bundle") / "mrus_registration"
    shutil.copytree(src / "configs", dst / "configs")
    shutil.copytree(src / "models", dst / "models", ignore=shutil.ignore_patterns("*.ts"))  # whichever weights the config names
    return dst


@pytest.mark.slow  # about 9 s: a 3-D registration network attacked, noise-checked and sampled
def test_registration_card(bundle, pairs, tmp_path, meta_schema):
    torch.set_num_threads(1)
    res = make_card(bundle, pairs, tmp_path / "card", budget=TINY, progress=False, write_metadata=True, meta_schema=meta_schema)
    card = json.loads(res.json.read_text())
    assert card["task"]["type"] == "registration" and card["task"]["inputs"][-1] == "fixed_image"
    c = card["clean"]
    assert c["n_pairs"] == 2 and c["tre_median_ci"][0] <= c["tre_median_mm"] <= c["tre_median_ci"][1]
    assert 0 <= c["dice_gland"] <= 1 and c["folding_pct"] >= 0 and c["before_registration"]["n_pairs"] == 2
    rows = card["sensitivity"]["families"]["gaussian_noise"]
    assert [r["severity"] for r in rows] == [0.0, 0.08]
    assert rows[0]["tre_median_mm"] == pytest.approx(c["tre_median_mm"])  # severity 0 is the clean fixed image
    adv = card["adversarial"]
    assert adv["n_pairs"] == 1 and set(adv["rows"][0]["attacks"]) == {"pgd", "noise", "square"}
    assert isinstance(adv["gradient_masking"], bool) and adv["masking_check"].startswith(("passed", "FLAGGED"))
    pr = card["probabilistic"]
    assert pr["n_pairs"] == 1 and 0 <= pr["per_pair_p_safe"][0] <= 1 and 1 <= pr["posterior_samples"][0] <= 4
    assert "Upper bound on robustness" in pr["statement"] and "TRE increases by more than 2 mm" in pr["event"]
    meta = json.loads(res.metadata.read_text())["robustness"]
    assert meta["task"] == "registration" and meta["clean_tre_median_mm"] == c["tre_median_mm"]
    html = res.html.read_text()
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', html)
    assert set(imgs) == {"TRE vs severity per family", "TRE vs eps"} and "upper bound on robustness" in html.lower()
    if importlib.util.find_spec("mlflow") is not None:  # the command records every card: registration rows too
        from medrobust.tracking import log_card

        assert isinstance(log_card(res), str)
    from .test_render import _browser, _render

    if _browser() is not None:  # the page fits a narrow window too
        r = _render(res.html, tmp_path, 420)
        assert r["images"] == r["decoded"] == r["imagesInside"] == 2 and r["scrollWidth"] <= r["width"], r


def test_registration_bundle_from_its_config(bundle, pairs, tmp_path):
    """The network and its inputs come from configs/inference.json: mask-input (3 channels) or image-only (2)."""
    assert is_registration_bundle(bundle) and not is_registration_bundle(tmp_path)
    b = load_registration_bundle(bundle)
    assert b.moving_keys in (["moving_image", "moving_mask"], ["moving_image"])
    if not (bundle / "models" / "model_image_only.pt").is_file():
        pytest.skip("no image-only weights")
    cfg = json.loads((bundle / "configs" / "inference.json").read_text())
    img = bundle.parent / "image_only"
    shutil.copytree(bundle, img)
    cfg.update(moving_mask_input=False, ckpt_path="$@bundle_root + '/models/model_image_only.pt'")
    if "registration_def" in cfg:  # mrus_registration >= 0.5.0: the default is the cascade; image_only.json's end-to-end network
        cfg.update(network_def="@registration_def")
        cfg["registration_def"]["in_channels"] = 2
    (img / "configs" / "inference.json").write_text(json.dumps(cfg))
    b2 = load_registration_bundle(img)
    assert b2.moving_keys == ["moving_image"] and b2.weights.name == "model_image_only.pt"
    from medrobust.data.paired import load_paired_dataset, scan_paired

    first = scan_paired(pairs)[0].case_id
    item = load_paired_dataset(pairs, ids=[first], spacing=b2.spacing, size=b2.grid_size, alignment=b2.alignment)[0]
    (row,) = clean_pairs(b2.network, [item], b2.moving_keys)
    assert row["case_id"] == first and len(row["tre_landmarks_mm"]) == len(row["tre_before_mm"])


def test_registration_budget_defaults():
    b, changed = registration_budget(CardBudget())
    assert changed == list(REGISTRATION_DEFAULTS) and b.attack_cases == REGISTRATION_DEFAULTS["attack_cases"]
    b, changed = registration_budget(replace(CardBudget(), attack_cases=3))
    assert b.attack_cases == 3 and "attack_cases" not in changed  # a flag the user set is kept
    with pytest.raises(ValueError, match="tre_tau_mm"):
        CardBudget(tre_tau_mm=0)


def test_registration_task_needs_a_registration_bundle(tmp_path):
    with pytest.raises(ValueError, match="not a registration bundle"):
        make_card(tmp_path, tmp_path, tmp_path / "o", task="registration")
