"""Check, before a registration network runs, that every pair has the inputs the network takes.

A network that takes the moving gland segmentation as an input channel (``moving_mask_input``)
cannot run on a pair without a moving label file. :func:`require_moving_labels` scans the whole
folder first and names every such pair at once, with the caller's advice on what to do instead
(e.g. a bundle's image-only override), rather than failing on the first pair mid-run.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> import nibabel as nib, numpy as np
    >>> root = Path(tempfile.mkdtemp())
    >>> vol = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    >>> for folder, case in [("moving_images", "a"), ("fixed_images", "a"), ("moving_labels", "a"),
    ...                      ("moving_images", "b"), ("fixed_images", "b")]:
    ...     (root / folder).mkdir(exist_ok=True)
    ...     nib.save(vol, root / folder / f"{case}.nii.gz")
    >>> require_moving_labels(root, ids=["a"])
    ['a']
    >>> require_moving_labels(root, hint="Use the image-only model.")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...1 of 2 pairs have no moving label file (b; ...). Use the image-only model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medrobust.data.paired import scan_paired

__all__ = ["require_moving_labels"]


def require_moving_labels(
    root: str | Path,
    *,
    ids: Sequence[str] | None = None,
    layout: str = "auto",
    hint: str = "",
) -> list[str]:
    """Raise unless every pair under ``root`` (or only ``ids``) has a moving label file.

    Args:
        root: paired dataset folder (DeepReg or mu-RegPro layout, see
            :func:`medrobust.data.paired.scan_paired`).
        ids: only these case ids (``None``: every pair).
        layout: ``"deepreg"``, ``"muregpro"`` or ``"auto"``.
        hint: appended to the error message (what to run instead).

    Returns:
        The checked case ids, in order.

    Raises:
        ValueError: a case id in ``ids`` is not in the dataset, or pairs lack the moving label
            file (all of them are named, with the folder looked in and ``hint``).
    """
    cases = scan_paired(root, layout=layout, require_labels=False)
    if ids is not None:
        by_id = {c.case_id: c for c in cases}
        absent = [i for i in ids if i not in by_id]
        if absent:
            raise ValueError(f"{root}: case ids not found: {absent}.")
        cases = [by_id[i] for i in ids]
    missing = [c for c in cases if c.moving_label is None]
    if missing:
        names = ", ".join(c.case_id for c in missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise ValueError(
            f"{root}: the network takes the moving image's gland segmentation (label channel 0) as an input channel, but "
            f"{len(missing)} of {len(cases)} pairs have no moving label file ({names}; looked next to "
            f"{missing[0].moving_image}, in the layout's moving labels folder)."
            + (f" {hint}" if hint else "")
        )
    return [c.case_id for c in cases]
