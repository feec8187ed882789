"""Batching of a sensitivity sweep: group same-shape images, chunk perturbations, batch inference.

:class:`BatchedSweep` receives loaded images (:class:`Case`) one at a time, groups them by
native shape (at most ``batch_size`` images and ``max_buffer_pixels`` pixels held), runs the
clean pass and every family x severity on each group in chunks of at most
``max_chunk_pixels`` native pixels, resizes each perturbed chunk to the model input at once
(only small tensors are kept) and sends them through the network ``batch_size`` at a time,
appending rows to the :class:`~medrobust.sensitivity.store.ResultsStore` after every network
call. Per-sample seeds (``sample_seed(case_id, family, severity, base_seed=seed)``) make every
number independent of how the work was batched.

Example:
    >>> sweep = BatchedSweep(model, plan, store, seed=0, batch_size=8, device=torch.device("cpu"),
    ...                      max_chunk_pixels=1 << 24, max_buffer_pixels=1 << 25, pbar=tqdm(disable=True))  # doctest: +SKIP
    >>> sweep.add(case); sweep.finish()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medrobust.models import LoadedModel
from medrobust.perturbations.registry import PerturbationContext, PerturbationFamily, get_family, sample_seed
from medrobust.sensitivity.cnr import RoiSampler
from medrobust.data.preprocess import BOUNDS, adapt_channels, resize_batch, to_model_input
from medrobust.sensitivity.diagnostics import input_statistics
from medrobust.sensitivity.store import ResultsStore, format_float

__all__ = ["Case", "BatchedSweep", "perturb_for_model"]

logger = logging.getLogger(__name__)


def perturb_for_model(
    family: PerturbationFamily,
    x: torch.Tensor,
    severity: float,
    seeds: Sequence[int],
    model: LoadedModel,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply ``family`` to ``x: (B, C, *native)`` in ``[0, 1]`` with per-sample ``seeds``.

    Adversarial families (``needs_model``) get ``ctx.model`` = the differentiable map
    native image -> resize -> network logits, and ``ctx.target``; other families run without
    autograd. Returns the perturbed batch, detached.
    """
    ctx = PerturbationContext.from_seeds(seeds, device=x.device, bounds=BOUNDS)
    if family.needs_model:
        ctx.model = lambda z: model.logits(to_model_input(z, model.spatial_shape, model.in_channels))
        ctx.target = target
        with torch.enable_grad():
            return family.apply(x, severity, ctx).detach()
    with torch.no_grad():
        return family.apply(x, severity, ctx)


@dataclass
class Case:
    """One loaded image waiting to be swept.

    Attributes:
        case_id: de-identified id.
        x: ``(C, *native)`` in ``[0, 1]`` (CPU); dropped once its group is stacked.
        label, subgroup: from the labels CSV (None when unknown).
        modality: DICOM modality or None.
        pending: ``(family, severity)`` pairs still to compute for this case.
        roi: ROI sampler for the contrast-to-noise ratio, when a mask was found.
    """

    case_id: str
    x: torch.Tensor  # (C, *native) in [0, 1], CPU
    label: int | None
    subgroup: str | None
    modality: str | None
    pending: set[tuple[str, float]]
    roi: RoiSampler | None = None


