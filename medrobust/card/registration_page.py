"""The page of a registration card (for :func:`medrobust.card.render.render_html`): headline, TRE figures, tables.

Example:
    >>> _fmt({"tre_median_mm": 7.3, "tre_median_ci": [6.3, 8.5], "n_pairs": 56})  # how every TRE figure is written
    '7.30 mm [6.30, 8.50] (n=56)'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from medrobust.card.render import band_figure, eps_label, figure_png

__all__ = ["registration_page"]


def _tre_figure(series: Mapping[str, Sequence[tuple[float, Mapping[str, Any]]]], *, xlabel: str) -> Figure:
    """TRE median over pairs (95 % bootstrap band) per series of summaries."""
    as_entry = {name: [(x, {"value": e["tre_median_mm"], "lo": e["tre_median_ci"][0], "hi": e["tre_median_ci"][1]})
                       for x, e in pts] for name, pts in series.items()}  # fmt: skip
    return band_figure(as_entry, xlabel=xlabel, ylabel="TRE median over pairs (mm)")


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
        head[f"TRE median under PGD, eps {eps_label(r['eps'])}"] = _fmt(r["attacks"]["pgd"])
    head["gradient-masking check"] = adv["masking_check"].split(":")[0]
    if pr["n_pairs"]:
        head[f"P_safe ({pr['event']}, eps {eps_label(pr['input_eps'])}; upper bound on robustness)"] = f"{pr['mean_p_safe']:.3f} (mean of {pr['n_pairs']})"
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
    tbl = [(eps_label(r["eps"]), *[(_fmt(r["attacks"][a]) if a in r["attacks"] else "-") for a in ("pgd", "noise", "square")],
            "FLAGGED" if r["gradient_masking"] else "ok") for r in adv["rows"]]  # fmt: skip
    text = [f"PGD-{adv['pgd']['steps']} (x {adv['pgd']['restarts']}) on the {adv['target']}, objective {adv['objective']}; "
            f"{adv['n_pairs']} pairs (clean TRE median on these pairs {_fmt(adv['clean'])}). Checks: {adv['checks']['noise']}; "
            f"{adv['checks']['square']}.",
            ("FLAG: gradient-masking check " if adv["gradient_masking"] else "Gradient-masking check ") + adv["masking_check"] + "."]
    text += [f"FLAG: eps {eps_label(r['eps'])}: {why}" for r in adv["rows"] for why in r["reasons"]]
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
