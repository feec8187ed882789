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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from medrobust.data import DEFAULT_EXCLUDE, UnusableImageError, load_image, read_labels, scan_dataset
from medrobust.models import LoadedModel, file_sha256, load_model
from medrobust.perturbations.registry import get_family
from medrobust.sensitivity.batching import BatchedSweep, Case, perturb_for_model
from medrobust.sensitivity.cnr import RoiSampler, find_mask, load_roi_mask
from medrobust.data.preprocess import match_spatial_dims, normalise_image
from medrobust.sensitivity.store import ResultsStore

if TYPE_CHECKING:
    from medrobust.sensitivity.report import ReportOptions

__all__ = ["DEFAULT_FAMILIES", "ENGINE_VERSION", "SensitivityResult", "resolve_plan", "run_sensitivity", "perturb_for_model"]

logger = logging.getLogger(__name__)

#: families swept when none are named (the four of METHODS.md B2 plus blur)
DEFAULT_FAMILIES = ("gaussian_noise", "fourier_noise", "fourier_lowpass", "fourier_highpass", "gaussian_blur")
#: bump when the engine changes in a way that changes numbers (part of the run identity)
ENGINE_VERSION = 1


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
    """

    out: Path
    predictions: pd.DataFrame
    summary: pd.DataFrame
    errors: pd.DataFrame
    n_computed: int
    resumed: bool
    report: Path | None = None


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

    Returns:
        :class:`SensitivityResult`.

    Raises:
        FileNotFoundError: model, data, labels or ROI folder missing.
        ValueError: bad arguments; :class:`~medrobust.sensitivity.store.RunIdentityError` when
            ``out`` holds a run with other settings and not ``overwrite``.
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
    )
    for name in plan:
        fam = get_family(name)
        if loaded.spatial_dims not in fam.spatial_dims:
            raise ValueError(f"family {name!r} supports {fam.spatial_dims}-D images, the model is {loaded.spatial_dims}-D.")
    label_map = read_labels(labels_path) if labels_path is not None else {}

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
        "normalisation": "per-image min-max of display intensities to [0, 1]; perturb at native resolution",
    }
    provenance = {
        "model": {"name": loaded.name, "source": loaded.source, "sha256": loaded.sha256},
        "settings": {"batch_size": int(batch_size), "device": str(dev)},
        "versions": _versions(),
        "families": {n: get_family(n).description for n in plan},
    }
    store = ResultsStore(out)
    resumed = store.open(identity, provenance=provenance, overwrite=overwrite)
    try:
        n_computed = _sweep(
            loaded, plan, store, data_root, label_map, roi_dir, int(seed), int(batch_size), dev,
            int(max_chunk_pixels), int(max_buffer_pixels), int(ring_width), progress,
        )
    except BaseException:
        store.close()
        raise
    predictions = store.read_predictions()
    errors = store.read_errors()
    from medrobust.sensitivity.summary import summarise

    summary = summarise(predictions, plan=plan)
    report_path = None
    if report:
        from medrobust.sensitivity.report import write_outputs

        report_path = write_outputs(
            store.out, predictions=predictions, summary=summary, errors=errors, cnr=store.read_cnr(),
            manifest=store.manifest, plan=plan, model=loaded, data_root=data_root, seed=int(seed),
            examples=examples, options=report_options,
        )
    store.finish(n_predictions=len(predictions), n_errors=len(errors), n_cases=int(predictions["case_id"].nunique()))
    return SensitivityResult(Path(out), predictions, summary, errors, n_computed, resumed, report_path)


def _sweep(
    loaded: LoadedModel,
    plan: dict[str, tuple[float, ...]],
    store: ResultsStore,
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
    exclude = DEFAULT_EXCLUDE
    out = store.out.resolve()
    if out != data_root and data_root in out.parents:  # never read our own figures back as images
        exclude = (*DEFAULT_EXCLUDE, out.relative_to(data_root).parts[0])
    items, scan_errors = scan_dataset(data_root, exclude=exclude)
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
    if not items and not scan_errors:
        raise ValueError(f"no images found under {data_root}.")
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
        for it, pending in todo:
            case = _load_case(it, pending, loaded, label_map, roi_dir, ring_width, store, data_root)
            if case is None:
                pbar.update(len(pending))
                continue
            sweep.add(case)
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
        x = match_spatial_dims(normalise_image(img.array), loaded.spatial_dims)
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

