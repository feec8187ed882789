"""One way to build a MONAI bundle's network and one way to run its workflows.

Every script, benchmark and test that needs a bundle's network with its weights calls
:func:`load_bundle_network` (any config, any overrides: ``inference.json``, ``train.json``, a
reference configuration trained with overrides); every one that trains, evaluates or infers with a
bundle calls :func:`run_bundle_workflow` (MONAI's ``ConfigWorkflow``: initialize, check the
required properties, run, finalize). Both put the bundle root on ``sys.path`` for the bundle's
``scripts.`` modules only while they work (:func:`bundle_imports`), so one bundle's ``scripts``
package never shadows another's.

Config names are looked up in ``<bundle>/configs/`` (an absolute path is used as is); a name
without suffix tries ``.json``, ``.yaml`` and ``.yml``.

Example:
    >>> net = load_bundle_network("bundles/lesion_classification")  # doctest: +SKIP
    >>> net = load_bundle_network("bundles/mrus_registration", config_files=["train.json"],
    ...                           overrides={"local_stage": False}, weights=None)  # doctest: +SKIP
    >>> wf = run_bundle_workflow("bundles/lesion_classification", ["train.json", "evaluate.json"],
    ...                          ckpt_dir="runs/x", epochs=2)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["bundle_config_files", "bundle_imports", "bundle_parser", "load_bundle_network", "run_bundle_workflow"]

_SUFFIXES = (".json", ".yaml", ".yml")


def bundle_config_files(bundle_root: str | Path, config_files: str | Sequence[str | Path]) -> list[Path]:
    """Resolve config names (``"train.json"``, ``"inference"``, absolute paths) to existing files.

    Raises:
        FileNotFoundError: the bundle root or a config does not exist (the message lists the
            bundle's configs).
        ValueError: no config given.
    """
    root = Path(bundle_root)
    if not root.is_dir():
        raise FileNotFoundError(f"bundle_root {root} is not a folder.")
    names = [config_files] if isinstance(config_files, (str, Path)) else list(config_files)
    if not names:
        raise ValueError("config_files: give at least one config (e.g. 'inference.json').")
    out = []
    for name in names:
        path = Path(name) if Path(name).is_absolute() else root / "configs" / name
        candidates = [path] + ([path.with_name(path.name + s) for s in _SUFFIXES] if not path.suffix else [])
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            have = sorted(p.name for p in (root / "configs").glob("*") if p.suffix in _SUFFIXES)
            raise FileNotFoundError(f"bundle {root}: config {name!r} not found; configs/ holds {have}.")
        out.append(found)
    return out


def _purge_scripts(keep_from: Path | None = None) -> None:
    """Forget imported ``scripts`` modules (except those loaded from ``keep_from``)."""
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        origin = getattr(sys.modules[name], "__file__", None) or ""
        if keep_from is None or not Path(origin).resolve().is_relative_to(keep_from):
            del sys.modules[name]


@contextlib.contextmanager
def bundle_imports(bundle_root: str | Path) -> Iterator[None]:
    """Make ``import scripts...`` resolve to this bundle's ``scripts`` package while inside.

    ``sys.path`` is restored on exit (whatever the workflow added to it); a ``scripts`` package
    imported from another bundle is forgotten first.
    """
    root = Path(bundle_root).resolve()
    _purge_scripts(keep_from=root)
    saved = list(sys.path)
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path[:] = saved


def bundle_parser(
    bundle_root: str | Path, config_files: str | Sequence[str | Path] = ("inference",), *,
    overrides: Mapping[str, Any] | None = None,
) -> Any:
    """A ``monai.bundle.ConfigParser`` over ``config_files`` (later files override earlier ones),
    with ``bundle_root`` set and ``overrides`` applied (ids may be nested: ``"fe#cache_dir"``)."""
    from monai.bundle import ConfigParser

    files = bundle_config_files(bundle_root, config_files)
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.update({"bundle_root": str(bundle_root), **dict(overrides or {})})
    return parser


def load_bundle_network(
    bundle_root: str | Path,
    *,
    config_files: str | Sequence[str | Path] = ("inference",),
    overrides: Mapping[str, Any] | None = None,
    weights: str | Path | None = "models/model.pt",
    net_id: str = "network_def",
    device: torch.device | str = "cpu",
) -> torch.nn.Module:
    """The bundle's network (``net_id`` of ``config_files`` with ``overrides``), with its weights, in eval mode.

    Args:
        bundle_root: the bundle folder (``configs/``, ``models/``).
        config_files: configs to read, in order (names in ``configs/`` or absolute paths).
        overrides: config ids to set (e.g. the overrides a reference configuration was trained with).
        weights: a state dict (or a checkpoint holding one), relative to ``bundle_root`` or
            absolute, loaded strictly with ``weights_only=True``; ``None`` keeps the initialisation.
        net_id: the config id of the network.
        device: where the network is put.

    Returns:
        The ``nn.Module`` in eval mode (parameters still trainable: callers fine-tune or attack it).

    Raises:
        FileNotFoundError: a config or the weights file is missing.
        ValueError: ``net_id`` is not in the configs or is not a module; weights do not match.
    """
    from medrobust.models.loading import load_weights

    parser = bundle_parser(bundle_root, config_files, overrides=overrides)
    if net_id not in parser:
        raise ValueError(f"bundle {bundle_root}: no {net_id!r} in {list(config_files)}; top-level ids: {sorted(parser.get())[:20]}.")
    with bundle_imports(bundle_root):
        network = parser.get_parsed_content(net_id, instantiate=True)
    if not isinstance(network, torch.nn.Module):
        raise ValueError(f"bundle {bundle_root}: {net_id!r} should instantiate a torch.nn.Module, got {type(network).__name__}.")
    if weights is not None:
        path = Path(weights) if Path(weights).is_absolute() else Path(bundle_root) / weights
        load_weights(network, path)
    return network.to(device).eval()


def run_bundle_workflow(
    bundle_root: str | Path,
    config_files: str | Sequence[str | Path],
    *,
    workflow_type: str = "train",
    run: bool = True,
    logging_file: str | Path | bool = False,
    **overrides: Any,
) -> Any:
    """Run a bundle workflow the way the MONAI model zoo does: initialize, check, run, finalize.

    Args:
        bundle_root: the bundle folder.
        config_files: configs merged in order (names in ``configs/`` or absolute paths).
        workflow_type: ``"train"`` or ``"infer"`` (an evaluation config merged onto
            ``train.json`` runs as ``"train"``, whose required properties it has).
        run: ``False`` returns the initialized, checked workflow without running it (the caller
            runs and finalizes it; parsing ``scripts.`` ids then needs :func:`bundle_imports`).
        logging_file: a logging config for MONAI, or ``False`` to leave logging alone.
        overrides: config ids to set (``bundle_root`` is set for you).

    Returns:
        The ``monai.bundle.ConfigWorkflow``.

    Raises:
        FileNotFoundError: a config is missing.
        ValueError: the configs lack properties the workflow type requires.
    """
    from monai.bundle import ConfigWorkflow

    root = Path(bundle_root)
    files = [str(f) for f in bundle_config_files(root, config_files)]
    meta = root / "configs" / "metadata.json"
    with bundle_imports(root):
        wf = ConfigWorkflow(config_file=files if len(files) > 1 else files[0], workflow_type=workflow_type,
                            meta_file=str(meta) if meta.is_file() else None,
                            logging_file=str(logging_file) if isinstance(logging_file, (str, Path)) else logging_file,
                            **{"bundle_root": str(root), **overrides})
        wf.initialize()
        try:
            missing = wf.check_properties()
        except KeyError as e:  # MONAI raises for a required property whose id is absent
            missing = [str(e).strip("\"'")]
        if missing:
            raise ValueError(f"bundle {root}: {[Path(f).name for f in files]} lack required {workflow_type} properties {missing}.")
        if run:
            wf.run()
            wf.finalize()
    return wf
