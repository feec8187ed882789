"""Experiment tracking with MLflow: bundle training, cards and sensitivity sweeps recorded as MLflow runs.

By default a run is recorded in a local MLflow store under the run folder: an SQLite database
``OUT/mlflow.db`` with the artifacts next to it in ``OUT/mlruns`` (no server, works offline);
any tracking URI (``sqlite:///...``, ``http://server:5000``) can be given instead. SQLite rather
than MLflow's file store because MLflow 3 keeps the file store in maintenance mode (refused unless
``MLFLOW_ALLOW_FILE_STORE=true``) and MONAI 1.6's ``MLFlowHandler`` rejects ``file:`` URIs
outright; one store format serves the card, the sweep and bundle training. Bundle training is
tracked by MONAI's own ``MLFlowHandler`` with its URI from :func:`default_uri` (the bundles'
``track`` switch, see ``docs/card.md``); :func:`artifact_location` is the rule MONAI's handler
follows for SQLite stores, so both writers put artifacts in the same place. An explicit ``file:``
URI is still accepted here (``MLFLOW_ALLOW_FILE_STORE`` is set for it, when unset).

All calls go through an explicit :class:`mlflow.MlflowClient`, so no global active run is
started or left behind. ``mlflow`` is an optional dependency (``pip install medrobust[tracking]``);
without it the default local tracking is skipped with a warning, and an explicit URI is an error.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> uri = default_uri(d)
    >>> uri.startswith("sqlite:///") and uri.endswith("/mlflow.db")
    True
    >>> artifact_location(uri) == (d.resolve() / "mlruns").as_uri()
    True
    >>> artifact_location("http://server:5000") is None
    True
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["default_uri", "artifact_location", "tracking_client", "experiment_id", "enabled", "run_name", "log_run",
           "log_card", "log_sensitivity"]  # fmt: skip

logger = logging.getLogger(__name__)

_SQLITE = "sqlite:///"


def default_uri(out: str | Path) -> str:
    """The local store under a run folder: ``sqlite:////.../OUT/mlflow.db`` (artifacts in ``OUT/mlruns``)."""
    return _SQLITE + (Path(out).expanduser().resolve() / "mlflow.db").as_posix()


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: ``mlruns`` next to a local SQLite database
    (MONAI's ``MLFlowHandler`` rule), else ``None`` (the tracking server decides)."""
    if uri.startswith(_SQLITE):
        return (Path(uri[len(_SQLITE):]).parent / "mlruns").as_uri()
    return None


def tracking_client(uri: str) -> Any:
    """An :class:`mlflow.MlflowClient` for ``uri`` (a local SQLite database gets its folder created).

    Raises:
        ImportError: mlflow is not installed (with the install command).
    """
    try:
        from mlflow import MlflowClient
    except ImportError as e:
        raise ImportError(f"experiment tracking needs mlflow ({e}); pip install 'medrobust[tracking]'.") from None
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    elif uri.startswith(_SQLITE):
        Path(uri[len(_SQLITE):]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment ``name`` in ``client``'s store, created (with :func:`artifact_location`) when missing."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(str(client.tracking_uri)))


_FALSE, _TRUE = ("false", "0", "no", "off"), ("true", "1", "yes", "on")


def enabled(track: bool | str = True) -> bool:
    """Whether this process records a bundle run: ``track`` is on, this is rank 0 of a torchrun job
    (or no job), and mlflow is installed (else a warning and no tracking, as for :func:`log_card`).

    The bundles' ``train.json`` disable their ``MLFlowHandler`` with ``"$not medrobust.tracking.enabled(@track)"``,
    so under DDP only rank 0 creates the store (the other ranks do not even open it). ``track`` may be
    the text of a command-line override (``monai.bundle run ... --track false`` passes the string ``"false"``).

    Example:
        >>> enabled(False), enabled("off")
        (False, False)

    Raises:
        ValueError: ``track`` is a string that is not a yes/no word.
    """
    from medrobust.distributed import dist_context

    if isinstance(track, str):
        word = track.strip().lower()
        if word not in _FALSE + _TRUE:
            raise ValueError(f"track: expected true/false (or yes/no, on/off, 1/0), got {track!r}.")
        track = word in _TRUE
    if not track or dist_context().rank != 0:
        return False
    try:
        import mlflow  # noqa: F401
    except ImportError:
        logger.warning("tracking: mlflow is not installed; the run is not recorded (pip install 'medrobust[tracking]').")
        return False
    return True


def run_name(prefix: str = "train") -> str:
    """``<prefix>_YYYYmmdd_HHMMSS_<pid>``: one name per process, shared by a workflow's trainer and validator handlers.

    Example:
        >>> run_name("eval").startswith("eval_")
        True
    """
    import time

    return f"{prefix}_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"


def _clean_metrics(metrics: Iterable[tuple[str, float, int]]) -> list[tuple[str, float, int]]:
    out = []
    for key, value, step in metrics:
        if value is None:
            continue
        v = float(value)
        if math.isfinite(v):
            out.append((key.replace("@", "_at_").replace("(", "").replace(")", ""), v, int(step)))
    return out


def log_run(
    *,
    experiment: str,
    run_name: str,
    uri: str,
    params: Mapping[str, Any] = {},
    metrics: Iterable[tuple[str, float, int]] = (),
    artifacts: Iterable[str | Path] = (),
    tags: Mapping[str, str] = {},
) -> str:
    """Record one finished run; returns its run id.

    Args:
        experiment: experiment name (created when missing).
        run_name: the run's name.
        uri: tracking URI.
        params: parameters (values stringified, truncated to MLflow's 6000 characters).
        metrics: ``(key, value, step)``; non-finite values are left out.
        artifacts: files or folders to attach.
        tags: extra tags.
    """
    from mlflow.entities import Metric, Param, RunTag

    client = tracking_client(uri)
    run = client.create_run(experiment_id(client, experiment), run_name=run_name, tags={"mlflow.source.name": "medrobust", **dict(tags)})
    rid = run.info.run_id
    status = "FAILED"
    try:
        ps = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        ms = [Metric(k, v, 0, s) for k, v, s in _clean_metrics(metrics)]
        for i in range(0, max(len(ps), len(ms), 1), 100):  # MLflow's batch limits
            client.log_batch(rid, metrics=ms[i:i + 100], params=ps[i:i + 100], tags=[RunTag("medrobust.batch", str(i))])
        for a in artifacts:
            p = Path(a)
            if p.is_dir():
                client.log_artifacts(rid, str(p), artifact_path=p.name)
            elif p.is_file():
                client.log_artifact(rid, str(p))
        status = "FINISHED"
    finally:
        client.set_terminated(rid, status=status)
    logger.info("tracking: run %s recorded in %s (experiment %r)", rid, uri, experiment)
    return rid


def _resolve(out: Path, uri: str | None) -> str | None:
    if uri is not None:
        return uri
    try:
        import mlflow  # noqa: F401
    except ImportError:
        logger.warning("tracking: mlflow is not installed; the run is not recorded (pip install 'medrobust[tracking]').")
        return None
    return default_uri(out)


def log_card(result: Any, *, uri: str | None = None, params: Mapping[str, Any] = {}) -> str | None:
    """Record a :class:`~medrobust.card.CardResult`: settings, headline figures, robust accuracy per eps
    (step = eps in 1/255) and the card files as artifacts. Returns the run id (None when skipped)."""
    uri = _resolve(Path(result.out), uri)
    if uri is None:
        return None
    card = result.card
    metrics: list[tuple[str, float, int]] = []
    for k, v in card["headline"].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            metrics.append((k, v, 0))
    robust = "robust_dice" if card["task"].get("type") == "segmentation" else "robust_accuracy"
    for r in card.get("adversarial", {}).get("rows", []):
        step = round(r["eps"] * 255)
        if card["task"].get("type") == "registration":  # TRE median (mm) per attack, no accuracy-like entries
            metrics += [(f"tre_median_mm/{name}", s["tre_median_mm"], step) for name, s in r["attacks"].items()]
            continue
        metrics += [(f"{robust}/{name}", e["value"], step) for name, e in r["attacks"].items()]
        metrics.append((f"{robust}/worst_case", r["worst_case"]["value"], step))
    for r in card.get("autoattack", {}).get("rows", []):
        metrics.append(("robust_accuracy/autoattack", r["accuracy"]["value"], round(r["eps"] * 255)))
    metrics += _sensitivity_metrics(card.get("sensitivity", {}).get("families", {}))
    return log_run(experiment="medrobust-card", run_name=f"card {card['task']['model']}", uri=uri,
                   params={**params, "model_sha256": card["provenance"]["model_sha256"],
                           "data_sha256": card["provenance"]["data_sha256"]},
                   metrics=metrics, artifacts=[result.html, result.json])  # fmt: skip


def _sensitivity_metrics(families: Mapping[str, Iterable[Mapping[str, Any]]]) -> list[tuple[str, float, int]]:
    out = []
    for fam, rows in families.items():
        for step, r in enumerate(rows):  # step = severity index (MLflow steps are integers); severity logged too
            out.append((f"{fam}/severity", r.get("severity"), step))
            for m in ("accuracy", "flip_rate", "auc", "mean_abs_delta_p", "dice", "tre_median_mm"):
                v = r.get(m)
                out.append((f"{fam}/{m}", v.get("value") if isinstance(v, Mapping) else v, step))
    return out


def log_sensitivity(result: Any, *, uri: str | None = None, params: Mapping[str, Any] = {}) -> str | None:
    """Record a :class:`~medrobust.sensitivity.SensitivityResult`: settings, per family x severity metrics
    (step = severity index) and ``report.md`` / ``summary.csv`` / plots as artifacts."""
    out = Path(result.out)
    uri = _resolve(out, uri)
    if uri is None:
        return None
    s = result.summary
    s = s[s["subgroup"] == "all"] if "subgroup" in s else s
    fams: dict[str, list[dict]] = {}
    for fam, grp in s.groupby("family", sort=False):
        fams[str(fam)] = [dict(r) for _, r in grp.sort_values("severity").iterrows()]
    artifacts = [p for p in (out / "report.md", out / "summary.csv", out / "summary.json") if p.is_file()]
    artifacts += sorted(out.glob("*.png"))
    return log_run(experiment="medrobust-sensitivity", run_name=f"sensitivity {out.name}", uri=uri, params=params,
                   metrics=_sensitivity_metrics(fams) + [("n_cases", float(result.predictions["case_id"].nunique()), 0)],
                   artifacts=artifacts)  # fmt: skip
