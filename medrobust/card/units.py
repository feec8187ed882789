"""The card's per-case work as *units*: computed once, stored as they finish, resumed, sharded over torchrun ranks.

The expensive sections of a card (attacks, AutoAttack, the (eps, delta) estimate, intrinsic
robustness, nMutant detection; segmentation Dice under perturbation and attack; registration TRE)
are split into units: one section on one *block* of consecutive cases in case-id order
(:func:`blocks`), with a seed derived from the base seed, the section and the block's case ids
(:func:`block_seed`, :func:`medrobust.core.utils.derive_seed`), never from a rank or a position
in a run. A unit's result is therefore a function of its cases, settings and seed only, and the
same whether one process computes every unit or the ranks of a torchrun job each compute a share.

:func:`run_units` keeps each finished unit as a JSON file in ``OUT/units/<identity>/`` (the
identity hashes model, data, labels, settings and seed; another budget gets another folder, so
nothing stale is reused) and skips units already there: an interrupted card resumes. Under
``torchrun --nproc_per_node N`` (:func:`medrobust.distributed.dist_context`) the unit keys are
dealt with :func:`medrobust.distributed.shard_cases`; rank r stores its share in
``shard_dir(OUT/units/<identity>, r, N)`` (a killed rank's share resumes), writes its status
file, and rank 0 waits for every status (:func:`medrobust.distributed.wait_for_ranks`; no process
group, a shared folder suffices), copies the shares into the one-process store and reads every
unit back from there. Values go through JSON in both cases, so rank 0's card equals a
one-process card exactly.

Example:
    >>> import tempfile
    >>> blocks(["c3", "c1", "c2"], 2)
    [('c1', 'c2'), ('c3',)]
    >>> out = tempfile.mkdtemp()
    >>> res = run_units({"demo/00000": lambda: {"x": 0.5}}, out, {"seed": 0})
    >>> res["demo/00000"]
    {'x': 0.5}
    >>> run_units({"demo/00000": lambda: 1 / 0}, out, {"seed": 0})["demo/00000"]  # stored: not recomputed
    {'x': 0.5}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medrobust.core.utils import derive_seed

__all__ = ["blocks", "block_seed", "unit_key", "identity_hash", "unit_budget", "unit_versions", "UnitStore", "run_units",
           "section_units",
           "section_parts"]  # fmt: skip

logger = logging.getLogger(__name__)


def blocks(case_ids: Sequence[str], size: int) -> list[tuple[str, ...]]:
    """The sorted, de-duplicated case ids cut into consecutive blocks of ``size`` (the last may be shorter)."""
    if int(size) < 1:
        raise ValueError(f"blocks: size should be >= 1, got {size}.")
    ids = sorted({str(c) for c in case_ids})
    return [tuple(ids[i:i + int(size)]) for i in range(0, len(ids), int(size))]


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def block_seed(seed: int, section: str, cases: Sequence[str]) -> int:
    """The seed of ``section`` on a block: mixed from the base seed, the section name and the block's case ids."""
    return derive_seed(int(seed), _crc(section), _crc("\n".join(cases)))


def unit_key(section: str, index: int) -> str:
    """``"<section>/<index:05d>"``: sorts by section, then block."""
    return f"{section}/{int(index):05d}"


def section_units(section: str, case_ids: Sequence[str], size: int, fn: Callable[[list[int], tuple[str, ...], int], Any],
                  *, seed: int, index: Mapping[str, int]) -> dict[str, Callable[[], Any]]:  # fmt: skip
    """One unit per block of ``case_ids``: ``fn(positions, block case ids, block seed)``, timed.

    Args:
        section: the section name (part of the keys and of the seeds).
        case_ids: the cases this section measures; size: cases per block.
        fn: computes the block's JSON-able value from the positions of its cases in the caller's
            tensors (``index[case_id]``), their ids and the block seed (:func:`block_seed`).
        seed: base seed; index: case id -> position in the caller's tensors.

    Returns:
        ``{unit_key(section, j): thunk}``; a thunk returns ``{"value": ..., "seconds": ...}``.
    """
    def unit(blk: tuple[str, ...]) -> Callable[[], Any]:
        def run() -> dict[str, Any]:
            t = time.perf_counter()
            value = fn([index[c] for c in blk], blk, block_seed(seed, section, blk))
            return {"value": value, "seconds": round(time.perf_counter() - t, 3)}

        return run

    return {unit_key(section, j): unit(blk) for j, blk in enumerate(blocks(case_ids, size))}


def section_parts(results: Mapping[str, Any], section: str) -> tuple[list[Any], float]:
    """The values of ``section``'s units in block order and their summed compute seconds."""
    keys = sorted(k for k in results if k.split("/")[0] == section)
    return [results[k]["value"] for k in keys], round(sum(results[k]["seconds"] for k in keys), 3)


def unit_budget(budget: Mapping[str, Any], *, drop: Sequence[str] = ()) -> dict[str, Any]:
    """The budget fields units depend on (for the identity): all but ``n_boot`` (intervals are computed from the
    units afterwards, so more resamples need no new units) and ``drop``."""
    return {k: v for k, v in budget.items() if k != "n_boot" and k not in drop}


