"""Sharding long jobs across torchrun processes: each rank sweeps a deterministic share of the cases
into its own store, rank 0 merges them into the run folder.

``torchrun --nproc_per_node N medrobust sensitivity ...`` (or multi-node torchrun) runs the
unchanged command in N processes; torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``
environment selects the shard (:func:`dist_context`). Cases are sorted by id and dealt round-robin
(:func:`shard_cases`): the shard of a case depends only on the case set and the world size.
Rank ``r`` writes ``OUT/shards/rank-r-of-N`` (a complete, resumable sensitivity store of its
cases); a killed rank started again resumes its shard. When every rank has written its status
file (no process group is needed: the ranks share only the output folder, so the same code runs
under torchrun, multi-node torchrun on a shared file system, or a SLURM array), rank 0 copies the shards' rows into ``OUT`` under the identity a single-process run would have and
runs the sweep there: nothing is left to compute, so summary, plots and report are written
from exactly the predictions a single process would have made (every prediction is a function of
its case, family, severity and seed only).

``medrobust card`` uses the same pieces for its units (:mod:`medrobust.card.units`):
:func:`shard_cases` over unit keys, a store per rank in :func:`shard_dir`, :func:`write_status` /
:func:`wait_for_ranks` to meet in the folder, :func:`device_for_rank` for CUDA.

Example:
    >>> shard_cases(["c", "a", "d", "b", "e"], rank=1, world_size=2)
    ['b', 'd']
    >>> backend_for("cpu"), backend_for("cuda:0")
    ('gloo', 'nccl')
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DistContext", "dist_context", "backend_for", "require_even_split", "shard_cases", "shard_dir",
           "run_sensitivity_distributed", "merge_shards", "write_status", "clear_status", "wait_for_ranks", "device_for_rank"]  # fmt: skip

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in a torchrun job (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def dist_context() -> DistContext:
    """Rank, world size and local rank from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    Raises:
        ValueError: inconsistent values (rank outside ``[0, world_size)``).
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise ValueError(f"torchrun environment: RANK/WORLD_SIZE/LOCAL_RANK should be integers ({e}).") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"torchrun environment: RANK={rank} should be in [0, WORLD_SIZE={world}).")
    return DistContext(rank, world, local)


def backend_for(device: Any) -> str:
    """``"nccl"`` for CUDA devices, ``"gloo"`` otherwise (CPU)."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def require_even_split(n: int, world_size: int, *, what: str = "evaluation set") -> int:
    """Check that ``n`` cases split evenly over ``world_size`` ranks; returns ``n``.

    ignite's ``EpochMetric`` (AUC, accuracy, ECE of the lesion bundle) all-gathers one
    equal-sized tensor per rank; with ``DistributedSampler(even_divisible=False)`` and a remainder
    the shards differ in size and the gather fails, and ``even_divisible=True`` would count
    padded (repeated) cases. The multi-GPU configs call this in ``initialize`` instead.

    Example:
        >>> require_even_split(78, 2)
        78

    Raises:
        ValueError: ``n`` is not a multiple of ``world_size``.
    """
    if world_size > 1 and n % world_size:
        raise ValueError(f"{what}: {n} cases do not split evenly over {world_size} processes; the dataset-level metrics "
                         f"gather equal shares, so run with a number of processes that divides {n} (or one process).")
    return n


def shard_cases(case_ids: Iterable[str], *, rank: int, world_size: int) -> list[str]:
    """Rank ``rank``'s share: the sorted, de-duplicated ids dealt round-robin over ``world_size`` ranks."""
    ids = sorted({str(c) for c in case_ids})
    return ids[rank::world_size]


def shard_dir(out: str | Path, rank: int, world_size: int) -> Path:
    """``OUT/shards/rank-<r>-of-<N>``: where a rank keeps its own store."""
    return Path(out) / "shards" / f"rank-{rank:03d}-of-{world_size:03d}"


def _case_ids(data: str | Path, out: str | Path) -> list[str]:
    from medrobust.data import DEFAULT_EXCLUDE, scan_dataset

    root, o = Path(data).expanduser().resolve(), Path(out).expanduser().resolve()
    exclude = DEFAULT_EXCLUDE
    if o != root and root in o.parents:  # the engine's rule: never read the run folder back as data
        exclude = (*DEFAULT_EXCLUDE, o.relative_to(root).parts[0])
    items, _ = scan_dataset(root, exclude=exclude)
    return [it.case_id for it in items]


