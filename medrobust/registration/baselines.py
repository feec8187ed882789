"""Reference rows every registration comparison needs, scored with the same metric code as the networks.

- :func:`no_registration_rows`: the identity (zero DDF; labels compared as they are);
- :func:`mean_translation_rows`: a "population prior": one constant translation, the mean
  gland-centroid offset of the *training* pairs, applied to every test pair;
- :func:`ddf_rows`: any method that maps a pair to a voxel DDF (a trained network via
  :func:`network_ddf_fn`, a classical registration), optionally timed per pair.

Pairs are the dicts of :func:`medrobust.data.paired.load_pair` (unbatched, channel first:
``moving_image``/``fixed_image`` ``(1, *S)``, labels ``(C, *S)``, ``affine``, ``case_id``).

Example:
    >>> import torch
    >>> lab = torch.zeros(2, 16, 16, 16); lab[:, 4:12, 4:12, 4:12] = 1
    >>> pair = {"case_id": "a", "fixed_image": torch.rand(1, 16, 16, 16), "moving_label": lab,
    ...         "fixed_label": lab, "affine": torch.eye(4)}
    >>> no_registration_rows([pair])[0]["dice_gland"], mean_translation_rows([pair], [pair])[0]["tre_mean_mm"]
    (1.0, 0.0)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.networks.blocks import Warp

from medrobust.core.metrics.registration import ddf_world_to_voxel, label_centroids
from medrobust.registration.evaluation import case_metrics

__all__ = ["ddf_rows", "network_ddf_fn", "no_registration_rows", "mean_translation_rows", "mean_training_offset"]

Pair = dict[str, Any]


def _metrics(pair: Pair, ddf: torch.Tensor, warped: torch.Tensor) -> dict[str, Any]:
    return {"case_id": pair["case_id"], **case_metrics(ddf, warped, pair["fixed_label"][None], pair["affine"],
                                                       moving_label=pair["moving_label"][None])}


def ddf_rows(pairs: Sequence[Pair], ddf_fn: Callable[[Pair], torch.Tensor], *, timed: bool = False) -> list[dict[str, Any]]:
    """Per-pair metric rows of a method ``ddf_fn(pair) -> voxel DDF (3, *S)``.

    With ``timed``, each row also has ``cpu_s`` (process CPU time) and ``wall_s`` of ``ddf_fn``.
    """
    warp = Warp(mode="bilinear", padding_mode="zeros")
    rows = []
    for pair in pairs:
        c0, w0 = time.process_time(), time.perf_counter()
        ddf = ddf_fn(pair)[None].float()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        row = _metrics(pair, ddf, warp(pair["moving_label"][None].float(), ddf))
        if timed:
            row.update(cpu_s=cpu, wall_s=wall)
        rows.append(row)
    return rows


def network_ddf_fn(network: torch.nn.Module, moving_keys: Sequence[str] | None = None, *, stage: str = "all") -> Callable[[Pair], torch.Tensor]:
    """``pair -> DDF (3, *S)`` of a registration network (no gradients).

    ``moving_keys``: pair entries concatenated as the moving input; default ``moving_image`` plus
    ``moving_mask`` when the network takes 3 input channels (``network.in_channels``).
    ``stage``: ``"all"`` (the network's output) or ``"global"`` (its global stage alone,
    :meth:`~medrobust.registration.networks.GlobalLocalNet.global_ddf`).
    """
    if stage not in ("all", "global"):
        raise ValueError(f"stage must be 'all' or 'global', got {stage!r}.")
    keys = list(moving_keys) if moving_keys is not None else ["moving_image", "moving_mask"][: getattr(network, "in_channels", 2) - 1]

    def fn(pair: Pair) -> torch.Tensor:
        x = torch.cat([*(pair[k][None] for k in keys), pair["fixed_image"][None]], 1)
        with torch.no_grad():
            return (network.global_ddf(x) if stage == "global" else network(x))[0]

    return fn


def no_registration_rows(pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    """Rows of the identity: zero DDF, the moving labels compared as they are (``seconds`` 0)."""
    rows = []
    for pair in pairs:
        zero = torch.zeros(1, 3, *pair["fixed_label"].shape[1:])
        rows.append({**_metrics(pair, zero, pair["moving_label"][None]), "seconds": 0.0})
    return rows


def mean_training_offset(train_pairs: Sequence[Pair], *, gland_channel: int = 0) -> torch.Tensor:
    """Mean world offset (mm, ``(3,)``) from fixed to moving gland centroid over ``train_pairs``.

    Raises:
        ValueError: no training pairs.
    """
    if not train_pairs:
        raise ValueError("train_pairs: the mean translation needs at least one training pair, got none.")
    g = slice(gland_channel, gland_channel + 1)
    offsets = [label_centroids(p["moving_label"][None, g], p["affine"])[0, 0] - label_centroids(p["fixed_label"][None, g], p["affine"])[0, 0]
               for p in train_pairs]
    return torch.stack(offsets).mean(0)


def mean_translation_rows(train_pairs: Sequence[Pair], test_pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    """Rows of one constant DDF for all ``test_pairs``: :func:`mean_training_offset` of ``train_pairs``."""
    mean = mean_training_offset(train_pairs)

    def fn(pair: Pair) -> torch.Tensor:
        shape = pair["fixed_label"].shape[1:]
        world = mean.reshape(1, 3, *([1] * len(shape))).expand(1, 3, *shape)
        return ddf_world_to_voxel(world, pair["affine"])[0]

    return [{**row, "seconds": 0.0} for row in ddf_rows(test_pairs, fn)]
