"""From ``card.json`` contents to the page :func:`medrobust.card.render.render_html` draws.

Every sentence that qualifies a figure is written here once: the masking check, the upper-bound
wording of the probabilistic estimate, a skipped measure and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medrobust.card.render import eps_label, fmt_interval, figure_png, reliability_figure, robustness_figure, sensitivity_figure

__all__ = ["card_page"]


def card_page(card: Mapping[str, Any]) -> dict[str, Any]:
    """The page dict (title, headline, sections with figures as PNG bytes) of a card."""
    task, prov, clean = card["task"], card["provenance"], card["clean"]
    head: dict[str, str] = {
        "clean accuracy [95% CI]": fmt_interval(clean["accuracy"]),
        "clean ROC AUC [95% CI]": fmt_interval(clean["auc"]),
        "ECE [95% CI]": fmt_interval(clean["ece"]),
    }
    adv = card.get("adversarial")
    if adv:
        for r in adv["rows"]:
            head[f"worst-case robust accuracy, eps {eps_label(r['eps'])}"] = fmt_interval(r["worst_case"])
        head["gradient-masking check"] = adv["masking_check"].split(":")[0]
    aa = card.get("autoattack") or {}
    if aa.get("skipped"):
        head["AutoAttack"] = "skipped: " + aa["reason"]
    elif aa:
        for r in aa["rows"]:
            head[f"AutoAttack ({aa['version']}) accuracy, eps {eps_label(r['eps'])}"] = fmt_interval(r["accuracy"])
    pr = card.get("probabilistic")
    if pr:
        head[f"P_safe at eps {eps_label(pr['input_eps'])} (upper bound on robustness)"] = f"{pr['mean_p_safe']:.3f} (mean of {pr['n_cases']})"
    if card.get("intrinsic"):
        head["intrinsic robustness score (larger = less robust)"] = fmt_interval(card["intrinsic"]["score"], 4)
    nm = card.get("nmutant") or {}
    if nm and not nm.get("skipped"):
        head["nMutant detection rate"] = (f"{fmt_interval(nm['detection_rate'])} at false-positive rate "
                                          f"{fmt_interval(nm['false_positive_rate'])}")  # fmt: skip

    secs: list[dict[str, Any]] = []
    secs.append({"title": "Task, data and model provenance", "table": (("item", "value"), [
        ("task", task.get("task") or "classification"), ("model", f"{task['model']} ({task['source']})"),
        ("input shape", str(task["input_shape"])), ("intended use", task.get("intended_use") or "not stated"),
        ("model SHA-256", prov["model_sha256"]), ("data SHA-256 (files evaluated)", prov["data_sha256"]),
        ("labels SHA-256", prov["labels_sha256"] or "none"),
        ("cases", f"{clean['n']} labelled ({prov['unlabelled']} unlabelled, {len(prov['skipped'])} files skipped)"),
        ("seed", prov["seed"]), ("device", prov["device"]),
        ("versions", ", ".join(f"{k} {v}" for k, v in prov["versions"].items())),
        ("budget", ", ".join(f"{k}={v}" for k, v in prov["budget"].items())),
    ])})  # fmt: skip
    if card.get("budget_notes"):
        secs.append({"title": "Budget and precision", "text": list(card["budget_notes"])})
    secs.append({"title": "Clean performance and calibration",
                 "text": [f"Accuracy {fmt_interval(clean['accuracy'])} (exact Clopper-Pearson interval); ROC AUC "
                          f"{fmt_interval(clean['auc'])} and top-label ECE ({clean['ece']['num_bins']} bins) "
                          f"{fmt_interval(clean['ece'])} (percentile case bootstrap)."],
                 "figure": figure_png(reliability_figure(clean["reliability"])), "caption": "reliability diagram"})  # fmt: skip
    sens = card.get("sensitivity")
    if sens:
        rows = [(fam, f"{r['severity']:g}", fmt_interval(_entry(r, "accuracy")), fmt_interval(_entry(r, "flip_rate")),
                 fmt_interval(_entry(r, "auc"))) for fam, rr in sens["families"].items() for r in rr]  # fmt: skip
        secs.append({"title": "Natural perturbation sensitivity",
                     "text": [f"medrobust sensitivity sweep over {sens['n_cases']} cases (full report: {sens['report']}). "
                              "Bands and brackets: 95 % intervals (Clopper-Pearson for accuracy and flip rate, "
                              "case bootstrap for AUC)."] + [f"FLAG: {m}" for m in sens.get("findings", [])],
                     "figure": figure_png(sensitivity_figure(sens["families"])), "caption": "sensitivity per family",
                     "table": (("family", "severity", "accuracy", "flip rate", "AUC"), rows)})  # fmt: skip
    if adv:
        names = list(adv["rows"][0]["attacks"]) if adv["rows"] else []
        rows = [(eps_label(r["eps"]), fmt_interval(r["clean"]), *[fmt_interval(r["attacks"][a]) for a in names],
                 fmt_interval(r["worst_case"]), "FLAGGED" if r["gradient_masking"] else "ok") for r in adv["rows"]]  # fmt: skip
        text = [("FLAG: gradient-masking check " if adv["gradient_masking"] else "Gradient-masking check ") + adv["masking_check"] + "."]
        text += [f"FLAG: eps {eps_label(r['eps'])}: {why}" for r in adv["rows"] for why in r["reasons"]]
        aa_rows = []
        if aa.get("skipped"):
            text.append(f"SKIPPED: AutoAttack: {aa['reason']}.")
        elif aa:
            text.append(f"AutoAttack ({aa['version']}: {', '.join(aa['attacks'])}, {aa['iterations']} iterations) "
                        "from the pyautoattack package.")  # fmt: skip
            aa_rows = [(eps_label(r["eps"]), fmt_interval(r["accuracy"])) for r in aa["rows"]]
        secs.append({"title": "Adversarial robustness (L-inf, [0, 1] input range)", "text": text,
                     "figure": figure_png(robustness_figure(adv, aa)), "caption": "robust accuracy vs eps",
                     "table": (("eps", "clean", *names, "worst case", "masking check"), rows),
                     "notes": [f"A case counts as robust only when classified correctly clean and under the attack; "
                               f"{adv['rows'][0]['n'] if adv['rows'] else 0} cases attacked."]})  # fmt: skip
        if aa_rows:
            secs.append({"title": "AutoAttack", "table": (("eps", "robust accuracy"), aa_rows)})
    if pr:
        secs.append({"title": "Statistical guarantee: (eps, delta) probabilistic robustness",
                     "text": [pr["statement"], pr["guarantee"]],
                     "table": (("case", "P_safe estimate", "posterior samples"),
                               [(i, f"{p:.3f}", n) for i, (p, n) in enumerate(zip(pr["per_case_p_safe"], pr["posterior_samples"]))])})  # fmt: skip
    ir = card.get("intrinsic")
    if ir:
        secs.append({"title": "Intrinsic robustness",
                     "text": [f"Mean max-KL divergence of the output within eps {eps_label(ir['eps'])} ({ir['steps']} PGD steps): "
                              f"{fmt_interval(ir['score'], 4)}; {ir['note']}."]})  # fmt: skip
    if nm:
        if nm.get("skipped"):
            secs.append({"title": "nMutant adversarial-input detection", "text": [f"SKIPPED: {nm['reason']}."]})
        else:
            secs.append({"title": "nMutant adversarial-input detection",
                         "text": [f"Detection rate {fmt_interval(nm['detection_rate'])} of {nm['attack']} examples that "
                                  f"changed the label, at a false-positive rate {fmt_interval(nm['false_positive_rate'])} "
                                  f"measured on held-out clean cases (SPRT alpha = beta = {nm['sprt_alpha']:g}, "
                                  f"'{nm['operator']}' mutants, gamma {nm['gamma']:g}, at most {nm['max_mutants']} mutants, "
                                  f"kappa {nm['kappa']:.3g})."]})  # fmt: skip
    secs.append({"title": "Run time", "text": [", ".join(f"{k} {v:.1f} s" for k, v in card.get("timings_s", {}).items())]})
    return {"title": f"Robustness card: {task['model']}",
            "subtitle": "Every figure with its 95 % interval and the number of cases it rests on. Generated by medrobust card.",
            "headline": head, "sections": secs}  # fmt: skip


def _entry(row: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {"value": row.get(name), "lo": row.get(f"{name}_lo"), "hi": row.get(f"{name}_hi")}
