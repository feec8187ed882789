"""Adversarial robustness of a registration network: a bounded attack on the fixed image.

The attacker perturbs the fixed (TRUS) image within an L-inf (or L2) ball and we measure what
that does to Dice and TRE. The moving image is held fixed: the threat is on the intra-operative
side (ultrasound acquisition). The objective is the attacks library's registration objective
(``1 - soft Dice`` of the moving labels warped by the predicted DDF against the fixed labels,
:func:`~medrobust.core.attacks.registration_objective`). Attacks (``attack=``):

- ``"pgd"``: the library's :func:`~medrobust.core.attacks.pgd` (random start, ``restarts``: the
  worst restart per pair is kept);
- ``"square"``: the library's score-based :func:`~medrobust.core.attacks.square` (forward passes
  only; run for all ``queries``, the gradient-masking check of a defense);
- ``"noise"``: uniform sign noise of L-inf size ``eps`` (``restarts`` draws, the worst kept): if
  it beats PGD, PGD is not finding the worst case;
- ``"transfer"``: PGD examples built on ``source`` (e.g. the undefended network) and scored on
  ``network``: if they beat PGD on ``network`` itself, its gradients are masked;
- ``"swap"`` (:func:`attack_rows` only, not a bounded attack): each pair's fixed image replaced by
  the next pair's. It measures how much the network uses the fixed image at all: a network whose
  TRE barely changes when it sees another patient's TRUS is "robust" because it ignores the
  image, not because it registers stably.

Example:
    >>> import torch
    >>> from monai.networks.nets import LocalNet
    >>> g = torch.Generator().manual_seed(0)
    >>> net = LocalNet(spatial_dims=3, in_channels=2, out_channels=3, num_channel_initial=2, extract_levels=(0, 1))
    >>> lab = torch.zeros(1, 2, 8, 8, 8); lab[:, :, 2:6, 2:6, 2:6] = 1
    >>> item = {"case_id": "a", "moving_image": torch.rand(1, 8, 8, 8, generator=g), "fixed_image": torch.rand(1, 8, 8, 8, generator=g),
    ...         "moving_label": lab[0], "fixed_label": lab[0].roll(1, 1), "affine": torch.eye(4)}
    >>> rows = attack_rows(net, [item], eps=0.02, steps=2, attack="noise")
    >>> rows[0]["perturbation_linf"] <= 0.02 + 1e-6, rows[0]["attack"]
    (True, 'noise')
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

from medrobust.core.attacks import pgd, registration_objective, square
from medrobust.core.attacks.base import per_sample_generators
from medrobust.core.utils import eval_mode
from medrobust.registration.engine import register
from medrobust.registration.evaluation import case_metrics

__all__ = ["ATTACKS", "ROW_ATTACKS", "attack_fixed_image", "attack_rows", "adversarial_rows", "summarise_attack_rows"]

ATTACKS = ("pgd", "square", "noise", "transfer")
ROW_ATTACKS = (*ATTACKS, "swap")


class _FixedOnly(torch.nn.Module):
    """The registration network as a function of the fixed image alone (moving image held constant)."""

    def __init__(self, network: torch.nn.Module, moving_image: torch.Tensor) -> None:
        super().__init__()
        self.network = network
        self.moving_image = moving_image

    def forward(self, fixed_image: torch.Tensor) -> torch.Tensor:
        return register(self.network, self.moving_image, fixed_image)


def _never(out: Any, y: Any, **_: Any) -> torch.Tensor:
    """Success criterion that never fires: score-based searches run for all their queries."""
    return torch.zeros(out.shape[0], dtype=torch.bool, device=out.device)


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
    attack: str = "pgd",
    restarts: int = 1,
    alpha: float | None = None,
    queries: int = 300,
    source: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """A bounded attack on the fixed image to worsen label alignment.

    Args:
        network: ``cat([moving, fixed]) -> DDF``, in eval mode (not changed here).
        moving_image: ``(B, M, *spatial)``, the network's moving channels (held constant).
        fixed_image: ``(B, 1, *spatial)`` in [0, 1].
        moving_label, fixed_label: ``(B, C, *spatial)``.
        eps: perturbation radius in image units ([0, 1] intensities).
        steps: PGD steps (per restart).
        norm: ``"inf"`` or ``"2"`` (PGD and transfer; square and noise are L-inf).
        seed: the attack's random start / sampling seed.
        attack: one of :data:`ATTACKS` (see the module docstring).
        restarts: PGD restarts, or noise draws (the worst kept per sample).
        alpha: PGD step size; default ``2.5 * eps / steps``.
        queries: square-attack iterations.
        source: the network the ``"transfer"`` examples are built on (same inputs as ``network``).

    Returns:
        ``(adversarial fixed image, its DDF under network, attack info)``; ``info["loss"]`` and
        ``info["loss_clean"]`` are ``network``'s objective ``(B,)`` at the returned and clean image.

    Raises:
        ValueError: unknown ``attack``, ``"transfer"`` without ``source``, ``restarts`` < 1.
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}.")
    if attack == "transfer" and source is None:
        raise ValueError("attack='transfer' needs source= (the network the examples are built on).")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts must be an int >= 1, got {restarts!r}.")
    model = _FixedOnly(network, moving_image)
    y = torch.cat([moving_label, fixed_label], dim=1)
    obj = registration_objective("dice")
    if attack in ("pgd", "transfer"):
        target = model if attack == "pgd" else _FixedOnly(source, moving_image)
        x_adv = pgd(target, fixed_image, y, loss_fn=obj, eps=eps, alpha=alpha, steps=steps, norm=norm, restarts=restarts,
                    bounds=(0.0, 1.0), generator=seed).x_adv
    elif attack == "square":
        x_adv = square(model, fixed_image, y, loss_fn=obj, eps=eps, queries=queries, bounds=(0.0, 1.0), generator=seed,
                       success_fn=_never).x_adv
    else:
        x_adv = _worst_noise(model, fixed_image, y, obj, eps=eps, draws=restarts, seed=seed)
    with eval_mode(network), torch.no_grad():  # every submodule's own train/eval flag is restored afterwards
        ddf_clean, ddf_adv = model(fixed_image), model(x_adv)
        info = {"loss_clean": obj.loss(ddf_clean, y).reshape(-1), "loss": obj.loss(ddf_adv, y).reshape(-1), "attack": attack}
    return x_adv, ddf_adv, info


