"""A Bayesian last layer (Pang, Cheng, Hu, Liu, arXiv 2106.09223) on a deterministic MONAI feature
extractor, its training loss, and posterior draws for the probabilistic-robustness estimator.

:func:`bayesian_last_layer` replaces the last ``nn.Linear`` of a trained network by a stochastic
head initialised from it, and (by default) freezes everything else:

- ``kind="variational"``: mean-field Gaussian weights ``W = mu + softplus(rho) * z`` (Bayes by
  Backprop, Blundell et al. 2015), trained on ``CE + kl_weight * KL(q || N(0, prior_std^2)) / N``
  (:func:`elbo_loss`);
- ``kind="dropout"``: MC dropout on the head's input features (Gal & Ghahramani 2016), trained
  with plain cross-entropy.

The head draws on every forward, in train *and* eval mode (the library attacks run models in
eval mode, and the randomness is the defense). :meth:`BayesianLinear.deterministic` switches to
the mean weights. The prediction of the BNN is the mean over draws:
:class:`medrobust.core.attacks.eot.PredictiveMean`. Attacks: crafted on the deterministic
network (transfer, the paper's setting) or on the predictive mean with EOT (the stronger test).

:class:`LastLayerPosterior` is a ``sampler(generator) -> model`` for
:func:`medrobust.core.metrics.probabilistic.probabilistic_robustness` (Cardelli et al.): each call
returns a copy of the network whose head holds one posterior draw (fixed weights).

Written by hand: no maintained library offers a Bayesian head for arbitrary torch networks
(``bayesian-torch`` converts whole networks and is not a dependency here).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
    ...                           torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> net = bayesian_last_layer(net, kind="variational")
    >>> x = torch.rand(3, 1, 8, 8)
    >>> bool((net(x) != net(x)).any())
    True
    >>> head = net[-1]
    >>> with head.deterministic():
    ...     torch.equal(net(x), net(x))
    True
    >>> draw = LastLayerPosterior(net)(torch.Generator().manual_seed(0))
    >>> torch.equal(draw(x), draw(x))
    True
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.core.validation import check_nonnegative, check_number, check_positive

__all__ = ["BayesianLinear", "bayesian_last_layer", "last_bayesian_layer", "elbo_loss", "LastLayerPosterior"]

logger = logging.getLogger(__name__)

_KINDS = ("variational", "dropout")


class BayesianLinear(nn.Module):
    """A stochastic linear head ``(B, F) -> (B, K)``: variational Gaussian weights or MC dropout.

    Args:
        linear: the deterministic head to start from (its weights become the posterior mean).
        kind: ``"variational"`` or ``"dropout"``.
        init_std: variational: initial posterior standard deviation of every weight.
        prior_std: variational: standard deviation of the ``N(0, prior_std^2)`` prior.
        p: dropout: drop probability of the input features.

    Attributes:
        generator: optional ``torch.Generator`` for the draws (default: torch's global RNG).

    Raises:
        TypeError: ``linear`` is not an ``nn.Linear``.
        ValueError: unknown ``kind``, ``init_std``/``prior_std`` <= 0, ``p`` outside ``(0, 1)``.
    """

    def __init__(self, linear: nn.Linear, *, kind: str = "variational", init_std: float = 0.05,
                 prior_std: float = 1.0, p: float = 0.5) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}.")
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}.")
        self.kind = kind
        self.generator: torch.Generator | None = None
        self._stochastic = True
        w = linear.weight.detach().clone()
        b = None if linear.bias is None else linear.bias.detach().clone()
        self.weight = nn.Parameter(w)
        self.bias = None if b is None else nn.Parameter(b)
        if kind == "variational":
            check_positive("init_std", init_std)
            self.prior_std = float(check_positive("prior_std", prior_std))
            rho = float(torch.log(torch.expm1(torch.tensor(float(init_std)))))  # softplus^-1
            self.weight_rho = nn.Parameter(torch.full_like(w, rho))
            self.bias_rho = None if b is None else nn.Parameter(torch.full_like(b, rho))
        else:
            self.p = float(check_number("p", p, low=0, high=1, low_open=True, high_open=True))

    def _randn(self, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        if self.generator is None:
            return torch.randn(shape, dtype=like.dtype, device=like.device)
        return torch.randn(shape, generator=self.generator, device=self.generator.device, dtype=like.dtype).to(like.device)

    def sample_weights(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One posterior draw ``(W, b)`` (detached). Dropout: a Bernoulli mask on W's input columns."""
        old, self.generator = self.generator, generator if generator is not None else self.generator
        try:
            with torch.no_grad():
                if self.kind == "variational":
                    w = self.weight + F.softplus(self.weight_rho) * self._randn(self.weight.shape, self.weight)
                    b = None if self.bias is None else self.bias + F.softplus(self.bias_rho) * self._randn(
                        self.bias.shape, self.bias)
                    return w, b
                u = torch.rand(self.weight.shape[1:], generator=self.generator, device=(
                    self.generator.device if self.generator is not None else self.weight.device)).to(self.weight.device)
                keep = (u >= self.p).to(self.weight.dtype) / (1 - self.p)
                return self.weight * keep, None if self.bias is None else self.bias.clone()
        finally:
            self.generator = old

    def kl(self) -> torch.Tensor:
        """``KL(q || N(0, prior_std^2 I))`` summed over the head's weights (0 for dropout)."""
        if self.kind != "variational":
            return self.weight.new_zeros(())
        total = self.weight.new_zeros(())
        for mu, rho in ((self.weight, self.weight_rho), (self.bias, self.bias_rho)):
            if mu is None:
                continue
            s = F.softplus(rho)
            total = total + (torch.log(self.prior_std / s) + (s**2 + mu**2) / (2 * self.prior_std**2) - 0.5).sum()
        return total

    @contextlib.contextmanager
    def deterministic(self) -> Iterator[BayesianLinear]:
        """Run the block with the mean weights (no dropout): the deterministic network."""
        old, self._stochastic = self._stochastic, False
        try:
            yield self
        finally:
            self._stochastic = old

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._stochastic:
            return F.linear(x, self.weight, self.bias)
        if self.kind == "variational":
            w = self.weight + F.softplus(self.weight_rho) * self._randn(self.weight.shape, self.weight)
            b = None if self.bias is None else self.bias + F.softplus(self.bias_rho) * self._randn(
                self.bias.shape, self.bias)
            return F.linear(x, w, b)
        if self.generator is None:
            return F.linear(F.dropout(x, self.p, training=True), self.weight, self.bias)
        keep = (torch.rand(x.shape, generator=self.generator, device=self.generator.device).to(x.device) >= self.p)
        return F.linear(x * keep.to(x.dtype) / (1 - self.p), self.weight, self.bias)

    def extra_repr(self) -> str:
        extra = f"prior_std={self.prior_std:g}" if self.kind == "variational" else f"p={self.p:g}"
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}, kind={self.kind}, {extra}"


