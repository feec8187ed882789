"""Single-coil acquisition operator and per-volume evaluation of reconstruction models.

- :func:`acquire`: fully sampled magnitude ``(B, 1, H, W)`` -> zero-filled magnitude: the
  complex image ``m exp(i phi)`` (a per-slice smooth phase, or none), orthonormal centred FFT
  (:func:`~medrobust.reconstruction.fft.fft2c`), the column mask, zero-filled inverse
  (:func:`~medrobust.reconstruction.simulation.zero_filled`). Differentiable, so FNAF robust
  training and attacks pass features through the same acquisition as the data.
- :func:`batch_acquisition`: :func:`acquire` with the batch's own ``mask`` / ``phase`` (the
  ``acquisition`` callable of :class:`~medrobust.core.defenses.FNAFTraining`).
- :func:`evaluate_volume`: one volume's fastMRI metrics (NMSE, PSNR, SSIM with the volume's
  data range), the FNAF false-negative rate over its slices (worst of ``fnaf_restarts`` features
  per slice) and the NMSE after PGD on the measured k-space (relative budget).
- :func:`summarise`: mean and a percentile-bootstrap 95% CI over volumes (``scipy.stats.bootstrap``),
  since volumes (patients), not slices, are the independent units.
- Multi-coil (``num_coils > 1``): :func:`measure` applies the birdcage sensitivities of
  :func:`~medrobust.reconstruction.simulation.coil_sensitivities` (the maps
  :class:`~medrobust.reconstruction.data.KspaceSliceDataset` uses); a k-space model such as
  :class:`~medrobust.reconstruction.networks.VarNet` is trained with :func:`prepare_kspace_batch`
  and evaluated with ``kspace_model=True`` (:func:`kspace_model_fn`: one slice at a time, each with
  its own mask, since MONAI's VarNet takes one mask per call).
- Subsets and torchrun: :func:`evaluate_split` with ``volume_indices`` evaluates some volumes with
  the masks, phases and seeds they have in the whole split; :func:`evaluate_split_distributed` gives
  each rank volumes ``rank::world_size`` and rank 0 merges the shards (:func:`merge_split`) into
  the results one process writes.
- FN-rate threshold sweep: ``fn_thresholds`` adds ``fn_rate@<t>`` columns, the fraction of
  slices whose worst masked NMSE (:func:`~medrobust.core.attacks.fnaf.false_negatives`) is ``>= t``.

Batch items (what the bundle's datasets produce): ``image`` zero-filled ``(1, H, W)``, ``label``
fully sampled magnitude ``(1, H, W)``, ``mask`` ``(1, W)`` sampled columns, ``phase``
``(1, H, W)`` radians.

Example:
    >>> import torch
    >>> m = torch.rand(2, 1, 16, 16); mask = torch.ones(1, 16)
    >>> bool(torch.allclose(acquire(m, mask), m, atol=1e-5))  # fully sampled: the magnitude back
    True
"""

from __future__ import annotations

import math
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from medrobust.core.attacks import fnaf, kspace_pgd
from medrobust.core.attacks.fnaf import false_negatives
from medrobust.core.metrics.reconstruction import nmse, psnr, ssim
from medrobust.core.utils import append_csv_row
from medrobust.reconstruction.fft import fft2c
from medrobust.reconstruction.simulation import coil_sensitivities, zero_filled

__all__ = ["acquire", "measure", "prepare_kspace_batch", "kspace_model_fn", "fn_rate_key", "batch_phase", "batch_acquisition", "prepare_batch", "SetEpoch", "evaluate_split", "merge_split", "evaluate_split_distributed", "evaluate_volume", "summarise", "VOLUME_METRICS"]

VOLUME_METRICS = ("nmse", "psnr", "ssim", "fn_rate", "fnaf_masked_nmse", "pgd_nmse")


