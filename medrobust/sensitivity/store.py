"""The results store of a sensitivity run: append-only CSVs plus a manifest, resumable.

A run folder holds:

- ``manifest.json``: the run's *identity* (everything that changes results: model hash,
  families and severities, seed, data and labels, input shape, ...) plus provenance
  (versions, times, status). Restarting in the same folder with the same identity resumes;
  a different identity raises unless ``overwrite``.
- ``predictions.csv``: one row per (case, family, severity), appended and flushed per batch.
- ``errors.csv``: files that were skipped, the stage (scan / load / input / roi) and why.
- ``cnr.csv``: ROI contrast-to-noise ratios when ROI masks are given.
- ``inputs.csv``: per-case statistics of the clean model input (for the domain-shift check).

Each prediction row holds p(positive) **and** the decision margin (log-odds of the positive class
against its strongest competitor, :meth:`~medrobust.models.LoadedModel.decision_margin`), so a
saturated model (p = 1.0 whatever the input) cannot hide how far its logits moved. A store written
before the margin column existed reads back (``margin`` is NaN) but cannot be appended to: resuming
it raises :class:`RunIdentityError` saying so (use ``overwrite`` or another folder).

A process killed mid-write leaves at most a partial last line; :meth:`ResultsStore.open`
cuts it off, and rows written twice (a batch re-run after a crash) are de-duplicated on read.

Example:
    >>> store = ResultsStore("runs/demo")  # doctest: +SKIP
    >>> store.open({"seed": 0}, provenance={}, overwrite=False)  # doctest: +SKIP
    >>> store.add_predictions([{"case_id": "a", "family": "gaussian_noise", "severity": 0.0, ...}])  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import pandas as pd

__all__ = [
    "PREDICTION_COLUMNS",
    "ERROR_COLUMNS",
    "CNR_COLUMNS",
    "INPUT_COLUMNS",
    "LEGACY_PREDICTION_COLUMNS",
    "RunIdentityError",
    "RunLock",
    "RunLockedError",
    "ResultsStore",
    "format_float",
]

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("case_id", "family", "severity", "p_positive", "margin", "predicted_class", "label", "subgroup")
#: the prediction columns of stores written before the margin was recorded (engine version 1)
LEGACY_PREDICTION_COLUMNS = ("case_id", "family", "severity", "p_positive", "predicted_class", "label", "subgroup")
ERROR_COLUMNS = ("file", "stage", "reason")
CNR_COLUMNS = ("case_id", "family", "severity", "cnr", "roi_pixels", "subgroup")
INPUT_COLUMNS = ("case_id", "mean", "std", "background_fraction", "foreground_mean")

#: files this store (and the report) writes; ``overwrite`` removes only these
_OUTPUT_FILES = (
    "manifest.json", "predictions.csv", "errors.csv", "cnr.csv", "inputs.csv", "summary.csv", "summary.json", "report.md"
)
_OUTPUT_GLOBS = ("curves_*.png", "examples*.png")


class RunIdentityError(ValueError):
    """The run folder holds a run with different settings."""


class RunLockedError(RuntimeError):
    """Another process holds the run folder's lock."""


class RunLock:
    """An exclusive lock on a run folder (``filelock``: ``fcntl`` on POSIX, ``msvcrt`` on Windows).

    The holder's pid, host and start time are written beside the lock (``.lock.holder.json``) so a
    second run can say who holds it. The OS releases the lock when the holder dies (kill -9
    included), so a stale holder file never blocks a new run.

    Args:
        out: the run folder.
        wait: block until the lock is free instead of failing.
    """

    def __init__(self, out: str | Path, *, wait: bool = False) -> None:
        from filelock import FileLock

        self.out = Path(out)
        self.wait = bool(wait)
        self._lock = FileLock(str(self.out / ".lock"))
        self._holder = self.out / ".lock.holder.json"

    def holder(self) -> str:
        """The holder, as text (``pid 123 on host h since 2024-...``), or ``unknown``."""
        try:
            h = json.loads(self._holder.read_text())
            return f"pid {h['pid']} on host {h['host']} since {h['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "unknown (no holder record)"

    def acquire(self) -> None:
        from filelock import Timeout

        self.out.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            if not self.wait:
                raise RunLockedError(
                    f"run folder {self.out} is in use by another medrobust run ({self.holder()}); wait for it to "
                    "finish, run again with --wait, or choose another --out."
                ) from None
            logger.warning("run folder %s is in use (%s); waiting for it", self.out, self.holder())
            self._lock.acquire()
        import platform

        tmp = self._holder.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": platform.node(), "started": _now()}))
        os.replace(tmp, self._holder)

    def release(self) -> None:
        if self._lock.is_locked:
            self._holder.unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def format_float(value: float) -> str:
    """Shortest text that reads back as the same float (``repr``)."""
    return repr(float(value))


