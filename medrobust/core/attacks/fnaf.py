"""FNAF (fake/false-negative adversarial features; Caliva, Cheng, Shah & Pedoia, MIDL 2021) and
PGD on the measurements of a reconstruction model.

**FNAF** asks whether a reconstruction network keeps a small feature that *was* in the object.
A task loss plus a search:

- feature: a random-walk blob of ``size`` face-connected pixels (:func:`random_walk_blob`,
  seeded), each pixel's intensity uniform in the image's range; the feature is *added* to the
  fully sampled image ``x`` and the result goes through the acquisition (``forward_op``: image ->
  measured k-space -> model input, e.g. FFT -> the same undersampling mask -> IFFT -> magnitude);
- loss: reconstruction error only inside the feature plus a thin halo (pixels within ``halo``
  of it, Euclidean distance transform), against the perturbed ground truth ``x + feature``
  (:func:`fnaf_loss`: masked NMSE for the search, masked L1 for training);
- search: random restarts (each draws a new blob, position and intensities; per sample the worst
  is kept: evaluation keeps the worst of 11) and, optionally, finite-difference moves of the kept
  blob (shift it by ``move_step`` pixels along each axis, keep the shift that raises the loss);
- a feature is a **false negative** when its masked NMSE (:func:`fnaf_loss` with ``kind='nmse'``
  on feature + halo) is ``>= 0.001``.

The core stays independent of any MRI code: the acquisition is a callable argument. With a
random mask the caller decides whether each call redraws it (the authors' evaluation draws a new
mask per restart) or keeps the batch's mask (the default of medrobust.reconstruction's operators).

**k-space PGD** (:func:`kspace_pgd`): the one PGD loop (:func:`~medrobust.core.attacks.gradient.pgd`)
run on the measured k-space with an L2 budget relative to each sample's k-space norm
(``||e||_2 <= rel_eps ||k||_2``) and only on sampled locations: the instability test of Antun et
al. (PNAS 2020) in one call.

Shapes: images ``(B, C, *spatial)`` (C is 1 for magnitude images; a feature is added to every
channel); k-space ``(B, coils, *spatial, 2)``.

Example:
    >>> import torch
    >>> blur = torch.nn.AvgPool2d(5, stride=1, padding=2, count_include_pad=False)  # erases small features
    >>> x = torch.rand(2, 1, 32, 32)
    >>> res = fnaf(blur, x, forward_op=lambda img: img, size=10, restarts=3, generator=0)
    >>> res.success.tolist(), res.x_adv.shape
    ([True, True], torch.Size([2, 1, 32, 32]))
    >>> fnaf(torch.nn.Identity(), x, forward_op=lambda img: img, restarts=2).success.tolist()
    [False, False]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.transforms.utils import distance_transform_edt

from medrobust.core.attacks.base import (
    AttackResult,
    GeneratorLike,
    atleast_kd,
    flat_norm,
    model_output,
    per_sample_generators,
)
from medrobust.core.attacks.gradient import pgd
from medrobust.core.validation import check_batch

__all__ = [
    "FN_THRESHOLD",
    "random_walk_blob",
    "feature_halo",
    "fnaf_loss",
    "draw_features",
    "fnaf",
    "false_negatives",
    "kspace_pgd",
]

#: FNAF's false-negative threshold on the masked NMSE.
FN_THRESHOLD = 1e-3


def random_walk_blob(
    spatial_shape: Sequence[int],
    size: int,
    *,
    generator: torch.Generator | None = None,
    start: Sequence[int] | None = None,
    margin: float = 0.15,
) -> torch.Tensor:
    """A random-walk blob: ``size`` distinct, face-connected pixels.

    A walker starts at ``start`` (default: uniform inside the image minus a border of ``margin``
    times each side) and steps +-1 along a random axis, staying inside the image, until it has
    visited ``size`` distinct pixels. Every new pixel neighbours a visited one, so the set is
    connected (4-connectivity in 2-D, 6 in 3-D).

    Args:
        spatial_shape: ``(H, W)`` or ``(H, W, D)``.
        size: number of pixels, ``1 <= size <= prod(spatial_shape)``.
        generator: the randomness (CPU ``torch.Generator``); ``None`` uses seed 0.
        start: starting pixel; default random (see ``margin``).
        margin: fraction of each side kept free of random starts (FNAF used 50 of 320 pixels).

    Returns:
        bool tensor of ``spatial_shape``.

    Raises:
        ValueError: ``size`` out of range, ``start`` outside the image, ``margin`` not in [0, 0.5).

    Example:
        >>> blob = random_walk_blob((16, 16), 10, generator=torch.Generator().manual_seed(1))
        >>> int(blob.sum())
        10
    """
    shape = tuple(int(s) for s in spatial_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"spatial_shape must be positive sizes, got {spatial_shape!r}.")
    total = math.prod(shape)
    if not isinstance(size, int) or not 1 <= size <= total:
        raise ValueError(f"size must be an int in [1, {total}] (pixels of the image), got {size!r}.")
    if not 0.0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin!r}.")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    nd = len(shape)
    if start is None:
        pos = []
        for s in shape:
            lo = int(math.floor(margin * s))
            hi = max(lo + 1, s - lo)
            pos.append(int(torch.randint(lo, hi, (1,), generator=gen)))
    else:
        pos = [int(v) for v in start]
        if len(pos) != nd or any(not 0 <= p < s for p, s in zip(pos, shape)):
            raise ValueError(f"start must be a pixel inside {shape}, got {tuple(start)!r}.")
    visited = {tuple(pos)}
    out = torch.zeros(shape, dtype=torch.bool)
    out[tuple(pos)] = True
    while len(visited) < size:
        # random walk: one axis and one direction per step, drawn in chunks (python loop: no
        # library draws connected random-walk shapes, and N is 10-100 pixels)
        axes = torch.randint(0, nd, (4 * size,), generator=gen).tolist()
        signs = torch.randint(0, 2, (4 * size,), generator=gen).tolist()
        for a, sgn in zip(axes, signs):
            p = pos[a] + (1 if sgn else -1)
            if 0 <= p < shape[a]:
                pos[a] = p
                key = tuple(pos)
                if key not in visited:
                    visited.add(key)
                    out[key] = True
                    if len(visited) == size:
                        break
    return out


def feature_halo(mask: torch.Tensor, width: float = 1.0) -> torch.Tensor:
    """Pixels within Euclidean distance ``width`` of a feature, excluding the feature itself.

    Args:
        mask: bool feature masks ``(B, 1, *spatial)``.
        width: halo radius in pixels; 0 gives an empty halo.

    Returns:
        bool tensor like ``mask``.

    Example:
        >>> m = torch.zeros(1, 1, 5, 5, dtype=torch.bool); m[0, 0, 2, 2] = True
        >>> int(feature_halo(m, 1.0).sum()), int(feature_halo(m, 1.5).sum())
        (4, 8)
    """
    if width < 0:
        raise ValueError(f"halo width must be >= 0, got {width!r}.")
    if mask.ndim < 3 or mask.shape[1] != 1:
        raise ValueError(f"mask must be (B, 1, *spatial), got shape {tuple(mask.shape)}.")
    m = mask.bool()
    if width == 0 or not bool(m.any()):
        return torch.zeros_like(m)
    flat = m[:, 0]
    # distance of every pixel to the nearest feature pixel (MONAI's EDT: channel-first, one
    # "channel" per sample; an all-background sample would get inf, handled by the any() above)
    dist = torch.as_tensor(distance_transform_edt((~flat).to(torch.uint8).cpu()), dtype=torch.float32)
    halo = (dist > 0) & (dist <= width + 1e-6)
    return halo[:, None].to(m.device)


def fnaf_loss(recon: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, *, kind: str = "nmse") -> torch.Tensor:
    """Per-sample reconstruction error restricted to a feature region ``(B,)``.

    Args:
        recon: reconstructions ``(B, C, *spatial)``.
        target: perturbed ground truth ``x + feature``, same shape.
        weight: region weights ``(B, 1|C, *spatial)`` (1 on the feature, halo weight on the halo, 0 elsewhere).
        kind: ``"nmse"`` (``||w (t - r)||^2 / ||w t||^2``, the false-negative measure) or ``"l1"``
            (``sum w |t - r| / sum w``, the authors' training loss).

    Example:
        >>> t = torch.ones(2, 1, 4, 4); w = torch.zeros(2, 1, 4, 4); w[..., :2, :2] = 1
        >>> [round(v, 6) for v in fnaf_loss(t * 0.9, t, w).tolist()]
        [0.01, 0.01]
    """
    b = recon.shape[0]
    w = weight.to(recon)
    if kind == "nmse":
        num = ((w * (target - recon)) ** 2).reshape(b, -1).sum(1)
        den = ((w * target) ** 2).reshape(b, -1).sum(1).clamp_min(torch.finfo(recon.dtype).tiny)
        return num / den
    if kind == "l1":
        wb = torch.broadcast_to(w, recon.shape)
        return (wb * (target - recon).abs()).reshape(b, -1).sum(1) / wb.reshape(b, -1).sum(1).clamp_min(1e-12)
    raise ValueError(f"kind must be 'nmse' or 'l1', got {kind!r}.")


def _image_range(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = x.reshape(x.shape[0], -1)
    return f.amin(1), f.amax(1)


def draw_features(
    x: torch.Tensor,
    gens: Sequence[torch.Generator],
    *,
    size: int | tuple[int, int] = 10,
    intensity: tuple[float, float] | None = None,
    margin: float = 0.15,
    region: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random-walk feature per sample: ``(feature image (B, C, *spatial), bool mask (B, 1, *spatial))``.

    Args:
        x: fully sampled images ``(B, C, *spatial)``.
        gens: one generator per sample.
        size: pixels per blob, or ``(low, high)`` to draw it uniformly in ``[low, high]`` (the authors
            train with 10-100 and evaluate with 10).
        intensity: ``(low, high)`` of the feature pixels; default each image's own ``[min, max]``.
        margin: border fraction kept free of blob starts.
        region: optional bool ``(B|1, 1, *spatial)``: blobs start inside it (e.g. the foreground).
    """
    b, c, *spatial = x.shape
    lo_img, hi_img = _image_range(x)
    feats = torch.zeros_like(x)
    masks = torch.zeros((b, 1, *spatial), dtype=torch.bool, device=x.device)
    for i, g in enumerate(gens):
        n = size if isinstance(size, int) else int(torch.randint(int(size[0]), int(size[1]) + 1, (1,), generator=g))
        start = None
        if region is not None:
            r = region[i if region.shape[0] > 1 else 0, 0].bool()
            idx = torch.nonzero(r.cpu())
            if len(idx):
                start = idx[int(torch.randint(0, len(idx), (1,), generator=g))].tolist()
        blob = random_walk_blob(spatial, n, generator=g, start=start, margin=margin).to(x.device)
        lo, hi = (float(lo_img[i]), float(hi_img[i])) if intensity is None else (float(intensity[0]), float(intensity[1]))
        vals = torch.rand(int(blob.sum()), generator=g).to(x) * (hi - lo) + lo
        for ch in range(c):
            feats[i, ch][blob] = vals
        masks[i, 0] = blob
    return feats, masks


def false_negatives(recon: torch.Tensor, target: torch.Tensor, region: torch.Tensor, *,
                    threshold: float = FN_THRESHOLD) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample masked NMSE on ``region`` (feature + halo), computed in float64 with
    :func:`fnaf_loss` (the same measure as :func:`medrobust.core.metrics.reconstruction.masked_nmse`,
    which is defined through it), and whether it is ``>= threshold``."""
    with torch.no_grad():
        vals = fnaf_loss(recon.detach().double(), target.detach().double(), region.detach().double(), kind="nmse")
    return vals, vals >= threshold


def _shift(t: torch.Tensor, axis: int, step: int) -> torch.Tensor | None:
    """``t`` (sample-level, ``(C, *spatial)``) shifted by ``step`` along spatial ``axis``; None if
    a nonzero pixel would leave the image (no wrap-around)."""
    dim = 1 + axis
    n = t.shape[dim]
    edge = t.narrow(dim, n - step, step) if step > 0 else t.narrow(dim, 0, -step)
    if bool(edge.ne(0).any()):
        return None
    return torch.roll(t, shifts=step, dims=dim)


def fnaf(
    model: Callable[[Any], Any],
    x: torch.Tensor,
    *,
    forward_op: Callable[[torch.Tensor], Any],
    size: int | tuple[int, int] = 10,
    restarts: int = 11,
    moves: int = 0,
    move_step: int = 2,
    halo: float = 1.0,
    halo_weight: float = 1.0,
    intensity: tuple[float, float] | None = None,
    margin: float = 0.15,
    region: torch.Tensor | None = None,
    threshold: float = FN_THRESHOLD,
    generator: GeneratorLike = None,
) -> AttackResult:
    """FNAF search: the worst small feature (highest masked NMSE) over random restarts and moves.

    Args:
        model: reconstruction model ``model_input -> (B, C, *spatial)`` (any callable; put a
            ``torch.nn.Module`` in ``eval()`` yourself; its mode and parameters are untouched).
        x: fully sampled ground-truth images ``(B, C, *spatial)``.
        forward_op: the acquisition ``image (B, C, *spatial) -> model input`` (image -> measured
            k-space -> zero-filled image / masked k-space ...), the same one that made the
            model's clean input.
        size: blob pixels (``int``) or a ``(low, high)`` range drawn per blob.
        restarts: independent blobs per sample; per sample the worst is kept (evaluation: 11).
        moves: finite-difference rounds: each tries the kept blob shifted by ``+-move_step``
            pixels along every axis and keeps the shift that raises the loss (0: restarts only).
        move_step: shift length in pixels.
        halo: halo radius in pixels around the feature (the loss and the FN criterion see
            feature + halo).
        halo_weight: weight of halo pixels in the loss and criterion (1 = the authors' binary mask).
        intensity: ``(low, high)`` of feature pixels; default each image's ``[min, max]``.
        margin: border fraction kept free of blob starts.
        region: optional bool ``(B|1, 1, *spatial)`` where blobs may start (e.g. the object).
        threshold: false negative when the masked NMSE is ``>= threshold`` (0.001).
        generator: a ``torch.Generator``, per-sample generators, an int seed, or ``None`` (seed 0).

    Returns:
        :class:`~medrobust.core.attacks.base.AttackResult`: ``x_adv`` = ``x + feature`` (the
        perturbed ground truth), ``success`` = false negative ``(B,)``; ``info``: ``loss`` (masked
        NMSE, ``(B,)``), ``feature`` (``(B, C, *spatial)``), ``mask`` (bool feature ``(B, 1, *spatial)``),
        ``weight`` (loss weights feature + halo), ``recon`` (reconstruction of ``x_adv``),
        ``restart`` (which draw was kept), ``moved`` (accepted moves), ``forward_calls``.

    Raises:
        ValueError: bad shapes or settings.
    """
    check_batch(x)
    if not callable(forward_op):
        raise TypeError(f"forward_op must be callable (image -> model input), got {type(forward_op).__name__}.")
    if not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts must be a positive int, got {restarts!r}.")
    if not isinstance(moves, int) or moves < 0:
        raise ValueError(f"moves must be a non-negative int, got {moves!r}.")
    if not isinstance(move_step, int) or move_step < 1:
        raise ValueError(f"move_step must be a positive int, got {move_step!r}.")
    if halo_weight < 0:
        raise ValueError(f"halo_weight must be >= 0, got {halo_weight!r}.")
    if not isinstance(size, int) and (len(size) != 2 or size[0] < 1 or size[1] < size[0]):
        raise ValueError(f"size must be an int or (low, high) with 1 <= low <= high, got {size!r}.")
    if region is not None and (region.ndim != x.ndim or region.shape[1] != 1 or region.shape[2:] != x.shape[2:]):
        raise ValueError(f"region must be (B|1, 1, *spatial) like x {tuple(x.shape)}, got {tuple(region.shape)}.")
    x0 = x.detach()
    b, nd = x0.shape[0], x0.ndim - 2
    gens = per_sample_generators(generator, b)

    def weights(mask: torch.Tensor) -> torch.Tensor:
        return mask.to(x0.dtype) + halo_weight * feature_halo(mask, halo).to(x0.dtype)

    def evaluate(feats: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = x0 + feats
        with torch.no_grad():
            rec = model_output(model, forward_op(target))
        if rec.shape != x0.shape:
            raise ValueError(f"model(forward_op(x)) must return the image shape {tuple(x0.shape)}, got {tuple(rec.shape)}.")
        return fnaf_loss(rec, target, w), rec

    calls = 0
    best_loss = torch.full((b,), -math.inf, dtype=x0.dtype, device=x0.device)
    best_feat = torch.zeros_like(x0)
    best_mask = torch.zeros((b, 1, *x0.shape[2:]), dtype=torch.bool, device=x0.device)
    best_rec = torch.zeros_like(x0)
    best_restart = torch.zeros(b, dtype=torch.long, device=x0.device)
    for r in range(restarts):
        feats, masks = draw_features(x0, gens, size=size, intensity=intensity, margin=margin, region=region)
        loss, rec = evaluate(feats, weights(masks))
        calls += 1
        better = loss > best_loss
        k = atleast_kd(better, x0.ndim)
        best_loss = torch.where(better, loss, best_loss)
        best_feat, best_mask = torch.where(k, feats, best_feat), torch.where(k, masks, best_mask)
        best_rec = torch.where(k, rec, best_rec)
        best_restart = torch.where(better, torch.full_like(best_restart, r), best_restart)
    moved = torch.zeros(b, dtype=torch.long, device=x0.device)
    for _ in range(moves):
        round_loss, round_feat, round_mask, round_rec = best_loss.clone(), best_feat, best_mask, best_rec
        for axis in range(nd):
            for step in (move_step, -move_step):
                shifted = [(_shift(best_feat[i], axis, step), _shift(best_mask[i], axis, step)) for i in range(b)]
                ok = torch.tensor([s[0] is not None and s[1] is not None for s in shifted], device=x0.device)
                if not bool(ok.any()):
                    continue
                feats = torch.stack([s[0] if s[0] is not None else best_feat[i] for i, s in enumerate(shifted)])
                masks = torch.stack([s[1] if s[1] is not None else best_mask[i] for i, s in enumerate(shifted)])
                loss, rec = evaluate(feats, weights(masks))
                calls += 1
                better = ok & (loss > round_loss)
                k = atleast_kd(better, x0.ndim)
                round_loss = torch.where(better, loss, round_loss)
                round_feat, round_mask = torch.where(k, feats, round_feat), torch.where(k, masks, round_mask)
                round_rec = torch.where(k, rec, round_rec)
        improved = round_loss > best_loss
        moved += improved.long()
        best_loss, best_feat, best_mask, best_rec = round_loss, round_feat, round_mask, round_rec
        if not bool(improved.any()):
            break
    w = weights(best_mask)
    target = x0 + best_feat
    vals, fn = false_negatives(best_rec, target, w, threshold=threshold)
    info = {
        "loss": vals.to(x0.dtype),
        "feature": best_feat,
        "mask": best_mask,
        "weight": w,
        "recon": best_rec,
        "restart": best_restart,
        "moved": moved,
        "forward_calls": calls,
        "threshold": threshold,
    }
    return AttackResult(target, fn.to(x0.device), info)


def kspace_pgd(
    model: Callable[[torch.Tensor], Any],
    kspace: torch.Tensor,
    y: Any = None,
    *,
    rel_eps: float = 0.02,
    steps: int = 10,
    alpha: float | None = None,
    restarts: int = 1,
    sampling_mask: torch.Tensor | None = None,
    loss_fn: Any = "nmse",
    generator: GeneratorLike = None,
) -> AttackResult:
    """PGD on the measured k-space with an L2 budget relative to its norm (Antun et al. 2020).

    Maximises the reconstruction error (default NMSE against ``y``, or against the clean
    reconstruction when ``y`` is ``None``) over perturbations ``e`` with
    ``||e||_2 <= rel_eps ||k||_2`` per sample, nonzero only where ``sampling_mask`` is 1 (an
    attacker can only change what was measured). Runs
    :func:`~medrobust.core.attacks.gradient.pgd` with ``norm="2"``.

    Args:
        model: ``masked k-space (B, coils, *spatial, 2) -> reconstruction`` (wrap the
            zero-filling / the mask argument in, e.g. ``lambda k: unet(zero_filled(k, mask))`` or
            ``lambda k: varnet(k, mask)``).
        kspace: measured (masked) k-space ``(B, coils, *spatial, 2)``.
        y: ground truth for the loss; ``None`` uses the clean reconstruction (the instability test).
        rel_eps: budget as a fraction of each sample's k-space L2 norm.
        steps, alpha, restarts, generator: as in :func:`~medrobust.core.attacks.gradient.pgd`
            (``alpha`` is relative too: a fraction of the k-space norm; default ``2.5 rel_eps / steps``).
        sampling_mask: ``(1|B, 1|coils, *spatial, 1|2)`` 0/1, broadcastable to ``kspace``.
        loss_fn: pgd's objective (default ``"nmse"``).

    Returns:
        :class:`~medrobust.core.attacks.base.AttackResult` with the perturbed k-space;
        ``info["relative_norm"]`` = ``||e|| / ||k||`` per sample (``<= rel_eps``) plus pgd's info.

    Example:
        >>> import torch
        >>> k = torch.randn(2, 1, 8, 8, 2)
        >>> net = lambda k: k.pow(2).sum(-1).sqrt()  # magnitude per coil, a stand-in model
        >>> res = kspace_pgd(net, k, rel_eps=0.05, steps=3)
        >>> bool((res.info["relative_norm"] <= 0.05 + 1e-6).all())
        True
    """
    check_batch(kspace, name="kspace")
    if not isinstance(rel_eps, (int, float)) or rel_eps < 0:
        raise ValueError(f"rel_eps must be a non-negative float, got {rel_eps!r}.")
    k0 = kspace.detach()
    knorm = flat_norm(k0, 2)
    if bool((knorm == 0).any()):
        raise ValueError("kspace: a sample is all zeros, so a budget relative to its norm is zero.")
    eps = rel_eps * knorm
    a = None if alpha is None else alpha * knorm
    # finite per-sample bounds that can never bind: |e_j| <= ||e||_2 <= eps
    big = (k0.reshape(k0.shape[0], -1).abs().amax(1) + eps + 1.0)[:, None]
    res = pgd(model, k0, y, loss_fn=loss_fn, eps=eps, alpha=a, steps=steps, norm="2", restarts=restarts,
              bounds=(-big, big), mask=sampling_mask, generator=generator)
    res.info["relative_norm"] = flat_norm(res.x_adv - k0, 2) / knorm
    res.info["rel_eps"] = float(rel_eps)
    return res