def _worst_noise(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, obj: Any, *, eps: float, draws: int,
                 seed: int) -> torch.Tensor:
    """Uniform sign noise ``+-eps`` (clipped to [0, 1]); of ``draws`` draws the one with the highest objective per sample."""
    gens = per_sample_generators(seed, x.shape[0])
    best, best_loss = x, torch.full((x.shape[0],), -float("inf"))
    with eval_mode(model), torch.no_grad():
        for _ in range(draws):
            sign = torch.stack([torch.randint(0, 2, x.shape[1:], generator=g) for g in gens]).to(x) * 2 - 1
            cand = (x + eps * sign).clamp(0.0, 1.0)
            loss = obj.loss(model(cand), y).reshape(-1).cpu()
            better = loss > best_loss
            best = torch.where(better.to(x.device).reshape(-1, *([1] * (x.ndim - 1))), cand, best)
            best_loss = torch.where(better, loss, best_loss)
    return best


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
    attack: str = "pgd",
    restarts: int = 1,
    alpha: float | None = None,
    queries: int = 300,
    source: torch.nn.Module | None = None,
) -> list[dict[str, Any]]:
    """Clean and attacked metrics per case (``<metric>`` and ``<metric>_adv``) for loaded pairs.

    ``items`` are dicts from :func:`medrobust.data.paired.load_pair` (unbatched, channel first);
    ``moving_keys`` are concatenated as the network's moving input (and ``source``'s, for
    ``attack="transfer"``). ``attack`` is one of :data:`ROW_ATTACKS` (``"swap"``: case ``i`` gets
    case ``i + 1``'s fixed image, cyclically; ``eps`` is then ignored); ``restarts``, ``alpha``,
    ``queries``, ``source``: see :func:`attack_fixed_image`; case ``i`` uses seed ``seed + i``.

    Raises:
        ValueError: unknown ``attack``; ``"swap"`` with fewer than 2 items.
    """
    if attack not in ROW_ATTACKS:
        raise ValueError(f"attack must be one of {ROW_ATTACKS}, got {attack!r}.")
    if attack == "swap" and len(items) < 2:
        raise ValueError(f"attack='swap' needs at least 2 items (pairs to exchange fixed images), got {len(items)}.")
    warp = Warp(mode="bilinear", padding_mode="zeros")
    network.eval()
    if source is not None:
        source.eval()
    rows = []
    for i, item in enumerate(items):
        fi, ml, fl = (torch.as_tensor(item[k])[None].float().to(device) for k in ("fixed_image", "moving_label", "fixed_label"))
        mi = torch.cat([torch.as_tensor(item[k])[None].float().to(device) for k in moving_keys], dim=1)
        with torch.no_grad():
            ddf = register(network, mi, fi)
        if attack == "swap":
            fi_adv = torch.as_tensor(items[(i + 1) % len(items)]["fixed_image"])[None].float().to(device)
            obj, y = registration_objective("dice"), torch.cat([ml, fl], 1)
            with eval_mode(network), torch.no_grad():
                ddf_adv = register(network, mi, fi_adv)
                info = {"loss_clean": obj.loss(ddf, y).reshape(-1), "loss": obj.loss(ddf_adv, y).reshape(-1)}
        else:
            fi_adv, ddf_adv, info = attack_fixed_image(network, mi, fi, ml, fl, eps=eps, steps=steps, norm=norm, seed=seed + i,
                                                       attack=attack, restarts=restarts, alpha=alpha, queries=queries,
                                                       source=source)
        clean = case_metrics(ddf, warp(ml, ddf), fl, item["affine"], moving_label=ml)
        adv = case_metrics(ddf_adv, warp(ml, ddf_adv), fl, item["affine"], moving_label=ml)
        row = {"case_id": item.get("case_id", str(i)), **clean}
        row.update({f"{k}_adv": v for k, v in adv.items()})
        row["perturbation_linf"] = float((fi_adv - fi).abs().max())
        row["attack_loss_clean"], row["attack_loss_adv"] = float(info["loss_clean"][0]), float(info["loss"][0])
        row["attack"] = attack
        rows.append(row)
    return rows


def adversarial_rows(rows: Sequence[dict[str, Any]], *, adversarial: bool = True) -> list[dict[str, Any]]:
    """Per-pair metric rows of the attacked (or, ``adversarial=False``, clean) result, with the plain metric names.

    ``rows`` from :func:`attack_rows`; the result feeds any per-pair summary (e.g.
    :func:`medrobust.registration.crossval.cv_summary`: TRE median/mean with bootstrap CIs).

    Example:
        >>> adversarial_rows([{"case_id": "a", "dice_gland": 0.8, "dice_gland_adv": 0.5, "attack": "pgd"}])
        [{'case_id': 'a', 'dice_gland': 0.5}]
    """
    out = []
    for r in rows:
        keys = [k for k in r if k.endswith("_adv")]
        plain = {k[:-4] for k in keys}
        if adversarial:
            out.append({"case_id": r.get("case_id"), **{k[:-4]: r[k] for k in keys if not k.startswith("attack_")}})
        else:
            out.append({"case_id": r.get("case_id"), **{k: r[k] for k in r if k in plain and not k.startswith("attack_")}})
    return out


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
