"""The robustness card of a registration bundle: TRE and gland Dice rows on paired data.

A registration bundle is a MONAI bundle whose ``configs/inference.json`` defines ``moving_keys``
(the moving inputs the network takes besides the fixed image, e.g. ``["moving_image",
"moving_mask"]``) and ``network_def``; the card builds the network from that config
(:func:`medrobust.models.load_bundle_network`, weights from its ``ckpt_path``) and loads pairs the
way the bundle does (:func:`medrobust.data.paired.load_pair` with its ``spacing``, ``grid_size``,
``alignment``), so an image-only (2-channel) or mask-input (3-channel) network works alike.

Rows (per pair: TRE = mean over the pair's landmark TREs, :func:`~medrobust.registration.crossval.pair_tre`):

- clean: TRE median and mean with 95 % percentile-bootstrap CIs over pairs, gland Dice, folding %
  (:func:`~medrobust.registration.crossval.cv_summary`), and the TRE before registration;
- natural perturbation sensitivity: the registry's families applied to the fixed image (per-pair
  seeds ``sample_seed(pair, family, severity)``, as the sweep), TRE median per severity;
- adversarial: TRE vs eps under L-inf PGD on the fixed image with the registration objective
  (``1 -`` soft Dice of the warped moving labels,
  :func:`medrobust.registration.robustness.attack_rows`), and the gradient-free checks: uniform
  sign noise of the same eps (worst of :data:`NOISE_DRAWS`) at every radius and Square at the
  middle radius; flagged when a gradient-free attack reaches a higher mean objective than PGD;
- the (eps, delta) estimate (:func:`medrobust.core.metrics.probabilistic.probabilistic_robustness`)
  of ``P_safe`` = the probability over posterior draws (Gaussian weight noise) that PGD finds no
  fixed-image perturbation that increases the draw's TRE by more than ``tau`` mm: an upper bound.

Example:
    >>> import json, tempfile, pathlib
    >>> b = pathlib.Path(tempfile.mkdtemp()); (b / "configs").mkdir()
    >>> _ = (b / "configs" / "inference.json").write_text(json.dumps({"moving_keys": ["moving_image"]}))
    >>> is_registration_bundle(b), is_registration_bundle(b / "configs")
    (True, False)
    >>> registration_budget(CardBudget())[0].attack_cases  # registration screening default
    8
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrobust.card.budget import CardBudget
from medrobust.card.render import eps_label
from medrobust.core.utils import eval_mode

__all__ = ["NOISE_DRAWS", "REGISTRATION_DEFAULTS", "RegistrationBundle", "is_registration_bundle", "load_registration_bundle",
           "registration_budget", "pair_rows", "clean_pairs", "sensitivity_pairs", "adversarial_pairs",
           "probabilistic_pairs", "registration_sections", "registration_card"]  # fmt: skip

logger = logging.getLogger(__name__)

#: draws of the sign-noise check (the worst kept per pair)
NOISE_DRAWS = 10

#: registration screening budget: replaces a :class:`~medrobust.card.CardBudget` field left at its
#: classification default (one PGD step costs about 0.35 s per pair on one CPU thread for the mrus network)
REGISTRATION_DEFAULTS: dict[str, Any] = {"attack_cases": 8, "pgd_steps": (10,), "restarts": 1, "square_queries": 50,
                                         "prob_cases": 2, "prob_eps": 0.25, "prob_delta": 0.25, "prob_attack_steps": 2}  # fmt: skip


@dataclass
class RegistrationBundle:
    """A registration bundle's network and how it reads pairs."""

    root: Path
    network: torch.nn.Module
    moving_keys: list[str]
    spacing: Any
    grid_size: list[int] | None
    alignment: str
    weights: Path
    train_ids: list[str] | None


def is_registration_bundle(model: Any) -> bool:
    """True when ``model`` is a bundle folder whose ``configs/inference.json`` defines ``moving_keys``."""
    if not isinstance(model, (str, Path)) or not (Path(model) / "configs" / "inference.json").is_file():
        return False
    from medrobust.models import bundle_parser

    return "moving_keys" in bundle_parser(model, ["inference"])


