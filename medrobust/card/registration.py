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
from matplotlib.figure import Figure

from medrobust.card.budget import CardBudget
from medrobust.card.render import figure_png

__all__ = ["NOISE_DRAWS", "REGISTRATION_DEFAULTS", "RegistrationBundle", "is_registration_bundle", "load_registration_bundle",
           "registration_budget", "pair_rows", "clean_pairs", "sensitivity_pairs", "adversarial_pairs",
           "probabilistic_pairs", "registration_sections", "registration_page"]  # fmt: skip

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
    with torch.no_grad():
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
        "masking_check": (f"FLAGGED at eps {', '.join(_eps(e) for e in flagged)}: a gradient-free attack reached a higher "
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
                      f"fixed-image perturbation within L-inf {_eps(mid)} increases TRE by more than {budget.tre_tau_mm:g} mm) "
                      f"is at most the estimate + {budget.prob_eps:g} with probability >= {1 - budget.prob_delta:g}; "
                      f"PGD-{budget.prob_attack_steps} on 1 - soft Dice can miss perturbations that increase TRE, so the "
                      f"true robustness may be lower still."),
    }  # fmt: skip
    return out


def _tre_figure(series: Mapping[str, Sequence[tuple[float, Mapping[str, Any]]]], *, xlabel: str, title: str = "") -> Figure:
    fig = Figure(figsize=(5.6, 3.8))
    ax = fig.add_subplot(111)
    for name, pts in series.items():
        xs = [p for p, _ in pts]
        (line,) = ax.plot(xs, [e["tre_median_mm"] for _, e in pts], marker="o", ms=4, label=name)
        ax.fill_between(xs, [e["tre_median_ci"][0] for _, e in pts], [e["tre_median_ci"][1] for _, e in pts],
                        color=line.get_color(), alpha=0.15)  # fmt: skip
    ax.set(xlabel=xlabel, ylabel="TRE median over pairs (mm)", title=title)
    ax.legend(fontsize=7)
    return fig