def device_for_rank(device: Any, ctx: DistContext) -> Any:
    """The device of this rank: ``"cuda"`` / ``"auto"`` become ``cuda:<local rank mod GPUs>`` when CUDA is there."""
    d = str(device)
    if d in ("cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{ctx.local_rank % torch.cuda.device_count()}"
        return "cpu" if d == "auto" else device
    return device


def _copy_rows(src: Path, name: str, add: Any, skip: set | None, key: Sequence[str]) -> int:
    """Append the rows of ``src/name`` through ``add`` (as the stored text, so values are bit-identical)."""
    path = src / name
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if skip is None or tuple(r[k] for k in key) not in skip]
    if rows:
        add(rows)
    return len(rows)


def merge_shards(out: str | Path, world_size: int, *, cases: Iterable[str] | None = None) -> int:
    """Copy every shard's rows into ``out`` under the single-process identity; returns rows copied.

    Rows already in ``out`` (an earlier merge) are not copied again. ``cases``: the case ids the
    single-process run was given (``run_sensitivity(cases=...)``; part of its identity), ``None``: all.

    Raises:
        ValueError: a shard is missing or incomplete, or the shards ran different settings.
    """
    from medrobust.sensitivity.store import ResultsStore

    out = Path(out)
    identities, manifests = [], []
    for r in range(world_size):
        mpath = shard_dir(out, r, world_size) / "manifest.json"
        if not mpath.is_file():
            raise ValueError(f"merge: shard {r} of {world_size} has no manifest ({mpath}); run that rank again.")
        m = json.loads(mpath.read_text())
        if m.get("status") != "complete":
            raise ValueError(f"merge: shard {r} of {world_size} is not complete (status {m.get('status')!r}); run it again.")
        manifests.append(m)
        ident = dict(m["identity"])
        ident.pop("cases", None)
        identities.append(ident)
    if any(i != identities[0] for i in identities[1:]):
        raise ValueError("merge: the shards were run with different settings; run every rank with the same arguments.")
    if cases is not None:  # the identity a one-process run_sensitivity(cases=...) has
        identities[0]["cases"] = sorted({str(c) for c in cases})
    store = ResultsStore(out)
    provenance = {k: v for k, v in manifests[0].items() if k not in ("identity", "status", "started_at", "finished_at",
                                                                      "resumed_at", "n_predictions", "n_errors", "n_cases")}  # fmt: skip
    provenance["distributed"] = {"world_size": world_size, "shards": str(Path("shards"))}
    store.open(identities[0], provenance=provenance)
    try:
        done = {(c, f, float(s)) for c, f, s in store.done_keys()}
        errs = store.recorded_errors()
        cnr_done = set(map(tuple, store.read_cnr()[["case_id", "family", "severity"]].astype(str).values.tolist()))
        inputs_done = set(store.read_inputs()["case_id"].astype(str))
        n = 0
        for r in range(world_size):
            src = shard_dir(out, r, world_size)
            with open(src / "predictions.csv", newline="", encoding="utf-8") as f:
                rows = [row for row in csv.DictReader(f) if (row["case_id"], row["family"], float(row["severity"])) not in done]
            if rows:
                store.add_predictions(rows)
                done |= {(row["case_id"], row["family"], float(row["severity"])) for row in rows}
            n += len(rows)
            n += _copy_rows(src, "errors.csv", store.add_errors, errs, ("file", "stage"))
            errs = store.recorded_errors()
            n += _copy_rows(src, "cnr.csv", store.add_cnr, cnr_done, ("case_id", "family", "severity"))
            n += _copy_rows(src, "inputs.csv", store.add_inputs, {(c,) for c in inputs_done}, ("case_id",))
    finally:
        store.close()
    return n


def _status_path(out: str | Path, rank: int, world_size: int) -> Path:
    return shard_dir(out, rank, world_size).with_name(f"rank-{rank:03d}-of-{world_size:03d}.status.json")


def _run_id() -> str:
    return os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("SLURM_ARRAY_JOB_ID") or "none"


