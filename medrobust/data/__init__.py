"""Dataset discovery, MONAI-reader based loading, error records, de-identified ids, labels CSV.

Public API (contract in docs/ARCHITECTURE.md)::

    items, errors = scan_dataset(root)        # ImageItem / LoadError records
    img = load_image(items[0])                # LoadedImage: float32 (C, H, W[, D]); raises UnusableImageError
    labels = read_labels("labels.csv")        # {case_id: CaseLabel(label, subgroup)}
    match = match_labels(items, labels)       # pairs + unlabeled images + labels without images

Example:
    >>> from medrobust.data import scan_dataset, load_image, read_labels  # doctest: +SKIP
    >>> items, errors = scan_dataset("sample_data/generated/mammo")  # doctest: +SKIP
"""

from __future__ import annotations

from medrobust.data.deid import IDENTIFYING_KEYWORDS, SAFE_DICOM_KEYWORDS, case_id_from_path, stable_hash
from medrobust.data.discover import DEFAULT_EXCLUDE, scan_dataset
from medrobust.data.labels import LabelMatch, match_labels, read_labels
from medrobust.data.load import item_for_path, iter_loaded, load_dataset, load_image
from medrobust.data.records import IMAGE_KINDS, CaseLabel, ImageItem, LoadedImage, LoadError, UnusableImageError

__all__ = [
    "ImageItem",
    "LoadError",
    "LoadedImage",
    "CaseLabel",
    "UnusableImageError",
    "IMAGE_KINDS",
    "scan_dataset",
    "DEFAULT_EXCLUDE",
    "load_image",
    "item_for_path",
    "iter_loaded",
    "load_dataset",
    "read_labels",
    "match_labels",
    "LabelMatch",
    "case_id_from_path",
    "stable_hash",
    "SAFE_DICOM_KEYWORDS",
    "IDENTIFYING_KEYWORDS",
]