def _tre_panels(families: Mapping[str, Sequence[Mapping[str, Any]]]) -> Figure:
    """TRE median (95 % band) vs severity, one panel per family (families have their own severity units)."""
    cols = min(3, max(1, len(families)))
    nrows = (len(families) + cols - 1) // cols
    fig = Figure(figsize=(3.4 * cols, 2.8 * nrows))
    for k, (name, rows) in enumerate(families.items()):
        ax = fig.add_subplot(nrows, cols, k + 1)
        sev = [r["severity"] for r in rows]
        ax.plot(sev, [r["tre_median_mm"] for r in rows], marker="o", ms=3)
        ax.fill_between(sev, [r["tre_median_ci"][0] for r in rows], [r["tre_median_ci"][1] for r in rows], alpha=0.15)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("severity", fontsize=8)
        ax.set_ylabel("TRE median (mm)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def _eps(e: float) -> str:
    return f"{e * 255:g}/255"


def _fmt(s: Mapping[str, Any], key: str = "tre_median") -> str:
    lo, hi = s[f"{key}_ci"]
    return f"{s[f'{key}_mm']:.2f} mm [{lo:.2f}, {hi:.2f}] (n={s['n_pairs']})"


def registration_page(card: Mapping[str, Any]) -> dict[str, Any]:
    """The page dict of a registration card (for :func:`medrobust.card.render.render_html`)."""
    task, prov, clean, adv, pr = card["task"], card["provenance"], card["clean"], card["adversarial"], card["probabilistic"]
    head = {"clean TRE median [95% CI]": _fmt(clean), "clean TRE mean [95% CI]": _fmt(clean, "tre_mean"),
            "TRE before registration (median)": _fmt(clean["before_registration"]),
            "gland Dice [95% CI]": f"{clean['dice_gland']:.3f} [{clean['dice_gland_ci'][0]:.3f}, {clean['dice_gland_ci'][1]:.3f}]",
            "folding %": f"{clean['folding_pct']:.3f}"}  # fmt: skip
    for r in adv["rows"]:
        head[f"TRE median under PGD, eps {_eps(r['eps'])}"] = _fmt(r["attacks"]["pgd"])
    head["gradient-masking check"] = adv["masking_check"].split(":")[0]
    if pr["n_pairs"]:
        head[f"P_safe ({pr['event']}, eps {_eps(pr['input_eps'])}; upper bound on robustness)"] = f"{pr['mean_p_safe']:.3f} (mean of {pr['n_pairs']})"
    secs: list[dict[str, Any]] = [{"title": "Task, data and model provenance", "table": (("item", "value"), [
        ("task", "registration"), ("model", f"{task['model']} ({task['source']})"), ("network inputs", ", ".join(task["inputs"])),
        ("model SHA-256", prov["model_sha256"]), ("data SHA-256 (files evaluated)", prov["data_sha256"]),
        ("pairs", clean["n_pairs"]), ("seed", prov["seed"]),
        ("versions", ", ".join(f"{k} {v}" for k, v in prov["versions"].items())),
    ])}]  # fmt: skip
    notes = list(card.get("budget_notes", []))
    secs.append({"title": "Budget and precision", "text": notes})
    secs.append({"title": "Clean performance", "text": [
        f"TRE per pair = mean over its landmarks. Median {_fmt(clean)}, mean {_fmt(clean, 'tre_mean')} (95 % percentile "
        f"bootstrap over pairs); gland Dice {clean['dice_gland']:.3f}; folding {clean['folding_pct']:.3f} % of voxels; "
        f"before registration the TRE median is {_fmt(clean['before_registration'])}."] + list(card.get("flags", []))})  # fmt: skip
    sens = card.get("sensitivity")
    if sens and sens["families"]:
        tbl = [(n, f"{r['severity']:g}", _fmt(r), f"{r['tre_increase_median_mm']:+.2f}", f"{r['dice_gland']:.3f}")
               for n, rows in sens["families"].items() for r in rows]  # fmt: skip
        secs.append({"title": "Natural perturbation sensitivity (fixed image)", "text": [sens["method"]],
                     "figure": figure_png(_tre_panels(sens["families"])),
                     "caption": "TRE vs severity per family",
                     "table": (("family", "severity", "TRE median", "median TRE increase (mm)", "gland Dice"), tbl),
                     "notes": [f"skipped {k}: {v}" for k, v in sens["skipped"].items()]})  # fmt: skip
    series = {name: [(r["eps"] * 255, r["attacks"][name]) for r in adv["rows"] if name in r["attacks"]]
              for name in ("pgd", "noise", "square")}  # fmt: skip
    series["clean (attacked pairs)"] = [(r["eps"] * 255, adv["clean"]) for r in adv["rows"]]
    tbl = [(_eps(r["eps"]), *[(_fmt(r["attacks"][a]) if a in r["attacks"] else "-") for a in ("pgd", "noise", "square")],
            "FLAGGED" if r["gradient_masking"] else "ok") for r in adv["rows"]]  # fmt: skip
    text = [f"PGD-{adv['pgd']['steps']} (x {adv['pgd']['restarts']}) on the {adv['target']}, objective {adv['objective']}; "
            f"{adv['n_pairs']} pairs (clean TRE median on these pairs {_fmt(adv['clean'])}). Checks: {adv['checks']['noise']}; "
            f"{adv['checks']['square']}.",
            ("FLAG: gradient-masking check " if adv["gradient_masking"] else "Gradient-masking check ") + adv["masking_check"] + "."]
    text += [f"FLAG: eps {_eps(r['eps'])}: {why}" for r in adv["rows"] for why in r["reasons"]]
    secs.append({"title": "Adversarial robustness (L-inf on the fixed image)", "text": text,
                 "figure": figure_png(_tre_figure({k: v for k, v in series.items() if v}, xlabel="eps (L-inf, x 1/255 of the [0, 1] intensities)")),
                 "caption": "TRE vs eps", "table": (("eps", "PGD", "sign noise", "Square", "masking check"), tbl)})  # fmt: skip
    if pr["n_pairs"]:
        secs.append({"title": "Statistical guarantee: (eps, delta) probabilistic robustness",
                     "text": [pr["statement"], pr["guarantee"]],
                     "table": (("pair", "P_safe estimate", "posterior samples"),
                               [(i, f"{p:.3f}", n) for i, (p, n) in enumerate(zip(pr["per_pair_p_safe"], pr["posterior_samples"]))])})  # fmt: skip
    secs.append({"title": "Not measured for registration",
                 "text": [f"SKIPPED {k}: {v}" for k, v in card["not_measured"].items()]})  # fmt: skip
    secs.append({"title": "Run time", "text": [", ".join(f"{k} {v:.1f} s" for k, v in card.get("timings_s", {}).items())]})
    return {"title": f"Robustness card: {task['model']} (registration)", "headline": head, "sections": secs,
            "subtitle": "Every figure with its 95 % interval and the number of pairs it rests on. Generated by medrobust card."}  # fmt: skip
