"""Adversarial robustness of a registration network: a bounded attack on the fixed image.

The attacker perturbs the fixed (TRUS) image within an L-inf (or L2) ball, with the attacks
library's :func:`~medrobust.core.attacks.pgd` and its registration objective (``1 - soft Dice``
of the moving labels warped by the predicted DDF against the fixed labels), and we measure what
that does to Dice and TRE. The moving image is held fixed: the threat is on the intra-operative
side (ultrasound acquisition).

Example:
    >>> rows = attack_rows(network, items, eps=0.05, steps=5)        # doctest: +SKIP
    >>> rows[0]["dice_gland_adv"] <= rows[0]["dice_gland"]           # doctest: +SKIP
    True
    >>> summarise_attack_rows([{"dice_gland": 0.8, "dice_gland_adv": 0.6, "tre_landmarks_mm": [2.0, 4.0],
    ...                         "tre_landmarks_mm_adv": [3.0, float("nan")]}])
    {'dice_gland': 0.8, 'dice_gland_adv': 0.6, 'tre_median_mm': 3.0, 'tre_median_mm_adv': 3.0}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.networks.blocks import Warp

from medrobust.core.attacks import pgd, registration_objective
from medrobust.registration.engine import register
from medrobust.registration.evaluation import case_metrics

__all__ = ["attack_fixed_image", "attack_rows", "summarise_attack_rows"]


class _FixedOnly(torch.nn.Module):
    """The registration network as a function of the fixed image alone (moving image held constant)."""

    def __init__(self, network: torch.nn.Module, moving_image: torch.Tensor) -> None:
        super().__init__()
        self.network = network
        self.moving_image = moving_image

    def forward(self, fixed_image: torch.Tensor) -> torch.Tensor:
        return register(self.network, self.moving_image, fixed_image)


def attack_fixed_image(
    network: torch.nn.Module,
    moving_image: torch.Tensor,
    fixed_image: torch.Tensor,
    moving_label: torch.Tensor,
    fixed_label: torch.Tensor,
    *,
    eps: float,
    steps: int = 10,
    norm: str = "inf",
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """PGD on the fixed image to worsen label alignment.

    Args:
        network: ``cat([moving, fixed]) -> DDF``, in eval mode (not changed here).
        moving_image: ``(B, M, *spatial)``, the network's moving channels (held constant).
        fixed_image: ``(B, 1, *spatial)`` in [0, 1].
        moving_label, fixed_label: ``(B, C, *spatial)``.
        eps: perturbation radius in image units ([0, 1] intensities).
        steps: PGD steps.
        norm: ``"inf"`` or ``"2"``.
        seed: the attack's random start.

    Returns:
        ``(adversarial fixed image, its DDF, attack info)``.
    """
    model = _FixedOnly(network, moving_image)
    y = torch.cat([moving_label, fixed_label], dim=1)
    result = pgd(model, fixed_image, y, loss_fn=registration_objective("dice"), eps=eps, steps=steps, norm=norm,
                 bounds=(0.0, 1.0), generator=seed)
    with torch.no_grad():
        ddf_adv = model(result.x_adv)
    return result.x_adv, ddf_adv, result.info


def attack_rows(
    network: torch.nn.Module,
    items: Sequence[dict[str, Any]],
    *,
    eps: float,
    steps: int = 10,
    norm: str = "inf",
    seed: int = 0,
    device: str | torch.device = "cpu",
    moving_keys: Sequence[str] = ("moving_image",),
) -> list[dict[str, Any]]:
    """Clean and attacked metrics per case (``<metric>`` and ``<metric>_adv``) for loaded pairs.

    ``items`` are dicts from :func:`medrobust.data.paired.load_pair` (unbatched, channel first);
    ``moving_keys`` are concatenated as the network's moving input.
    """
    warp = Warp(mode="bilinear", padding_mode="zeros")
    network.eval()
    rows = []
    for i, item in enumerate(items):
        fi, ml, fl = (torch.as_tensor(item[k])[None].float().to(device) for k in ("fixed_image", "moving_label", "fixed_label"))
        mi = torch.cat([torch.as_tensor(item[k])[None].float().to(device) for k in moving_keys], dim=1)
        with torch.no_grad():
            ddf = register(network, mi, fi)
        fi_adv, ddf_adv, info = attack_fixed_image(network, mi, fi, ml, fl, eps=eps, steps=steps, norm=norm, seed=seed + i)
        clean = case_metrics(ddf, warp(ml, ddf), fl, item["affine"], moving_label=ml)
        adv = case_metrics(ddf_adv, warp(ml, ddf_adv), fl, item["affine"], moving_label=ml)
        row = {"case_id": item.get("case_id", str(i)), **clean}
        row.update({f"{k}_adv": v for k, v in adv.items()})
        row["perturbation_linf"] = float((fi_adv - fi).abs().max())
        row["attack_loss_clean"], row["attack_loss_adv"] = float(info["loss_clean"][0]), float(info["loss"][0])
        rows.append(row)
    return rows


def summarise_attack_rows(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean gland Dice and pooled landmark TRE median (NaN landmarks skipped), clean and under attack.

    Returns:
        ``dice_gland``, ``dice_gland_adv``, ``tre_median_mm``, ``tre_median_mm_adv``.

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("rows: nothing to summarise (no attacked cases).")
    out = {}
    for suffix in ("", "_adv"):
        out[f"dice_gland{suffix}"] = float(np.mean([r[f"dice_gland{suffix}"] for r in rows]))
    for suffix in ("", "_adv"):
        tre = np.array([v for r in rows for v in r[f"tre_landmarks_mm{suffix}"]], dtype=float)
        out[f"tre_median_mm{suffix}"] = float(np.nanmedian(tre)) if np.isfinite(tre).any() else float("nan")
    return {k: out[k] for k in ("dice_gland", "dice_gland_adv", "tre_median_mm", "tre_median_mm_adv")}
