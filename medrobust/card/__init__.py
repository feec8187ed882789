"""Robustness cards: one command, one self-contained HTML page and a ``card.json`` for a classifier,
a segmentation model or a registration bundle.

The application layer over the library's measures (clean performance and calibration with
intervals, the sensitivity sweep, PGD / Square / AutoAttack robustness with the gradient-masking
check, the (eps, delta) probabilistic estimate, intrinsic robustness, nMutant detection; Dice and
TRE rows for segmentation and registration). The per-case work runs in resumable units that shard
over torchrun ranks (:mod:`medrobust.card.units`). Names are imported lazily so ``medrobust --help``
stays cheap.

Example:
    >>> from medrobust.card import CardBudget
    >>> CardBudget(attack_cases=8).attack_cases
    8
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CardBudget": "budget",
    "CardResult": "builder",
    "make_card": "builder",
    "load_card_data": "dataset",
    "CardData": "dataset",
    "render_html": "render",
    "write_robustness_metadata": "metadata",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"medrobust.card.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'medrobust.card' has no attribute {name!r}")