def unit_versions(versions: Mapping[str, str]) -> dict[str, str]:
    """The package versions a unit's numbers depend on (for the identity): medrobust, torch, monai.

    The store does not record the code itself: a development checkout that changes a measure
    without changing its version keeps its old units; use a new output folder then.
    """
    return {k: versions.get(k, "unknown") for k in ("medrobust", "torch", "monai")}


def identity_hash(identity: Mapping[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of ``identity`` as canonical JSON."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


class UnitStore:
    """Finished units of one card identity: ``folder/<section>/<index>.json``, written atomically.

    Args:
        folder: the store folder (created); its ``manifest.json`` holds the identity.
        identity: JSON-able description of everything the units depend on.

    Raises:
        ValueError: the folder holds units of another identity.
    """

    def __init__(self, folder: str | Path, identity: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.folder / "manifest.json"
        ident = json.loads(json.dumps(identity, sort_keys=True, default=str))
        if manifest.is_file():
            if json.loads(manifest.read_text()).get("identity") != ident:
                raise ValueError(f"{self.folder}: holds units of another card (model, data or settings differ).")
        else:
            _atomic_write(manifest, json.dumps({"identity": ident}, indent=1))

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def __contains__(self, key: str) -> bool:
        return self._path(key).is_file()

    def get(self, key: str) -> Any:
        """The stored value of ``key`` (``KeyError`` when not stored)."""
        try:
            return json.loads(self._path(key).read_text())
        except FileNotFoundError:
            raise KeyError(key) from None

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON, NaN not allowed) under ``key``."""
        self._path(key).parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(self._path(key), json.dumps(value, allow_nan=False))

    def keys(self) -> list[str]:
        """Stored unit keys, sorted."""
        return sorted(f"{p.parent.name}/{p.stem}" for p in self.folder.glob("*/*.json") if p.parent.name != "shards")


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _compute(units: Mapping[str, Callable[[], Any]], keys: Sequence[str], store: UnitStore, progress: bool) -> int:
    todo = [k for k in keys if k not in store]
    if len(todo) < len(keys):
        logger.info("card: %d of %d units already stored in %s (resumed)", len(keys) - len(todo), len(keys), store.folder)
    it: Any = todo
    if progress and todo:
        from tqdm.auto import tqdm

        it = tqdm(todo, desc="card units", unit="unit")
    for k in it:
        store.put(k, units[k]())
    return len(todo)


def run_units(units: Mapping[str, Callable[[], Any]], out: str | Path, identity: Mapping[str, Any], *,
              progress: bool = False, poll_s: float = 0.5) -> dict[str, Any] | None:  # fmt: skip
    """Compute (or read back) every unit; sharded over the ranks of a torchrun job.

    Args:
        units: ``{key: thunk}``; a thunk returns the unit's JSON-able value. Keys as :func:`unit_key`.
        out: the card's output folder (the store is ``out/units/<identity hash>``).
        identity: what the values depend on (model/data hashes, settings, seed).
        progress: a tqdm bar (rank 0 only).
        poll_s: rank 0's polling interval while it waits for the other ranks.

    Returns:
        ``{key: value}`` (values read back from the JSON store) in one process and on rank 0;
        ``None`` on the other ranks of a torchrun job (their share is stored for rank 0).

    Raises:
        RuntimeError: rank 0: another rank failed (its error); run the job again to resume.
    """
    from medrobust.distributed import (
        clear_status,
        dist_context,
        shard_cases,
        shard_dir,
        wait_for_ranks,
        write_status,
    )

    ctx = dist_context()
    root = Path(out) / "units" / identity_hash(identity)
    keys = sorted(units)
    if ctx.world_size == 1:
        store = UnitStore(root, identity)
        _compute(units, keys, store, progress)
        return {k: store.get(k) for k in keys}
    started = time.time()
    clear_status(root, ctx)
    mine = shard_cases(keys, rank=ctx.rank, world_size=ctx.world_size)
    shard = UnitStore(shard_dir(root, ctx.rank, ctx.world_size), identity)
    logger.info("rank %d of %d: %d of %d card units -> %s", ctx.rank, ctx.world_size, len(mine), len(keys), shard.folder)
    try:
        n = _compute(units, mine, shard, progress and ctx.rank == 0)
    except BaseException as e:
        write_status(root, ctx, ok=False, error=f"{type(e).__name__}: {e}")
        raise
    write_status(root, ctx, ok=True, computed=n, units=len(mine))
    if ctx.rank != 0:
        return None
    wait_for_ranks(root, ctx.world_size, started, poll_s)
    merged = UnitStore(root, identity)
    for r in range(ctx.world_size):
        src = UnitStore(shard_dir(root, r, ctx.world_size), identity)
        for k in src.keys():
            if k not in merged:
                merged.put(k, src.get(k))
    missing = [k for k in keys if k not in merged]
    if missing:
        raise RuntimeError(f"card: {len(missing)} units missing after the merge (e.g. {missing[:3]}); run the job again.")
    return {k: merged.get(k) for k in keys}
