"""How a model wants its images: intensity mapping into ``[0, 1]`` and input standardisation.

A sensitivity sweep perturbs images in a ``[0, 1]`` space at native resolution, then resizes
them to the model input. What maps the display-ready image into ``[0, 1]`` and what the network
expects on top of that are properties of the *model*, declared in its bundle's
``metadata.json`` (``medrobust.preprocessing``) or given on the command line, never fixed:

- ``intensity``: ``"minmax"`` (per image, the default, what the shipped bundles were trained
  with), ``"percentile"`` (per image, ``percentiles`` clipped and stretched: robust to
  burned-in markers and hot pixels), ``"window"`` (a fixed ``window = (centre, width)`` of the
  display intensities, e.g. a CT window in HU, the same for every image), or ``"fixed"``
  (``value_range = (low, high)`` mapped to ``[0, 1]``, e.g. ``(0, 65535)`` for raw 16-bit);
- ``mean`` / ``std``: standardisation ``(x - mean) / std`` applied to the resized model input
  (ImageNet-style networks), after the perturbation.

Example:
    >>> import numpy as np
    >>> p = InputPreprocessing(intensity="window", window=(50.0, 100.0))
    >>> p.to_unit(np.array([[[-100.0, 50.0, 200.0]]])).tolist()
    [[[0.0, 0.5, 1.0]]]
    >>> InputPreprocessing.from_sources({"intensity": "percentile"}, {"percentiles": (1, 99)}).describe()
    'intensity percentile 1-99 per image -> [0, 1]'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

__all__ = ["INTENSITY_MODES", "InputPreprocessing"]

INTENSITY_MODES = ("minmax", "percentile", "window", "fixed")


@dataclass(frozen=True)
class InputPreprocessing:
    """Image -> ``[0, 1]`` perturbation space -> model input (see the module docstring).

    Raises:
        ValueError: unknown mode, missing or bad window / range / percentiles, std <= 0.
    """

    intensity: str = "minmax"
    window: tuple[float, float] | None = None
    value_range: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    mean: float | None = None
    std: float | None = None

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY_MODES:
            raise ValueError(f"preprocessing intensity should be one of {INTENSITY_MODES}, got {self.intensity!r}.")
        for name in ("window", "value_range", "percentiles"):
            v = getattr(self, name)
            if v is not None:
                if len(v) != 2:
                    raise ValueError(f"preprocessing {name} should be two numbers, got {v!r}.")
                object.__setattr__(self, name, (float(v[0]), float(v[1])))
        if self.intensity == "window" and (self.window is None or self.window[1] <= 0):
            raise ValueError(f"intensity 'window' needs window = (centre, width > 0), got {self.window!r}.")
        if self.intensity == "fixed" and (self.value_range is None or self.value_range[1] <= self.value_range[0]):
            raise ValueError(f"intensity 'fixed' needs value_range = (low, high > low), got {self.value_range!r}.")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles should satisfy 0 <= low < high <= 100, got {self.percentiles!r}.")
        if (self.mean is None) != (self.std is None) or (self.std is not None and float(self.std) <= 0):
            raise ValueError(f"give both mean and std (> 0) for input standardisation, got mean={self.mean}, std={self.std}.")

    @classmethod
    def from_sources(cls, *sources: Mapping[str, Any] | None) -> InputPreprocessing:
        """Merge mappings (bundle metadata first, then command-line overrides; ``None`` values skipped).

        Raises:
            ValueError: an unknown key.
        """
        known = {f.name for f in fields(cls)}
        merged: dict[str, Any] = {}
        for src in sources:
            if not src:
                continue
            unknown = sorted(set(src) - known)
            if unknown:
                raise ValueError(f"preprocessing: unknown keys {unknown}; expected some of {sorted(known)}.")
            merged.update({k: v for k, v in src.items() if v is not None})
        if "window" in merged and "intensity" not in merged:
            merged["intensity"] = "window"
        return replace(cls(), **merged) if merged else cls()

    def to_unit(self, array: np.ndarray) -> torch.Tensor:
        """Map one display-ready image ``(C, *spatial)`` to float32 ``[0, 1]`` (in place when
        ``array`` is already contiguous float32: full-field images leave no room for copies).

        Raises:
            ValueError: non-finite values, or (minmax / percentile) a constant image.
        """
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if not bool(torch.isfinite(x).all()):
            raise ValueError("image has non-finite intensities")
        if self.intensity == "window":
            c, w = self.window  # type: ignore[misc]
            lo, hi = c - w / 2.0, c + w / 2.0
        elif self.intensity == "fixed":
            lo, hi = self.value_range  # type: ignore[misc]
        elif self.intensity == "percentile":
            q = torch.quantile(x.flatten()[:: max(1, x.numel() // (1 << 22))].double(),
                               torch.tensor([self.percentiles[0] / 100, self.percentiles[1] / 100], dtype=torch.float64))
            lo, hi = float(q[0]), float(q[1])
        else:
            lo, hi = float(x.min()), float(x.max())
        if hi <= lo:
            raise ValueError(f"constant image (every pixel = {lo:g}); cannot normalise to [0, 1]")
        return x.sub_(lo).div_(hi - lo).clamp_(0.0, 1.0)

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` on the model input (identity when not declared)."""
        if self.mean is None:
            return x
        return (x - float(self.mean)) / float(self.std)  # type: ignore[arg-type]

    def describe(self) -> str:
        """One line for manifests and reports."""
        if self.intensity == "window":
            text = f"intensity window centre {self.window[0]:g} width {self.window[1]:g} -> [0, 1]"  # type: ignore[index]
        elif self.intensity == "fixed":
            text = f"intensity range {self.value_range[0]:g}..{self.value_range[1]:g} -> [0, 1]"  # type: ignore[index]
        elif self.intensity == "percentile":
            text = f"intensity percentile {self.percentiles[0]:g}-{self.percentiles[1]:g} per image -> [0, 1]"
        else:
            text = "per-image min-max of display intensities to [0, 1]"
        if self.mean is not None:
            text += f"; model input standardised (x - {self.mean:g}) / {self.std:g}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v, tuple) else v) for f in fields(self) for v in [getattr(self, f.name)]}