def _last_linear(model: nn.Module) -> tuple[str, nn.Module]:
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, BayesianLinear)) and n]
    if not found:
        raise ValueError("the model has no nn.Linear head to make Bayesian (a classifier ending in a Linear layer "
                         "is expected, e.g. a MONAI DenseNet/ResNet or the lesion bundle's network).")
    return found[-1]


def last_bayesian_layer(model: nn.Module) -> BayesianLinear:
    """The :class:`BayesianLinear` head of ``model``.

    Raises:
        ValueError: the model has none (call :func:`bayesian_last_layer` first).
    """
    heads = [m for m in model.modules() if isinstance(m, BayesianLinear)]
    if not heads:
        raise ValueError("the model has no BayesianLinear head; call bayesian_last_layer(model) first.")
    return heads[-1]


def bayesian_last_layer(model: nn.Module, *, kind: str = "variational", freeze_features: bool = True,
                        init_std: float = 0.05, prior_std: float = 1.0, p: float = 0.5) -> nn.Module:
    """Replace the last ``nn.Linear`` of ``model`` (in place) by a :class:`BayesianLinear` started from it.

    Args:
        model: a trained deterministic classifier ending in an ``nn.Linear`` (any MONAI network).
        kind, init_std, prior_std, p: see :class:`BayesianLinear`.
        freeze_features: set ``requires_grad=False`` on every other parameter (the deterministic
            extractor of the paper) and freeze BatchNorm running statistics (momentum 0); the
            head's parameters train. (In train mode BatchNorm still normalises with batch
            statistics and dropout stays active in the extractor.)

    Returns:
        ``model``.

    Raises:
        ValueError: no ``nn.Linear`` in ``model`` (or bad head settings).
    """
    name, lin = _last_linear(model)
    if isinstance(lin, BayesianLinear):
        raise ValueError(f"the model's head {name!r} is already a BayesianLinear.")
    head = BayesianLinear(lin, kind=kind, init_std=init_std, prior_std=prior_std, p=p)
    if freeze_features:
        for prm in model.parameters():
            prm.requires_grad_(False)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.0
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, head)
    logger.info("bayesian_last_layer: %r -> %s head", name, kind)
    return model


