"""The skeleton every adversarial-training defense shares: one MONAI/ignite training iteration.

A defense is an object that MONAI's trainer calls once per batch,
``SupervisedTrainer(..., iteration_update=defense)``, in place of the default
``SupervisedTrainer._iteration``. The skeleton is written once here (:meth:`__call__`): unpack the
batch with the trainer's ``prepare_batch``, build adversarial inputs with the model in eval mode
(:meth:`make_adversarial`), then one optimiser step on the defense's training loss
(:meth:`training_loss`), firing MONAI's ``IterationEvents`` so handlers (stats, checkpoints,
metrics) work unchanged. Methods override only those two hooks, plus
:meth:`before_loss` / :meth:`after_step` (AWP perturbs and restores the weights there) and
:meth:`attach` (extra handlers, e.g. fast FGSM's catastrophic-overfitting check).

Shapes: inputs ``(B, C, *spatial)`` (2-D or 3-D). Classification: logits ``(B, K)`` (a single
logit ``(B, 1)`` is read as ``[0, z]``), labels ``(B,)``. Segmentation: logits
``(B, K, *spatial)``, labels ``(B, 1, *spatial)`` indices or ``(B, K, *spatial)`` one-hot. The
outer (training) loss is the trainer's ``loss_function`` unless ``loss_fn`` is given; the inner
maximisation uses ``attack_loss`` (a :mod:`medrobust.core.attacks.losses` objective or name,
e.g. ``"dicece"`` for segmentation; default classification cross-entropy).

Example:
    >>> import torch
    >>> from monai.engines import SupervisedTrainer
    >>> from medrobust.core.defenses import PGDAdversarialTraining
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    >>> data = [{"image": torch.rand(4, 1, 4, 4), "label": torch.tensor([0, 1, 0, 1])}]
    >>> trainer = SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=data, network=net,
    ...     optimizer=torch.optim.SGD(net.parameters(), 0.1), loss_function=torch.nn.CrossEntropyLoss(),
    ...     iteration_update=PGDAdversarialTraining(eps=2 / 255, steps=3))
    >>> trainer.run()
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Union

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

from medrobust.core.attacks.losses import AttackObjective
from medrobust.core.utils import base_seed, class_logits, eval_mode
from medrobust.core.validation import check_batch, check_bounds, check_nonnegative

__all__ = [
    "AdversarialTrainingStep",
    "Bounds",
    "AttackLoss",
    "Forward",
    "eval_mode",
    "class_indices",
    "kl_per_sample",
    "plain",
]

logger = logging.getLogger(__name__)

Bounds = Union[tuple[float, float], Sequence[float], tuple[torch.Tensor, torch.Tensor]]
AttackLoss = Union[AttackObjective, str, Callable[[torch.Tensor, Any], torch.Tensor], None]
Forward = Callable[[torch.Tensor], torch.Tensor]


def class_indices(y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Integer class labels shaped like ``logits`` without its channel dim.

    Args:
        y: ``(B,)`` / ``(B, 1)`` (classification), ``(B, 1, *spatial)`` indices or
            ``(B, K, *spatial)`` one-hot (segmentation).
        logits: ``(B, K, *spatial)`` model output.

    Raises:
        ValueError: ``y`` fits none of these layouts.
    """
    target = tuple(logits.shape[:1]) + tuple(logits.shape[2:])
    y = torch.as_tensor(y, device=logits.device)
    if logits.ndim == 2:
        if y.numel() != logits.shape[0]:
            raise ValueError(f"labels: expected {logits.shape[0]} class indices for logits {tuple(logits.shape)}, "
                             f"got shape {tuple(y.shape)}.")
        return y.reshape(-1).long()
    if y.ndim == logits.ndim and y.shape[1] == 1 and tuple(y.shape[2:]) == target[1:]:
        return y[:, 0].long()
    if y.ndim == logits.ndim and y.shape[1] == logits.shape[1] > 1 and y.shape == logits.shape:
        return y.argmax(dim=1)
    raise ValueError(
        f"labels: expected (B, 1, *spatial) indices or (B, K, *spatial) one-hot for logits {tuple(logits.shape)}, "
        f"got shape {tuple(y.shape)}."
    )


