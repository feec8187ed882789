"""Loading classifiers (MONAI bundle, TorchScript, state dict + config) and their probabilities.

Example:
    >>> from medrobust.models import load_model  # doctest: +SKIP
    >>> model = load_model("bundles/mammogram_perturbation_sensitivity")  # doctest: +SKIP
    >>> model.spatial_shape, model.in_channels  # doctest: +SKIP
"""

from __future__ import annotations

from medrobust.models.loading import (
    LoadedModel,
    extract_state_dict,
    file_sha256,
    from_module,
    load_bundle,
    load_model,
    load_state_dict_model,
    load_torchscript,
)
from medrobust.models.probability import ACTIVATIONS, check_logits, predicted_class, probability_from_logits

__all__ = [
    "LoadedModel",
    "load_model",
    "load_bundle",
    "load_torchscript",
    "load_state_dict_model",
    "from_module",
    "extract_state_dict",
    "file_sha256",
    "ACTIVATIONS",
    "check_logits",
    "predicted_class",
    "probability_from_logits",
]
