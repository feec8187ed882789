"""Adversarial-input detectors: nMutant (model/input mutation testing with Wald's SPRT)."""

from medrobust.core.detectors.nmutant import (
    MODEL_OPERATORS,
    InputMutants,
    ModelMutants,
    NMutantDetector,
    label_change_rate,
    mutate_,
)
from medrobust.core.detectors.sequential import SPRTResult, calibrate_kappa, fixed_sample_size, sprt

__all__ = [
    "MODEL_OPERATORS",
    "InputMutants",
    "ModelMutants",
    "NMutantDetector",
    "SPRTResult",
    "calibrate_kappa",
    "fixed_sample_size",
    "label_change_rate",
    "mutate_",
    "sprt",
]