def kl_per_sample(p_ref: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``KL(p_ref || softmax(logits))`` summed over classes (dim 1), mean over spatial dims: ``(B,)``.

    ``p_ref`` ``(B, K, *spatial)`` are probabilities (typically detached clean predictions).
    """
    logq = F.log_softmax(class_logits(logits, spatial=True), dim=1)
    kl = (p_ref * (torch.log(p_ref.clamp_min(1e-12)) - logq)).sum(dim=1)
    return kl.reshape(kl.shape[0], -1).mean(dim=1)


def plain(t: Any) -> Any:
    """A MONAI ``MetaTensor`` as a plain ``torch.Tensor`` (no metadata tracking inside attack loops); else unchanged."""
    return t.as_tensor() if isinstance(t, MetaTensor) else t


def _checked_hook(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a subclass's ``make_adversarial``: check ``x``/``y`` and apply ``attack_in_eval_mode``."""

    @functools.wraps(fn)
    def make_adversarial(self: AdversarialTrainingStep, forward: Forward, x: torch.Tensor, y: Any,
                         engine: Any) -> Any:
        check_batch(x, y, label_name="y (labels)")
        with eval_mode(forward, self.attack_in_eval_mode):
            return fn(self, forward, x, y, engine)

    make_adversarial._checked = True  # type: ignore[attr-defined]
    return make_adversarial


class AdversarialTrainingStep:
    """Base class: a MONAI ``iteration_update`` for adversarial training (see the module docstring).

    Args:
        eps: perturbation radius in input units (L-inf unless the method says otherwise).
        bounds: valid input range ``(low, high)``; attacks and samples stay inside it.
        attack_loss: objective of the inner maximisation (per-sample), see
            :func:`medrobust.core.attacks.pgd`; ``None`` = classification cross-entropy.
        loss_fn: outer training loss ``(pred, label) -> scalar``; ``None`` = the trainer's
            ``loss_function``.
        attack_in_eval_mode: build adversarial inputs with the network in eval mode (BatchNorm
            statistics untouched), as the TRADES/MART/ADT reference code does; the training
            forward always runs in train mode. Inside the trainer the hooks get a closure over
            the network, so ``False`` really attacks in train mode. Called directly with an
            ``nn.Module`` as ``forward``, :meth:`make_adversarial` follows this flag too, but the
            library attacks it calls (PGD, FGSM) always run an ``nn.Module`` in eval mode; pass
            ``lambda z: net(z)`` to attack in train mode outside a trainer. The caller's
            train/eval flags are restored either way.
        seed: seed of this defense's own ``torch.Generator`` (random starts, noise); the global
            RNG is never used.

    Raises:
        ValueError: ``eps`` negative or not finite; ``bounds`` not ``(low, high)`` with
            ``low < high`` (e.g. ``bounds=(1, 0)``).
        TypeError: ``eps`` not a number.

    Every subclass's :meth:`make_adversarial` is wrapped (in ``__init_subclass__``) so that it
    checks its inputs (:func:`medrobust.core.validation.check_batch`: a finite, non-empty batch
    with one label per sample) and applies ``attack_in_eval_mode``, whether the trainer or a
    user calls it.
    """

    #: name used by :func:`medrobust.core.defenses.build_defense`
    name = "base"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hook = cls.__dict__.get("make_adversarial")
        if hook is not None and not getattr(hook, "_checked", False):
            cls.make_adversarial = _checked_hook(hook)  # type: ignore[method-assign]

    def __init__(
        self,
        *,
        eps: float,
        bounds: Bounds = (0.0, 1.0),
        attack_loss: AttackLoss = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        attack_in_eval_mode: bool = True,
        seed: int = 0,
    ) -> None:
        if isinstance(eps, torch.Tensor):
            raise TypeError(f"eps must be a float, got a tensor {eps!r}; pass float(eps).")
        check_nonnegative("eps", eps, hint="eps is a radius in input units (e.g. 8/255 for [0, 1] images).")
        check_bounds(bounds)
        self.eps = float(eps)
        self.bounds = (bounds[0], bounds[1])
        self.attack_loss = attack_loss
        self.loss_fn = loss_fn
        self.attack_in_eval_mode = attack_in_eval_mode
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._attached: set[int] = set()

    # ------------------------------------------------------------------ hooks for subclasses
    def make_adversarial(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, engine: Any) -> Any:
        """Adversarial inputs (or any context :meth:`training_loss` needs).

        Args:
            forward: the network (or the trainer's closure over it) ``(B, C, *spatial) -> output``.
            x: inputs ``(B, C, *spatial)``; y: labels with one entry per sample.
            engine: the trainer (``None`` when called directly).

        Runs with ``forward`` in eval mode when ``attack_in_eval_mode`` (see the class docstring).

        Raises:
            ValueError/TypeError: ``x`` not a finite non-empty batch, ``y`` of the wrong length.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement make_adversarial.")

    def training_loss(
        self, forward: Forward, x: torch.Tensor, adv: Any, y: torch.Tensor, loss_fn: Callable
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scalar loss, prediction to report)``; runs in train mode with gradients on."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_loss.")

    def before_loss(self, engine: Any, x: torch.Tensor, adv: Any, y: torch.Tensor, loss_fn: Callable) -> None:
        """Called after :meth:`make_adversarial`, before the training forward (AWP perturbs weights here)."""

    def after_step(self, engine: Any) -> None:
        """Called right after ``optimizer.step()`` (AWP restores the weights here)."""

    def attach(self, engine: Any) -> None:
        """Register extra event handlers on ``engine`` (ignite handler protocol); the default adds none.

        Called automatically on the first iteration, so listing the defense among the trainer's
        handlers is optional.
        """
        self._attached.add(id(engine))

    # ------------------------------------------------------------------ helpers
    def sample_seed(self) -> int:
        """A fresh int seed from this defense's generator (for library calls taking ``generator=int``)."""
        return base_seed(self.generator)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise like ``x`` from this defense's generator."""
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)

    @staticmethod
    def forward_fn(engine: Any, network: torch.nn.Module | None = None, *args: Any, **kwargs: Any) -> Forward:
        """``x -> engine.inferer(x, network)`` (the trainer's inferer, so sliding windows etc. apply)."""
        net = engine.network if network is None else network

        def forward(z: torch.Tensor) -> torch.Tensor:
            out = engine.inferer(z, net, *args, **kwargs)
            return out[0] if isinstance(out, (tuple, list)) else out

        return forward

    # ------------------------------------------------------------------ the iteration
    def __call__(self, engine: Any, batchdata: Any) -> dict:
        """One training iteration; returns ``engine.state.output`` (image, label, pred, loss)."""
        if batchdata is None:
            raise ValueError("batchdata: must provide batch data for the current iteration, got None.")
        if id(engine) not in self._attached:
            self.attach(engine)
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        if len(batch) == 2:
            x, y = batch
            args: tuple = ()
            kwargs: dict = {}
        else:
            x, y, args, kwargs = batch
        x, y = plain(x), plain(y)
        engine.state.output = {Keys.IMAGE: x, Keys.LABEL: y}
        net = engine.network
        forward = self.forward_fn(engine, net, *args, **kwargs)
        loss_fn = self.loss_fn if self.loss_fn is not None else engine.loss_function

        with eval_mode(net, self.attack_in_eval_mode):
            adv = self.make_adversarial(forward, x, y, engine)
        net.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        self.before_loss(engine, x, adv, y, loss_fn)
        loss, pred = self.training_loss(forward, x, adv, y, loss_fn)
        engine.state.output[Keys.PRED] = pred
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.state.output[Keys.LOSS] = loss.detach()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        self.after_step(engine)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:.6g}, bounds={self.bounds})"
