"""Parametric (PNI) and colored (CNI) noise injection for any MONAI / torch network, 2-D or 3-D.

- **PNI** (He, Rakin, Fan, CVPR 2019; elliothe/CVPR_2019_PNI): every forward of a conv / linear
  layer uses ``W + alpha * eta``, ``eta ~ N(0, std(W)^2)`` (``std(W)`` of the whole tensor, no
  gradient through it), one draw per forward; ``alpha`` is learned (init 0.25), one per layer
  (PNI-W layer-wise) or one per output channel (PNI-C); optionally the layer's output also gets
  ``alpha_a * N(0, std(out)^2)`` (activation noise).
- **CNI** (Zheltonozhskii et al., arXiv 2003.02188; following yanemcovsky/SIAM's
  ``NoisedConv2DColored``): per layer a noise covariance ``diag(|std(W) d|) + F F^T`` over the
  flattened weight, ``F`` of rank ``r`` (5); the draw is ``m = sqrt(|std(W) d|) * z1 + F z2``,
  ``W + m``. ``d`` starts at ``0.25^2`` and every entry of ``F`` at ``0.1^2``, as in that code.

The noise stays on at test time (it is the defense): the layers ignore train/eval mode. Turn it
off with :func:`noise_disabled` (the deterministic network, e.g. as a transfer-attack source).
Evaluate noisy networks with EOT (:mod:`medrobust.core.attacks.eot`), or the robustness gain may
be gradient obfuscation.

Training: :class:`NoiseInjectionTraining` is the project's PGD adversarial training
(``0.5 CE(x) + 0.5 CE(x_adv)``, PGD on the model's clean prediction as label, as the PNI code);
keep the noise parameters out of weight decay with :func:`noise_parameter_groups`.

Written by hand (no maintained library injects learned weight noise into arbitrary networks); the
swap uses ``torch.func.functional_call`` so any ``Conv1d/2d/3d`` or ``Linear`` works unchanged.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(256, 2))
    >>> net = inject_noise(net, kind="pni", per_channel=True)
    >>> x = torch.rand(2, 1, 6, 6, 6)
    >>> a, b = net(x), net(x)
    >>> bool((a != b).any())  # noise on, also in eval mode
    True
    >>> with noise_disabled(net):
    ...     torch.equal(net(x), net(x))
    True
    >>> [g["weight_decay"] for g in noise_parameter_groups(net, weight_decay=1e-4)]
    [0.0001, 0.0]
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from medrobust.core.defenses.pgd_at import PGDAdversarialTraining
from medrobust.core.utils import class_logits, model_output
from medrobust.core.validation import check_labels, check_nonnegative, check_number, check_positive

__all__ = [
    "NoisyLayer",
    "inject_noise",
    "noisy_layers",
    "noise_disabled",
    "set_noise_generator",
    "noise_parameter_groups",
    "NoiseInjectionTraining",
]

logger = logging.getLogger(__name__)

_KINDS = ("pni", "cni")
_SWAPPABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class NoisyLayer(nn.Module):
    """A conv / linear layer whose weight gets fresh noise on every forward.

    Args:
        layer: an ``nn.Conv1d/2d/3d`` or ``nn.Linear`` (kept as ``self.layer``; its parameters
            are the mean weights).
        kind: ``"pni"`` or ``"cni"`` (see the module docstring).
        per_channel: PNI only: one ``alpha`` per output channel (PNI-C) instead of per layer (PNI-W).
        activations: also add ``alpha_a * N(0, std(out)^2)`` to the output (white, for both kinds).
        init: initial ``alpha`` (PNI, and ``alpha_a``).
        rank: CNI rank ``r`` of ``F``.
        diag_init, factor_init: CNI initial entries of ``d`` and ``F``.

    Attributes:
        enabled: draw noise (True) or use the mean weights (False).
        generator: optional ``torch.Generator`` for the draws (default: torch's global RNG, like
            ``nn.Dropout``).

    Raises:
        TypeError: ``layer`` is not a conv / linear layer.
        ValueError: unknown ``kind``, ``init``/``diag_init``/``factor_init`` negative, ``rank`` < 1.
    """

    def __init__(self, layer: nn.Module, *, kind: str = "pni", per_channel: bool = False, activations: bool = False,
                 init: float = 0.25, rank: int = 5, diag_init: float = 0.25**2, factor_init: float = 0.1**2) -> None:
        super().__init__()
        if not isinstance(layer, _SWAPPABLE):
            raise TypeError(f"layer must be a Conv1d/2d/3d or Linear, got {type(layer).__name__}.")
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}.")
        if isinstance(layer.weight, nn.parameter.UninitializedParameter):
            raise ValueError(f"layer {type(layer).__name__} is not initialised yet (a lazy layer): run one forward "
                             "pass first, then inject noise.")
        check_nonnegative("init", init)
        self.layer, self.kind, self.per_channel, self.activations = layer, kind, bool(per_channel), bool(activations)
        self.enabled = True
        self.generator: torch.Generator | None = None
        w = layer.weight
        if kind == "pni":
            shape = (w.shape[0],) + (1,) * (w.ndim - 1) if per_channel else ()
            self.alpha = nn.Parameter(torch.full(shape, float(init), dtype=w.dtype, device=w.device))
        else:
            if per_channel:
                raise ValueError("per_channel applies to kind='pni' only (CNI learns a full diagonal d).")
            check_positive("rank", rank, integer=True)
            check_nonnegative("diag_init", diag_init)
            check_nonnegative("factor_init", factor_init)
            self.diag = nn.Parameter(torch.full((w.numel(),), float(diag_init), dtype=w.dtype, device=w.device))
            self.factor = nn.Parameter(torch.full((w.numel(), int(rank)), float(factor_init), dtype=w.dtype,
                                                  device=w.device))
        if activations:
            self.alpha_act = nn.Parameter(torch.tensor(float(init), dtype=w.dtype, device=w.device))

    def _randn(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        if self.generator is None:
            return torch.randn(shape, dtype=like.dtype, device=like.device)
        return torch.randn(shape, generator=self.generator, device=self.generator.device, dtype=like.dtype).to(like.device)

    def weight_noise(self) -> torch.Tensor:
        """One noise draw for the weight (shape of ``layer.weight``)."""
        w = self.layer.weight
        sd = w.detach().std() if w.numel() > 1 else w.detach().abs()
        if self.kind == "pni":
            return self.alpha * sd * self._randn(tuple(w.shape), w)
        z1 = self._randn((w.numel(),), w)
        z2 = self._randn((self.factor.shape[1],), w)
        m = torch.sqrt((sd * self.diag).abs()) * z1 + self.factor @ z2
        return m.reshape(w.shape)

    def covariance(self) -> torch.Tensor:
        """The CNI noise covariance ``diag(|std(W) d|) + F F^T`` ``(n, n)``, ``n = W.numel()`` (CNI only)."""
        if self.kind != "cni":
            raise ValueError("covariance() is defined for kind='cni' only.")
        w = self.layer.weight.detach()
        return torch.diag((w.std() * self.diag).abs()) + self.factor @ self.factor.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.layer(x)
        out = functional_call(self.layer, {"weight": self.layer.weight + self.weight_noise()}, (x,))
        if self.activations:
            out = out + self.alpha_act * out.detach().std() * self._randn(tuple(out.shape), out)
        return out

    def extra_repr(self) -> str:
        return f"kind={self.kind}, per_channel={self.per_channel}, activations={self.activations}"


def inject_noise(model: nn.Module, *, kind: str = "pni", per_channel: bool = False, activations: bool = False,
                 init: float = 0.25, rank: int = 5, exclude: tuple[str, ...] = (), **kwargs: Any) -> nn.Module:
    """Swap every ``Conv1d/2d/3d`` and ``Linear`` of ``model`` (in place) for a :class:`NoisyLayer`.

    Args:
        model: any network (e.g. a MONAI ``DenseNet121``, ``UNet`` or a bundle's ``Sequential``).
        kind, per_channel, activations, init, rank, **kwargs: see :class:`NoisyLayer`.
        exclude: qualified module names (``model.named_modules()``) to leave deterministic.

    Returns:
        ``model`` (modified in place; mean weights kept, so a trained network can be fine-tuned).

    Raises:
        ValueError: no layer to swap, an unknown name in ``exclude``, or bad settings (see :class:`NoisyLayer`).
    """
    names = {n for n, _ in model.named_modules()}
    unknown = sorted(set(exclude) - names)
    if unknown:
        raise ValueError(f"exclude: no modules named {unknown} in the model.")
    if isinstance(model, _SWAPPABLE):
        raise ValueError("inject_noise: pass a network containing layers, not a single layer (use NoisyLayer).")

    def skipped(n: str) -> bool:
        return any(n == e or n.startswith(e + ".") for e in exclude) or isinstance(_parent(model, n), NoisyLayer)

    targets = [(n, m) for n, m in model.named_modules() if n and isinstance(m, _SWAPPABLE) and not skipped(n)]
    if not targets:
        raise ValueError("inject_noise: the model has no Conv1d/2d/3d or Linear layer to make noisy.")
    for name, layer in targets:
        noisy = NoisyLayer(layer, kind=kind, per_channel=per_channel, activations=activations, init=init, rank=rank,
                           **kwargs)
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, noisy)
    logger.info("inject_noise: %d layers made noisy (%s%s).", len(targets), kind, ", per channel" if per_channel else "")
    return model


def _parent(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name.rpartition(".")[0])


def noisy_layers(model: nn.Module) -> list[NoisyLayer]:
    """All :class:`NoisyLayer` modules of ``model``."""
    return [m for m in model.modules() if isinstance(m, NoisyLayer)]


@contextlib.contextmanager
def noise_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with every noisy layer at its mean weights; restores each layer's flag."""
    layers = noisy_layers(model)
    flags = [m.enabled for m in layers]
    for m in layers:
        m.enabled = False
    try:
        yield model
    finally:
        for m, f in zip(layers, flags):
            m.enabled = f


def set_noise_generator(model: nn.Module, generator: torch.Generator | int | None) -> None:
    """Give every noisy layer one shared ``torch.Generator`` (an int seeds a new one; ``None``: global RNG)."""
    if isinstance(generator, int) and not isinstance(generator, bool):
        generator = torch.Generator().manual_seed(generator)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}.")
    for m in noisy_layers(model):
        m.generator = generator


