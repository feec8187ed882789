"""Iteration functions that plug label-driven registration into MONAI engines.

:class:`RegistrationIteration` is the ``iteration_update`` of a MONAI ``SupervisedTrainer``: one
training step for every regulariser (none, L2 gradient, bending energy, adversarial), so the
trainer, its handlers (checkpoints, stats, validation) and the bundle config are shared.
:class:`RegistrationEvalIteration` is the ``iteration_update`` of a ``SupervisedEvaluator``.

Batches are dicts with ``moving_image``, ``fixed_image`` ``(B, 1, *spatial)``, ``moving_label``,
``fixed_label`` ``(B, C, *spatial)``, and optionally ``case_id``, ``affine`` and ``moving_mask``; the
network maps ``cat([moving, fixed])`` ``(B, 2, *spatial)`` to a voxel-unit DDF ``(B, N, *spatial)``.
``moving_keys`` chooses what "moving" is: ``("moving_image",)`` (the paper), or ``("moving_image",
"moving_mask")`` to give the network the moving gland segmentation as a second moving channel.

Example (config):
    "trainer": {"_target_": "SupervisedTrainer", ..., "iteration_update":
        {"_target_": "medrobust.registration.engine.RegistrationIteration",
         "label_loss": "@label_loss", "regulariser": "bending", "weight": 0.5}}
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import torch
from monai.networks.blocks import Warp
from monai.utils import CommonKeys as Keys

from medrobust.registration.adversarial import AdversarialRegulariser
from medrobust.registration.losses import REGULARISERS, label_centroids_voxels, smoothness_loss

__all__ = [
    "BATCH_KEYS",
    "NATIVE_KEYS",
    "moving_input",
    "register",
    "RegistrationIteration",
    "RegistrationEvalIteration",
    "LossCSVLogger",
    "PreciseBatchNorm",
    "recompute_batchnorm",
]

BATCH_KEYS = ("moving_image", "fixed_image", "moving_label", "fixed_label")
#: batch entries from :func:`medrobust.data.paired.load_pair` that export needs (paths, centring)
NATIVE_KEYS = ("fixed_path", "moving_path", "moving_label_path", "moving_world_to_original")


def _get(batch: dict, key: str, device: torch.device) -> torch.Tensor:
    if key not in batch:
        raise ValueError(f"batch has no {key!r} (keys: {sorted(batch)}); expected {BATCH_KEYS}.")
    return torch.as_tensor(batch[key]).to(device=device, dtype=torch.float32)


def moving_input(batch: dict, keys: tuple[str, ...] | list[str], device: torch.device) -> torch.Tensor:
    """The network's moving channels: ``batch[k]`` for ``k`` in ``keys``, concatenated -> ``(B, len(keys), *spatial)``."""
    return torch.cat([_get(batch, k, device) for k in keys], dim=1)


def register(network: torch.nn.Module, moving_image: torch.Tensor, fixed_image: torch.Tensor, inferer=None) -> torch.Tensor:
    """Predict the DDF for ``(B, 1, *spatial)`` moving/fixed images -> ``(B, N, *spatial)`` voxel units."""
    x = torch.cat([moving_image, fixed_image], dim=1)
    return inferer(x, network) if inferer is not None else network(x)


