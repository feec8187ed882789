"""``medrobust simulate``: seeded FE TRUS-probe motion simulations written as DDFs.

Example::

    medrobust simulate --n 8 --out runs/sims --seed 0 --spacing 3 --size 24 32 24
    medrobust simulate --n 20 --out runs/sims --reference fixed.nii.gz --gland moving_label.nii.gz

The command builds a :class:`SimulateConfig` and passes it to :func:`simulate_to_folder`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from medrobust.commands._common import check_out_dir, common_parent, positive_int

__all__ = ["SimulateConfig", "add_parser", "run", "simulate_to_folder"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulateConfig:
    """Settings of :func:`simulate_to_folder` (one field per ``medrobust simulate`` flag)."""

    n: int
    out: Path
    seed: int = 0
    spacing: float = 3.0
    size: tuple[int, int, int] | None = None
    reference: Path | None = None
    gland: Path | None = None
    element_size: float = 8.0
    cache: Path | None = None
    progress: bool = True
    anterior_axis: str | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}.")
        if not self.spacing > 0 or not self.element_size > 0:
            raise ValueError(f"spacing and element_size must be > 0, got {self.spacing} and {self.element_size}.")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``simulate`` subcommand."""
    p = subparsers.add_parser(
        "simulate",
        help="finite-element TRUS-probe motion simulations -> DDFs (NIfTI) + parameters (CSV)",
        description="Linear-elastic FE simulations (scikit-fem) of probe-induced prostate motion plus "
        "random rigid motion, sampled to dense displacement fields on an image grid.",
        parents=[common_parent()],
    )
    req = p.add_argument_group("required")
    req.add_argument("--n", type=positive_int, required=True, help="number of simulations")
    req.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed (simulation i uses default_rng([seed, i]))")
    p.add_argument("--spacing", type=float, default=3.0, help="grid spacing in mm (default 3)")
    p.add_argument("--size", type=positive_int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="grid size in voxels (default: the reference FOV, or 24 32 24)")
    p.add_argument("--reference", type=Path, default=None,
                   help="fixed image whose direction and field of view define the grid (default: RAS grid at the origin)")
    p.add_argument("--gland", type=Path, default=None,
                   help="gland label (NIfTI, channel 0 used) to fit the gland ellipsoid (default: a 40x30x36 mm gland at the grid centre)")
    p.add_argument("--element-size", type=float, default=8.0, help="FE element size in mm (default 8)")
    p.add_argument("--anterior-axis", default=None, metavar="AXIS",
                   help="signed array axis of the reference grid that points anterior, e.g. 2 or -1, when the header does not "
                   "state the anatomy (default: anterior from the header's orientation, world +A)")
    p.add_argument("--cache", type=Path, default=None, help="cache folder (default OUT/.cache)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _grid_and_gland(args: SimulateConfig):
    import numpy as np

    from medrobust.data.paired import Grid, read_volume, target_grid
    from medrobust.simulation.motion import Ellipsoid, fit_ellipsoid

    if args.reference is not None:
        arr, aff = read_volume(args.reference)
        grid = target_grid(aff, arr.shape[1:], spacing=args.spacing, size=args.size)
    else:
        size = tuple(args.size or (24, 32, 24))
        aff = np.diag([args.spacing] * 3 + [1.0])
        grid = Grid(size, aff)
    if args.gland is not None:
        lab, lab_aff = read_volume(args.gland)
        gland = fit_ellipsoid(lab[0], lab_aff)
    else:
        centre = grid.affine[:3, :3] @ ((np.asarray(grid.shape) - 1) / 2) + grid.affine[:3, 3]
        gland = Ellipsoid(tuple(map(float, centre)), (20.0, 15.0, 18.0))
    return grid, gland


def run(args: argparse.Namespace) -> int:
    """Build the :class:`SimulateConfig` of the parsed command line and run it; returns the exit status."""
    cfg = SimulateConfig(
        n=args.n, out=args.out, seed=args.seed, spacing=args.spacing, size=tuple(args.size) if args.size else None,
        reference=args.reference, gland=args.gland, element_size=args.element_size, cache=args.cache,
        progress=not args.no_progress, anterior_axis=args.anterior_axis,
    )  # fmt: skip
    check_out_dir(cfg.out)
    simulate_to_folder(cfg)
    return 0


def simulate_to_folder(args: SimulateConfig) -> Path:
    """Run the simulations and write ``sim_XXXX.nii.gz`` DDFs, ``simulations.csv`` and ``grid.json`` to ``args.out``."""
    from dataclasses import asdict, replace

    import numpy as np

    from medrobust.registration.export import save_ddf_nifti
    from medrobust.simulation.bank import simulate_many
    from medrobust.simulation.motion import SimulationRanges, probe_frame

    logging.getLogger("skfem").setLevel(logging.WARNING)  # skfem logs every assembly at INFO
    grid, gland = _grid_and_gland(args)
    ranges = replace(SimulationRanges(), element_size=args.element_size)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ddfs, params = simulate_many(grid, [gland], n=args.n, seed=args.seed, cache_dir=args.cache or out / ".cache",
                                 ranges=ranges, progress=args.progress,
                                 frame=probe_frame(grid.affine, anterior_axis=args.anterior_axis))
    rows = []
    for i, (ddf, p) in enumerate(zip(ddfs, params)):
        name = f"sim_{i:04d}.nii.gz"
        save_ddf_nifti(out / name, ddf, grid.affine)
        flat = {k: v for k, v in p.to_dict().items() if k != "gland"}
        rows.append({"file": name, **{k: json.dumps(v) if isinstance(v, (list, tuple)) else v for k, v in flat.items()},
                     "max_displacement_mm": float(np.linalg.norm(np.einsum("ij,j...->i...", grid.affine[:3, :3], ddf), axis=0).max())})
    with open(out / "simulations.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "grid.json").write_text(json.dumps({"shape": list(grid.shape), "affine": grid.affine.tolist(),
                                               "gland": asdict(gland)}, indent=2))
    logger.info("wrote %d DDFs to %s", len(rows), out)
    return out