def _column_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B|1, 1, W)`` / ``(1, W)`` / ``(B|1, 1, 1, W, 1)`` -> ``(B|1, 1, 1, W, 1)``."""
    w = like.shape[-2]
    if mask.shape[-1] == 1 and mask.ndim == 5:
        return mask.to(like)
    if mask.shape[-1] == 1 and mask.ndim == 4:  # dataset items collated: (B, 1, W, 1)
        return mask[:, :, None].to(like)
    if mask.shape[-1] != w:
        raise ValueError(f"mask must have {w} columns (the image width), got shape {tuple(mask.shape)}.")
    m = mask.reshape(-1, w)
    return m[:, None, None, :, None].to(like)


def measure(magnitude: torch.Tensor, mask: torch.Tensor, phase: torch.Tensor | None = None, *,
            num_coils: int = 1) -> torch.Tensor:
    """Measured k-space ``(B, num_coils, H, W, 2)`` of magnitude ``(B, 1, H, W)`` (zeros where not
    sampled); ``num_coils > 1`` applies the birdcage maps of
    :func:`~medrobust.reconstruction.simulation.coil_sensitivities` (as the dataset does)."""
    if magnitude.ndim != 4 or magnitude.shape[1] != 1:
        raise ValueError(f"magnitude must be (B, 1, H, W), got shape {tuple(magnitude.shape)}.")
    if isinstance(num_coils, bool) or not isinstance(num_coils, int) or num_coils < 1:
        raise ValueError(f"num_coils must be an int >= 1, got {num_coils!r}.")
    if phase is None:
        img = torch.stack([magnitude, torch.zeros_like(magnitude)], dim=-1)
    else:
        ph = phase.to(magnitude)
        img = torch.stack([magnitude * torch.cos(ph), magnitude * torch.sin(ph)], dim=-1)
    if num_coils > 1:
        s = coil_sensitivities(tuple(magnitude.shape[2:]), num_coils).to(img).unsqueeze(0)  # (1, C, H, W, 2)
        img = torch.stack([img[..., 0] * s[..., 0] - img[..., 1] * s[..., 1],
                           img[..., 0] * s[..., 1] + img[..., 1] * s[..., 0]], dim=-1)
    return fft2c(img) * _column_mask(mask, img)


def acquire(magnitude: torch.Tensor, mask: torch.Tensor, phase: torch.Tensor | None = None, *,
            num_coils: int = 1) -> torch.Tensor:
    """Zero-filled (root-sum-of-squares) magnitude ``(B, 1, H, W)`` of the undersampled acquisition."""
    return zero_filled(measure(magnitude, mask, phase, num_coils=num_coils))


def prepare_kspace_batch(batchdata: Mapping[str, Any], device: Any = None, non_blocking: bool = False,
                         **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor], dict]:
    """MONAI trainer ``prepare_batch`` for k-space models (``net(masked_kspace, mask)``, e.g.
    :class:`~medrobust.reconstruction.networks.VarNet`): ``(masked k-space (B, C, H, W, 2), target
    (B, 1, H, W), (mask (1, 1, 1, W, 1),), {})``. MONAI's VarNet takes one mask per call, so the
    batch's first mask is applied to every item's fully sampled k-space (masks still change
    from batch to batch and epoch to epoch)."""
    mask = torch.as_tensor(batchdata["mask"])[:1].to(device, non_blocking=non_blocking)
    k = torch.as_tensor(batchdata["kspace_full"]).to(device, non_blocking=non_blocking) * mask
    return k, torch.as_tensor(batchdata["target"]).to(device, non_blocking=non_blocking), (mask,), {}


def kspace_model_fn(net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``masked k-space (B, C, H, W, 2) -> net(kspace[i:i+1], mask[i:i+1])`` stacked ``(B, 1, H, W)``:
    per-slice masks ``(B|1, 1, 1, W, 1)`` for a network that takes one mask per call."""
    w = mask.shape[-2] if mask.shape[-1] == 1 else mask.shape[-1]
    m5 = _column_mask(mask, torch.zeros(1, 1, 1, w, 2))

    def run(k: torch.Tensor) -> torch.Tensor:
        mm = m5 if m5.shape[0] == k.shape[0] else m5.expand(k.shape[0], *m5.shape[1:])
        return torch.cat([net(k[i:i + 1], mm[i:i + 1]) for i in range(k.shape[0])])

    return run


def fn_rate_key(threshold: float) -> str:
    """Column name of the FN rate at ``threshold`` (``fn_rate@0.01``)."""
    return f"fn_rate@{float(threshold):g}"


