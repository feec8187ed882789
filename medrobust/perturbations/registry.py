"""The registry of perturbation families swept by ``medrobust sensitivity``.

A *family* is a named, parameterised corruption of a batch of images: Gaussian noise,
Fourier low-pass, an MR motion artefact, a PGD attack. Natural families live in
:mod:`medrobust.perturbations.natural` and :mod:`medrobust.perturbations.mr_artifacts`;
adversarial families are registered from :mod:`medrobust.perturbations.adversarial`, which
wraps :mod:`medrobust.core.attacks`. Third-party code registers its own with
:func:`register`.

Every family has the same signature, ``apply(x, severity, ctx) -> x'``:

- ``x``: float tensor ``(B, C, *spatial)`` (2-D or 3-D), intensities in ``ctx.bounds``;
- ``severity``: a float; ``0`` must return ``x`` unchanged;
- ``ctx``: a :class:`PerturbationContext` carrying one random generator per sample (so a
  sample's perturbation does not depend on which batch it was in: a resumed sweep gives
  the same numbers as an uninterrupted one), and, for adversarial families, the model and
  its targets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "PerturbationContext",
    "PerturbationFamily",
    "register",
    "get_family",
    "family_names",
    "sample_seed",
]


def sample_seed(*keys: object, base_seed: int = 0) -> int:
    """A stable 63-bit seed from ``keys`` (e.g. case id, family, severity) and ``base_seed``.

    Uses SHA-256 rather than Python's ``hash`` so the seed is the same in every process.
    """
    text = "\x1f".join([str(base_seed), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


@dataclass
class PerturbationContext:
    """Everything a family may use besides the images.

    Args:
        generators: one ``torch.Generator`` per sample of the batch (on the batch's device).
        bounds: the valid intensity range ``(low, high)`` of ``x``; outputs are clipped to it.
        model: for adversarial families, a differentiable callable mapping a batch in the same
            space as ``x`` (``(B, C, *spatial)``) to logits ``(B, K)`` or ``(B, 1)``.
        target: for adversarial families, labels ``(B,)`` to move away from (untargeted):
            the true label when known, otherwise the clean prediction.
    """

    generators: Sequence[torch.Generator]
    bounds: tuple[float, float] = (0.0, 1.0)
    model: Callable[[torch.Tensor], torch.Tensor] | None = None
    target: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    @classmethod
    def from_seeds(cls, seeds: Sequence[int], device: torch.device | str = "cpu", **kwargs) -> PerturbationContext:
        gens = []
        for s in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(int(s))
            gens.append(g)
        return cls(generators=gens, **kwargs)

    def _per_sample(self, draw: Callable[..., torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if len(self.generators) != x.shape[0]:
            raise ValueError(f"context has {len(self.generators)} generators for a batch of {x.shape[0]}.")
        return torch.stack(
            [draw(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in self.generators]
        )

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like ``x``, drawn per sample from its own generator."""
        return self._per_sample(torch.randn, x)

    def rand_like(self, x: torch.Tensor) -> torch.Tensor:
        """Uniform [0, 1) noise shaped like ``x``, drawn per sample from its own generator."""
        return self._per_sample(torch.rand, x)


@dataclass(frozen=True)
class PerturbationFamily:
    """A named perturbation and its default severity grid.

    Args:
        name: registry key, e.g. ``"gaussian_noise"``.
        apply: ``(x, severity, ctx) -> x'`` as described in the module docstring.
        severities: default severities swept when the user gives none (0 first).
        description: one line for ``medrobust sensitivity --list-families`` and reports,
            including what the severity means (e.g. "noise sigma as a fraction of the range").
        needs_model: adversarial families need ``ctx.model`` and ``ctx.target``.
        spatial_dims: the numbers of spatial dimensions supported.
        modalities: DICOM modalities the family is meant for (``None``: any), e.g.
            ``("MR",)`` for k-space artefacts; the sweep warns when used elsewhere.
    """

    name: str
    apply: Callable[[torch.Tensor, float, PerturbationContext], torch.Tensor]
    severities: tuple[float, ...]
    description: str
    needs_model: bool = False
    spatial_dims: tuple[int, ...] = (2, 3)
    modalities: tuple[str, ...] | None = None


_REGISTRY: dict[str, PerturbationFamily] = {}
_BUILTINS_LOADED = False


def register(family: PerturbationFamily, *, overwrite: bool = False) -> PerturbationFamily:
    """Add ``family`` to the registry; a clash raises unless ``overwrite``."""
    if family.name in _REGISTRY and not overwrite:
        raise ValueError(f"perturbation family {family.name!r} is already registered.")
    _REGISTRY[family.name] = family
    return family


def _load_builtins() -> None:
    # Imported lazily so the registry module stays import-cheap and free of cycles.
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    import importlib

    for mod in ("natural", "mr_artifacts", "adversarial"):
        try:
            importlib.import_module(f"medrobust.perturbations.{mod}")
        except ModuleNotFoundError as e:  # a module not written yet must not hide the others
            if e.name != f"medrobust.perturbations.{mod}":
                raise


def get_family(name: str) -> PerturbationFamily:
    """The family registered as ``name``; unknown names raise with the known ones listed."""
    _load_builtins()
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown perturbation family {name!r}.{hint} Known: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def family_names() -> list[str]:
    """Names of every registered family, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)
