"""Clean and PGD-robust evaluation of a classifier inside a MONAI evaluator.

:class:`AdversarialEvaluationStep` is an ``iteration_update`` for
``monai.engines.SupervisedEvaluator``: per batch it stores the clean prediction under ``"pred"``
and, for every radius ``eps[i]``, the prediction on the library's PGD example under
``"pred_adv_{i}"``. :func:`robustness_metrics` builds the matching ignite metrics (AUC,
accuracy, top-label ECE clean; accuracy and AUC per radius) from
:mod:`medrobust.core.metrics.classification`, named ``auc``, ``accuracy``, ``ece``,
``robust_accuracy_eps{N}``, ``robust_auc_eps{N}`` with ``N = eps * 255`` (``eps2`` = 2/255).

Example:
    >>> import torch
    >>> from monai.engines import SupervisedEvaluator
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    >>> data = [{"image": torch.rand(6, 1, 4, 4), "label": torch.tensor([0, 1] * 3)}]
    >>> step = AdversarialEvaluationStep(eps=[1 / 255, 2 / 255], steps=3)
    >>> ev = SupervisedEvaluator(device="cpu", val_data_loader=data, network=net, iteration_update=step,
    ...     key_val_metric=robustness_metrics([1 / 255, 2 / 255]), decollate=False)
    >>> ev.run()
    >>> sorted(ev.state.metrics)[:3]
    ['accuracy', 'auc', 'ece']
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from ignite.metrics import EpochMetric, Metric
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

from medrobust.core.attacks import pgd
from medrobust.core.defenses.base import AdversarialTrainingStep, AttackLoss, Bounds, eval_mode, plain
from medrobust.core.metrics.classification import accuracy, expected_calibration_error, roc_auc

__all__ = ["AdversarialEvaluationStep", "robustness_metrics", "eps_tag", "adv_key"]

logger = logging.getLogger(__name__)


def eps_tag(eps: float) -> str:
    """``"eps2"`` for 2/255, ``"eps0.5"`` for 0.5/255 (radius in 1/255 units, up to 4 significant digits)."""
    return f"eps{float(eps) * 255:.4g}"


def adv_key(i: int) -> str:
    """Output key of the prediction under the ``i``-th radius."""
    return f"pred_adv_{i}"


class AdversarialEvaluationStep:
    """Evaluator iteration: clean prediction plus one PGD prediction per radius.

    Args:
        eps: radii (input units); ``[]`` evaluates clean only.
        steps: PGD steps (10 for "PGD-10").
        alpha: PGD step; default ``2.5 * eps / steps``.
        norm: ``"inf"`` or ``"2"``.
        restarts: PGD restarts (the worst case per sample is kept).
        attack_loss: PGD objective (default classification CE on the true label).
        bounds: valid input range.
        seed: base seed of the random starts (batch ``k`` uses ``seed + k``, reproducible).

    Raises:
        ValueError: a negative radius.
    """

    def __init__(self, eps: Sequence[float] = (), *, steps: int = 10, alpha: float | None = None, norm: str = "inf",
                 restarts: int = 1, attack_loss: AttackLoss = None, bounds: Bounds = (0.0, 1.0), seed: int = 0) -> None:
        self.eps = [float(e) for e in eps]
        if any(e < 0 for e in self.eps):
            raise ValueError(f"eps must be non-negative radii, got {list(eps)!r}.")
        self.steps, self.alpha, self.norm, self.restarts = int(steps), alpha, norm, int(restarts)
        self.attack_loss, self.bounds, self.seed = attack_loss, bounds, int(seed)

    def __call__(self, engine: Any, batchdata: Any) -> dict:
        if batchdata is None:
            raise ValueError("batchdata: must provide batch data for the current iteration, got None.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        x, y = plain(batch[0]), plain(batch[1])
        args, kwargs = (batch[2], batch[3]) if len(batch) == 4 else ((), {})
        forward = AdversarialTrainingStep.forward_fn(engine, engine.network, *args, **kwargs)
        out: dict = {Keys.IMAGE: x, Keys.LABEL: y}
        engine.state.output = out
        with eval_mode(engine.network):
            with torch.no_grad():
                out[Keys.PRED] = forward(x)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            for i, e in enumerate(self.eps):
                res = pgd(forward, x, y, loss_fn=self.attack_loss, eps=e, alpha=self.alpha, steps=self.steps,
                          norm=self.norm, restarts=self.restarts, bounds=self.bounds,
                          generator=self.seed + 1000 * engine.state.iteration + i)
                with torch.no_grad():
                    out[adv_key(i)] = forward(res.x_adv)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return out


def _epoch_metric(fn: Any, key: str) -> Metric:
    return EpochMetric(lambda p, t: fn(p, t), output_transform=lambda o: (o[key].float(), o[Keys.LABEL].reshape(-1)),
                       check_compute_fn=False)


def robustness_metrics(eps: Sequence[float] = (), *, prefix: str = "", key: str | None = None,
                       ece_bins: int = 15) -> dict[str, Metric]:
    """Ignite metrics for :class:`AdversarialEvaluationStep` outputs (dataset-level, computed once per run).

    Args:
        eps: the same radii as the step (order matters: ``pred_adv_{i}``).
        prefix: prepended to every name (e.g. ``"val_"``).
        key: the name (with prefix) to put first, so MONAI uses it as the key metric when the
            dict is passed as ``key_val_metric``; default ``prefix + "auc"``.
        ece_bins: bins of the ECE.

    Returns:
        ``{prefix + name: metric}``, the key metric first.

    Raises:
        ValueError: ``key`` is not one of the names.
    """
    metrics: dict[str, Metric] = {
        f"{prefix}auc": _epoch_metric(roc_auc, Keys.PRED),
        f"{prefix}accuracy": _epoch_metric(accuracy, Keys.PRED),
        f"{prefix}ece": _epoch_metric(lambda p, t: expected_calibration_error(p, t, num_bins=ece_bins), Keys.PRED),
    }
    for i, e in enumerate(eps):
        metrics[f"{prefix}robust_accuracy_{eps_tag(e)}"] = _epoch_metric(accuracy, adv_key(i))
        metrics[f"{prefix}robust_auc_{eps_tag(e)}"] = _epoch_metric(roc_auc, adv_key(i))
    key = f"{prefix}auc" if key is None else key
    if key not in metrics:
        raise ValueError(f"key: {key!r} is not one of the metrics {list(metrics)}.")
    return {key: metrics[key], **{k: v for k, v in metrics.items() if k != key}}
