"""Perturbation sensitivity of classifiers: the batched, resumable sweep and its reports.

Names are imported lazily so that ``medrobust --help`` (which imports the ``cli`` submodule)
does not pay for torch and MONAI.

Example:
    >>> from medrobust.sensitivity import run_sensitivity  # doctest: +SKIP
    >>> result = run_sensitivity("bundles/mammogram_perturbation_sensitivity",
    ...                          "sample_data/generated/mammo", "runs/demo",
    ...                          labels="sample_data/generated/mammo/labels.csv")  # doctest: +SKIP
    >>> result.summary[result.summary.subgroup == "all"]  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_FAMILIES": "engine",
    "SensitivityResult": "engine",
    "perturb_for_model": "batching",
    "resolve_plan": "engine",
    "run_sensitivity": "engine",
    "ResultsStore": "store",
    "RunIdentityError": "store",
    "summarise": "summary",
    "summarise_cnr": "summary",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"medrobust.sensitivity.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'medrobust.sensitivity' has no attribute {name!r}")