def batch_phase(batchdata: Mapping[str, Any]) -> torch.Tensor | None:
    """The batch's phase ``(B, 1, H, W)``: ``batchdata["phase"]``, else the angle of the complex
    ground truth ``batchdata["image"]`` ``(B, 1, H, W, 2)`` (:class:`~medrobust.reconstruction.data.KspaceSliceDataset`)."""
    if batchdata.get("phase") is not None:
        return torch.as_tensor(batchdata["phase"])
    img = batchdata.get("image")
    if isinstance(img, torch.Tensor) and img.ndim == 5 and img.shape[-1] == 2:
        return torch.atan2(img[..., 1], img[..., 0])
    return None


def batch_acquisition(image: torch.Tensor, batchdata: Mapping[str, Any]) -> torch.Tensor:
    """:func:`acquire` with the batch's ``mask`` and phase (:func:`batch_phase`): the
    ``acquisition`` of :class:`~medrobust.core.defenses.FNAFTraining`."""
    if not isinstance(batchdata, Mapping) or "mask" not in batchdata:
        raise ValueError("batch_acquisition: the batch must be a dict with a 'mask' entry (sampled columns).")
    phase = batch_phase(batchdata)
    return acquire(image, torch.as_tensor(batchdata["mask"]).to(image.device),
                   None if phase is None else phase.to(image.device))