class RegistrationIteration:
    """One optimisation step of the registration network with a chosen regulariser.

    Args:
        label_loss: ``loss(y_true, y_pred)`` on labels (e.g. :func:`~medrobust.registration.losses.label_loss`).
        regulariser: ``"none"``, ``"diffusion"``, ``"bending"`` or ``"adversarial"``.
        weight: weight of the regulariser term.
        adversary: the :class:`AdversarialRegulariser` (required for ``"adversarial"``, ignored otherwise).
        warp_mode: interpolation of the moving label (``"bilinear"``).
        moving_keys: batch keys concatenated as the network's moving input.
        keypoint_weight: weight of the keypoint loss: the mean distance (voxels) of the network's
            moving/fixed keypoints (a ``keypoints`` global stage) from the centroids of
            ``moving_mask``/``fixed_mask`` (the glands). It ties each image's keypoints to its own
            anatomy; without it, keypoints are free to sit anywhere that makes the *pair* offset right,
            which on a dozen training pairs means memorising pairs.
    """

    def __init__(
        self,
        label_loss: torch.nn.Module,
        *,
        regulariser: str = "none",
        weight: float = 0.0,
        adversary: AdversarialRegulariser | None = None,
        warp_mode: str = "bilinear",
        moving_keys: tuple[str, ...] | list[str] = ("moving_image",),
        keypoint_weight: float = 0.0,
    ) -> None:
        if regulariser not in REGULARISERS:
            raise ValueError(f"regulariser must be one of {REGULARISERS}, got {regulariser!r}.")
        if regulariser == "adversarial" and adversary is None:
            raise ValueError("regulariser='adversarial' needs an adversary (AdversarialRegulariser with FE DDFs).")
        if weight < 0 or keypoint_weight < 0:
            raise ValueError(f"weight and keypoint_weight must be >= 0, got {weight} and {keypoint_weight}.")
        self.keypoint_weight = float(keypoint_weight)
        self.label_loss = label_loss
        self.regulariser = regulariser
        self.weight = float(weight)
        self.smooth = smoothness_loss(regulariser) if regulariser != "adversarial" else None
        self.adversary = adversary if regulariser == "adversarial" else None
        self.warp = Warp(mode=warp_mode, padding_mode="zeros")
        self.moving_keys = tuple(moving_keys)

    def __call__(self, engine: Any, batchdata: dict) -> dict:
        device = engine.state.device
        fixed, ml, fl = (_get(batchdata, k, device) for k in BATCH_KEYS[1:])
        moving = moving_input(batchdata, self.moving_keys, device)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        ddf = register(engine.network, moving, fixed, getattr(engine, "inferer", None))
        warped = self.warp(ml, ddf)
        l_label = self.label_loss(fl, warped)
        reg = torch.zeros((), device=device)
        d_loss = float("nan")
        if self.smooth is not None:
            reg = self.smooth(ddf)
        elif self.adversary is not None:
            cond = fixed if self.adversary.discriminator.conditional else None
            if (engine.state.iteration - 1) % self.adversary.d_every == 0:
                d_loss = self.adversary.discriminator_step(ddf, cond, batchdata.get("case_id"))
            reg = self.adversary.generator_loss(ddf, cond)
        loss = l_label + self.weight * reg
        extra = getattr(self, "_extra", None)  # a subclass's extra term on this DDF (robust training)
        if extra is not None:
            loss = loss + extra(ddf)
        l_key = torch.zeros((), device=device)
        if self.keypoint_weight > 0:
            l_key = self._keypoint_loss(engine.network, batchdata, device)
            loss = loss + self.keypoint_weight * l_key
        loss.backward()
        engine.optimizer.step()
        return {
            Keys.IMAGE: fixed,
            Keys.LABEL: fl,
            Keys.PRED: ddf.detach(),
            Keys.LOSS: loss.detach(),
            "label_loss": float(l_label.detach()),
            "regulariser_loss": float(reg.detach()),
            "keypoint_loss": float(l_key.detach()),
            "d_loss": d_loss,
        }


    @staticmethod
    def _keypoint_loss(network: torch.nn.Module, batchdata: dict, device: torch.device) -> torch.Tensor:
        stage = next((m for m in network.modules() if getattr(m, "last_keypoints", None) is not None), None)
        if stage is None:
            raise ValueError("keypoint_weight > 0 needs a network with a 'keypoints' global stage "
                             "(medrobust.registration.networks.GlobalLocalNet(global_stage='keypoints')).")
        km, kf = stage.last_keypoints
        cm = label_centroids_voxels(_get(batchdata, "moving_mask", device))  # (B, 1, N)
        cf = label_centroids_voxels(_get(batchdata, "fixed_mask", device))
        return (torch.linalg.vector_norm(km - cm, dim=-1).mean() + torch.linalg.vector_norm(kf - cf, dim=-1).mean()) / 2


