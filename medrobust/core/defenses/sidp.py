"""Private training: SIDP (learnable-noise weights, Davody et al., arXiv 2006.10919; uds-lsv/SIDP)
next to real DP-SGD through Opacus, at matched sampling rate ``q``, noise multiplier ``sigma``
and steps ``T``.

**SIDP** (:class:`SIDPTraining`, a ``SupervisedTrainer`` ``iteration_update``): every step draws
noisy weights ``W + s N(0, I)`` with ``s = lr * C * sigma / B`` (:func:`sidp_noise_scale`: the
per-step parameter noise DP-SGD would add), computes per-example gradients *at the noisy
weights* (``torch.func.vmap`` of ``grad``), clips each to L2 norm ``C``, averages them over the
expected batch size ``B`` and takes a plain optimiser step on the mean weights ``W``. No noise is
added to the gradients. Normalisation layers must have no parameters
(:func:`non_affine_normalization`).

**Caution, no privacy claim:** SIDP's paper quotes the DP-SGD accountant's epsilon for the same
``(q, sigma, T)``. That is not a proof: the released weights are the noise-free mean ``W``, and
this code establishes no differential-privacy guarantee for them. Only the Opacus DP-SGD run
(:func:`make_dp_sgd`) has the epsilon :func:`dp_epsilon` reports.

**DP-SGD** (:func:`make_dp_sgd`, :func:`opacus_compatible`): Opacus' ``PrivacyEngine`` with
Poisson sampling and the RDP accountant; BatchNorm is not allowed under DP-SGD and is replaced by
GroupNorm via ``ModuleValidator.fix`` (Opacus' own fix). Opacus is the ``privacy`` extra
(``pip install medrobust[privacy]``).

Deviation from the SIDP code: non-affine *GroupNorm* (per-sample statistics) instead of
non-affine BatchNorm with statistics from a public auxiliary batch, so that per-example
gradients are exact and no public data is needed.

Example:
    >>> import torch
    >>> round(sidp_noise_scale(lr=0.1, max_grad_norm=1.0, noise_multiplier=1.1, batch_size=64), 8)
    0.00171875
    >>> net = non_affine_normalization(torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8)))
    >>> type(net[1]).__name__, net[1].affine
    ('GroupNorm', False)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from monai.utils import optional_import
from torch import nn
from torch.func import functional_call, grad, vmap

from medrobust.core.defenses.base import plain
from medrobust.core.validation import check_batch, check_number, check_positive

__all__ = [
    "sidp_noise_scale",
    "non_affine_normalization",
    "SIDPTraining",
    "opacus_compatible",
    "make_dp_sgd",
    "dp_epsilon",
]

logger = logging.getLogger(__name__)

_OPACUS_HINT = "install the privacy extra: pip install 'medrobust[privacy]' (opacus)"


def sidp_noise_scale(*, lr: float, max_grad_norm: float, noise_multiplier: float, batch_size: float) -> float:
    """``s = lr * C * sigma / B``: the standard deviation of the per-step weight noise of DP-SGD."""
    check_positive("lr", lr)
    check_positive("max_grad_norm", max_grad_norm)
    check_number("noise_multiplier", noise_multiplier, low=0)
    check_positive("batch_size", batch_size)
    return float(lr) * float(max_grad_norm) * float(noise_multiplier) / float(batch_size)


def _groups(channels: int, groups: int) -> int:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


def non_affine_normalization(model: nn.Module, *, groups: int = 32) -> nn.Module:
    """Replace (in place) every normalisation layer by a parameter-free, per-sample one.

    BatchNorm / affine GroupNorm -> ``GroupNorm(g, C, affine=False)`` (``g`` the largest divisor of
    ``C`` up to ``groups``); InstanceNorm -> ``affine=False``; LayerNorm ->
    ``elementwise_affine=False``. Returns ``model``.
    """
    check_positive("groups", groups, integer=True)
    swaps = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            swaps.append((name, nn.GroupNorm(_groups(m.num_features, groups), m.num_features, eps=m.eps, affine=False)))
        elif isinstance(m, nn.GroupNorm) and m.affine:
            swaps.append((name, nn.GroupNorm(m.num_groups, m.num_channels, eps=m.eps, affine=False)))
        elif isinstance(m, nn.modules.instancenorm._InstanceNorm) and m.affine:
            swaps.append((name, type(m)(m.num_features, eps=m.eps, affine=False)))
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            swaps.append((name, nn.LayerNorm(m.normalized_shape, eps=m.eps, elementwise_affine=False)))
    for name, new in swaps:
        if not name:
            return new
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
    return model


def _check_sidp_model(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"SIDP: module {name!r} is a BatchNorm (mixes samples, so per-example gradients are "
                             "undefined); call non_affine_normalization(model) first.")
        norm_params = [p for p in m.parameters(recurse=False)] if isinstance(
            m, (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)) else []
        if norm_params:
            raise ValueError(f"SIDP: normalisation layer {name!r} has affine parameters; SIDP needs non-affine "
                             "normalisation: call non_affine_normalization(model) first.")


class SIDPTraining:
    """One SIDP step as a ``monai.engines.SupervisedTrainer`` ``iteration_update`` (see the module docstring).

    Args:
        max_grad_norm: ``C``, the per-example clipping norm.
        noise_multiplier: ``sigma``.
        batch_size: ``B`` of the noise formula and of the gradient average: the expected batch
            size (``q N`` under Poisson sampling); ``None`` uses each batch's size.
        seed: seed of the weight-noise generator.
        convert_normalization: at the first step, make the model's normalisation layers
            non-affine in place (:func:`non_affine_normalization`; what
            :func:`~medrobust.core.defenses.build_defense` ``("sidp")`` sets, so that a bundle's
            BatchNorm network trains). The checkpoint then holds the converted network's keys
            (no BatchNorm statistics): load it into a network converted the same way.

    Attributes:
        last_noise_scale: ``s`` of the latest step.

    Raises:
        ValueError: ``max_grad_norm`` <= 0, ``noise_multiplier`` < 0, ``batch_size`` <= 0; at the
            first step, a model with BatchNorm or affine normalisation (without
            ``convert_normalization``), or whose root module is itself a normalisation layer.

    Example:
        >>> from monai.engines import SupervisedTrainer
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> data = [(torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1]))]
        >>> trainer = SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=data, network=net,
        ...     optimizer=torch.optim.SGD(net.parameters(), 0.1), loss_function=torch.nn.CrossEntropyLoss(),
        ...     iteration_update=SIDPTraining(max_grad_norm=1.0, noise_multiplier=1.0, batch_size=4))
        >>> trainer.run()
    """

    def __init__(self, *, max_grad_norm: float = 1.0, noise_multiplier: float = 1.0, batch_size: float | None = None,
                 seed: int = 0, convert_normalization: bool = False) -> None:
        self.max_grad_norm = float(check_positive("max_grad_norm", max_grad_norm))
        self.noise_multiplier = float(check_number("noise_multiplier", noise_multiplier, low=0))
        self.batch_size = None if batch_size is None else float(check_positive("batch_size", batch_size))
        self.generator = torch.Generator().manual_seed(int(seed))
        self.last_noise_scale = 0.0
        self.convert_normalization = bool(convert_normalization)
        self._checked: set[int] = set()

    def per_example_gradients(self, model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
                              y: torch.Tensor, loss_fn: Callable) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Per-example gradients ``{name: (B, *shape)}`` and losses ``(B,)`` at weights ``params``."""
        buffers = dict(model.named_buffers())

        def one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            loss = loss_fn(functional_call(model, (p, buffers), (xi[None],)), yi[None])
            return loss, loss

        grads, losses = vmap(grad(one, has_aux=True), in_dims=(None, 0, 0), randomness="different")(params, x, y)
        return grads, losses

    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
             loss_fn: Callable) -> torch.Tensor:
        """One SIDP update of ``model`` on ``(x, y)``; returns the per-example losses at the noisy weights."""
        if id(model) not in self._checked:
            if self.convert_normalization:
                if non_affine_normalization(model) is not model:
                    raise ValueError(f"SIDP: the model itself is a normalisation layer ({type(model).__name__}); "
                                     "convert_normalization needs a network containing it.")
                logger.warning("SIDP: normalisation layers of the trainer's network made non-affine (in place); "
                               "checkpoints now hold the converted network's keys.")
            _check_sidp_model(model)
            self._checked.add(id(model))
        b_exp = self.batch_size if self.batch_size is not None else float(x.shape[0])
        lr = float(optimizer.param_groups[0]["lr"])
        s = sidp_noise_scale(lr=lr, max_grad_norm=self.max_grad_norm, noise_multiplier=self.noise_multiplier,
                             batch_size=b_exp) if self.noise_multiplier > 0 else 0.0
        self.last_noise_scale = s
        named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        noisy = {n: p.detach() + s * torch.randn(p.shape, generator=self.generator, dtype=p.dtype).to(p.device)
                 for n, p in named.items()}
        grads, losses = self.per_example_gradients(model, noisy, x, y, loss_fn)
        norms = torch.sqrt(sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads.values()))
        factor = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for n, p in named.items():
            g = grads[n]
            p.grad = (factor.reshape(-1, *([1] * (g.ndim - 1))) * g).sum(0) / b_exp
        optimizer.step()
        return losses.detach()

    def __call__(self, engine: Any, batchdata: Any) -> dict:
        if batchdata is None:
            raise ValueError("batchdata: must provide batch data for the current iteration, got None.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        x, y = plain(batch[0]), plain(batch[1])
        engine.state.output = {Keys.IMAGE: x, Keys.LABEL: y}
        net = engine.network
        net.train()
        engine.optimizer.zero_grad(set_to_none=True)
        if x.shape[0] == 0:  # an empty Poisson batch: no step (as Opacus)
            engine.state.output[Keys.LOSS] = torch.zeros(())
            return engine.state.output
        check_batch(x, y, label_name="y (labels)")
        losses = self.step(net, engine.optimizer, x, y, engine.loss_function)
        with torch.no_grad():
            engine.state.output[Keys.PRED] = net(x)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.state.output[Keys.LOSS] = losses.mean()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def __repr__(self) -> str:
        return f"SIDPTraining(max_grad_norm={self.max_grad_norm:g}, noise_multiplier={self.noise_multiplier:g})"


def opacus_compatible(model: nn.Module) -> nn.Module:
    """``opacus.validators.ModuleValidator.fix(model)`` (BatchNorm -> GroupNorm, ...), then validated.

    Returns:
        The fixed model (a new module when something was replaced; build the optimiser after this).

    Raises:
        ImportError: opacus is not installed.
        ValueError: Opacus still finds incompatible modules (listed).
    """
    validators, ok = optional_import("opacus.validators")
    if not ok:
        raise ImportError(f"opacus_compatible needs opacus: {_OPACUS_HINT}.")
    fixed = validators.ModuleValidator.fix(model)
    errors = validators.ModuleValidator.validate(fixed, strict=False)
    if errors:
        raise ValueError(f"model is not DP-SGD compatible after ModuleValidator.fix: {errors}")
    return fixed


def make_dp_sgd(model: nn.Module, optimizer: torch.optim.Optimizer, data_loader: Any, *, noise_multiplier: float,
                max_grad_norm: float, seed: int = 0) -> tuple[Any, nn.Module, Any, Any]:
    """DP-SGD through Opacus: ``PrivacyEngine(accountant="rdp").make_private`` with Poisson sampling.

    Args:
        model: a model that passes :func:`opacus_compatible` (call it before building ``optimizer``).
        optimizer: the optimiser over ``model``'s parameters.
        data_loader: a ``DataLoader``; it is replaced by Opacus' Poisson-sampling loader with the
            same expected batch size.
        noise_multiplier, max_grad_norm: ``sigma`` and ``C``.
        seed: seed of Opacus' noise and sampling generators (not cryptographically secure: use
            Opacus' ``secure_mode`` yourself for a deployment).

    Returns:
        ``(privacy_engine, model, optimizer, data_loader)`` as Opacus returns them;
        ``privacy_engine.get_epsilon(delta)`` gives the spent epsilon.

    Raises:
        ImportError: opacus is not installed.
        ValueError: ``model`` is not Opacus-compatible, bad ``noise_multiplier``/``max_grad_norm``.
    """
    opacus, ok = optional_import("opacus")
    if not ok:
        raise ImportError(f"make_dp_sgd needs opacus: {_OPACUS_HINT}.")
    check_number("noise_multiplier", noise_multiplier, low=0)
    check_positive("max_grad_norm", max_grad_norm)
    errors = opacus.validators.ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(f"model is not DP-SGD compatible ({errors}); call opacus_compatible(model) first and build "
                         "the optimizer on the returned model.")
    engine = opacus.PrivacyEngine(accountant="rdp")
    gen = torch.Generator().manual_seed(int(seed))
    model, optimizer, loader = engine.make_private(module=model, optimizer=optimizer, data_loader=data_loader,
                                                   noise_multiplier=float(noise_multiplier),
                                                   max_grad_norm=float(max_grad_norm), poisson_sampling=True,
                                                   noise_generator=gen)
    return engine, model, optimizer, loader


def dp_epsilon(*, sample_rate: float, noise_multiplier: float, steps: int, delta: float = 1e-5,
               accountant: str = "rdp") -> float:
    """Epsilon of DP-SGD with Poisson rate ``q``, noise multiplier ``sigma`` and ``T`` steps (Opacus' accountant).

    Raises:
        ImportError: opacus is not installed.
        ValueError: ``sample_rate`` outside ``(0, 1]``, ``noise_multiplier`` <= 0, ``steps`` < 1,
            ``delta`` outside ``(0, 1)``, unknown accountant.

    Example:
        >>> round(dp_epsilon(sample_rate=256 / 60000, noise_multiplier=1.1, steps=60 * 235), 2)  # doctest: +SKIP
        2.6
    """
    accountants, ok = optional_import("opacus.accountants")
    if not ok:
        raise ImportError(f"dp_epsilon needs opacus: {_OPACUS_HINT}.")
    check_number("sample_rate", sample_rate, low=0, high=1, low_open=True)
    check_positive("noise_multiplier", noise_multiplier)
    check_positive("steps", steps, integer=True)
    check_number("delta", delta, low=0, high=1, low_open=True, high_open=True)
    if accountant not in ("rdp", "prv", "gdp"):
        raise ValueError(f"accountant must be 'rdp', 'prv' or 'gdp', got {accountant!r}.")
    acc = accountants.create_accountant(accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    return float(acc.get_epsilon(delta=delta))