def prepare_batch(batchdata: Mapping[str, Any], device: Any = None, non_blocking: bool = False,
                  **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """MONAI trainer ``prepare_batch``: ``(zero_filled, target)`` of a
    :class:`~medrobust.reconstruction.data.KspaceSliceDataset` batch, on ``device``."""
    return (torch.as_tensor(batchdata["zero_filled"]).to(device, non_blocking=non_blocking),
            torch.as_tensor(batchdata["target"]).to(device, non_blocking=non_blocking))


class SetEpoch:
    """Ignite handler: ``dataset.set_epoch(engine.state.epoch)`` at every epoch start (new masks/phases)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.dataset.set_epoch(e.state.epoch))


def evaluate_volume(
    net: Callable[[torch.Tensor], torch.Tensor],
    gt: torch.Tensor,
    mask: torch.Tensor,
    phase: torch.Tensor | None = None,
    *,
    fnaf_restarts: int = 11,
    fnaf_size: int = 10,
    pgd_rel_eps: float = 0.05,
    pgd_steps: int = 5,
    batch_size: int = 16,
    seed: int = 0,
    num_coils: int = 1,
    kspace_model: bool = False,
    fn_thresholds: Sequence[float] = (),
) -> dict[str, float]:
    """Metrics of one volume.

    Args:
        net: ``zero-filled (B, 1, H, W) -> reconstruction (B, 1, H, W)`` (in eval mode), or
            ``None`` for the zero-filled baseline.
        gt: fully sampled magnitude slices ``(S, 1, H, W)``.
        mask: ``(S|1, 1, W)`` sampled columns per slice; phase: ``(S, 1, H, W)`` or None.
        fnaf_restarts, fnaf_size: FNAF evaluation (the authors: worst of 11, 10 pixels); 0 skips it.
        pgd_rel_eps, pgd_steps: k-space PGD (L2 budget relative to the k-space norm); 0 steps skips it.
        seed: FNAF/PGD randomness.
        num_coils: coils of the simulated acquisition (birdcage maps when > 1).
        kspace_model: ``net`` takes ``(masked k-space (1, C, H, W, 2), mask (1, 1, 1, W, 1))``
            (VarNet), called one slice at a time (:func:`kspace_model_fn`); otherwise it takes
            the zero-filled magnitude.
        fn_thresholds: extra FN-rate thresholds on the same worst-of-``fnaf_restarts`` masked
            NMSE, reported as ``fn_rate@<t>`` (:func:`fn_rate_key`).

    Returns:
        ``nmse``, ``psnr``, ``ssim`` (volume, fastMRI), ``fn_rate`` (fraction of slices with a false
        negative), ``fnaf_masked_nmse`` (mean masked NMSE of the worst features), ``pgd_nmse``
        (volume NMSE against gt after PGD; NaN when skipped), ``slices``.
    """
    s = gt.shape[0]
    mask = mask if mask.shape[0] == s else mask.expand(s, *mask.shape[1:])
    for t in fn_thresholds:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
            raise ValueError(f"fn_thresholds must be positive numbers, got {t!r}.")
    recs, fn, fl, adv = [], [], [], []
    sweep: dict[str, list[torch.Tensor]] = {fn_rate_key(t): [] for t in fn_thresholds}
    for i in range(0, s, batch_size):
        sl = slice(i, min(s, i + batch_size))
        g, m = gt[sl], mask[sl]
        p = None if phase is None else phase[sl]
        # every model reads the measured k-space: zero-filled magnitude for image models
        if net is None:
            model = zero_filled
        elif kspace_model:
            model = kspace_model_fn(net, m)
        else:
            model = lambda kk, net=net: net(zero_filled(kk))  # noqa: E731
        with torch.no_grad():
            recs.append(model(measure(g, m, p, num_coils=num_coils)))
        if fnaf_restarts > 0:
            res = fnaf(model, g, forward_op=lambda img, m=m, p=p: measure(img, m, p, num_coils=num_coils), size=fnaf_size,
                       restarts=fnaf_restarts, generator=seed + i)
            fn.append(res.success.float())
            fl.append(res.info["loss"].float())
            for t in fn_thresholds:  # the FNAF criterion at other thresholds, on the kept worst feature
                sweep[fn_rate_key(t)].append(
                    false_negatives(res.info["recon"], res.x_adv, res.info["weight"], threshold=t)[1].float())
        if pgd_steps > 0 and net is not None:
            k = measure(g, m, p, num_coils=num_coils)
            cm = _column_mask(m, k)
            # per-slice masks differ: attack slice by slice in one batch via a per-sample mask product
            r = kspace_pgd(lambda kk, cm=cm, model=model: model(kk * cm), k, g, rel_eps=pgd_rel_eps,
                           steps=pgd_steps, sampling_mask=None, generator=seed + i)
            with torch.no_grad():
                adv.append(model(r.x_adv * cm))
    rec = torch.cat(recs)[:, 0]
    out = {"nmse": nmse(gt[:, 0], rec), "psnr": psnr(gt[:, 0], rec), "ssim": ssim(gt[:, 0], rec), "slices": float(s)}
    out["fn_rate"] = float(torch.cat(fn).mean()) if fn else math.nan
    out["fnaf_masked_nmse"] = float(torch.cat(fl).mean()) if fl else math.nan
    for key, vals in sweep.items():
        out[key] = float(torch.cat(vals).mean()) if vals else math.nan
    out["pgd_nmse"] = nmse(gt[:, 0], torch.cat(adv)[:, 0]) if adv else math.nan
    return out


def summarise(values: Sequence[float], *, seed: int = 0, n_resamples: int = 2000) -> dict[str, float]:
    """Mean and percentile-bootstrap 95% CI over volumes (``nan`` CI with fewer than 2 values)."""
    from scipy.stats import bootstrap

    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    if len(v) < 2 or np.all(v == v[0]):
        return {"mean": float(v.mean()), "ci_low": float(v.min()), "ci_high": float(v.max()), "n": len(v)}
    ci = bootstrap((v,), np.mean, n_resamples=n_resamples, method="percentile",
                   rng=np.random.default_rng(seed)).confidence_interval
    return {"mean": float(v.mean()), "ci_low": float(ci.low), "ci_high": float(ci.high), "n": len(v)}


def _volume_slices(ds: Any, v: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    items = [ds[i] for i, (vi, _) in enumerate(ds.index) if vi == v]
    batch = torch.utils.data.default_collate(items)
    return torch.as_tensor(batch["target"]), torch.as_tensor(batch["mask"]), batch_phase(batch)


def _fields(fn_thresholds: Sequence[float]) -> tuple[list[str], list[str]]:
    """``(metric columns, CSV fields)`` of ``per_volume.csv``."""
    metrics = [*VOLUME_METRICS, *(fn_rate_key(t) for t in fn_thresholds)]
    return metrics, ["model", "acceleration", "volume_id", *metrics, "slices"]


def _write_summary(rows: Sequence[Mapping[str, str]], out: Path, names: Sequence[str], accelerations: Sequence[float],
                   metrics: Sequence[str], seed: int) -> dict[str, dict[str, dict[str, float]]]:
    """``summary.json`` over ``rows`` (CSV text), in row order (the bootstrap resamples by position)."""
    import json

    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        for acc in accelerations:
            sel = [r for r in rows if r["model"] == name and r["acceleration"] == str(acc)]
            summary[f"{name}_x{acc}"] = {k: summarise([float(r[k]) for r in sel if r.get(k) not in (None, "")], seed=seed)
                                         for k in metrics}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _volume_indices(volume_indices: Sequence[int] | None, n: int) -> list[int]:
    if volume_indices is None:
        return list(range(n))
    idx = list(volume_indices)
    bad = [i for i in idx if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < n]
    if bad or len(set(idx)) != len(idx):
        raise ValueError(f"volume_indices must be distinct ints in [0, {n}) (positions in volumes), got {idx!r}.")
    return [int(i) for i in idx]


def evaluate_split(
    nets: Mapping[str, Callable[[torch.Tensor], torch.Tensor] | None],
    volumes: Sequence[Any],
    out_dir: str | Path,
    *,
    accelerations: Sequence[float] = (4,),
    seed: int = 1234,
    num_coils: int = 1,
    volume_indices: Sequence[int] | None = None,
    **kwargs: Any,
) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluate models (``name -> net``; ``None`` = zero-filled) on every volume and acceleration.

    Acquisitions (``num_coils``) are simulated by :class:`~medrobust.reconstruction.data.KspaceSliceDataset`
    (fixed ``seed``: every model sees the same masks and phases). One row per (model,
    acceleration, volume) is appended to ``out_dir/per_volume.csv`` as soon as it is computed
    and rows already there are skipped (resume); ``out_dir/summary.json`` holds mean and
    bootstrap 95% CI over the rows of ``per_volume.csv`` per metric. ``kwargs`` go to :func:`evaluate_volume`.

    ``volume_indices`` (positions in ``volumes``; None = all) evaluates a subset (a shard, see
    :func:`evaluate_split_distributed`): the dataset still holds every volume, so each slice keeps
    its global index and with it its mask, phase and attack seeds; a volume's row equals its row
    in the evaluation of all volumes.

    Returns:
        ``{f"{name}_x{acc}": {metric: {"mean", "ci_low", "ci_high", "n"}}}``.

    Raises:
        ValueError: ``volume_indices`` not distinct positions in ``volumes``.
    """
    import csv

    from tqdm.auto import tqdm

    from medrobust.reconstruction.data import KspaceSliceDataset

    indices = _volume_indices(volume_indices, len(volumes))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "per_volume.csv"
    rows: list[dict] = list(csv.DictReader(open(path, newline=""))) if path.is_file() else []
    done = {(r["model"], r["acceleration"], r["volume_id"]) for r in rows}
    metrics, fields = _fields(kwargs.get("fn_thresholds", ()))
    for acc in accelerations:
        ds = KspaceSliceDataset(volumes, num_coils=num_coils, acceleration=acc, seed=seed)
        for v in tqdm(indices, desc=f"evaluate x{acc}", leave=False):
            vol = volumes[v]
            todo = [n for n in nets if (n, str(acc), vol.volume_id) not in done]
            if not todo:
                continue
            gt, mask, phase = _volume_slices(ds, v)
            for name in todo:
                net = nets[name]
                if isinstance(net, torch.nn.Module):
                    net.eval()
                m = evaluate_volume(net, gt, mask, phase, seed=seed, num_coils=num_coils, **kwargs)
                row = {"model": name, "acceleration": str(acc), "volume_id": vol.volume_id, **m}
                append_csv_row(path, row, fields)
                rows.append({k: str(val) for k, val in row.items()})
    return _write_summary(rows, out, list(nets), accelerations, metrics, seed)


def merge_split(
    shard_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    models: Sequence[str],
    volumes: Sequence[Any],
    accelerations: Sequence[float] = (4,),
    seed: int = 1234,
    fn_thresholds: Sequence[float] = (),
) -> dict[str, dict[str, dict[str, float]]]:
    """Merge the ``per_volume.csv`` of shards (:func:`evaluate_split` with ``volume_indices``) into
    ``out_dir/per_volume.csv`` and ``out_dir/summary.json``, exactly as one :func:`evaluate_split`
    call over all ``volumes`` writes them: rows in its order (acceleration, volume, model) as the
    shards stored their text, the summary computed from them (same bootstrap seed and order).

    Args:
        shard_dirs: folders holding the shards' ``per_volume.csv`` (a shard with no volumes may have none).
        out_dir: where the merged results go (``per_volume.csv`` is rewritten).
        models: the model names, in the order of the ``nets`` given to :func:`evaluate_split`.
        volumes, accelerations, seed, fn_thresholds: as given to :func:`evaluate_split`.

    Returns:
        The summary, as :func:`evaluate_split` returns it.

    Raises:
        ValueError: a (model, acceleration, volume) row is missing from every shard or is in two shards.
    """
    import csv

    rows: dict[tuple[str, str, str], dict[str, str]] = {}
    for d in shard_dirs:
        path = Path(d) / "per_volume.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                key = (r["model"], r["acceleration"], r["volume_id"])
                if key in rows:
                    raise ValueError(f"merge_split: row {key} is in two shards ({path} and an earlier one); "
                                     "shards must hold disjoint volumes.")
                rows[key] = r
    order = [(name, str(acc), vol.volume_id) for acc in accelerations for vol in volumes for name in models]
    missing = [k for k in order if k not in rows]
    if missing:
        raise ValueError(f"merge_split: {len(missing)} rows missing from the shards {[str(d) for d in shard_dirs]} "
                         f"(first {missing[0]}); run the unfinished rank again (it resumes).")
    metrics, fields = _fields(fn_thresholds)
    merged = [rows[k] for k in order]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "per_volume.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(merged)
    return _write_summary(merged, out, list(models), accelerations, metrics, seed)


def evaluate_split_distributed(
    nets: Mapping[str, Callable[[torch.Tensor], torch.Tensor] | None],
    volumes: Sequence[Any],
    out_dir: str | Path,
    *,
    accelerations: Sequence[float] = (4,),
    seed: int = 1234,
    **kwargs: Any,
) -> dict[str, dict[str, dict[str, float]]] | None:
    """:func:`evaluate_split` over the ranks of an initialised ``torch.distributed`` process group.

    Rank ``r`` of ``N`` evaluates volumes ``r::N`` into its own resumable store
    ``out_dir/shards/rank-r-of-N`` (:func:`~medrobust.distributed.shard_dir`); after a barrier rank
    0 merges the shards (:func:`merge_split`) into ``out_dir``: the same ``per_volume.csv`` and
    ``summary.json`` as one process. Without a process group (or with one rank) it is
    :func:`evaluate_split`. ``nets`` must not be DistributedDataParallel-wrapped (the attacks
    back-propagate a different number of times on each rank): pass ``ddp.module``.

    Returns:
        The summary on rank 0, None on the other ranks.
    """
    import torch.distributed as dist

    from medrobust.distributed import shard_dir

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return evaluate_split(nets, volumes, out_dir, accelerations=accelerations, seed=seed, **kwargs)
    if any(isinstance(n, torch.nn.parallel.DistributedDataParallel) for n in nets.values()):
        raise TypeError("evaluate_split_distributed: nets must be plain modules, got a DistributedDataParallel; pass its .module.")
    rank, world = dist.get_rank(), dist.get_world_size()
    evaluate_split(nets, volumes, shard_dir(out_dir, rank, world), volume_indices=range(rank, len(volumes), world),
                   accelerations=accelerations, seed=seed, **kwargs)
    dist.barrier()
    if rank != 0:
        return None
    return merge_split([shard_dir(out_dir, r, world) for r in range(world)], out_dir, models=list(nets), volumes=volumes,
                       accelerations=accelerations, seed=seed, fn_thresholds=kwargs.get("fn_thresholds", ()))