def write_status(out: str | Path, ctx: DistContext, *, ok: bool, error: str | None = None, **extra: Any) -> Path:
    """Write this rank's status file next to its shard (``OUT/shards/rank-r-of-N.status.json``); returns its path.

    :func:`wait_for_ranks` on rank 0 reads it; only files of the same torchrun / SLURM job count.
    """
    path = _status_path(out, ctx.rank, ctx.world_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run_id": _run_id(), "ok": bool(ok), "error": error, **extra}))
    return path


def clear_status(out: str | Path, ctx: DistContext) -> None:
    """Remove this rank's status file (call when its shard starts, so rank 0 waits for the new one)."""
    path = _status_path(out, ctx.rank, ctx.world_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)


def wait_for_ranks(out: str | Path, world_size: int, started: float, poll_s: float = 0.5) -> None:
    """Rank 0: block until every rank of this job wrote its status file under ``out``; raise if one failed.

    Args:
        out: the folder whose ``shards/`` hold the status files.
        world_size: ranks of the job.
        started: ``time.time()`` when this rank started (outside torchrun/SLURM, older status files do not count).
        poll_s: seconds between looks.

    Raises:
        RuntimeError: a rank wrote a failed status (with its error).
    """
    run_id = _run_id()
    pending = set(range(world_size))
    last_log = time.monotonic()
    while pending:
        for r in sorted(pending):
            path = _status_path(out, r, world_size)
            try:
                status = json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            # a status file of an earlier job (same folder) does not count
            if status.get("run_id") != run_id or (run_id == "none" and path.stat().st_mtime < started - 5):
                continue
            if not status.get("ok"):
                raise RuntimeError(f"rank {r} failed ({status.get('error')}); run the job again to resume its shard.")
            pending.discard(r)
        if pending:
            if time.monotonic() - last_log > 60:
                logger.info("rank 0: waiting for rank(s) %s to finish their shards", sorted(pending))
                last_log = time.monotonic()
            time.sleep(poll_s)


def run_sensitivity_distributed(model: Any, data: str | Path, out: str | Path, *, poll_s: float = 0.5, **kwargs: Any) -> Any:
    """:func:`medrobust.sensitivity.run_sensitivity`, sharded over the ranks of a torchrun job.

    Every rank sweeps its shard into :func:`shard_dir` and writes a status file next to it; rank
    0, once every rank's status is in (no collective communication: a shared folder is enough, so
    a SLURM array with ``RANK``/``WORLD_SIZE`` set per task works too), merges
    (:func:`merge_shards`) and finishes the run in ``out`` (summary, report). Outside torchrun
    (world size 1) this is ``run_sensitivity`` itself. Takes ``run_sensitivity``'s arguments;
    ``cases`` (e.g. the labelled cases of a card) restricts the sweep as in one process and is
    dealt over the ranks.

    Returns:
        Rank 0: the merged :class:`~medrobust.sensitivity.SensitivityResult`; other ranks: their shard's.

    Raises:
        RuntimeError: another rank failed (rank 0), with its error.
    """
    from medrobust.sensitivity import run_sensitivity

    ctx = dist_context()
    if ctx.world_size == 1:
        return run_sensitivity(model, data, out, **kwargs)
    cases = kwargs.pop("cases", None)
    started = time.time()
    device = device_for_rank(kwargs.pop("device", "cpu"), ctx)
    clear_status(out, ctx)
    shard = shard_cases(_case_ids(data, out) if cases is None else cases, rank=ctx.rank, world_size=ctx.world_size)
    if not shard:
        raise ValueError(f"rank {ctx.rank} of {ctx.world_size} has no case; use fewer processes than cases.")
    logger.info("rank %d of %d: %d cases -> %s", ctx.rank, ctx.world_size, len(shard), shard_dir(out, ctx.rank, ctx.world_size))
    try:
        result = run_sensitivity(model, data, shard_dir(out, ctx.rank, ctx.world_size), cases=shard, report=False,
                                 device=device, **{**kwargs, "progress": kwargs.get("progress", True) and ctx.rank == 0})  # fmt: skip
    except BaseException as e:
        write_status(out, ctx, ok=False, error=f"{type(e).__name__}: {e}")
        raise
    write_status(out, ctx, ok=True, n=len(result.predictions))
    if ctx.rank != 0:
        return result
    wait_for_ranks(out, ctx.world_size, started, poll_s)
    merge_shards(out, ctx.world_size, cases=cases)
    return run_sensitivity(model, data, out, device=device, cases=cases, **kwargs)
