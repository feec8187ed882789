"""Write this bundle's synthetic training set with the repository's mammogram generator.

The demo set (``python -m sample_data.generate``) uses seed 0 and 48 cases; the training set
uses another seed (default 1234) and more cases, so the shipped model never sees the demo
images. Images keep the generator's default 1024 x 832 matrix so training sees the same
physical pixel size and noise as the demo data; the configs resize them to the network input.

Usage (from the bundle root, or pass paths from anywhere)::

    python -m scripts.make_dataset --out runs/train_data --n 320 --seed 1234
    python bundles/mammogram_perturbation_sensitivity/scripts/make_dataset.py --out /tmp/mammo_train

Writes ``OUT/mammo/images/*.dcm``, ``OUT/mammo/masks/*.nii.gz``, ``OUT/mammo/labels.csv`` and
``OUT/mammo/lesions.csv``; pass ``--dataset_dir OUT/mammo`` to the train config.

Example:
    >>> from scripts.make_dataset import make_dataset  # doctest: +SKIP
    >>> make_dataset("/tmp/mammo_train", n=16, seed=7)  # doctest: +SKIP
    PosixPath('/tmp/mammo_train/mammo')
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["make_dataset", "main", "DEFAULT_N", "DEFAULT_SEED"]

logger = logging.getLogger(__name__)

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
#: cases and seed of the training set the shipped ``models/model.pt`` was trained on
DEFAULT_N = 320
DEFAULT_SEED = 1234


def _generator_module() -> ModuleType:
    """``sample_data.mammograms``: the installed/importable module, else the repository's file.

    ``sample_data`` is a top-level folder of the repository, not an installed package, so a
    bundle run from its own root loads ``sample_data/mammograms.py`` by path (a self-contained
    module), without touching ``sys.path``.
    """
    try:
        return importlib.import_module("sample_data.mammograms")
    except ModuleNotFoundError as e:
        if e.name not in ("sample_data", "sample_data.mammograms"):
            raise
    path = BUNDLE_ROOT.parents[1] / "sample_data" / "mammograms.py"
    if not path.is_file():
        raise ModuleNotFoundError(
            f"sample_data.mammograms not importable and not found at {path}; "
            "run from the medrobust repository (or put it on PYTHONPATH)."
        )
    spec = importlib.util.spec_from_file_location("_medrobust_sample_mammograms", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def make_dataset(
    out: str | Path,
    *,
    n: int = DEFAULT_N,
    seed: int = DEFAULT_SEED,
    size: tuple[int, int] | None = None,
) -> Path:
    """Generate ``n`` synthetic mammograms into ``out/mammo`` and return that folder.

    Args:
        out: parent folder; the cases go to ``out/mammo``.
        n: number of cases (>= 4; balanced over label x subgroup).
        seed: generator seed (the demo set uses 0: keep them different).
        size: (H, W) of each image; ``None`` uses the generator default (1024 x 832).

    Raises:
        ValueError: ``n`` < 4 or a size the generator refuses (its message names the value).
    """
    mammograms = _generator_module()
    kwargs = {"n": int(n), "seed": int(seed)}
    if size is not None:
        kwargs["size"] = (int(size[0]), int(size[1]))
    return Path(mammograms.generate_mammograms(Path(out) / "mammo", **kwargs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(BUNDLE_ROOT / "runs" / "train_data"), help="parent output folder")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help=f"number of cases (default {DEFAULT_N})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"generator seed (default {DEFAULT_SEED})")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None, help="image size (default 1024 832)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    folder = make_dataset(args.out, n=args.n, seed=args.seed, size=args.size)
    logger.info("training set written to %s (pass --dataset_dir %s)", folder, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
