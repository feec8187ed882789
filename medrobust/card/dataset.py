"""The card's evaluation set: every usable image of a dataset folder as model input, with its label.

Images are found and read the way ``medrobust sensitivity`` reads them
(:func:`medrobust.data.scan_dataset`, :func:`~medrobust.data.load_image`), normalised per image to
``[0, 1]`` and resized to the model input (:func:`medrobust.data.preprocess.to_model_input`), so
the clean figures of the card describe the same inputs as its sensitivity sweep. Unusable files
are skipped and listed; images without a label are kept out of the labelled figures and counted.

Example:
    >>> import numpy as np, tempfile, pathlib, torch
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for i in range(3):
    ...     Image.fromarray((np.random.default_rng(i).random((12, 10)) * 255).astype("uint8")).save(d / f"c{i}.png")
    >>> _ = (d / "labels.csv").write_text("case_id,label\\nc0,0\\nc1,1\\nc2,1\\n")
    >>> ds = load_card_data(d, spatial_shape=(8, 8), in_channels=1, labels=d / "labels.csv")
    >>> ds.x.shape, ds.y.tolist(), ds.case_ids
    (torch.Size([3, 1, 8, 8]), [0, 1, 1], ['c0', 'c1', 'c2'])
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medrobust.data import DEFAULT_EXCLUDE, UnusableImageError, load_image, read_labels, scan_dataset
from medrobust.data.labels import match_labels
from medrobust.data.preprocess import match_spatial_dims, normalise_image, to_model_input

__all__ = ["CardData", "load_card_data"]

logger = logging.getLogger(__name__)


@dataclass
class CardData:
    """Labelled model inputs of a dataset.

    Attributes:
        x: ``(N, C, *spatial)`` model inputs in ``[0, 1]`` of the labelled cases.
        y: ``(N,)`` class indices.
        case_ids: ``N`` de-identified case ids (file stems), sorted.
        files: ``N`` paths relative to the data folder (for the provenance hash).
        unlabelled: case ids without a label (not in ``x``).
        skipped: ``(file, reason)`` of unusable files.
    """

    x: torch.Tensor
    y: torch.Tensor
    case_ids: list[str]
    files: list[str]
    unlabelled: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return Path(path).name


def load_card_data(
    data: str | Path,
    *,
    spatial_shape: Sequence[int],
    in_channels: int,
    labels: str | Path | None = None,
    exclude: Sequence[str] = (),
    cases: Collection[str] | None = None,
    max_cases: int | None = None,
) -> CardData:
    """Read a dataset folder into labelled model inputs (see the module docstring).

    Args:
        data: dataset folder (DICOM / NIfTI / PNG / ITK).
        spatial_shape: the model's input spatial shape (2-D or 3-D).
        in_channels: the model's input channels.
        labels: labels CSV (``case_id``/``file``, ``label``); ``None``: every image is unlabelled
            (the card then needs labels and says so).
        exclude: extra folder names not to scan (e.g. the card's own output folder).
        cases: only these case ids (a shard); ``None``: all.
        max_cases: keep the first ``max_cases`` labelled cases in case-id order (budget).

    Raises:
        FileNotFoundError: ``data`` or ``labels`` missing.
        ValueError: no usable labelled image.
    """
    root = Path(data).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist or is not a folder.")
    if labels is not None and not Path(labels).is_file():
        raise FileNotFoundError(f"labels CSV {labels} not found.")
    items, errors = scan_dataset(root, exclude=(*DEFAULT_EXCLUDE, *exclude))
    skipped = [(_rel(e.path, root), e.reason) for e in errors]
    if cases is not None:
        wanted = {str(c) for c in cases}
        items = [it for it in items if it.case_id in wanted]
    label_by_case: dict[str, int] = {}
    if labels is not None:
        match = match_labels(items, read_labels(labels), root=root)
        label_by_case = {it.case_id: lab.label for it, lab in match.pairs if lab.label is not None}
    xs, ys, ids, files, unlabelled = [], [], [], [], []
    for it in sorted(items, key=lambda i: i.case_id):
        if it.case_id not in label_by_case:
            unlabelled.append(it.case_id)
            continue
        if max_cases is not None and len(ids) >= max_cases:
            break
        try:
            img = load_image(it)
            x = match_spatial_dims(normalise_image(img.array), len(spatial_shape))
            xs.append(to_model_input(x[None], spatial_shape, in_channels)[0])
        except (UnusableImageError, ValueError, OSError, RuntimeError) as e:
            reason = e.reason if isinstance(e, UnusableImageError) else f"{type(e).__name__}: {e}"
            skipped.append((_rel(it.path, root), reason.replace(str(it.path), _rel(it.path, root))))
            logger.warning("card: skipped %s: %s", _rel(it.path, root), reason)
            continue
        ys.append(int(label_by_case[it.case_id]))
        ids.append(it.case_id)
        files.append(_rel(it.path, root))
    if not xs:
        why = "no labels CSV given (--labels)" if labels is None else f"{len(unlabelled)} images without a label"
        raise ValueError(f"no usable labelled image under {root}: {why}, {len(skipped)} files skipped.")
    return CardData(torch.stack(xs).float(), torch.tensor(ys, dtype=torch.long), ids, files, unlabelled, skipped)