@dataclass
class BatchedSweep:
    """State of one sweep: buffers of loaded images and of resized images awaiting inference.

    Args:
        model: the classifier.
        plan: ``{family: severities}`` (0 included).
        store: where rows go.
        seed: base seed.
        batch_size: images per group and per network call.
        device: where perturbations and inference run.
        max_chunk_pixels: most native pixels per family call.
        max_buffer_pixels: most native pixels of images held while grouping.
        pbar: a tqdm bar updated per stored row.
    """

    model: LoadedModel
    plan: dict[str, tuple[float, ...]]
    store: ResultsStore
    seed: int
    batch_size: int
    device: torch.device
    max_chunk_pixels: int
    max_buffer_pixels: int
    pbar: Any
    n_written: int = 0
    _groups: dict[tuple[int, ...], list[Case]] = field(default_factory=dict)
    _queue: list[tuple[torch.Tensor, list[dict]]] = field(default_factory=list)
    _queued: int = 0
    _warned: set[str] = field(default_factory=set)

    # -- buffering of loaded images -------------------------------------------------------------
    def add(self, case: Case) -> None:
        key = tuple(case.x.shape)
        group = self._groups.setdefault(key, [])
        group.append(case)
        if len(group) >= self.batch_size:
            self._run_group(self._groups.pop(key))
        while self._groups and sum(c.x.numel() for g in self._groups.values() for c in g) > self.max_buffer_pixels:
            biggest = max(self._groups, key=lambda k: sum(c.x.numel() for c in self._groups[k]))
            self._run_group(self._groups.pop(biggest))

    def finish(self) -> None:
        for key in list(self._groups):
            self._run_group(self._groups.pop(key))
        self._flush_queue(force=True)

    # -- inference ----------------------------------------------------------------------------------
    def _logits(self, x_model: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.logits(x_model)

    def _write(self, logits: torch.Tensor, meta: list[dict]) -> None:
        p = self.model.probability_from_logits(logits).cpu().tolist()
        margin = self.model.decision_margin(logits).cpu().tolist()
        cls = self.model.predicted_class(logits).cpu().tolist()
        rows = [
            dict(m, p_positive=format_float(pi), margin=format_float(mi), predicted_class=int(ci))
            for m, pi, mi, ci in zip(meta, p, margin, cls)
        ]
        self.n_written += self.store.add_predictions(rows)
        self.pbar.update(len(rows))

    def _flush_queue(self, force: bool = False) -> None:
        while self._queued >= self.batch_size or (force and self._queued):
            xs, metas, n = [], [], 0
            while self._queue and n < self.batch_size:
                x, meta = self._queue.pop(0)
                take = min(self.batch_size - n, x.shape[0])
                xs.append(x[:take])
                metas.extend(meta[:take])
                if take < x.shape[0]:
                    self._queue.insert(0, (x[take:], meta[take:]))
                n += take
            self._queued -= n
            self._write(self._logits(torch.cat(xs)), metas)

    # -- one group of same-shape images -------------------------------------------------------------
    def _meta(self, case: Case, family: str, severity: float) -> dict:
        return {
            "case_id": case.case_id,
            "family": family,
            "severity": format_float(severity),
            "label": case.label,
            "subgroup": case.subgroup,
        }

    def _cnr_rows(self, cases: list[Case], xp: torch.Tensor, family: str, severity: float) -> None:
        rows = []
        for i, case in enumerate(cases):
            if case.roi is not None:
                value = float(case.roi.cnr(xp[i : i + 1])[0])
                rows.append(
                    {
                        "case_id": case.case_id,
                        "family": family,
                        "severity": format_float(severity),
                        "cnr": format_float(value),
                        "roi_pixels": case.roi.n_roi,
                        "subgroup": case.subgroup,
                    }
                )
        if rows:
            self.store.add_cnr(rows)

    def _run_group(self, cases: list[Case]) -> None:
        x = torch.stack([c.x for c in cases]).to(self.device)
        for c in cases:
            c.x = None  # the stacked copy is the only one kept
        per_image = int(np.prod(x.shape[1:]))
        chunk = max(1, self.max_chunk_pixels // per_image)
        m = self.model
        # clean pass: severity-0 rows of every family, and targets for adversarial families
        clean_parts, stats = [], []
        for i in range(0, x.shape[0], self.batch_size):
            with torch.no_grad():
                small = resize_batch(x[i : i + self.batch_size], m.spatial_shape)
            stats += input_statistics(small)
            clean_parts.append(self._logits(adapt_channels(small, m.in_channels)))
        clean = torch.cat(clean_parts)
        self.store.add_inputs(
            [{"case_id": c.case_id, **{k: format_float(v) for k, v in st.items()}} for c, st in zip(cases, stats)]
        )
        clean_cls = m.predicted_class(clean)
        targets = torch.tensor(
            [c.label if c.label is not None else int(k) for c, k in zip(cases, clean_cls.tolist())], device=self.device
        )
        for name in self.plan:
            idx = [i for i, c in enumerate(cases) if (name, 0.0) in c.pending]
            if idx:
                self._cnr_rows([cases[i] for i in idx], x[idx], name, 0.0)
                self._write(clean[idx], [self._meta(cases[i], name, 0.0) for i in idx])
        for name in self.plan:
            self._warn_modality(get_family(name), cases)
        # chunks outermost: every family and severity sees the same chunk tensor, so families
        # can reuse per-image work across severities (e.g. the Fourier filters' spectrum)
        for start in range(0, len(cases), chunk):
            block = list(range(start, min(start + chunk, len(cases))))
            xc = x[start : block[-1] + 1]
            for name, grid in self.plan.items():
                family = get_family(name)
                for sev in grid:
                    if sev == 0.0:
                        continue
                    part = [i for i in block if (name, sev) in cases[i].pending]
                    if not part:
                        continue
                    xin = xc if len(part) == len(block) else x[part]
                    seeds = [sample_seed(cases[i].case_id, name, sev, base_seed=self.seed) for i in part]
                    xp = perturb_for_model(family, xin, sev, seeds, m, targets[part])
                    self._cnr_rows([cases[i] for i in part], xp, name, sev)
                    with torch.no_grad():
                        small = to_model_input(xp, m.spatial_shape, m.in_channels).contiguous()
                    del xp
                    self._queue.append((small, [self._meta(cases[i], name, sev) for i in part]))
                    self._queued += len(part)
                    self._flush_queue()

    def _warn_modality(self, family: PerturbationFamily, cases: list[Case]) -> None:
        if family.modalities is None or family.name in self._warned:
            return
        others = {c.modality for c in cases if c.modality not in family.modalities}
        if others:
            self._warned.add(family.name)
            logger.warning(
                "family %s is meant for %s images; applying it to %s", family.name, "/".join(family.modalities), sorted(map(str, others))
            )
