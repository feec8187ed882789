"""The typed settings of a robustness-measures run (stdlib only, so the CLI can import it cheaply).

Example:
    >>> cfg = MetricsConfig(model="bundles/lesion_classification", data="data.npz", out="runs/m",
    ...                     measures=("classification", "ig"))
    >>> cfg.eps, cfg.split
    (0.00784313725490196, 'test')
    >>> MetricsConfig(model="m", data="d", out="o", measures=("colour",))
    Traceback (most recent call last):
    ...
    ValueError: measures: unknown ['colour']; choose from classification, intrinsic, surface, flatness, ig, deepshap, occlusion, fisher, probabilistic, purification, nmutant.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike

__all__ = ["MEASURES", "MetricsConfig", "parse_label_map"]

MEASURES = ("classification", "intrinsic", "surface", "flatness", "ig", "deepshap", "occlusion", "fisher",
            "probabilistic", "purification", "nmutant")  # fmt: skip


def parse_label_map(text: str | None) -> dict[int, int] | None:
    """``"0:1,1:0"`` -> ``{0: 1, 1: 0}``; empty or ``None`` -> ``None``.

    Example:
        >>> parse_label_map("0:1,1:0")
        {0: 1, 1: 0}

    Raises:
        ValueError: ``text`` is not a comma-separated list of ``int:int`` pairs.
    """
    if not text:
        return None
    try:
        return {int(a): int(b) for a, b in (kv.split(":") for kv in text.split(","))}
    except ValueError:
        raise ValueError(f"label_map must look like 0:1,1:0, got {text!r}.") from None


@dataclass(frozen=True)
class MetricsConfig:
    """Settings of :func:`medrobust.measures.run_measures` (one field per ``medrobust metrics`` flag).

    Args:
        model: MONAI bundle dir, TorchScript file or state dict (with ``network_config``).
        data: MedMNIST-style ``.npz`` file or a DICOM/NIfTI/PNG folder.
        out: output folder.
        measures: names from :data:`MEASURES`.
        network_config: JSON/YAML network config for a state dict.
        input_size: model input spatial size (TorchScript).
        split: split of a ``.npz`` file.
        label_map: relabelling of a ``.npz`` file's labels.
        labels: labels CSV for a folder.
        limit: use only the first ``limit`` images.
        eps: L-inf radius in input units (images scaled to [0, 1]); >= 0.
        steps: PGD steps of every inner maximisation (>= 1).
        ig_steps: Integrated Gradients steps (>= 1).
        occlusion_window: occlusion window, voxels per spatial dim (>= 1).
        max_detail: images used by the costly measures (occlusion, probabilistic, nmutant) (>= 1).
        flatness_samples: weight draws for average-case flatness (>= 1).
        flatness_iterations: weight ascent steps for worst-case flatness (>= 1).
        posterior: ``"auto"``, ``"dropout"`` or ``"gaussian"`` (probabilistic robustness).
        robust_model: adversarially fine-tuned model of the same architecture (purification).
        seed: seed of every local generator.

    Raises:
        ValueError: an unknown measure or posterior, or a setting out of its range.
    """

    model: str | PathLike[str]
    data: str | PathLike[str]
    out: str | PathLike[str]
    measures: tuple[str, ...] = ("classification", "intrinsic", "ig")
    network_config: str | PathLike[str] | None = None
    input_size: tuple[int, ...] | None = None
    split: str = "test"
    label_map: dict[int, int] | None = None
    labels: str | PathLike[str] | None = None
    limit: int | None = None
    eps: float = 2 / 255
    steps: int = 10
    ig_steps: int = 100
    occlusion_window: int = 4
    max_detail: int = 8
    flatness_samples: int = 10
    flatness_iterations: int = 20
    posterior: str = "auto"
    robust_model: str | PathLike[str] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.measures) - set(MEASURES))
        if unknown:
            raise ValueError(f"measures: unknown {unknown}; choose from {', '.join(MEASURES)}.")
        if not self.measures:
            raise ValueError(f"measures: give at least one of {', '.join(MEASURES)}.")
        if self.posterior not in ("auto", "dropout", "gaussian"):
            raise ValueError(f"posterior must be 'auto', 'dropout' or 'gaussian', got {self.posterior!r}.")
        if not (self.eps >= 0 and self.eps < float("inf")):
            raise ValueError(f"eps must be a finite number >= 0, got {self.eps}.")
        for name in ("steps", "ig_steps", "occlusion_window", "max_detail", "flatness_samples", "flatness_iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}.")