def elbo_loss(model: nn.Module, *, n_train: int, kl_weight: float = 1.0,
              base: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
              ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The negative ELBO per training example: ``CE(pred, y) + kl_weight * KL(q || p) / n_train``.

    A ``loss_function`` for ``monai.engines.SupervisedTrainer``; the KL comes from the model's
    :class:`BayesianLinear` head (zero for MC dropout).

    Args:
        model: a network with a Bayesian head.
        n_train: training-set size ``N``.
        kl_weight: multiplier of the KL term.
        base: the data term (default cross-entropy).

    Raises:
        ValueError: ``n_train`` < 1, ``kl_weight`` < 0, or no Bayesian head.

    Example:
        >>> net = bayesian_last_layer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))
        >>> loss = elbo_loss(net, n_train=100)(net(torch.rand(2, 1, 2, 2)), torch.tensor([0, 1]))
        >>> loss.ndim
        0
    """
    check_positive("n_train", n_train, integer=True)
    check_nonnegative("kl_weight", kl_weight)
    head = last_bayesian_layer(model)
    data_term = base if base is not None else nn.CrossEntropyLoss()

    def loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return data_term(pred, y) + kl_weight * head.kl() / n_train

    return loss


class LastLayerPosterior:
    """Posterior draws of a Bayesian-last-layer network for ``probabilistic_robustness``.

    ``LastLayerPosterior(model)(generator)`` returns a copy of ``model`` in eval mode whose head is
    a plain ``nn.Linear`` holding one draw (deterministic): the sampler
    :func:`medrobust.core.metrics.probabilistic.probabilistic_robustness` expects.

    Raises:
        ValueError: ``model`` has no :class:`BayesianLinear` head.
    """

    def __init__(self, model: nn.Module) -> None:
        self.head = last_bayesian_layer(model)
        self.model = copy.deepcopy(model).eval()
        name = next(n for n, m in self.model.named_modules() if isinstance(m, BayesianLinear)
                    and m.weight.shape == self.head.weight.shape)
        out_f, in_f = self.head.weight.shape
        self._lin = nn.Linear(in_f, out_f, bias=self.head.bias is not None).to(self.head.weight)
        parent, _, attr = name.rpartition(".")
        setattr(self.model.get_submodule(parent) if parent else self.model, attr, self._lin)

    def __call__(self, generator: torch.Generator) -> nn.Module:
        w, b = self.head.sample_weights(generator)
        with torch.no_grad():
            self._lin.weight.copy_(w)
            if b is not None:
                self._lin.bias.copy_(b)
        return self.model
