"""Robustness measures of a classifier on a dataset, written as CSV + PNG (``medrobust metrics``).

:class:`MetricsConfig` holds the settings (importing it is cheap); :func:`run_measures` loads
the model and data and runs the measures of :mod:`medrobust.core.metrics`,
:mod:`medrobust.core.attacks` and :mod:`medrobust.core.detectors` on them.

Example:
    >>> from medrobust.measures import MEASURES
    >>> "fisher" in MEASURES
    True
"""

from __future__ import annotations

import importlib
from typing import Any

from medrobust.measures.config import MEASURES, MetricsConfig, parse_label_map

__all__ = ["MEASURES", "MetricsConfig", "load_inputs", "parse_label_map", "run_measures"]


def __getattr__(name: str) -> Any:  # the runner imports torch: load it on first use
    if name in ("load_inputs", "run_measures"):
        return getattr(importlib.import_module("medrobust.measures.runner"), name)
    raise AttributeError(f"module 'medrobust.measures' has no attribute {name!r}")
