"""MONAI-style transforms wrapping the perturbation registry, for use in MONAI pipelines/bundles.

``Perturb`` (array: one channel-first image ``(C, H, W[, D])``) and ``Perturbd`` (dictionary:
wraps ``Perturb``, never copies it). The random stream of each image comes from
:func:`~medrobust.perturbations.registry.sample_seed`, so it is the same as in
``medrobust sensitivity`` when ``Perturbd`` derives the seed from the case id
(``seed_key="case_id"``). Families that need a model (attacks) are not offered here.

Example:
    >>> import torch
    >>> t = Perturb("gaussian_noise", 0.05, seed=3)
    >>> t(torch.zeros(1, 8, 8)).shape
    torch.Size([1, 8, 8])
    >>> td = Perturbd(keys="image", family="fourier_lowpass", severity=1.0, seed_key="case_id")
    >>> td({"image": torch.rand(1, 16, 16), "case_id": "a"})["image"].shape
    torch.Size([1, 16, 16])
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from medrobust.perturbations.registry import PerturbationContext, get_family, sample_seed

__all__ = ["Perturb", "Perturbd", "PerturbD", "PerturbDict"]


class Perturb(Transform):
    """Apply a registered perturbation family to one image.

    Args:
        family: registry name, e.g. ``"fourier_lowpass"``.
        severity: the family's severity (0: identity).
        seed: seed of the image's generator (the per-sample seed of the sweep when built
            with ``sample_seed(case_id, family, severity, base_seed=...)``).
        bounds: intensity bounds of the input (outputs are clipped to them).

    Raises:
        ValueError: unknown family or a family that needs a model.
    """

    def __init__(self, family: str, severity: float, seed: int = 0, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        self.family = get_family(family)
        if self.family.needs_model:
            raise ValueError(f"family {family!r} needs a model (an attack); use medrobust.sensitivity instead.")
        self.severity = float(severity)
        self.seed = int(seed)
        self.bounds = (float(bounds[0]), float(bounds[1]))

    def __call__(self, img: torch.Tensor | np.ndarray, seed: int | None = None) -> torch.Tensor | np.ndarray:
        """``img: (C, H, W[, D])`` -> the perturbed image, same type, shape and dtype."""
        is_np = isinstance(img, np.ndarray)
        x = torch.as_tensor(img)
        dtype = x.dtype
        if not x.is_floating_point():
            x = x.float()
        ctx = PerturbationContext.from_seeds([self.seed if seed is None else int(seed)], device=x.device, bounds=self.bounds)
        out = self.family.apply(x[None], self.severity, ctx)[0]
        if hasattr(out, "as_tensor"):  # MetaTensor in, plain values out; MONAI re-wraps if it tracks meta
            out = out.as_tensor()
        return out.cpu().numpy().astype(img.dtype if is_np else np.float32) if is_np else out.to(dtype)


class Perturbd(MapTransform):
    """Dictionary wrapper of :class:`Perturb`.

    Args:
        keys: keys of the images to perturb.
        family, severity, bounds: as in :class:`Perturb`.
        seed: base seed.
        seed_key: when given, each image's seed is ``sample_seed(d[seed_key], family, severity,
            base_seed=seed)`` (the sweep's per-sample seed); otherwise ``seed``.
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        family: str,
        severity: float,
        seed: int = 0,
        seed_key: str | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.perturb = Perturb(family, severity, seed, bounds)
        self.seed_key = seed_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        p = self.perturb
        seed = p.seed
        if self.seed_key is not None:
            if self.seed_key not in d:
                raise KeyError(f"Perturbd: seed_key {self.seed_key!r} not in the data (keys: {list(d)}).")
            seed = sample_seed(d[self.seed_key], p.family.name, p.severity, base_seed=p.seed)
        for key in self.key_iterator(d):
            d[key] = p(d[key], seed=seed)
        return d


PerturbD = PerturbDict = Perturbd