def noise_parameter_groups(model: nn.Module, *, weight_decay: float) -> list[dict[str, Any]]:
    """Optimiser parameter groups: everything with ``weight_decay``, the noise parameters with 0.

    Example:
        >>> net = inject_noise(torch.nn.Sequential(torch.nn.Linear(3, 2)), kind="cni", rank=2)
        >>> [len(g["params"]) for g in noise_parameter_groups(net, weight_decay=5e-4)]
        [2, 2]
    """
    check_nonnegative("weight_decay", weight_decay)
    noise_ids = {id(p) for m in noisy_layers(model) for n, p in m.named_parameters(recurse=False)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if id(p) not in noise_ids], "weight_decay": float(weight_decay)},
            {"params": [p for p in params if id(p) in noise_ids], "weight_decay": 0.0}]


class NoiseInjectionTraining(PGDAdversarialTraining):
    """PNI/CNI adversarial training: ``(1 - w) CE(f(x_adv), y) + w CE(f(x), y)``, ``w = 0.5``.

    :class:`~medrobust.core.defenses.pgd_at.PGDAdversarialTraining` with the PNI code's choices:
    half clean, half adversarial loss, and PGD run on the model's own clean prediction
    (``label="prediction"``; ``"true"`` uses the labels). The noise is drawn in every forward,
    during the attack too. Works for any network; noise layers come from :func:`inject_noise`.

    With ``inject`` set (what :func:`~medrobust.core.defenses.build_defense` does for ``"pni-w"``,
    ``"pni-c"``, ``"cni"``, so a bundle's ``defense`` switch selects them), the first iteration
    swaps the trainer's network in place (:func:`inject_noise`, unless it already has noisy
    layers) and adds the new noise parameters to the trainer's optimiser as a group without
    weight decay. A learning-rate scheduler built before that does not schedule the new group
    (it keeps the optimiser's initial rate). The saved checkpoint then holds the noisy network's
    keys (``<layer>.layer.weight``, ``<layer>.alpha``): load it into a network passed through
    the same :func:`inject_noise`, not into the plain one.

    Args:
        eps, steps, alpha, norm, random_start, clean_weight: as PGD-AT (``clean_weight`` 0.5).
        label: ``"prediction"`` or ``"true"``.
        inject: ``None`` (the network is already noisy), ``"pni"`` or ``"cni"``.
        per_channel: with ``inject="pni"``: one ``alpha`` per output channel (PNI-C).
        **kwargs: ``bounds``, ``attack_loss``, ``loss_fn``, ``attack_in_eval_mode``, ``seed``.

    Raises:
        ValueError: ``label`` or ``inject`` unknown, ``per_channel`` without ``inject="pni"``
            (and PGD-AT's checks).

    Example:
        >>> net = inject_noise(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)))
        >>> step = NoiseInjectionTraining(eps=2 / 255, steps=2)
        >>> step.make_adversarial(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), None).shape
        torch.Size([2, 1, 4, 4])
    """

    name = "noise-injection-at"

    def __init__(self, *, eps: float, clean_weight: float = 0.5, label: str = "prediction", inject: str | None = None,
                 per_channel: bool = False, **kwargs: Any) -> None:
        super().__init__(eps=eps, clean_weight=clean_weight, **kwargs)
        if label not in ("prediction", "true"):
            raise ValueError(f"label must be 'prediction' or 'true', got {label!r}.")
        if inject is not None and inject not in _KINDS:
            raise ValueError(f"inject must be None or one of {_KINDS}, got {inject!r}.")
        if per_channel and inject != "pni":
            raise ValueError(f"per_channel applies to inject='pni' only, got inject={inject!r}.")
        check_number("clean_weight", clean_weight, low=0, high=1)
        self.label, self.inject, self.per_channel = label, inject, bool(per_channel)

    def attach(self, engine: Any) -> None:
        """On the first iteration, with ``inject`` set: make the trainer's network noisy (in place)."""
        super().attach(engine)
        net = getattr(engine, "network", None)
        if self.inject is None or net is None or noisy_layers(net):
            return
        inject_noise(net, kind=self.inject, per_channel=self.per_channel)
        optimizer = getattr(engine, "optimizer", None)
        if optimizer is not None:
            optimizer.add_param_group({"params": noise_parameter_groups(net, weight_decay=0.0)[1]["params"],
                                       "weight_decay": 0.0})
        logger.warning("%s: injected %s noise into the trainer's network (%d layers%s); checkpoints now hold the "
                       "noisy network's keys.", type(self).__name__, self.inject, len(noisy_layers(net)),
                       ", per channel" if self.per_channel else "")

    def make_adversarial(self, forward: Any, x: torch.Tensor, y: torch.Tensor, engine: Any) -> torch.Tensor:
        if self.label == "true":
            return self.attack(forward, x, y)
        with torch.no_grad():  # the labels still feed the training loss: check them against the logits
            check_labels(y, batch=x.shape[0], num_classes=class_logits(model_output(forward, x)).shape[1], name="y")
        return self.attack(forward, x, None)