def _repair_tail(path: Path) -> int:
    """Cut a partial last line (no trailing newline) left by a killed writer; returns bytes cut."""
    if not path.is_file():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        # walk back to the last newline
        pos = size - 1
        block = 4096
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        else:
            keep = 0
        f.truncate(keep)
    return size - keep


class _CsvAppender:
    """A CSV file opened for appending, header written once, flushed after every write."""

    def __init__(self, path: Path, columns: tuple[str, ...], legacy: tuple[tuple[str, ...], ...] = ()) -> None:
        self.path = path
        self.columns = columns
        self.legacy = legacy
        self._file: IO[str] | None = None
        self._writer: Any = None

    def _ensure(self) -> None:
        if self._file is not None:
            return
        cut = _repair_tail(self.path)
        if cut:
            logger.warning("%s: removed a partial last line (%d bytes) left by an interrupted run", self.path.name, cut)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        if not new:
            with open(self.path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
            if tuple(header) in self.legacy:
                raise RunIdentityError(
                    f"{self.path} was written by an older medrobust (columns {header}, without "
                    f"{sorted(set(self.columns) - set(header))}); it can be read but not resumed. Use another "
                    "--out folder, or --overwrite to recompute it."
                )
            if tuple(header) != self.columns:
                raise RunIdentityError(f"{self.path}: unexpected columns {header}, expected {list(self.columns)}.")
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, lineterminator="\n", extrasaction="raise")
        if new:
            self._writer.writeheader()
            self._file.flush()

    def write(self, rows: Iterable[Mapping[str, Any]]) -> int:
        self._ensure()
        n = 0
        for row in rows:
            self._writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in self.columns})
            n += 1
        self._file.flush()
        return n

    def read(self) -> pd.DataFrame:
        if self._file is None:
            _repair_tail(self.path)
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return pd.DataFrame(columns=list(self.columns))
        df = pd.read_csv(self.path, dtype={"case_id": str, "subgroup": str, "file": str}, keep_default_na=False, na_values=[""])
        if tuple(df.columns) in self.legacy:  # an older store: the missing columns read as NaN
            df = df.reindex(columns=list(self.columns))
        elif tuple(df.columns) != self.columns:
            raise RunIdentityError(f"{self.path}: unexpected columns {list(df.columns)}, expected {list(self.columns)}.")
        return df

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ResultsStore:
    """Append-only, resumable storage of one sensitivity run in ``out``.

    Args:
        out: the run folder (created).
    """

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.manifest_path = self.out / "manifest.json"
        self.predictions = _CsvAppender(self.out / "predictions.csv", PREDICTION_COLUMNS, (LEGACY_PREDICTION_COLUMNS,))
        self.errors = _CsvAppender(self.out / "errors.csv", ERROR_COLUMNS)
        self.cnr = _CsvAppender(self.out / "cnr.csv", CNR_COLUMNS)
        self.inputs = _CsvAppender(self.out / "inputs.csv", INPUT_COLUMNS)
        self.manifest: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def open(self, identity: Mapping[str, Any], *, provenance: Mapping[str, Any], overwrite: bool = False) -> bool:
        """Start or resume a run; returns True when resuming.

        Raises:
            RunIdentityError: ``out`` holds a run with a different identity and not ``overwrite``.
        """
        self.out.mkdir(parents=True, exist_ok=True)
        identity = json.loads(json.dumps(identity))  # normalise tuples/floats as JSON sees them
        resuming = False
        if self.manifest_path.is_file() and overwrite:
            self.remove_outputs()
        elif self.manifest_path.is_file():
            try:
                old = json.loads(self.manifest_path.read_text())
            except json.JSONDecodeError as e:
                raise RunIdentityError(f"{self.manifest_path} is not valid JSON ({e}); use overwrite to start again.") from e
            before = old.get("identity", {})
            if before.get("engine_version") != identity.get("engine_version") and "engine_version" in identity:
                raise RunIdentityError(
                    f"{self.out} holds a run of an older medrobust sensitivity engine (version "
                    f"{before.get('engine_version')!r}, this one is {identity['engine_version']!r}: its numbers and "
                    "columns differ). Use another --out folder, or --overwrite to recompute it."
                )
            if before != identity:
                keys = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
                details = "; ".join(f"{k}: {before.get(k)!r} -> {identity.get(k)!r}" for k in keys[:6])
                raise RunIdentityError(
                    f"{self.out} holds a run with different settings ({details}). Use another --out folder, "
                    "or --overwrite to replace it."
                )
            resuming = True
            self.manifest = old
            self.manifest.setdefault("resumed_at", []).append(_now())
        elif self.predictions.path.is_file() and self.predictions.path.stat().st_size > 0:
            raise RunIdentityError(
                f"{self.out} has predictions.csv but no manifest.json; use another --out folder or --overwrite."
            )
        if not resuming:
            self.manifest = {"identity": identity, "started_at": _now()}
        self.manifest.update({k: v for k, v in provenance.items()})
        self.manifest["status"] = "running"
        self.write_manifest()
        return resuming

    def remove_outputs(self) -> None:
        """Delete the files a run writes (and nothing else) from ``out``."""
        for name in _OUTPUT_FILES:
            (self.out / name).unlink(missing_ok=True)
        for pattern in _OUTPUT_GLOBS:
            for p in self.out.glob(pattern):
                p.unlink()

    def write_manifest(self) -> None:
        tmp = self.manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2, sort_keys=True, default=str))
        os.replace(tmp, self.manifest_path)

    def finish(self, **info: Any) -> None:
        self.manifest.update(info)
        self.manifest["status"] = "complete"
        self.manifest["finished_at"] = _now()
        self.write_manifest()
        self.close()

    def close(self) -> None:
        for a in (self.predictions, self.errors, self.cnr, self.inputs):
            a.close()

    # -- reading -----------------------------------------------------------------------------
    def done_keys(self) -> set[tuple[str, str, float]]:
        """``(case_id, family, severity)`` of every prediction already stored."""
        df = self.predictions.read()
        return {(str(c), str(f), float(s)) for c, f, s in zip(df["case_id"], df["family"], df["severity"])}

    def recorded_errors(self) -> set[tuple[str, str]]:
        """``(file, stage)`` of every error already stored."""
        df = self.errors.read()
        return {(str(f), str(s)) for f, s in zip(df["file"], df["stage"])}

    def read_predictions(self) -> pd.DataFrame:
        """All predictions, one row per (case, family, severity) (the last written wins)."""
        df = self.predictions.read()
        return df.drop_duplicates(subset=["case_id", "family", "severity"], keep="last").reset_index(drop=True)

    def read_errors(self) -> pd.DataFrame:
        return self.errors.read().drop_duplicates().reset_index(drop=True)

    def read_cnr(self) -> pd.DataFrame:
        df = self.cnr.read()
        return df.drop_duplicates(subset=["case_id", "family", "severity"], keep="last").reset_index(drop=True)

    def read_inputs(self) -> pd.DataFrame:
        """Per-case clean input statistics (one row per case, the last written wins)."""
        return self.inputs.read().drop_duplicates(subset=["case_id"], keep="last").reset_index(drop=True)

    # -- writing -----------------------------------------------------------------------------
    def add_predictions(self, rows: Iterable[Mapping[str, Any]]) -> int:
        return self.predictions.write(rows)

    def add_errors(self, rows: Iterable[Mapping[str, Any]]) -> int:
        return self.errors.write(rows)

    def add_cnr(self, rows: Iterable[Mapping[str, Any]]) -> int:
        return self.cnr.write(rows)

    def add_inputs(self, rows: Iterable[Mapping[str, Any]]) -> int:
        return self.inputs.write(rows)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