def load_registration_bundle(root: str | Path, *, device: torch.device | str = "cpu") -> RegistrationBundle:
    """The network (weights from the config's ``ckpt_path``, else ``models/model.pt``) and its pair settings."""
    from medrobust.models import bundle_parser, load_bundle_network

    root = Path(root)
    p = bundle_parser(root, ["inference"])
    ckpt = Path(p.get_parsed_content("ckpt_path")) if "ckpt_path" in p else root / "models" / "model.pt"
    weights = ckpt.resolve()
    if not weights.is_file():
        raise FileNotFoundError(f"bundle {root}: no weights at {weights} (ckpt_path of configs/inference.json).")
    net = load_bundle_network(root, config_files=["inference"], weights=weights, device=device)
    train_ids = None
    try:  # which pairs the shipped weights were trained on (to flag an in-sample card)
        train_ids = [str(i) for i in bundle_parser(root, ["train"]).get_parsed_content("train_ids")]
    except Exception as e:  # noqa: BLE001 - optional provenance: a bundle without train.json / folds is fine
        logger.info("card: training pairs of %s unknown (%s)", root, e)
    get = lambda k, d: p.get_parsed_content(k) if k in p else d  # noqa: E731
    return RegistrationBundle(root, net, list(p.get_parsed_content("moving_keys")), get("spacing", 3.0),
                              get("grid_size", None), get("alignment", "centre"), weights, train_ids)  # fmt: skip


def registration_budget(budget: CardBudget) -> tuple[CardBudget, list[str]]:
    """``budget`` with :data:`REGISTRATION_DEFAULTS` in the fields left at the classification default; the fields replaced."""
    from dataclasses import fields, replace

    defaults = {f.name: f.default for f in fields(budget)}
    changed = [k for k, v in REGISTRATION_DEFAULTS.items() if getattr(budget, k) == defaults[k]]
    return replace(budget, **{k: REGISTRATION_DEFAULTS[k] for k in changed}), changed


def _inputs(item: Mapping[str, Any], keys: Sequence[str], device: Any) -> tuple[torch.Tensor, ...]:
    fi, ml, fl = (torch.as_tensor(item[k])[None].float().to(device) for k in ("fixed_image", "moving_label", "fixed_label"))
    mi = torch.cat([torch.as_tensor(item[k])[None].float().to(device) for k in keys], dim=1)
    return mi, fi, ml, fl


def pair_rows(net: torch.nn.Module, item: Mapping[str, Any], keys: Sequence[str], fixed: torch.Tensor | None = None) -> dict[str, Any]:
    """Metrics of one pair (``fixed``: a replacement fixed image ``(1, 1, *S)``): TRE per landmark, Dice, folding."""
    from monai.networks.blocks import Warp

    from medrobust.registration.engine import register
    from medrobust.registration.evaluation import case_metrics

    mi, fi, ml, fl = _inputs(item, keys, next(net.parameters()).device)
    with torch.no_grad(), eval_mode(net):  # whatever an earlier call left the flags at (BatchNorm statistics)
        ddf = register(net, mi, fi if fixed is None else fixed)
    m = case_metrics(ddf, Warp(mode="bilinear", padding_mode="zeros")(ml, ddf), fl, item["affine"], moving_label=ml)
    return {k: m[k] for k in ("tre_landmarks_mm", "dice_gland", "folding_pct")}


