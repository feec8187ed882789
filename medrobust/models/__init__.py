"""Loading classifiers (MONAI bundle, TorchScript, state dict + config) and their probabilities;
building any bundle's network and running its workflows (:mod:`.bundle`).

Example:
    >>> from medrobust.models import load_model  # doctest: +SKIP
    >>> model = load_model("bundles/mammogram_perturbation_sensitivity")  # doctest: +SKIP
    >>> model.spatial_shape, model.in_channels  # doctest: +SKIP
"""

from __future__ import annotations

from medrobust.models.bundle import bundle_config_files, bundle_imports, bundle_parser, load_bundle_network, run_bundle_workflow
from medrobust.models.loading import (
    LoadedModel,
    extract_state_dict,
    file_sha256,
    from_module,
    load_bundle,
    load_model,
    load_state_dict_model,
    load_torchscript,
    load_weights,
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
    "load_weights",
    "load_bundle_network",
    "run_bundle_workflow",
    "bundle_parser",
    "bundle_config_files",
    "bundle_imports",
    "ACTIVATIONS",
    "check_logits",
    "predicted_class",
    "probability_from_logits",
]
