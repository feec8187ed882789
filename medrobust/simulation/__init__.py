"""Finite-element (scikit-fem) simulation of TRUS-probe prostate motion for MR-TRUS registration.

``fem`` (mesh, solve, exact P1 evaluation), ``motion`` (materials, probe loading, rigid motion,
dense DDF) and ``bank`` (seeded, cached batches); the ``medrobust simulate`` command is
:mod:`medrobust.commands.simulate`.
"""

from __future__ import annotations

from medrobust.simulation.bank import simulate_many
from medrobust.simulation.fem import BoxMesh, solve_linear_elasticity
from medrobust.simulation.motion import Ellipsoid, SimulationParams, SimulationRanges, fit_ellipsoid, sample_parameters, simulate_ddf

__all__ = [
    "BoxMesh",
    "Ellipsoid",
    "SimulationParams",
    "SimulationRanges",
    "fit_ellipsoid",
    "sample_parameters",
    "simulate_ddf",
    "simulate_many",
    "solve_linear_elasticity",
]
