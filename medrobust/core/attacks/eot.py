"""Expectation over transformation (EOT; Athalye, Engstrom, Ilyas, Kwok 2018; Athalye, Carlini,
Wagner 2018) for randomised models: the gradient of the *expected* loss, and the prediction of a
stochastic model as the mean over its draws.

A randomised defense (parametric / colored noise injection, a Bayesian last layer, random input
transformations) answers differently on every call. A one-draw gradient is a noisy estimate and
makes attacks look weak ("gradient obfuscation"); EOT averages the input gradient of the loss over
``K`` draws of the model's randomness (and, optionally, of a random input transformation
``t(x, generator)``), an unbiased estimate of ``grad E[loss]``. :func:`~medrobust.core.attacks.pgd`
takes ``eot_samples=K`` (and ``eot_transform=``) and calls :func:`eot_input_gradient` in its one
loop; with ``K = 1`` and no transform it is exactly plain PGD.

:class:`PredictiveMean` is the prediction of a stochastic classifier: ``log mean_s softmax(f_s(x))``
over ``samples`` draws (log-probabilities, so arg-max, cross-entropy and every classification
objective apply unchanged). Attacking it with plain PGD is EOT on the predictive mean.

Example:
    >>> import torch
    >>> class Noisy(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__(); self.lin = torch.nn.Linear(4, 2); self.g = torch.Generator().manual_seed(0)
    ...     def forward(self, x):
    ...         return self.lin(x.flatten(1) + 0.1 * torch.randn(x.flatten(1).shape, generator=self.g))
    >>> net = Noisy()
    >>> x = torch.rand(3, 1, 2, 2)
    >>> objective = lambda out: torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 0]), reduction="none")
    >>> g = eot_input_gradient(net, x, objective, samples=8)
    >>> g.shape
    torch.Size([3, 1, 2, 2])
    >>> p = PredictiveMean(net, samples=4)(x).exp()  # probabilities
    >>> bool(torch.allclose(p.sum(1), torch.ones(3)))
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.core.attacks.base import input_gradient
from medrobust.core.utils import base_seed, class_logits, derive_seed, model_output
from medrobust.core.validation import check_positive

__all__ = ["EOTTransform", "eot_generator", "eot_input_gradient", "eot_output", "PredictiveMean"]

#: a random, differentiable input transformation ``t(x, generator) -> x'`` (same shape as ``x``)
EOTTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def eot_generator(generator: Any) -> torch.Generator:
    """The generator of EOT's input transformations, derived from an attack's ``generator``.

    An int seed or ``None`` gives ``derive_seed(seed, 0xE07)``; a ``torch.Generator`` is drawn
    from once; a sequence of per-sample generators uses its first one. The stream differs from
    the one the attack's random start uses.
    """
    if isinstance(generator, (list, tuple)):
        generator = generator[0] if generator else None
    return torch.Generator().manual_seed(derive_seed(base_seed(generator), 0xE07))


def _apply(model: Callable[[torch.Tensor], Any], transform: EOTTransform | None,
           gen: torch.Generator | None) -> Callable[[torch.Tensor], Any]:
    if transform is None:
        return model
    return lambda z: model(transform(z, gen))


def eot_input_gradient(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    objective: Callable[[torch.Tensor], torch.Tensor],
    *,
    samples: int = 1,
    transform: EOTTransform | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Input gradient of the per-sample ``objective`` averaged over ``samples`` model calls.

    Every call of ``model`` draws its own randomness (noise layers, dropout that stays on, ...);
    with ``transform`` each call also sees ``transform(x, generator)``. With ``samples=1`` and no
    transform this is :func:`~medrobust.core.attacks.base.input_gradient` itself.

    Args:
        model: ``(B, C, *spatial) -> output``.
        x: ``(B, C, *spatial)``.
        objective: ``output -> (B,)``.
        samples: ``K``, draws averaged.
        transform: optional random differentiable transformation ``t(x, generator)``.
        generator: the transformation's generator (see :func:`eot_generator`).

    Returns:
        The averaged gradient, shaped like ``x``.

    Raises:
        TypeError, ValueError: ``samples`` not a positive int.
    """
    check_positive("eot_samples", samples, integer=True)
    f = _apply(model, transform, generator)
    g = input_gradient(f, x, objective)[1]
    for _ in range(samples - 1):
        g = g + input_gradient(f, x, objective)[1]
    return g / samples if samples > 1 else g


def eot_output(
    model: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    *,
    samples: int = 1,
    transform: EOTTransform | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean of ``samples`` model outputs at ``x`` (each call draws its own randomness); ``(B, ...)``."""
    check_positive("eot_samples", samples, integer=True)
    f = _apply(model, transform, generator)
    out = model_output(f, x)
    for _ in range(samples - 1):
        out = out + model_output(f, x)
    return out / samples if samples > 1 else out


class PredictiveMean(nn.Module):
    """The prediction of a stochastic classifier: ``log((1/S) sum_s softmax(f_s(x)))``.

    Args:
        model: a stochastic classifier ``(B, C, *spatial) -> (B, K)`` logits (a single logit
            ``(B, 1)`` is read as ``[0, z]``); each call is one draw.
        samples: ``S``, draws averaged per forward.

    Returns (forward):
        Log-probabilities ``(B, K)`` (``K >= 2``): use them as logits (arg-max, cross-entropy).

    Raises:
        TypeError, ValueError: ``samples`` not a positive int.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1))
        >>> PredictiveMean(net, samples=3)(torch.zeros(2, 1, 2, 2)).shape  # a single logit -> 2 classes
        torch.Size([2, 2])
    """

    def __init__(self, model: nn.Module | Callable[[torch.Tensor], Any], *, samples: int = 16) -> None:
        super().__init__()
        check_positive("samples", samples, integer=True)
        self.model = model
        self.samples = int(samples)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = F.softmax(class_logits(model_output(self.model, x)), dim=1)
        for _ in range(self.samples - 1):
            p = p + F.softmax(class_logits(model_output(self.model, x)), dim=1)
        return torch.log((p / self.samples).clamp_min(1e-12))

    def extra_repr(self) -> str:
        return f"samples={self.samples}"

