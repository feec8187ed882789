"""The batched, resumable perturbation-sensitivity sweep behind ``medrobust sensitivity``.

For every image of a dataset, every family and every severity: perturb the image at its
native resolution in the ``[0, 1]`` perturbation space (see
:mod:`medrobust.data.preprocess`), resize to the model input, and record p(positive)
and the predicted class. Work is batched: images of the same native shape are grouped (at
most ``batch_size`` and ``max_buffer_pixels`` at a time), each family/severity is applied to
chunks of that group (at most ``max_chunk_pixels`` native pixels per call, so full-field
~2500 x 3300 mammograms stay within memory), and the resized results of all severities go
through the network ``batch_size`` at a time. Each sample's randomness comes from
``sample_seed(case_id, family, severity, base_seed=seed)``, so results do not depend on
batching, ordering or interruptions: a run killed at any point and started again with the
same arguments computes only what is missing (:class:`~medrobust.sensitivity.store.ResultsStore`).

Example:
    >>> from medrobust.sensitivity import run_sensitivity  # doctest: +SKIP
    >>> res = run_sensitivity("bundles/mammogram_perturbation_sensitivity", "sample_data/generated/mammo",
    ...                       "runs/demo", labels="sample_data/generated/mammo/labels.csv")  # doctest: +SKIP
    >>> res.summary.head()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import platform
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from medrobust.data import DEFAULT_EXCLUDE, UnusableImageError, load_image, read_labels, scan_dataset
from medrobust.data.labels import LabelMatch, match_labels
from medrobust.models import LoadedModel, file_sha256, load_model
from medrobust.perturbations.registry import get_family
from medrobust.sensitivity.batching import BatchedSweep, Case, perturb_for_model
from medrobust.sensitivity.cnr import RoiSampler, find_mask, load_roi_mask
from medrobust.data.preprocess import match_spatial_dims
from medrobust.sensitivity.store import ResultsStore, RunLock

if TYPE_CHECKING:
    from medrobust.sensitivity.report import ReportOptions

__all__ = [
    "DEFAULT_FAMILIES",
    "ENGINE_VERSION",
    "SensitivityResult",
    "StrictModeError",
    "resolve_plan",
    "run_sensitivity",
    "perturb_for_model",
]

logger = logging.getLogger(__name__)

#: families swept when none are named (the four of METHODS.md B2 plus blur)
DEFAULT_FAMILIES = ("gaussian_noise", "fourier_noise", "fourier_lowpass", "fourier_highpass", "gaussian_blur")
#: bump when the engine changes in a way that changes numbers (part of the run identity)
ENGINE_VERSION = 2  # 2: decision margin per prediction, reflect-padded Fourier filters


class StrictModeError(ValueError):
    """``strict=True`` and a label did not match or a file was skipped (the results are still written)."""


@dataclass
class SensitivityResult:
    """What :func:`run_sensitivity` returns.

    Attributes:
        out: the run folder.
        predictions: one row per (case, family, severity).
        summary: per family x severity x subgroup metrics (see :mod:`.summary`).
        errors: skipped files with stage and reason.
        n_computed: predictions computed by this call (0 when everything was already done).
        resumed: whether an earlier run in ``out`` was continued.
        report: path of ``report.md`` (None when ``report=False``).
        labels: matched / unmatched label counts (empty without labels).
        findings: the trust checks stated at the top of the report
            (:class:`~medrobust.sensitivity.diagnostics.Finding`).
    """

    out: Path
    predictions: pd.DataFrame
    summary: pd.DataFrame
    errors: pd.DataFrame
    n_computed: int
    resumed: bool
    report: Path | None = None
    labels: dict = field(default_factory=dict)
    findings: list = field(default_factory=list)


def resolve_plan(
    families: Sequence[str] | str | None = None,
    severities: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
) -> dict[str, tuple[float, ...]]:
    """``{family: severities}`` with severity 0 first (the clean reference) and no duplicates.

    Args:
        families: names (or one comma-separated string); ``None``: :data:`DEFAULT_FAMILIES`.
        severities: ``None`` (each family's defaults), one list for every family, or a
            mapping ``{family: list}`` overriding some of them.

    Raises:
        ValueError: unknown family, negative or non-finite severity, override for a family
            not swept.
    """
    if families is None:
        names = list(DEFAULT_FAMILIES)
    elif isinstance(families, str):
        names = [f.strip() for f in families.split(",") if f.strip()]
    else:
        names = [f.strip() for name in families for f in str(name).split(",") if f.strip()]
    if not names:
        raise ValueError("families: no perturbation family given.")
    names = list(dict.fromkeys(names))
    fams = {n: get_family(n) for n in names}
    plan: dict[str, tuple[float, ...]] = {}
    if isinstance(severities, Mapping):
        unknown = sorted(set(severities) - set(names))
        if unknown:
            raise ValueError(f"severities given for families not swept: {unknown}; swept: {names}.")
    for n, fam in fams.items():
        if severities is None:
            grid = fam.severities
        elif isinstance(severities, Mapping):
            grid = severities.get(n, fam.severities)
        else:
            grid = severities
        values = []
        for s in grid:
            v = float(s)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"severities for {n!r}: expected finite values >= 0, got {s!r}.")
            values.append(v)
        plan[n] = tuple(sorted(set(values) | {0.0}))
    return plan


def _versions() -> dict[str, str]:
    import monai
    import torchio

    import medrobust

    return {
        "python": platform.python_version(),
        "medrobust": getattr(medrobust, "__version__", "unknown"),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "torchio": torchio.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu.")
    return dev


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return Path(path).name


def run_sensitivity(
    model: str | Path | torch.nn.Module | LoadedModel,
    data: str | Path,
    out: str | Path,
    *,
    labels: str | Path | None = None,
    families: Sequence[str] | str | None = None,
    severities: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    batch_size: int = 8,
    seed: int = 0,
    device: str | torch.device = "cpu",
    network_config: str | Path | None = None,
    input_size: Sequence[int] | None = None,
    in_channels: int | None = None,
    positive_class: int = 1,
    activation: str = "auto",
    roi_masks: str | Path | None = "auto",
    ring_width: int = 5,
    overwrite: bool = False,
    progress: bool = True,
    report: bool = True,
    examples: bool = True,
    max_chunk_pixels: int = 1 << 24,
    max_buffer_pixels: int = 1 << 25,
    report_options: ReportOptions | Mapping[str, Any] | None = None,
    strict: bool = False,
    wait: bool = False,
    cases: Collection[str] | None = None,
    output: int | str | None = None,
    preprocessing: Any = None,
) -> SensitivityResult:
    """Run (or resume) a perturbation-sensitivity sweep and write its results to ``out``.

    Args:
        model: bundle directory, TorchScript file, state dict file (with ``network_config``),
            an ``nn.Module`` (with ``input_size``) or a :class:`~medrobust.models.LoadedModel`.
        data: dataset folder (DICOM / NIfTI / PNG / ITK, scanned by :func:`medrobust.data.scan_dataset`).
        out: run folder: ``predictions.csv``, ``errors.csv``, ``manifest.json``, ``summary.csv``,
            ``summary.json``, PNG plots, ``report.md`` (and ``cnr.csv`` with ROI masks).
        labels: optional labels CSV (``case_id``/``file``, ``label``, optional ``subgroup``).
        families: family names (default :data:`DEFAULT_FAMILIES`).
        severities: overrides, see :func:`resolve_plan`.
        batch_size: images per perturbation group and per network call; does not change results.
        seed: base seed of every per-sample generator.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        network_config, input_size, in_channels, positive_class, activation: see
            :func:`medrobust.models.load_model`.
        roi_masks: folder of ROI masks named ``<case_id>[_calc|_roi|_mask].npy/.png/.nii.gz``
            (empty masks: no CNR for that case); adds ROI contrast-to-noise ratios
            (``cnr.csv``) before and after each perturbation. ``"auto"`` (default): ``data/masks``
            when that folder exists; ``None``: off.
        ring_width: background ring width for the CNR, in native pixels.
        overwrite: replace a run with different settings in ``out`` instead of failing.
        progress: show a tqdm progress bar.
        report: write summary, plots and ``report.md`` at the end.
        examples: include the example-perturbation grid in the report.
        max_chunk_pixels: most native pixels (x channels) perturbed in one family call.
        max_buffer_pixels: most native pixels of loaded images held while grouping by shape.
        report_options: what the report illustrates (example case subgroup, cropped families,
            CNR table families): a :class:`~medrobust.sensitivity.report.ReportOptions` or a
            mapping of its fields (a bundle config passes its own); default: no preference.
        strict: raise :class:`StrictModeError` when any label does not match an image (before
            computing) or any file was skipped (after writing the results).
        wait: when another run holds ``out``'s lock, wait for it instead of failing.
        cases: only these case ids (e.g. one shard of a distributed sweep); ``None``: all. Part of
            the run identity.
        output, preprocessing: see :func:`medrobust.models.load_model` (the chosen output of a
            multi-output network; intensity mapping / standardisation overriding the bundle's).

    Returns:
        :class:`SensitivityResult`.

    Raises:
        FileNotFoundError: model, data, labels or ROI folder missing.
        ValueError: bad arguments; no usable image; :class:`~medrobust.sensitivity.store.RunIdentityError`
            when ``out`` holds a run with other settings and not ``overwrite``; :class:`StrictModeError`.
        RuntimeError: :class:`~medrobust.sensitivity.store.RunLockedError` when another run holds
            ``out`` and not ``wait``.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size should be >= 1, got {batch_size}.")
    data_root = Path(data).expanduser().resolve()
    if not data_root.exists():
        raise FileNotFoundError(f"data folder {data_root} does not exist.")
    if Path(out).expanduser().resolve() == data_root:
        raise ValueError(f"out {out} is the data folder; give a separate run folder.")
    labels_path = Path(labels).expanduser().resolve() if labels is not None else None
    if labels_path is not None and not labels_path.is_file():
        raise FileNotFoundError(f"labels CSV {labels_path} not found.")
    if isinstance(roi_masks, str) and roi_masks == "auto":
        auto = data_root / "masks"
        roi_dir = auto if auto.is_dir() else None
        if roi_dir is not None:
            logger.info("using ROI masks in %s for contrast-to-noise ratios", roi_dir)
    else:
        roi_dir = Path(roi_masks).expanduser().resolve() if roi_masks is not None else None
    if roi_dir is not None and not roi_dir.is_dir():
        raise FileNotFoundError(f"ROI mask folder {roi_dir} not found.")
    dev = _resolve_device(device)
    plan = resolve_plan(families, severities)
    loaded = load_model(
        model,
        network_config=network_config,
        input_size=input_size,
        in_channels=in_channels,
        device=dev,
        activation=activation,
        positive_class=positive_class,
        output=output,
        preprocessing=preprocessing,
    )
    for name in plan:
        fam = get_family(name)
        if fam.needs_model and loaded.source == "onnx":
            raise ValueError(f"family {name!r} needs gradients; an ONNX model has none (use a torch model for attacks).")
        if loaded.spatial_dims not in fam.spatial_dims:
            raise ValueError(f"family {name!r} supports {fam.spatial_dims}-D images, the model is {loaded.spatial_dims}-D.")
    labels_table = read_labels(labels_path) if labels_path is not None else None
    items, scan_errors = _scan(data_root, Path(out).expanduser().resolve())
    if cases is not None:
        wanted = {str(c) for c in cases}
        items = [it for it in items if it.case_id in wanted]
    if not items:
        where = f"; {len(scan_errors)} files could not be used (e.g. {scan_errors[0].path.name}: {scan_errors[0].reason})" if scan_errors else ""
        raise ValueError(f"no usable image found under {data_root}{where}.")
    match: LabelMatch | None = None
    label_by_case: dict = {}
    if labels_table is not None:
        match = match_labels(items, labels_table, root=data_root)
        label_by_case = {it.case_id: lab for it, lab in match.pairs}
        counts = match.counts()
        logger.info(
            "labels: %d of %d images matched (%d after dropping an extension or folder); %d images without a label, "
            "%d label rows without an image, %d ambiguous",
            counts["matched"], len(items), counts["matched_loosely"], counts["images_without_labels"],
            counts["labels_without_images"], counts["ambiguous"],
        )
        if strict and match.n_mismatched:
            raise StrictModeError(
                f"--strict: labels do not match the images ({'; '.join(match.warnings[:5])}"
                f"{' ...' if match.n_mismatched > 5 else ''})."
            )

    identity = {
        "engine_version": ENGINE_VERSION,
        "model_sha256": loaded.sha256,
        "model_source": loaded.source,
        "input_shape": [loaded.in_channels, *loaded.spatial_shape],
        "activation": loaded.activation,
        "positive_class": loaded.positive_class,
        "plan": {k: list(v) for k, v in plan.items()},
        "seed": int(seed),
        "data": str(data_root),
        "labels_sha256": file_sha256(labels_path) if labels_path is not None else None,
        "roi_masks": str(roi_dir) if roi_dir is not None else None,
        "ring_width": int(ring_width) if roi_dir is not None else None,
        "normalisation": loaded.preprocessing.describe() + "; perturb at native resolution",
    }
    if cases is not None:
        identity["cases"] = sorted({str(c) for c in cases})
    provenance = {
        "model": {"name": loaded.name, "source": loaded.source, "sha256": loaded.sha256},
        "settings": {"batch_size": int(batch_size), "device": str(dev)},
        "versions": _versions(),
        "families": {n: get_family(n).description for n in plan},
        "labels": match.counts() if match is not None else {},
    }
    lock = RunLock(Path(out).expanduser(), wait=wait)
    lock.acquire()
    try:
        store = ResultsStore(out)
        resumed = store.open(identity, provenance=provenance, overwrite=overwrite)
        try:
            n_computed = _sweep(
                loaded, plan, store, items, scan_errors, data_root, label_by_case, roi_dir, int(seed), int(batch_size), dev,
                int(max_chunk_pixels), int(max_buffer_pixels), int(ring_width), progress,
            )
        except BaseException:
            store.close()
            raise
        predictions = store.read_predictions()
        errors = store.read_errors()
        from medrobust.sensitivity.diagnostics import check_domain_shift, check_labels, check_predictions
        from medrobust.sensitivity.summary import summarise

        summary = summarise(predictions, plan=plan, positive_class=loaded.positive_class, seed=int(seed))
        findings = _findings(loaded, predictions, errors, store.read_inputs(), match,
                             check_predictions, check_labels, check_domain_shift)
        report_path = None
        if report:
            from medrobust.sensitivity.report import write_outputs

            report_path = write_outputs(
                store.out, predictions=predictions, summary=summary, errors=errors, cnr=store.read_cnr(),
                manifest=store.manifest, plan=plan, model=loaded, data_root=data_root, seed=int(seed),
                examples=examples, options=report_options, findings=findings,
                labels=match.counts() if match is not None else None,
            )
        store.finish(n_predictions=len(predictions), n_errors=len(errors), n_cases=int(predictions["case_id"].nunique()))
    finally:
        lock.release()
    result = SensitivityResult(
        Path(out), predictions, summary, errors, n_computed, resumed, report_path,
        match.counts() if match is not None else {}, findings,
    )
    if predictions.empty:
        raise ValueError(f"no usable image under {data_root}: all {len(errors)} files were skipped (see {Path(out) / 'errors.csv'}).")
    if strict and len(errors):
        raise StrictModeError(f"--strict: {len(errors)} files were skipped (see {Path(out) / 'errors.csv'}); results are written.")
    return result


def _findings(loaded, predictions, errors, inputs, match, check_predictions, check_labels, check_domain_shift) -> list:
    from medrobust.sensitivity.diagnostics import Finding

    meta = loaded.metadata.get("medrobust", {}) if isinstance(loaded.metadata, Mapping) else {}
    out = []
    if meta.get("notice"):
        out.append(Finding("model_notice", "warning", str(meta["notice"])))
    out += check_predictions(predictions)
    out += check_domain_shift(inputs, meta.get("training_input_statistics"))
    out += check_labels(predictions, positive_class=loaded.positive_class)
    if match is not None and match.n_mismatched:
        c = match.counts()
        out.append(Finding(
            "label_mismatch", "warning",
            f"Labels: {c['matched']} images matched; {c['images_without_labels']} images without a label, "
            f"{c['labels_without_images']} label rows without an image, {c['ambiguous']} ambiguous ids "
            f"(e.g. {'; '.join(match.warnings[:3])}). Unmatched cases count in flip rates but not in AUC/KS.",
        ))
    if len(errors):
        out.append(Finding("skipped_files", "warning", f"{len(errors)} files were skipped (see errors.csv)."))
    for f in out:
        if f.level == "warning":
            logger.warning("%s", f.message)
    return out


def _scan(data_root: Path, out: Path):
    exclude = DEFAULT_EXCLUDE
    if out != data_root and data_root in out.parents:  # never read our own figures back as images
        exclude = (*DEFAULT_EXCLUDE, out.relative_to(data_root).parts[0])
    return scan_dataset(data_root, exclude=exclude)


def _sweep(
    loaded: LoadedModel,
    plan: dict[str, tuple[float, ...]],
    store: ResultsStore,
    items: list,
    scan_errors: list,
    data_root: Path,
    label_map: dict,
    roi_dir: Path | None,
    seed: int,
    batch_size: int,
    dev: torch.device,
    max_chunk_pixels: int,
    max_buffer_pixels: int,
    ring_width: int,
    progress: bool,
) -> int:
    recorded = store.recorded_errors()
    failed_files = {f for f, stage in recorded if stage in ("load", "input")}
    new_errors = []
    for e in scan_errors:
        rel = _relative(e.path, data_root)
        if (rel, "scan") not in recorded:
            new_errors.append({"file": rel, "stage": "scan", "reason": e.reason})
    if new_errors:
        store.add_errors(new_errors)
        for e in new_errors:
            logger.warning("skipped %s: %s", e["file"], e["reason"])
    done = store.done_keys()
    keys = [(n, s) for n, grid in plan.items() for s in grid]
    todo = []
    for it in items:
        if _relative(it.path, data_root) in failed_files:
            continue
        pending = {k for k in keys if (it.case_id, k[0], k[1]) not in done}
        if pending:
            todo.append((it, pending))
    total = sum(len(p) for _, p in todo)
    logger.info(
        "%d images, %d families, %d predictions to compute (%d already stored)",
        len(items), len(plan), total, len(done),
    )
    with tqdm(total=total, disable=not progress, unit="pred", desc="sensitivity", dynamic_ncols=True) as pbar:
        sweep = BatchedSweep(loaded, plan, store, seed, batch_size, dev, max_chunk_pixels, max_buffer_pixels, pbar)
        # one prefetch thread: the next image is decoded (pydicom / numpy release the GIL) while the
        # current one is perturbed and predicted; at most one image is held beyond the sweep's buffer
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="medrobust-load") as pool:
            load = lambda job: _load_case(job[0], job[1], loaded, label_map, roi_dir, ring_width, store, data_root)  # noqa: E731
            future = pool.submit(load, todo[0]) if todo else None
            for i, (it, pending) in enumerate(todo):
                case = future.result()
                future = pool.submit(load, todo[i + 1]) if i + 1 < len(todo) else None
                if case is None:
                    pbar.update(len(pending))
                    continue
                sweep.add(case)
                del case
        sweep.finish()
    return sweep.n_written


def _load_case(
    it, pending, loaded: LoadedModel, label_map: dict, roi_dir: Path | None, ring_width: int, store: ResultsStore, data_root: Path
) -> Case | None:
    rel = _relative(it.path, data_root)
    stage = "load"
    try:
        img = load_image(it)
        stage = "input"
        x = match_spatial_dims(loaded.preprocessing.to_unit(img.array), loaded.spatial_dims)
        if x.shape[0] != loaded.in_channels and x.shape[0] != 1 and loaded.in_channels != 1:
            raise ValueError(f"image has {x.shape[0]} channels, the model takes {loaded.in_channels}")
        roi = None
        if roi_dir is not None:
            stage = "roi"
            mask_path = find_mask(roi_dir, it.case_id)
            mask = load_roi_mask(mask_path, tuple(x.shape[1:])) if mask_path is not None else None
            roi = RoiSampler(mask, ring_width) if mask is not None else None
    except (UnusableImageError, ValueError, OSError, RuntimeError) as e:
        reason = e.reason if isinstance(e, UnusableImageError) else f"{type(e).__name__}: {e}"
        reason = reason.replace(str(it.path), rel)
        if stage == "roi":  # the image is fine; only the CNR of this case is lost
            if (rel, stage) not in store.recorded_errors():
                store.add_errors([{"file": rel, "stage": stage, "reason": reason}])
            logger.warning("ROI mask for %s unusable: %s", it.case_id, reason)
            roi = None
        else:
            store.add_errors([{"file": rel, "stage": stage, "reason": reason}])
            logger.warning("skipped %s: %s", rel, reason)
            return None
    lab = label_map.get(it.case_id)
    return Case(
        case_id=it.case_id,
        x=x,
        label=lab.label if lab is not None else None,
        subgroup=lab.subgroup if lab is not None else None,
        modality=img.modality,
        pending=pending,
        roi=roi,
    )

