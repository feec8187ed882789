"""Fisher-information sensitivity as a metric: re-exported from :mod:`medrobust.core.fisher`.

The implementation lives beside the attacks and the metrics (both use it; keeping it here made
``core.attacks`` and ``core.metrics`` import each other).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> image_fisher_information(net, torch.rand(2, 1, 4, 4)).shape
    torch.Size([2])
"""

from __future__ import annotations

from medrobust.core.fisher import (
    fisher_information_from_jacobian,
    image_fisher_information,
    log_prob_jacobian,
    pixel_fisher_information,
)

__all__ = [
    "log_prob_jacobian",
    "fisher_information_from_jacobian",
    "image_fisher_information",
    "pixel_fisher_information",
]
