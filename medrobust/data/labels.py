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
from pathlib import Path, PurePosixPath

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
        labels_without_images: label ids in the CSV with no image.
        ambiguous: label ids that fit more than one image (or images that more than one label
            row fits), left unmatched rather than guessed.
        loose: ``(label id, case id)`` pairs matched only after dropping an extension or folder.
    """

    pairs: list[tuple[ImageItem, CaseLabel]] = field(default_factory=list)
    images_without_labels: list[ImageItem] = field(default_factory=list)
    labels_without_images: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    loose: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_mismatched(self) -> int:
        """Images without labels + label rows without images + ambiguous ids."""
        return len(self.images_without_labels) + len(self.labels_without_images) + len(self.ambiguous)

    @property
    def warnings(self) -> list[str]:
        """Human-readable lines for reports."""
        out = [f"image without label: {it.case_id} ({it.path})" for it in self.images_without_labels]
        out += [f"label row without image: {cid}" for cid in self.labels_without_images]
        out += [f"ambiguous label id: {cid}" for cid in self.ambiguous]
        return out

    def counts(self) -> dict[str, int]:
        """Matched / unmatched counts (for logs, manifests and reports)."""
        return {
            "matched": len(self.pairs),
            "matched_loosely": len(self.loose),
            "images_without_labels": len(self.images_without_labels),
            "labels_without_images": len(self.labels_without_images),
            "ambiguous": len(self.ambiguous),
        }


def _strip_suffix(text: str) -> str:
    """``a/b/x.dcm`` -> ``a/b/x`` (image suffixes only, as :func:`case_id_from_path` knows them)."""
    path = PurePosixPath(text.replace("\\", "/").strip("/"))
    return str(path.with_name(case_id_from_path(path.name))) if path.name else text


def _image_keys(item: ImageItem, root: Path | None) -> set[str]:
    """Every spelling of an image's id a labels CSV may use: case id, file name with or without
    extension, path relative to ``root`` with or without extension (and with ``__`` for ``/``)."""
    keys = {item.case_id, item.path.name, case_id_from_path(item.path)}
    if root is not None:
        try:
            rel = PurePosixPath(item.path.resolve().relative_to(root.resolve()).as_posix())
        except ValueError:
            rel = None
        if rel is not None:
            keys |= {str(rel), _strip_suffix(str(rel)), _strip_suffix(str(rel)).replace("/", "__")}
    return {k.lower() for k in keys}


def _label_keys(label_id: str) -> list[str]:
    """Spellings of a label id to try, most specific first."""
    raw = label_id.replace("\\", "/").strip().strip("/")
    keys = [raw, _strip_suffix(raw), _strip_suffix(raw).replace("/", "__"), case_id_from_path(PurePosixPath(raw).name)]
    return [k.lower() for k in dict.fromkeys(keys) if k]


def match_labels(items: Iterable[ImageItem], labels: dict[str, CaseLabel], *, root: str | Path | None = None) -> LabelMatch:
    """Pair scanned items with labels; mismatches are logged as warnings and returned.

    A label id matches an image when it equals the case id; otherwise when, after dropping an
    image extension (``1_L_CC.dcm``) and/or folders (``batch1/1_L_CC``), it names exactly one
    image and that image is named by no other label row. Anything else stays unmatched (and
    ambiguous ids are listed), never guessed.

    Args:
        items: from :func:`~medrobust.data.scan_dataset`.
        labels: from :func:`read_labels`.
        root: the scanned folder (lets ids hold paths relative to it).

    Example:
        >>> from pathlib import Path, PurePosixPath
        >>> items = [ImageItem("1_L_CC", Path("/d/1_L_CC.dcm"), "dicom")]
        >>> m = match_labels(items, {"1_L_CC.dcm": CaseLabel(1)})
        >>> [(it.case_id, lab.label) for it, lab in m.pairs], m.loose
        ([('1_L_CC', 1)], [('1_L_CC.dcm', '1_L_CC')])
    """
    items = list(items)
    root_path = Path(root) if root is not None else None
    match = LabelMatch()
    by_id = {it.case_id: it for it in items}
    taken: dict[str, str] = {}  # case id -> label id
    pending = []
    for lid in labels:
        if lid in by_id:
            taken[lid] = lid
        else:
            pending.append(lid)
    if pending:
        index: dict[str, list[ImageItem]] = {}
        for it in items:
            if it.case_id in taken:
                continue
            for k in _image_keys(it, root_path):
                index.setdefault(k, []).append(it)
        claims: dict[str, list[str]] = {}
        for lid in pending:
            hit = None
            for k in _label_keys(lid):
                found = {it.case_id for it in index.get(k, [])}
                if len(found) == 1:
                    hit = found.pop()
                    break
                if len(found) > 1:
                    match.ambiguous.append(lid)
                    hit = ""
                    break
            if hit:
                claims.setdefault(hit, []).append(lid)
            elif hit is None:
                match.labels_without_images.append(lid)
        for cid, lids in claims.items():
            if len(lids) == 1:
                taken[cid] = lids[0]
                match.loose.append((lids[0], cid))
            else:
                match.ambiguous.extend(lids)
    for it in items:
        lid = taken.get(it.case_id)
        if lid is None:
            match.images_without_labels.append(it)
        else:
            match.pairs.append((it, labels[lid]))
    match.labels_without_images.sort()
    match.ambiguous.sort()
    if match.images_without_labels:
        logger.warning("%d images have no label (e.g. %s)", len(match.images_without_labels), match.images_without_labels[0].case_id)
    if match.labels_without_images:
        logger.warning("%d label rows have no image (e.g. %s)", len(match.labels_without_images), match.labels_without_images[0])
    if match.ambiguous:
        logger.warning("%d label ids are ambiguous (e.g. %s); left unmatched", len(match.ambiguous), match.ambiguous[0])
    return match
