"""``make_card``: measure a classifier, segmentation model or registration bundle on a dataset and write
``card.html`` + ``card.json``.

The card assembles the library's measures (see :mod:`.sections`) on the user's data and states,
next to every figure, how many cases it rests on, its 95 % interval and the budget it was
measured with. Budgets (:class:`CardBudget`) default to minutes on a CPU for the shipped bundles;
raise them for a publication-grade card. The natural-perturbation part is a
``medrobust sensitivity`` run (:func:`medrobust.sensitivity.run_sensitivity`) in
``out/sensitivity``, so it resumes like one; the per-case measures run as units
(:mod:`medrobust.card.units`): stored as they finish, resumed, and sharded over the ranks of a
torchrun job (rank 0 writes the card, equal to a one-process card). Segmentation models get the
Dice rows of :mod:`.segmentation`, registration bundles the TRE rows of :mod:`.registration`.

Example:
    >>> make_card("bundles/lesion_classification", "data/", "runs/card", labels="data/labels.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from medrobust.card import render, sections
from medrobust.card.budget import CardBudget, budget_statement
from medrobust.card.dataset import CardData, load_card_data
from medrobust.card.units import run_units, section_parts, section_units, unit_budget, unit_versions
from medrobust.distributed import device_for_rank, dist_context

__all__ = ["CardBudget", "CardResult", "make_card", "data_fingerprint", "versions", "headline"]

logger = logging.getLogger(__name__)

_PACKAGES = ("medrobust", "torch", "monai", "numpy", "scipy", "matplotlib", "pandas", "torchio", "pyautoattack", "mlflow")


@dataclass
class CardResult:
    """Paths and contents of a written card."""

    out: Path
    html: Path
    json: Path
    card: dict = field(default_factory=dict)
    metadata: Path | None = None
    #: False on the ranks > 0 of a torchrun job (rank 0 writes the card)
    written: bool = True


def versions() -> dict[str, str]:
    """Installed versions of the packages the card's numbers depend on (``"not installed"`` when absent)."""
    out = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def data_fingerprint(root: str | Path, files: Sequence[str]) -> str:
    """SHA-256 over ``(relative path, file SHA-256)`` of the evaluated files, in order."""
    from medrobust.models import file_sha256

    h = hashlib.sha256()
    for rel in files:
        h.update(rel.encode())
        h.update(file_sha256(Path(root) / rel).encode())
    return h.hexdigest()


def _sensitivity(loaded: Any, data: Path, labels: Path | None, out: Path, budget: CardBudget, seed: int,
                 cases: Sequence[str], progress: bool, device: Any) -> dict[str, Any] | None:  # fmt: skip
    from medrobust.distributed import run_sensitivity_distributed

    res = run_sensitivity_distributed(loaded, data, out, labels=labels, families=budget.families,
                                      severities=budget.severities, seed=seed, progress=progress, examples=False,
                                      cases=cases, roi_masks=None, device=device)  # fmt: skip
    if dist_context().rank != 0:
        return None
    summ = res.summary[res.summary["subgroup"] == "all"] if "subgroup" in res.summary else res.summary
    keep = ["severity", "n", "accuracy", "accuracy_lo", "accuracy_hi", "flip_rate", "flip_rate_lo", "flip_rate_hi",
            "auc", "auc_lo", "auc_hi", "mean_abs_delta_p"]  # fmt: skip
    fams: dict[str, list[dict]] = {}
    for fam, grp in summ.groupby("family", sort=False):
        rows = []
        for _, r in grp.sort_values("severity").iterrows():
            rows.append({k: (None if k not in r or r[k] != r[k] else (float(r[k]) if k != "n" else int(r[k]))) for k in keep})
        fams[str(fam)] = rows
    return {"folder": "sensitivity", "report": "sensitivity/report.md" if res.report else None,
            "n_cases": int(res.predictions["case_id"].nunique()), "families": fams,
            "findings": [getattr(f, "message", str(f)) for f in res.findings]}  # fmt: skip


