"""Labels CSV: ``case_id`` (or ``file``, matched by stem), ``label`` and optional ``subgroup``.

Example:
    >>> labels = read_labels("sample_data/generated/mammo/labels.csv")  # doctest: +SKIP
    >>> labels["mammo_0000"]  # doctest: +SKIP
    CaseLabel(label=1, subgroup='calcification')
    >>> match = match_labels(items, labels)  # doctest: +SKIP
    >>> len(match.pairs), match.images_without_labels, match.labels_without_images  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from medrobust.data.deid import case_id_from_path
from medrobust.data.records import CaseLabel, ImageItem

__all__ = ["read_labels", "match_labels", "LabelMatch"]

logger = logging.getLogger(__name__)


def _parse_label(text: str, csv_path: Path, line: int) -> int | None:
    text = text.strip()
    if text == "" or text.lower() in ("na", "nan", "none", "null"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{csv_path}, line {line}: label {text!r} is not an integer class index") from None
    if value != int(value) or value < 0:
        raise ValueError(f"{csv_path}, line {line}: label {text!r} must be a non-negative integer (0/1 or class index)")
    return int(value)


def read_labels(csv_path: str | Path) -> dict[str, CaseLabel]:
    """Read a labels CSV into ``{case_id: CaseLabel(label, subgroup)}``.

    Columns (case-insensitive): ``case_id`` or ``file`` (a file name or path; its stem without
    image suffixes becomes the case id), ``label`` (non-negative integer; empty = unknown ->
    None; for mammograms 1 = malignant), optional ``subgroup``. Other columns are ignored.

    Args:
        csv_path: the CSV file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: missing columns, empty case ids, duplicate case ids (with their line
            numbers) or unparseable labels (with the line number and value).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"labels CSV {csv_path} not found")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise ValueError(f"{csv_path}: empty file, expected a header with case_id (or file) and label columns")
        columns = {name.strip().lower(): name for name in reader.fieldnames if name is not None}
        id_col = columns.get("case_id") or columns.get("file")
        missing = [c for c, ok in (("case_id or file", id_col), ("label", columns.get("label"))) if not ok]
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {missing}; found {list(reader.fieldnames)}")
        from_file = id_col == columns.get("file") and "case_id" not in columns
        label_col, sub_col = columns["label"], columns.get("subgroup")
        out: dict[str, CaseLabel] = {}
        first_line: dict[str, int] = {}
        duplicates: list[str] = []
        for row in reader:
            line = reader.line_num
            raw_id = (row.get(id_col) or "").strip()
            if not raw_id:
                if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    continue  # blank line
                raise ValueError(f"{csv_path}, line {line}: empty {id_col!r}")
            case_id = case_id_from_path(raw_id) if from_file else raw_id
            if case_id in out:
                duplicates.append(f"{case_id!r} (lines {first_line[case_id]} and {line})")
                continue
            subgroup = (row.get(sub_col) or "").strip() if sub_col else ""
            out[case_id] = CaseLabel(_parse_label(row.get(label_col) or "", csv_path, line), subgroup or None)
            first_line[case_id] = line
    if duplicates:
        shown = ", ".join(duplicates[:5]) + (f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else "")
        raise ValueError(f"{csv_path}: duplicate case ids: {shown}")
    logger.debug("read %d labels from %s", len(out), csv_path)
    return out


@dataclass
class LabelMatch:
    """Images paired with their labels, and what did not match (reported, not raised).

    Attributes:
        pairs: ``(item, label)`` for every image whose case id has a label row.
        images_without_labels: items with no row in the CSV.
        labels_without_images: case ids in the CSV with no image.
    """

    pairs: list[tuple[ImageItem, CaseLabel]] = field(default_factory=list)
    images_without_labels: list[ImageItem] = field(default_factory=list)
    labels_without_images: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """Human-readable lines for reports."""
        out = [f"image without label: {it.case_id} ({it.path})" for it in self.images_without_labels]
        out += [f"label row without image: {cid}" for cid in self.labels_without_images]
        return out


def match_labels(items: Iterable[ImageItem], labels: dict[str, CaseLabel]) -> LabelMatch:
    """Pair scanned items with labels by case id; mismatches are logged as warnings and returned.

    Args:
        items: from :func:`~medrobust.data.scan_dataset`.
        labels: from :func:`read_labels`.
    """
    match = LabelMatch()
    seen: set[str] = set()
    for it in items:
        lab = labels.get(it.case_id)
        if lab is None:
            match.images_without_labels.append(it)
        else:
            match.pairs.append((it, lab))
            seen.add(it.case_id)
    match.labels_without_images = sorted(set(labels) - seen)
    if match.images_without_labels:
        logger.warning("%d images have no label (e.g. %s)", len(match.images_without_labels), match.images_without_labels[0].case_id)
    if match.labels_without_images:
        logger.warning("%d label rows have no image (e.g. %s)", len(match.labels_without_images), match.labels_without_images[0])
    return match