def clean_pairs(net: torch.nn.Module, items: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Per pair: clean metrics and the TRE before registration (zero displacement)."""
    from monai.networks.blocks import Warp

    from medrobust.registration.evaluation import case_metrics

    out = []
    for item in items:
        _, fi, ml, fl = _inputs(item, keys, "cpu")
        zero = torch.zeros(1, fi.ndim - 2, *fi.shape[2:])
        before = case_metrics(zero, Warp(mode="bilinear", padding_mode="zeros")(ml, zero), fl, item["affine"], moving_label=ml)
        out.append({"case_id": item["case_id"], **pair_rows(net, item, keys), "tre_before_mm": before["tre_landmarks_mm"]})
    return out


def sensitivity_pairs(net: torch.nn.Module, items: Sequence[Mapping[str, Any]], keys: Sequence[str], *,
                      families: Sequence[str], severities: Sequence[float] | None, seed: int) -> dict[str, Any]:  # fmt: skip
    """Per family and severity, the metrics of every pair with a perturbed fixed image (seeds from the pair ids)."""
    from medrobust.perturbations.registry import PerturbationContext, get_family, sample_seed

    fams, skipped = {}, {}
    for name in families:
        fam = get_family(name)
        if fam.needs_model or 3 not in fam.spatial_dims:
            skipped[name] = "adversarial family" if fam.needs_model else "not defined for 3-D"
            continue
        rows = []
        for sev in severities if severities is not None else fam.severities:
            per = []
            for item in items:
                fi = torch.as_tensor(item["fixed_image"])[None].float()
                ctx = PerturbationContext.from_seeds([sample_seed(item["case_id"], name, float(sev), base_seed=seed)],
                                                     device=fi.device, bounds=(0.0, 1.0))  # fmt: skip
                with torch.no_grad():
                    xp = fam.apply(fi, float(sev), ctx)
                per.append({"case_id": item["case_id"], **pair_rows(net, item, keys, xp.to(next(net.parameters()).device))})
            rows.append({"severity": float(sev), "pairs": per})
        fams[name] = rows
    return {"families": fams, "skipped": skipped}


def adversarial_pairs(net: torch.nn.Module, items: Sequence[Mapping[str, Any]], keys: Sequence[str], *, eps: Sequence[float],
                      steps: int, restarts: int, queries: int, seed: int) -> list[dict[str, Any]]:  # fmt: skip
    """Per radius: per-pair rows under PGD and sign noise (and Square at the middle radius), :func:`attack_rows`."""
    from medrobust.registration.robustness import attack_rows

    mid = sorted(eps)[len(eps) // 2]
    dev = next(net.parameters()).device
    keep = ("case_id", "tre_landmarks_mm_adv", "dice_gland_adv", "folding_pct_adv", "attack_loss_clean", "attack_loss_adv",
            "perturbation_linf")  # fmt: skip
    out = []
    for e in eps:
        attacks = {"pgd": dict(steps=int(steps), restarts=int(restarts)), "noise": dict(restarts=NOISE_DRAWS)}
        if e == mid:
            attacks["square"] = dict(queries=int(queries))
        res = {}
        for k, (name, kw) in enumerate(attacks.items()):
            rows = attack_rows(net, items, eps=float(e), seed=int(seed) + 1000 * k, device=dev, moving_keys=keys,
                               attack=name, **kw)  # fmt: skip
            res[name] = [{k2: r[k2] for k2 in keep} for r in rows]
        out.append({"eps": float(e), "attacks": res})
    return out


class _TREIncrease(torch.nn.Module):
    """Indicator logits ``[0, TRE(fixed) - TRE(clean) - tau]`` of one pair under one posterior draw.

    Core's (eps, delta) estimator counts a draw unsafe when the attack changes the predicted
    "class"; with these logits that is the event "TRE increases by more than ``tau`` mm".
    """

    def __init__(self, network: torch.nn.Module, item: Mapping[str, Any], keys: Sequence[str], tau: float) -> None:
        super().__init__()
        self.network, self.item, self.keys, self.tau = network, item, list(keys), float(tau)
        self.tre0 = self._tre(None)

    def _tre(self, fixed: torch.Tensor | None) -> float:
        from medrobust.registration.crossval import pair_tre

        return pair_tre(pair_rows(self.network, self.item, self.keys, fixed))

    def forward(self, fixed: torch.Tensor) -> torch.Tensor:
        inc = self._tre(fixed) - self.tre0
        return torch.tensor([[0.0, (inc if np.isfinite(inc) else 0.0) - self.tau]])


def probabilistic_pairs(net: torch.nn.Module, items: Sequence[Mapping[str, Any]], keys: Sequence[str], *, input_eps: float,
                        tau: float, eps: float, delta: float, attack_steps: int, seed: int,
                        weight_scale: float = 0.05) -> dict[str, Any]:  # fmt: skip
    """``P_safe`` per pair (one estimate per pair; posterior draws: Gaussian weight noise), PGD on the fixed image."""
    from medrobust.core.metrics.probabilistic import GaussianWeightPosterior, probabilistic_robustness
    from medrobust.registration.robustness import attack_fixed_image

    post = GaussianWeightPosterior(net, scale=weight_scale)
    est, used, guarantee = [], [], ""
    for k, item in enumerate(items):
        mi, fi, ml, fl = _inputs(item, keys, next(net.parameters()).device)

        def sampler(g: torch.Generator, item: Mapping[str, Any] = item) -> _TREIncrease:
            return _TREIncrease(post(g), item, keys, tau)

        def attack(model: _TREIncrease, x: torch.Tensor, mi: torch.Tensor = mi, ml: torch.Tensor = ml,
                   fl: torch.Tensor = fl) -> torch.Tensor:  # fmt: skip
            return attack_fixed_image(model.network, mi, x, ml, fl, eps=float(input_eps), steps=int(attack_steps),
                                      seed=int(seed) + k)[0]  # fmt: skip

        r = probabilistic_robustness(sampler, fi, input_eps=float(input_eps), criterion="label", eps=float(eps),
                                     delta=float(delta), sequential=True, alpha=min(0.05, delta / 2), attack=attack,
                                     generator=int(seed) + k)  # fmt: skip
        est.append(float(r.estimate[0]))
        used.append(int(r.n_samples[0]))
        guarantee = r.guarantee
    return {"p_safe": est, "posterior_samples": used, "guarantee": guarantee}


def _summary(rows: Sequence[Mapping[str, Any]], *, n_boot: int, seed: int, tre: str = "tre_landmarks_mm") -> dict[str, Any]:
    from medrobust.registration.crossval import cv_summary

    s = cv_summary([{"tre_landmarks_mm": r[tre], "dice_gland": r.get("dice_gland", r.get("dice_gland_adv")),
                     "folding_pct": r.get("folding_pct", r.get("folding_pct_adv"))} for r in rows], n_boot=n_boot, seed=seed)  # fmt: skip
    return {"n_pairs": s["n_pairs"], "tre_median_mm": s["tre_median_mm"], "tre_median_ci": list(s["tre_median_ci"]),
            "tre_mean_mm": s["tre_mean_mm"], "tre_mean_ci": list(s["tre_mean_ci"]), "dice_gland": s["dice_gland"],
            "dice_gland_ci": list(s["dice_gland_ci"]), "folding_pct": s.get("folding_pct")}  # fmt: skip


def registration_sections(clean: Sequence[dict], sens: Sequence[dict], adv: Sequence[list], prob: Sequence[dict], *,
                          budget: Any, n_boot: int, seed: int) -> dict[str, Any]:  # fmt: skip
    """card.json sections from the units' values (pairs pooled in case-id order)."""
    from medrobust.registration.crossval import pair_tre

    clean = [r for part in clean for r in part]
    out: dict[str, Any] = {"clean": {**_summary(clean, n_boot=n_boot, seed=seed),
                                     "before_registration": _summary([{**r, "tre_landmarks_mm": r["tre_before_mm"]}
                                                                      for r in clean], n_boot=n_boot, seed=seed),
                                     "per_pair_tre_mm": {r["case_id"]: pair_tre(r) for r in clean}}}  # fmt: skip
    base = out["clean"]["per_pair_tre_mm"]
    if sens:
        fams = {}
        for name, rows in sens[0]["families"].items():
            fams[name] = []
            for j, row in enumerate(rows):
                pairs = [r for p in sens for r in p["families"][name][j]["pairs"]]
                inc = np.array([pair_tre(r) - base[r["case_id"]] for r in pairs], dtype=float)
                fams[name].append({"severity": row["severity"], **_summary(pairs, n_boot=n_boot, seed=seed),
                                   "tre_increase_median_mm": float(np.nanmedian(inc))})  # fmt: skip
        out["sensitivity"] = {"families": fams, "skipped": sens[0]["skipped"],
                              "method": "registry families applied to the fixed image in [0, 1] (per-pair seeds); "
                                        "TRE per pair, median over pairs with a 95 % bootstrap CI"}  # fmt: skip
    rows, flagged = [], []
    for j, first in enumerate(adv[0]):
        attacks, loss = {}, {}
        for name in first["attacks"]:
            pr = [r for p in adv for r in p[j]["attacks"][name]]
            attacks[name] = _summary(pr, n_boot=n_boot, seed=seed, tre="tre_landmarks_mm_adv")
            loss[name] = float(np.mean([r["attack_loss_adv"] for r in pr]))
        worse = [n for n in loss if n != "pgd" and loss[n] > loss["pgd"] + 0.01]
        if worse:
            flagged.append(first["eps"])
        rows.append({"eps": first["eps"], "attacks": attacks, "mean_objective": loss,
                     "gradient_masking": bool(worse), "reasons": [f"{n} reached a higher mean objective ({loss[n]:.3f}) than "
                                                                  f"PGD ({loss['pgd']:.3f})" for n in worse]})  # fmt: skip
    attacked = {r["case_id"] for p in adv for r in p[0]["attacks"]["pgd"]}
    out["adversarial"] = {
        "norm": "Linf", "target": "fixed image ([0, 1] intensities)", "n_pairs": rows[0]["attacks"]["pgd"]["n_pairs"],
        "clean": _summary([r for r in clean if r["case_id"] in attacked], n_boot=n_boot, seed=seed),
        "objective": "1 - soft Dice of the warped moving labels (medrobust.registration.robustness.attack_rows)",
        "pgd": {"steps": int(budget.pgd_steps[0]), "restarts": int(budget.restarts)},
        "checks": {"noise": f"uniform sign noise of L-inf size eps, worst of {NOISE_DRAWS} draws, every radius",
                   "square": f"Square, {int(budget.square_queries)} queries, middle radius only"},
        "rows": rows, "gradient_masking": bool(flagged),
        "masking_check": (f"FLAGGED at eps {', '.join(eps_label(e) for e in flagged)}: a gradient-free attack reached a higher "
                          "attack objective than PGD; the PGD TRE figures understate the damage") if flagged else
                         ("passed: neither sign noise nor Square reached a higher mean attack objective than PGD "
                          "(by more than 0.01)"),
    }  # fmt: skip
    est = [v for p in prob for v in p["p_safe"]]
    mid = sorted(budget.eps)[len(budget.eps) // 2]
    out["probabilistic"] = {
        "event": f"TRE increases by more than {budget.tre_tau_mm:g} mm", "tau_mm": budget.tre_tau_mm, "input_eps": mid,
        "eps": budget.prob_eps, "delta": budget.prob_delta, "n_pairs": len(est), "per_pair_p_safe": est,
        "mean_p_safe": float(np.mean(est)) if est else None,
        "posterior": "Gaussian weight noise (scale 0.05 x std per tensor)",
        "posterior_samples": [v for p in prob for v in p["posterior_samples"]],
        "guarantee": prob[0]["guarantee"] if prob else "",
        "statement": (f"Upper bound on robustness: for each pair, P_safe (the probability over posterior draws that no "
                      f"fixed-image perturbation within L-inf {eps_label(mid)} increases TRE by more than {budget.tre_tau_mm:g} mm) "
                      f"is at most the estimate + {budget.prob_eps:g} with probability >= {1 - budget.prob_delta:g}; "
                      f"PGD-{budget.prob_attack_steps} on 1 - soft Dice can miss perturbations that increase TRE, so the "
                      f"true robustness may be lower still."),
    }  # fmt: skip
    return out


def registration_card(model: Path, data_root: Path, out: Path, budget: CardBudget, *, seed: int = 0,
                      cases: Sequence[str] | None = None, t0: float | None = None, progress: bool = False,
                      device: torch.device | str = "cpu") -> Any:  # fmt: skip
    """The card of the registration bundle ``model`` on the pairs of ``data_root`` (called by :func:`~medrobust.card.make_card`).

    Writes ``out/card.json`` and ``out/card.html``; the per-pair work runs as units
    (:mod:`medrobust.card.units`: stored, resumed, sharded under torchrun).

    Returns:
        :class:`~medrobust.card.CardResult` (``written=False`` on ranks > 0 of a torchrun job).

    Raises:
        FileNotFoundError: no weights; ValueError: no usable pair.
    """
    import json
    import time
    from dataclasses import asdict

    from medrobust.card import render
    from medrobust.card.builder import CardResult, data_fingerprint, versions
    from medrobust.card.registration_page import registration_page
    from medrobust.card.units import run_units, section_parts, section_units, unit_budget, unit_versions
    from medrobust.data.paired import load_pair, scan_paired

    t0 = time.perf_counter() if t0 is None else t0
    dev = torch.device(device)

    bundle = load_registration_bundle(model, device=dev)
    budget, replaced = registration_budget(budget)
    pairs = sorted((c for c in scan_paired(data_root) if cases is None or c.case_id in set(cases)), key=lambda c: c.case_id)
    pairs = pairs[: budget.max_cases]
    if not pairs:
        raise ValueError(f"data: no moving/fixed pair with labels under {data_root} (DeepReg paired layout expected).")
    case_ids = [c.case_id for c in pairs]
    files = [str(Path(f).resolve().relative_to(data_root)) for c in pairs
             for f in (c.moving_image, c.fixed_image, c.moving_label, c.fixed_label) if f is not None]  # fmt: skip
    loaded: dict[str, Any] = {}

    def items(ids: Sequence[str]) -> list[dict[str, Any]]:
        by_id = {c.case_id: c for c in pairs}
        for c in ids:
            if c not in loaded:
                loaded[c] = load_pair(by_id[c], spacing=bundle.spacing, size=bundle.grid_size, alignment=bundle.alignment,
                                      moving_mask="moving_mask" in bundle.moving_keys)  # fmt: skip
        return [loaded[c] for c in ids]

    from medrobust.models import file_sha256

    net, keys, na = bundle.network, bundle.moving_keys, min(budget.attack_cases, len(case_ids))
    mid = float(sorted(budget.eps)[len(budget.eps) // 2])
    trained = sorted(set(case_ids) & set(bundle.train_ids or []))
    card: dict[str, Any] = {
        "card_version": 1,
        "task": {"type": "registration", "model": model.name, "source": "bundle", "inputs": [*keys, "fixed_image"],
                 "grid_size": bundle.grid_size, "spacing_mm": bundle.spacing},
        "provenance": {"model_sha256": file_sha256(bundle.weights), "weights": bundle.weights.name,
                       "data_sha256": data_fingerprint(data_root, files), "n_files": len(files), "seed": int(seed),
                       "budget": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(budget).items()},
                       "versions": versions(), "device": str(dev)},
        "budget_notes": [
            f"Pairs: {len(case_ids)}; attacked pairs: {na} (the first in case-id order): PGD-{budget.pgd_steps[0]} x "
            f"{budget.restarts} at eps {', '.join(f'{e * 255:g}' for e in budget.eps)} /255 (L-inf, [0, 1] fixed-image "
            f"intensities), sign noise (worst of {NOISE_DRAWS}) at every eps, Square ({budget.square_queries} queries) "
            f"at eps {mid * 255:g}/255.",
            f"(eps, delta) estimate: eps {budget.prob_eps:g}, delta {budget.prob_delta:g} on {min(budget.prob_cases, len(case_ids))} "
            f"pairs, event TRE increase > {budget.tre_tau_mm:g} mm, PGD-{budget.prob_attack_steps}; {budget.n_boot} bootstrap "
            f"resamples over pairs; units of {budget.block_cases} pairs.",
            ("Registration screening defaults used for " + ", ".join(replaced) + " (medrobust.card.registration."
             "REGISTRATION_DEFAULTS); set the flags to change them.") if replaced else "Custom registration budget.",
        ],
        "flags": ([f"FLAG: {len(trained)} of {len(case_ids)} pairs are in the training pairs of the bundle's configs/train.json "
                   "(train_ids): the clean and robustness figures on them are in-sample and optimistic."] if trained else []),
        "not_measured": {"autoattack": "AutoAttack attacks classifiers only",
                         "intrinsic": "intrinsic robustness is a max-KL of class probabilities: classification only",
                         "nmutant": "nMutant detects label changes: classification only"},
    }  # fmt: skip
    identity = {"card_version": 1, "task": "registration", "model_sha256": card["provenance"]["model_sha256"],
                "data_sha256": card["provenance"]["data_sha256"], "inputs": keys, "cases": case_ids,
                "budget": unit_budget(card["provenance"]["budget"]), "seed": int(seed), "device": dev.type,
                "versions": unit_versions(card["provenance"]["versions"])}  # fmt: skip
    index = {c: i for i, c in enumerate(case_ids)}
    size = budget.block_cases

    def units(section: str, ids: Sequence[str], fn: Any) -> dict[str, Any]:
        return section_units(section, ids, size, lambda _, blk, s: fn(items(blk), s), seed=seed, index=index)

    u = units("reg_clean", case_ids, lambda it, _: clean_pairs(net, it, keys))
    if budget.sensitivity:
        u |= units("reg_sensitivity", case_ids, lambda it, _: sensitivity_pairs(
            net, it, keys, families=budget.families or ("gaussian_noise", "gaussian_blur"), severities=budget.severities,
            seed=seed))  # fmt: skip
    u |= units("reg_adversarial", case_ids[:na], lambda it, s: adversarial_pairs(
        net, it, keys, eps=budget.eps, steps=budget.pgd_steps[0], restarts=budget.restarts, queries=budget.square_queries,
        seed=s))  # fmt: skip
    u |= units("reg_probabilistic", case_ids[:budget.prob_cases], lambda it, s: probabilistic_pairs(
        net, it, keys, input_eps=mid, tau=budget.tre_tau_mm, eps=budget.prob_eps, delta=budget.prob_delta,
        attack_steps=budget.prob_attack_steps, seed=s))  # fmt: skip
    results = run_units(u, out, identity, progress=progress)
    if results is None:  # another rank of a torchrun job
        return CardResult(out, out / "card.html", out / "card.json", {}, None, written=False)
    timings, parts = {}, {}
    for name in ("reg_clean", "reg_sensitivity", "reg_adversarial", "reg_probabilistic"):
        parts[name], timings[name.removeprefix("reg_")] = section_parts(results, name)
    card.update(registration_sections(parts["reg_clean"], parts["reg_sensitivity"], parts["reg_adversarial"],
                                          parts["reg_probabilistic"], budget=budget, n_boot=budget.n_boot, seed=seed))  # fmt: skip
    c, adv = card["clean"], card["adversarial"]
    card["headline"] = {"task": "registration", "n_pairs": c["n_pairs"], "clean_tre_median_mm": c["tre_median_mm"],
                        "clean_tre_median_ci95": c["tre_median_ci"], "clean_tre_mean_mm": c["tre_mean_mm"],
                        "clean_dice_gland": c["dice_gland"], "folding_pct": c["folding_pct"],
                        "tre_median_mm_under_pgd": {f"eps_{r['eps'] * 255:g}_255": r["attacks"]["pgd"]["tre_median_mm"]
                                                    for r in adv["rows"]},
                        "gradient_masking_flagged": adv["gradient_masking"],
                        "p_safe_upper_bound_mean": card["probabilistic"]["mean_p_safe"],
                        "in_sample_pairs": len(trained)}  # fmt: skip
    card["timings_s"] = {**timings, "total": round(time.perf_counter() - t0, 3)}
    json_path = out / "card.json"
    json_path.write_text(json.dumps(card, indent=2, allow_nan=False))
    html_path = out / "card.html"
    html_path.write_text(render.render_html(registration_page(card)), encoding="utf-8")
    return CardResult(out, html_path, json_path, card, None)
