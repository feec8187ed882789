"""Robustness metrics: Fisher information, intrinsic robustness, flatness, probabilistic robustness,
attribution, saliency, purification, registration, reconstruction and classification.

Names are imported lazily (``from medrobust.core.metrics import gini_index`` loads only
``attribution``), so importing the package stays cheap and free of import cycles.

- :mod:`.fisher`: Fisher-information sensitivity (image-level score, per-pixel map)
- :mod:`.intrinsic`: intrinsic robustness (max KL in an eps-ball) and the loss-surface plot
- :mod:`.flatness`: average-/worst-case flatness of the robust loss (relative weight perturbations)
- :mod:`.probabilistic`: probabilistic robustness with Chernoff-Hoeffding / sequential guarantees
- :mod:`.attribution`: Integrated Gradients, DeepLIFT-SHAP, Occlusion (Captum), Gini index, Fisher maps
- :mod:`.saliency`: occlusion baseline-sensitivity study (Spearman, MoRF/LeRF)
- :mod:`.purification`: clean vs adversarially fine-tuned first-layer filters
- :mod:`.reconstruction`: NMSE / PSNR / SSIM (fastMRI definitions), masked NMSE
- :mod:`.classification`: accuracy, AUC, ECE
- :mod:`.registration`: TRE, Jacobian, folding
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, tuple[str, ...]] = {
    "fisher": ("image_fisher_information", "pixel_fisher_information", "fisher_information_from_jacobian",
               "log_prob_jacobian"),
    "intrinsic": ("intrinsic_robustness", "kl_loss", "loss_surface", "plot_loss_surface", "LossSurface"),
    "flatness": ("average_flatness", "worst_flatness", "robust_loss", "perturbable_parameters", "FlatnessResult"),
    "probabilistic": ("probabilistic_robustness", "hoeffding_sample_size", "clopper_pearson", "massart_sample_size",
                      "ProbabilisticRobustness", "SeededStochasticPosterior", "MCDropoutPosterior",
                      "GaussianWeightPosterior"),
    "attribution_robustness": ("path_integrated_gradients", "topk_intersection", "topk_mask", "topk_attribution_attack"),
    "attribution": ("integrated_gradients", "deep_lift_shap", "occlusion", "fisher_sensitivity", "gini_index"),
    "saliency": ("occlusion_baselines", "occlusion_baseline_study", "deletion_scores", "rank_correlation",
                 "plot_baseline_study", "plot_maps", "BaselineStudy"),
    "purification": ("purification_decomposition", "first_conv_weight", "plot_filters", "PurificationResult"),
    "reconstruction": ("nmse", "psnr", "ssim", "masked_nmse", "reconstruction_metrics"),
    "classification": ("accuracy", "roc_auc", "expected_calibration_error", "classification_metrics",
                       "class_probabilities"),
}  # fmt: skip
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


# modules whose own ``__all__`` is re-exported as it stands (maintained beside that module)
_WHOLE_MODULES = ("registration",)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        for candidate in _WHOLE_MODULES:
            if name in getattr(importlib.import_module(f"{__name__}.{candidate}"), "__all__", ()):
                module = candidate
                break
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