class RegistrationEvalIteration:
    """Evaluation/inference step: DDF, warped moving image and all warped moving label channels.

    Output keys: ``pred`` (DDF), ``warped_image``, ``warped_label`` (if labels present), ``fixed_label``,
    ``moving_label``, ``fixed_image``, ``affine``, ``case_id``, ``seconds`` (network + warp time),
    ``native`` (the batch's :data:`NATIVE_KEYS`, for :class:`~medrobust.registration.export.RegistrationWriter`).
    """

    def __init__(self, warp_mode: str = "bilinear", moving_keys: tuple[str, ...] | list[str] = ("moving_image",)) -> None:
        self.warp = Warp(mode=warp_mode, padding_mode="zeros")
        self.moving_keys = tuple(moving_keys)

    @torch.no_grad()
    def __call__(self, engine: Any, batchdata: dict) -> dict:
        device = engine.state.device
        moving, fixed = _get(batchdata, "moving_image", device), _get(batchdata, "fixed_image", device)
        engine.network.eval()
        start = time.perf_counter()
        ddf = register(engine.network, moving_input(batchdata, self.moving_keys, device), fixed, getattr(engine, "inferer", None))
        out: dict[str, Any] = {Keys.PRED: ddf, Keys.IMAGE: fixed, "warped_image": self.warp(moving, ddf), "fixed_image": fixed}
        if "moving_label" in batchdata:
            ml = _get(batchdata, "moving_label", device)
            out["warped_label"] = self.warp(ml, ddf)
            out["moving_label"] = ml
        out["seconds"] = time.perf_counter() - start
        if "fixed_label" in batchdata:
            out["fixed_label"] = out[Keys.LABEL] = _get(batchdata, "fixed_label", device)
        out["affine"] = batchdata.get("affine")
        out["case_id"] = batchdata.get("case_id")
        out["native"] = {k: batchdata[k] for k in NATIVE_KEYS if k in batchdata}  # for export in the files' own space
        return out


class LossCSVLogger:
    """Ignite handler appending each training iteration's losses to a CSV (written as it goes).

    Columns: ``iteration, epoch, loss, label_loss, regulariser_loss, keypoint_loss, d_loss``.
    """

    COLUMNS = ("iteration", "epoch", "loss", "label_loss", "regulariser_loss", "keypoint_loss", "d_loss")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._row)

    def _start(self, engine: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerow(self.COLUMNS)

    def _row(self, engine: Any) -> None:
        out = engine.state.output
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([engine.state.iteration, engine.state.epoch, float(out[Keys.LOSS]),
                                    out.get("label_loss"), out.get("regulariser_loss"), out.get("keypoint_loss"),
                                    out.get("d_loss")])


class PreciseBatchNorm:
    """Ignite handler: at the end of training, recompute every BatchNorm's running statistics with the
    final weights (cumulative average over ``num_batches`` training batches, no gradients).

    Running averages collected while the weights were still moving lag behind them; after a short run
    (tens of iterations) a LocalNet in ``eval()`` then predicts wildly wrong DDFs although it is fine in
    ``train()``. MONAI has no such utility, hence this one (the "precise BN" of Wu & Johnson 2021).
    Attach it before the checkpoint saver so that the saved weights carry the recomputed statistics.

    Args:
        data_loader: training batches (dicts with ``moving_image`` and ``fixed_image``).
        num_batches: batches to average over (0 disables the handler).
        moving_keys: batch keys concatenated as the network's moving input.
    """

    def __init__(self, data_loader: Any, num_batches: int = 16, moving_keys: tuple[str, ...] | list[str] = ("moving_image",)) -> None:
        if num_batches < 0:
            raise ValueError(f"num_batches must be >= 0, got {num_batches}.")
        self.data_loader = data_loader
        self.num_batches = num_batches
        self.moving_keys = tuple(moving_keys)

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        if self.num_batches == 0:
            return
        device = engine.state.device

        def inputs():
            seen = 0
            while True:
                for batch in self.data_loader:
                    yield torch.cat([moving_input(batch, self.moving_keys, device), _get(batch, "fixed_image", device)], dim=1)
                    seen += 1
                    if seen >= self.num_batches:
                        return
                if seen == 0:  # an empty loader
                    return

        recompute_batchnorm(engine.network, inputs())


@torch.no_grad()
def recompute_batchnorm(network: torch.nn.Module, inputs: Any) -> int:
    """Reset every BatchNorm's running statistics and recompute them as the cumulative average over ``inputs``.

    ``inputs``: an iterable of network inputs (e.g. ``(B, C, *spatial)`` batches of training pairs),
    forwarded in train mode without gradients. Momenta and the train/eval mode are restored.
    Returns the number of batches seen (0 and nothing changed when the network has no BatchNorm).
    """
    bns = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    momenta = [bn.momentum for bn in bns]
    was_training = network.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the batches below
    network.train()
    seen = 0
    for x in inputs:
        network(x)
        seen += 1
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    network.train(was_training)
    return seen