def _classification_units(net: Any, case_ids: Sequence[str], x: torch.Tensor, y: torch.Tensor, budget: CardBudget,
                          seed: int) -> dict[str, Any]:  # fmt: skip
    """The card's per-case work as units (:mod:`medrobust.card.units`): blocks of ``budget.block_cases`` cases."""
    index = {c: i for i, c in enumerate(case_ids)}
    na = min(budget.attack_cases, len(case_ids))
    attacked, size = case_ids[:na], budget.block_cases
    eps_mid = float(sorted(budget.eps)[len(budget.eps) // 2])

    def units(section: str, ids: Sequence[str], fn: Any) -> dict[str, Any]:
        return section_units(section, ids, size, fn, seed=seed, index=index)

    u = units("adversarial", attacked, lambda i, _, s: sections.adversarial_counts(
        net, x[i], y[i], eps=budget.eps, steps=budget.pgd_steps, restarts=budget.restarts, queries=budget.square_queries,
        seed=s))  # fmt: skip
    if budget.autoattack != "off":
        u |= units("autoattack", attacked, lambda i, _, s: sections.autoattack_counts(
            net, x[i], y[i], eps=budget.eps, version=budget.autoattack, iterations=budget.autoattack_iterations, seed=s))
    u |= units("probabilistic", case_ids[:budget.prob_cases], lambda i, _, s: sections.probabilistic_cases(
        net, x[i], input_eps=eps_mid, eps=budget.prob_eps, delta=budget.prob_delta,
        attack_steps=budget.prob_attack_steps, seed=s))  # fmt: skip
    u |= units("intrinsic", attacked, lambda i, _, s: sections.intrinsic_cases(
        net, x[i], eps=eps_mid, steps=budget.intrinsic_steps, seed=s))
    fit_idx, test_idx = _nmutant_split(net, x, y, budget)
    if fit_idx.numel() >= 2 and test_idx.numel() >= 1:
        fitted: list[Any] = []  # the detector is fitted once per process, on the same cases with the same seed

        def detect(i: list[int], _: Any, s: int) -> dict[str, Any]:
            if not fitted:
                fitted.append(sections.nmutant_fit(net, x[fit_idx], y[fit_idx], max_mutants=budget.nmutant_mutants,
                                                   seed=seed))  # fmt: skip
            if isinstance(fitted[0], str):
                return {"skipped": True, "reason": fitted[0]}
            det, kappa = fitted[0]
            return {**sections.nmutant_counts(net, det, x[i], y[i], eps=eps_mid, attack_steps=int(budget.pgd_steps[0]),
                                              seed=s), "kappa": kappa}  # fmt: skip

        u |= units("nmutant", [case_ids[int(t)] for t in test_idx], detect)
    return u


def _nmutant_split(net: Any, x: torch.Tensor, y: torch.Tensor, budget: CardBudget) -> tuple[torch.Tensor, torch.Tensor]:
    nn_ = min(budget.nmutant_cases, x.shape[0])
    return sections.nmutant_split(net, x[:nn_], y[:nn_])


def _nmutant_section(net: Any, x: torch.Tensor, y: torch.Tensor, parts: Sequence[dict[str, Any]], budget: CardBudget,
                     eps: float) -> dict[str, Any]:  # fmt: skip
    if not parts:
        fit_idx, test_idx = _nmutant_split(net, x, y, budget)
        return {"skipped": True, "reason": f"only {fit_idx.numel() + test_idx.numel()} correctly classified cases (need >= 3)"}
    return sections.nmutant_reduce(parts, kappa=parts[0].get("kappa"), eps=eps, attack_steps=int(budget.pgd_steps[0]),
                                   max_mutants=budget.nmutant_mutants)  # fmt: skip


def headline(card: Mapping[str, Any]) -> dict[str, Any]:
    """The few figures a zoo entry carries (the bundle metadata's ``robustness`` block)."""
    clean = card["clean"]
    out: dict[str, Any] = {
        "n_cases": clean["n"],
        "clean_accuracy": clean["accuracy"]["value"], "clean_accuracy_ci95": [clean["accuracy"]["lo"], clean["accuracy"]["hi"]],
        "clean_auc": clean["auc"]["value"], "ece": clean["ece"]["value"],
    }  # fmt: skip
    adv = card.get("adversarial")
    if adv:
        out["robust_accuracy_worst_case"] = {f"eps_{r['eps'] * 255:g}_255": r["worst_case"]["value"] for r in adv["rows"]}
        out["gradient_masking_flagged"] = adv["gradient_masking"]
    aa = card.get("autoattack")
    if aa and not aa.get("skipped"):
        out["autoattack_accuracy"] = {f"eps_{r['eps'] * 255:g}_255": r["accuracy"]["value"] for r in aa["rows"]}
        out["autoattack_version"] = aa["version"]
    pr = card.get("probabilistic")
    if pr:
        out["p_safe_upper_bound_mean"] = pr["mean_p_safe"]
    if card.get("intrinsic"):
        out["intrinsic_robustness"] = card["intrinsic"]["score"]["value"]
    nm = card.get("nmutant")
    if nm and not nm.get("skipped"):
        out["nmutant_detection_rate"] = nm["detection_rate"]["value"]
        out["nmutant_false_positive_rate"] = nm["false_positive_rate"]["value"]
    return out


def _segmentation_card(loaded: Any, data_root: Path, masks: Path, out: Path, budget: CardBudget, seed: int,
                       cases: Sequence[str] | None, t0: float, progress: bool, dev: torch.device) -> CardResult:  # fmt: skip
    """Dice rows of :mod:`medrobust.card.segmentation` on the images of ``data_root`` that have a mask.

    The sweep and the attacks run as units (:mod:`medrobust.card.units`): stored as they finish,
    resumed, sharded over torchrun ranks.
    """
    from medrobust.card import segmentation as seg
    from medrobust.data import DEFAULT_EXCLUDE, load_image, scan_dataset
    from medrobust.data.preprocess import match_spatial_dims, normalise_image, to_model_input
    exclude = tuple(p.name for p in (out.resolve(), masks.resolve()) if data_root in p.parents)
    items, errors = scan_dataset(data_root, exclude=(*DEFAULT_EXCLUDE, *exclude))
    items = sorted((it for it in items if cases is None or it.case_id in set(cases)), key=lambda i: i.case_id)
    y, ids = seg.load_masks(masks, [it.case_id for it in items], loaded.spatial_shape)
    keep = {c: i for i, c in enumerate(ids)}
    items = [it for it in items if it.case_id in keep][: budget.max_cases]
    xs = [to_model_input(match_spatial_dims(normalise_image(load_image(it).array), len(loaded.spatial_shape))[None],
                         loaded.spatial_shape, loaded.in_channels)[0] for it in items]  # fmt: skip
    y = y[[keep[it.case_id] for it in items]]
    x, y = torch.stack(xs).float().to(dev), y.to(dev)
    case_ids = [it.case_id for it in items]
    net, timings = loaded.network, {}
    files = [str(it.path.resolve().relative_to(data_root)) for it in items]
    na = min(budget.attack_cases, x.shape[0])
    mask_files = sorted(p for p in masks.rglob("*") if p.is_file() and p.name.split(".")[0] in set(case_ids))
    card: dict[str, Any] = {
        "card_version": 1,
        "task": {"type": "segmentation", "model": loaded.name, "source": loaded.source,
                 "input_shape": [loaded.in_channels, *loaded.spatial_shape], "detected_by": "output (B, K, *spatial) "
                 "with the input's spatial size, or --task segmentation"},
        "provenance": {"model_sha256": loaded.sha256, "data_sha256": data_fingerprint(data_root, files),
                       "masks_sha256": data_fingerprint(masks, [str(p.relative_to(masks)) for p in mask_files]),
                       "masks_folder": masks.name, "n_files": len(files),
                       "skipped": [[str(e.path.name), e.reason] for e in errors], "seed": int(seed),
                       "budget": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(budget).items()},
                       "versions": versions(), "device": str(dev)},
        "budget_notes": [f"Attacked cases: {na} of {x.shape[0]} with a mask; PGD steps {list(budget.pgd_steps)} "
                         f"(first: one start, others x {budget.restarts} restarts); {budget.n_boot} bootstrap resamples; "
                         f"units of {budget.block_cases} cases."],
        "not_measured": dict(seg.SKIPPED_FOR_SEGMENTATION),
    }  # fmt: skip
    identity = {"card_version": 1, "task": "segmentation", "model_sha256": loaded.sha256,
                "data_sha256": card["provenance"]["data_sha256"], "masks_sha256": card["provenance"]["masks_sha256"],
                "cases": case_ids, "budget": unit_budget(card["provenance"]["budget"]), "seed": int(seed),
                "device": dev.type,
                "versions": unit_versions(card["provenance"]["versions"])}  # fmt: skip
    index = {c: i for i, c in enumerate(case_ids)}
    units = section_units("seg_adversarial", case_ids[:na], budget.block_cases, lambda i, _, s: seg.seg_adversarial_dice(
        net, x[i], y[i], eps=budget.eps, steps=budget.pgd_steps, restarts=budget.restarts, seed=s), seed=seed, index=index)
    if budget.sensitivity:  # per-case seeds from the case ids (as the sweep): the block seed is not used
        units |= section_units("seg_sensitivity", case_ids, budget.block_cases, lambda i, ids, _: seg.seg_sensitivity_dice(
            net, x[i], y[i], families=budget.families, severities=budget.severities, seed=seed, case_ids=ids),
            seed=seed, index=index)  # fmt: skip
    results = run_units(units, out, identity, progress=progress)
    if results is None:  # another rank of a torchrun job
        return CardResult(out, out / "card.html", out / "card.json", {}, None, written=False)
    t = time.perf_counter()
    card["clean"] = seg.seg_clean_section(net, x, y, n_boot=budget.n_boot, seed=seed)
    timings["clean"] = round(time.perf_counter() - t, 3)
    if budget.sensitivity:
        parts, timings["sensitivity"] = section_parts(results, "seg_sensitivity")
        card["sensitivity"] = seg.seg_sensitivity_reduce(parts, n_boot=budget.n_boot, seed=seed)
    parts, timings["adversarial"] = section_parts(results, "seg_adversarial")
    card["adversarial"] = seg.seg_adversarial_reduce(parts, n_boot=budget.n_boot, seed=seed)
    card["headline"] = {"task": "segmentation", "n_cases": card["clean"]["n"], "clean_dice": card["clean"]["dice"]["value"],
                        "clean_dice_ci95": [card["clean"]["dice"]["lo"], card["clean"]["dice"]["hi"]],
                        "robust_dice_worst_case": {f"eps_{r['eps'] * 255:g}_255": r["worst_case"]["value"]
                                                   for r in card["adversarial"]["rows"]}}  # fmt: skip
    card["timings_s"] = {**timings, "total": round(time.perf_counter() - t0, 3)}
    json_path = out / "card.json"
    json_path.write_text(json.dumps(card, indent=2, allow_nan=False))
    html_path = out / "card.html"
    html_path.write_text(render.render_html(seg.segmentation_page(card)), encoding="utf-8")
    return CardResult(out, html_path, json_path, card, None)


def make_card(
    model: str | Path | torch.nn.Module,
    data: str | Path,
    out: str | Path,
    *,
    labels: str | Path | None = None,
    budget: CardBudget | None = None,
    seed: int = 0,
    device: str = "cpu",
    input_size: Sequence[int] | None = None,
    network_config: str | Path | None = None,
    write_metadata: bool = False,
    meta_schema: str | Path | None = None,
    progress: bool = True,
    cases: Sequence[str] | None = None,
    task: str = "auto",
    masks: str | Path | None = None,
) -> CardResult:
    """Measure ``model`` on ``data`` and write ``out/card.html`` and ``out/card.json``.

    Args:
        model: bundle folder, TorchScript file, state dict (with ``network_config``) or ``nn.Module``
            (with ``input_size``): anything :func:`medrobust.models.load_model` takes.
        data: dataset folder; labels: labels CSV (needed: the card is about labelled performance).
        out: output folder (``card.html``, ``card.json``, ``sensitivity/``).
        budget: :class:`CardBudget` (default: CPU minutes).
        seed: base seed of every random choice (attacks, bootstrap, posterior draws, mutants).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``.
        write_metadata: when ``model`` is a bundle, write the headline into its
            ``configs/metadata.json`` as a ``robustness`` block (validated with ``meta_schema``
            when given).
        cases: only these case ids; ``None``: all.
        task: ``"classification"``, ``"segmentation"``, ``"registration"`` or ``"auto"``
            (registration for a bundle whose inference config defines ``moving_keys``,
            :func:`medrobust.card.registration.is_registration_bundle`; ``data`` is then a paired
            folder; segmentation when the model's output is ``(B, K, *spatial)`` with the input's
            spatial size, :func:`medrobust.card.segmentation.is_segmentation_output`).
        masks: segmentation only: folder of reference masks named by case id.

    Returns:
        :class:`CardResult` (``written=False`` on the ranks > 0 of a torchrun job).

    Raises:
        FileNotFoundError, ValueError: missing or unusable model, data or labels.
    """
    from medrobust.models import file_sha256, load_model

    budget = budget or CardBudget()
    t0 = time.perf_counter()
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    ctx = dist_context()
    device = device_for_rank(device, ctx)  # under torchrun: cuda:<local rank> when CUDA is there
    dev = torch.device("cuda" if str(device) == "auto" and torch.cuda.is_available() else
                       ("cpu" if str(device) == "auto" else device))  # fmt: skip
    if task not in ("auto", "classification", "segmentation", "registration"):
        raise ValueError(f"task: expected 'auto', 'classification', 'segmentation' or 'registration', got {task!r}")
    from medrobust.card.registration import is_registration_bundle

    if task == "registration" or (task == "auto" and is_registration_bundle(model)):
        if not is_registration_bundle(model):
            raise ValueError(f"task registration: {model} is not a registration bundle (configs/inference.json with moving_keys).")
        from medrobust.card.registration import registration_card

        res = registration_card(Path(model), Path(data).expanduser().resolve(), out, budget, seed=seed, cases=cases,
                                t0=t0, progress=progress and ctx.rank == 0, device=dev)  # fmt: skip
        return _write_metadata(res, model, "bundle", meta_schema) if write_metadata and res.written else res
    loaded = load_model(model, network_config=network_config, input_size=input_size, device=dev)
    net = loaded.network
    if write_metadata and loaded.source != "bundle":  # say so before minutes of work
        raise ValueError(f"write_metadata: the model is a {loaded.source}, not a bundle; nothing to write into.")
    data_root = Path(data).expanduser().resolve()
    if task == "auto":
        from medrobust.card.segmentation import is_segmentation_output

        task = "segmentation" if is_segmentation_output(net, (loaded.in_channels, *loaded.spatial_shape)) else "classification"
    if task == "segmentation":
        if masks is None:
            raise ValueError("masks: a segmentation card needs a folder of reference masks named by case id (--masks)")
        res = _segmentation_card(loaded, data_root, Path(masks), out, budget, seed, cases, t0, progress and ctx.rank == 0, dev)
        return _write_metadata(res, model, loaded.source, meta_schema) if write_metadata and res.written else res
    exclude = (out.resolve().relative_to(data_root).parts[0],) if data_root in out.resolve().parents else ()
    ds: CardData = load_card_data(data_root, spatial_shape=loaded.spatial_shape, in_channels=loaded.in_channels,
                                  labels=labels, exclude=exclude, cases=cases, max_cases=budget.max_cases)  # fmt: skip
    x, y = ds.x.to(dev), ds.y.to(dev)
    logger.info("card: %d labelled cases (%d unlabelled, %d skipped)", len(ds.case_ids), len(ds.unlabelled), len(ds.skipped))
    timings: dict[str, float] = {}

    def timed(name: str, fn, *a, **k):
        t = time.perf_counter()
        v = fn(*a, **k)
        timings[name] = round(time.perf_counter() - t, 3)
        logger.info("card: %s done in %.1f s", name, timings[name])
        return v

    eps_mid = float(sorted(budget.eps)[len(budget.eps) // 2])
    na = min(budget.attack_cases, x.shape[0])
    card: dict[str, Any] = {
        "card_version": 1,
        "task": {"type": "classification", "model": loaded.name, "source": loaded.source,
                 "input_shape": [loaded.in_channels, *loaded.spatial_shape],
                 "task": (loaded.metadata or {}).get("task"), "intended_use": (loaded.metadata or {}).get("intended_use")},
        "provenance": {
            "model_sha256": loaded.sha256, "data_sha256": data_fingerprint(data_root, ds.files),
            "labels_sha256": file_sha256(Path(labels)) if labels is not None else None,
            "n_files": len(ds.files), "unlabelled": len(ds.unlabelled), "skipped": [list(s) for s in ds.skipped],
            "seed": int(seed), "budget": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(budget).items()},
            "versions": versions(), "device": str(dev),
        },
        "budget_notes": budget_statement(budget, n_labelled=len(ds.case_ids)),
    }  # fmt: skip
    identity = {"card_version": 1, "task": "classification", "model_sha256": loaded.sha256,
                "data_sha256": card["provenance"]["data_sha256"], "labels_sha256": card["provenance"]["labels_sha256"],
                "cases": ds.case_ids, "seed": int(seed), "device": dev.type,  # the sweep keeps its own store
                "versions": unit_versions(card["provenance"]["versions"]),
                "budget": unit_budget(card["provenance"]["budget"], drop=("sensitivity", "families", "severities"))}  # fmt: skip
    if budget.sensitivity:  # under torchrun: each rank sweeps a shard of the cases, rank 0 merges (medrobust.distributed)
        card["sensitivity"] = timed("sensitivity", _sensitivity, loaded, data_root, Path(labels) if labels else None,
                                    out / "sensitivity", budget, seed, ds.case_ids, progress and ctx.rank == 0, dev)  # fmt: skip
    results = run_units(_classification_units(net, ds.case_ids, x, y, budget, seed), out, identity,
                        progress=progress and ctx.rank == 0)  # fmt: skip
    if results is None:  # another rank of a torchrun job: its share is stored, rank 0 writes the card
        return CardResult(out, out / "card.html", out / "card.json", {}, None, written=False)
    card["clean"] = timed("clean", sections.clean_section, net, x, y, n_boot=budget.n_boot, seed=seed)
    parts, timings["adversarial"] = section_parts(results, "adversarial")
    card["adversarial"] = sections.adversarial_reduce(parts, steps=budget.pgd_steps, restarts=budget.restarts,
                                                      queries=budget.square_queries)  # fmt: skip
    if budget.autoattack != "off":
        parts, timings["autoattack"] = section_parts(results, "autoattack")
        card["autoattack"] = sections.autoattack_reduce(parts)
    else:
        card["autoattack"] = {"skipped": True, "reason": "turned off (--autoattack off)", "rows": []}
    parts, timings["probabilistic"] = section_parts(results, "probabilistic")
    card["probabilistic"] = sections.probabilistic_reduce(net, parts, input_eps=eps_mid, eps=budget.prob_eps,
                                                          delta=budget.prob_delta)  # fmt: skip
    parts, timings["intrinsic"] = section_parts(results, "intrinsic")
    card["intrinsic"] = sections.intrinsic_reduce([v for p in parts for v in p], eps=eps_mid, steps=budget.intrinsic_steps,
                                                  n_boot=budget.n_boot, seed=seed)  # fmt: skip
    parts, timings["nmutant"] = section_parts(results, "nmutant")
    card["nmutant"] = _nmutant_section(net, x, y, parts, budget, eps_mid)
    card["headline"] = headline(card)
    card["timings_s"] = {**timings, "total": round(time.perf_counter() - t0, 3)}
    json_path = out / "card.json"
    json_path.write_text(json.dumps(card, indent=2, allow_nan=False))
    html_path = out / "card.html"
    from medrobust.card.page import card_page

    html_path.write_text(render.render_html(card_page(card)), encoding="utf-8")
    res = CardResult(out, html_path, json_path, card, None)
    if write_metadata:
        res = _write_metadata(res, model, loaded.source, meta_schema)
    logger.info("card: %s (%.1f s)", html_path, card["timings_s"]["total"])
    return res


def _write_metadata(res: CardResult, model: Any, source: str, schema: str | Path | None) -> CardResult:
    """Write the card's headline into the bundle's ``configs/metadata.json`` (:mod:`medrobust.card.metadata`)."""
    from medrobust.card.metadata import write_robustness_metadata

    if source != "bundle":
        raise ValueError(f"write_metadata: the model is a {source}, not a bundle; nothing to write into.")
    res.metadata = write_robustness_metadata(Path(model), res.card, schema=schema)
    return res
