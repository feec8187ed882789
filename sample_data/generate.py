"""Write the sample datasets: ``python -m sample_data.generate --out DIR [--only mammo] [--n N] [--seed S]``.

Each generator gets its own folder ``DIR/<name>`` and writes into it. Generators are imported
lazily from :data:`GENERATORS` (``"module:function"``, called as ``function(out_dir, n=..., seed=...)``);
one whose module does not exist yet is skipped with a message. Runs are idempotent: a
``manifest.json`` in ``DIR/<name>`` records the parameters and a hash of the generator's source,
and a folder whose manifest matches is left alone (``--force`` regenerates).

Example:
    >>> from sample_data.generate import generate_all  # doctest: +SKIP
    >>> generate_all("sample_data/generated", only=["mammo"], n=8)  # doctest: +SKIP
    {'mammo': PosixPath('sample_data/generated/mammo')}
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import shutil
import sys
import time
from pathlib import Path

__all__ = ["GENERATORS", "DEFAULT_N", "generate_all", "main"]

logger = logging.getLogger("sample_data.generate")

GENERATORS: dict[str, str] = {
    "mammo": "sample_data.mammograms:generate",
    "mrus": "sample_data.mrus:generate",
    "kspace": "sample_data.kspace:generate",
}
#: n used when --n is not given and the generator's ``n`` has no default
DEFAULT_N: dict[str, int] = {"mammo": 48, "mrus": 16, "kspace": 2}
MANIFEST = "manifest.json"


def _resolve(target: str):
    """Import ``module:function``; None when the module does not exist (yet)."""
    module_name, _, func_name = target.partition(":")
    if importlib.util.find_spec(module_name) is None:
        return None, None
    module = importlib.import_module(module_name)
    return getattr(module, func_name), Path(inspect.getfile(module))


def _manifest(name: str, target: str, source: Path, n: int | None, seed: int) -> dict:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    return {"name": name, "target": target, "n": n, "seed": seed, "source_sha256": digest}


def generate_all(
    out: str | Path, *, only: list[str] | None = None, n: int | None = None, seed: int = 0, force: bool = False
) -> dict[str, Path]:
    """Run the selected generators into ``out/<name>``; returns ``{name: folder}`` for those run or current.

    Args:
        out: parent output folder.
        only: generator names (default: all in :data:`GENERATORS`).
        n: cases per generator (default: each generator's own default).
        seed: random seed passed to every generator.
        force: regenerate even when the manifest matches.

    Raises:
        ValueError: an unknown name in ``only``.
        FileExistsError: ``out/<name>`` holds files but no manifest (not ours: never deleted).
    """
    names = list(GENERATORS) if not only else list(only)
    unknown = [x for x in names if x not in GENERATORS]
    if unknown:
        raise ValueError(f"unknown generator(s) {unknown}; choose from {list(GENERATORS)}")
    out = Path(out)
    done: dict[str, Path] = {}
    for name in names:
        func, source = _resolve(GENERATORS[name])
        if func is None:
            logger.warning("skipping %s: %s does not exist yet", name, GENERATORS[name].split(":")[0])
            continue
        params = inspect.signature(func).parameters
        n_eff = n if n is not None else (None if params["n"].default is not inspect.Parameter.empty else DEFAULT_N.get(name, 16))
        target = out / name
        manifest = _manifest(name, GENERATORS[name], source, n_eff, seed)
        mpath = target / MANIFEST
        if not force and mpath.is_file():
            try:
                if json.loads(mpath.read_text()) == manifest:
                    logger.info("%s: up to date in %s", name, target)
                    done[name] = target
                    continue
            except json.JSONDecodeError:
                pass  # a broken manifest: regenerate
        if target.exists() and any(target.iterdir()):
            if not mpath.is_file():
                raise FileExistsError(f"{target} exists and was not written by this generator (no {MANIFEST}); "
                                      "refusing to overwrite it: choose another --out")
            shutil.rmtree(target)  # stale output from other parameters
        t0 = time.perf_counter()
        kwargs = {"seed": seed} if n_eff is None else {"n": n_eff, "seed": seed}
        func(target, **kwargs)
        target.mkdir(parents=True, exist_ok=True)
        mpath.write_text(json.dumps(manifest, indent=2) + "\n")
        logger.info("%s: wrote %s in %.1f s", name, target, time.perf_counter() - t0)
        done[name] = target
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sample_data.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="parent output folder (DIR/<name> is written)")
    parser.add_argument("--only", action="append", choices=sorted(GENERATORS), help="generator to run (repeatable)")
    parser.add_argument("--n", type=int, default=None, help="cases per generator (default: generator's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if the manifest matches")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.n is not None and args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    done = generate_all(args.out, only=args.only, n=args.n, seed=args.seed, force=args.force)
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
