"""FNAF robust training for reconstruction models (Caliva et al., MIDL 2021).

Per batch: the usual clean step (``loss(f(x), y)``, the trainer's loss, L1 in fastMRI), then a
second step on the same batch: a FNAF feature is drawn for each ground truth ``y``
(:func:`medrobust.core.attacks.fnaf`: random-walk blob, ``size`` pixels, the worst of
``restarts`` draws, optional finite-difference moves), ``y + feature`` goes through the
acquisition to give the model input, and the model steps on
``fnaf_weight * masked L1 (feature + halo) + full_weight * loss(f(input), y + feature)`` (the
authors' ``loss.sum() / mask.sum() + l1(output, target)``).

The acquisition depends on the batch (its undersampling mask, phase, coil maps), so it is a
callable ``acquisition(image, batchdata) -> model input`` where ``batchdata`` is the raw batch the
data loader gave the trainer. The core knows nothing about MRI: a bundle or
:mod:`medrobust.reconstruction` supplies it.

Cost: about two training steps plus ``restarts`` (and ``2 * spatial_dims * moves``) forward
passes for the search.

Example:
    >>> import torch
    >>> from monai.engines import SupervisedTrainer
    >>> net = torch.nn.Conv2d(1, 1, 3, padding=1)
    >>> y = torch.rand(2, 1, 16, 16)
    >>> data = [{"image": y.clone(), "label": y}]
    >>> step = FNAFTraining(acquisition=lambda img, batch: img, size=(5, 10))
    >>> trainer = SupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=data, network=net,
    ...     optimizer=torch.optim.Adam(net.parameters(), 1e-3), loss_function=torch.nn.L1Loss(),
    ...     iteration_update=step, decollate=False)
    >>> trainer.run()
    >>> out = trainer.state.output
    >>> bool(out["clean_loss"] > 0), bool(out["fnaf_masked_loss"] > 0)
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.utils import CommonKeys as Keys

from medrobust.core.attacks.base import AttackResult
from medrobust.core.attacks.fnaf import fnaf, fnaf_loss
from medrobust.core.defenses.base import AdversarialTrainingStep, Forward, plain

__all__ = ["FNAFTraining"]

Acquisition = Callable[[torch.Tensor, Any], Any]


class FNAFTraining(AdversarialTrainingStep):
    """FNAF robust training: a clean step, then a step on the same batch with a FNAF feature.

    Args:
        acquisition: ``(image (B, C, *spatial), batchdata) -> model input``: the same acquisition
            that produced the batch's input from its ground truth (label).
        size: feature pixels, an int or ``(low, high)`` (authors: 10-100 for training).
        restarts: feature draws per step, the worst kept (authors: 1 when training).
        moves: finite-difference moves of the kept feature (0: none).
        halo: halo radius in pixels around the feature.
        halo_weight: weight of the halo in the masked loss.
        fnaf_weight: weight of the masked L1 feature loss.
        full_weight: weight of the full-image loss on the perturbed pair.
        clean_step: take the clean step first (``False`` leaves only the FNAF step).
        **kwargs: ``loss_fn`` (outer loss; default the trainer's), ``attack_in_eval_mode``, ``seed``
            (see :class:`~medrobust.core.defenses.base.AdversarialTrainingStep`).

    Handlers see one iteration per batch: MONAI's ``IterationEvents`` fire for the FNAF step
    (the clean step fires none).

    ``engine.state.output``: ``loss`` is the clean step's loss (comparable with clean training),
    ``fnaf_loss`` the second step's total, ``fnaf_masked_loss`` its masked part; ``pred`` is the
    reconstruction of the perturbed input.

    Raises:
        TypeError: ``acquisition`` not callable. ValueError: negative weights or bad search settings.
    """

    name = "fnaf"

    def __init__(
        self,
        *,
        acquisition: Acquisition,
        size: int | tuple[int, int] = (10, 100),
        restarts: int = 1,
        moves: int = 0,
        halo: float = 1.0,
        halo_weight: float = 1.0,
        fnaf_weight: float = 1.0,
        full_weight: float = 1.0,
        clean_step: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("eps", 0.0)  # a feature, not an eps-ball: the base's eps and bounds are unused
        super().__init__(**kwargs)
        if not callable(acquisition):
            raise TypeError(f"acquisition must be callable (image, batchdata) -> model input, got {type(acquisition).__name__}.")
        for n, v in (("halo_weight", halo_weight), ("fnaf_weight", fnaf_weight), ("full_weight", full_weight)):
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{n} must be a non-negative float, got {v!r}.")
        if not isinstance(restarts, int) or restarts < 1:
            raise ValueError(f"restarts must be a positive int, got {restarts!r}.")
        self.acquisition = acquisition
        self.size = size
        self.restarts = restarts
        self.moves = moves
        self.halo = float(halo)
        self.halo_weight = float(halo_weight)
        self.fnaf_weight = float(fnaf_weight)
        self.full_weight = float(full_weight)
        self.clean_step = clean_step
        self._batch: Any = None
        self._clean_loss: torch.Tensor | None = None
        self._last_masked = torch.tensor(float("nan"))

    # the search: y is the fully sampled ground truth; the model sees acquisition(y + feature)
    def make_adversarial(self, forward: Forward, x: torch.Tensor, y: torch.Tensor, engine: Any) -> AttackResult:
        batch = self._batch
        return fnaf(forward, plain(y).to(x.dtype), forward_op=lambda img: self.acquisition(img, batch), size=self.size,
                    restarts=self.restarts, moves=self.moves, halo=self.halo, halo_weight=self.halo_weight,
                    generator=self.sample_seed())

    def training_loss(self, forward: Forward, x: torch.Tensor, adv: AttackResult, y: torch.Tensor,
                      loss_fn: Callable) -> tuple[torch.Tensor, torch.Tensor]:
        target = adv.x_adv
        inp = self.acquisition(target, self._batch)
        pred = forward(inp)
        masked = fnaf_loss(pred, target, adv.info["weight"], kind="l1").mean()
        self._last_masked = masked.detach()
        return self.fnaf_weight * masked + self.full_weight * loss_fn(pred, target), pred

    def _clean(self, engine: Any, batchdata: Any) -> torch.Tensor:
        """MONAI's supervised iteration: one step on ``loss(f(x), y)``."""
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        x, y = plain(batch[0]), plain(batch[1])
        args, kwargs = (batch[2], batch[3]) if len(batch) == 4 else ((), {})
        loss_fn = self.loss_fn if self.loss_fn is not None else engine.loss_function
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        loss = loss_fn(self.forward_fn(engine, engine.network, *args, **kwargs)(x), y)
        loss.backward()
        engine.optimizer.step()
        return loss.detach()

    def after_step(self, engine: Any) -> None:
        """Report the losses (before MONAI's MODEL_COMPLETED handlers, e.g. decollation, run)."""
        out = engine.state.output
        out["fnaf_loss"] = out[Keys.LOSS]
        out["fnaf_masked_loss"] = self._last_masked
        out["clean_loss"] = self._clean_loss if self._clean_loss is not None else out[Keys.LOSS]
        out[Keys.LOSS] = out["clean_loss"]

    def __call__(self, engine: Any, batchdata: Any) -> dict:
        """Clean step, then the FNAF step (the base class's iteration with the hooks above)."""
        if batchdata is None:
            raise ValueError("batchdata: must provide batch data for the current iteration, got None.")
        self._clean_loss = self._clean(engine, batchdata) if self.clean_step else None
        self._batch = batchdata
        try:
            return super().__call__(engine, batchdata)
        finally:
            self._batch = None

    def __repr__(self) -> str:
        return (f"FNAFTraining(size={self.size}, restarts={self.restarts}, moves={self.moves}, halo={self.halo:g}, "
                f"fnaf_weight={self.fnaf_weight:g}, full_weight={self.full_weight:g})")

