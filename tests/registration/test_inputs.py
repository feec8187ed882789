"""require_moving_labels: every pair has the moving gland label the network takes as input."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medrobust.registration.inputs import require_moving_labels


def _dataset(root, with_label: dict[str, bool], layout: str = "deepreg"):
    mov, fix, mlab = {"deepreg": ("moving_images", "fixed_images", "moving_labels"),
                      "muregpro": ("us_images", "mr_images", "us_labels")}[layout]
    vol = nib.Nifti1Image(np.zeros((6, 5, 4), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    for cid, labelled in with_label.items():
        for folder in (mov, fix) + ((mlab,) if labelled else ()):
            (root / folder).mkdir(exist_ok=True)
            nib.save(vol, root / folder / f"{cid}.nii.gz")
    return root


@pytest.mark.parametrize("layout", ["deepreg", "muregpro"])
def test_all_labelled_pairs_pass_in_order(tmp_path, layout):
    root = _dataset(tmp_path, {"b": True, "a": True}, layout)
    assert require_moving_labels(root) == ["a", "b"]
    assert require_moving_labels(root, ids=["b"]) == ["b"]


@pytest.mark.parametrize("n_missing", [1, 12])
def test_every_unlabelled_pair_is_named_with_the_hint(tmp_path, n_missing):
    cases = {f"c{i:02d}": i >= n_missing for i in range(n_missing + 1)}
    root = _dataset(tmp_path, cases)
    with pytest.raises(ValueError, match=rf"{n_missing} of {n_missing + 1} pairs have no moving label file \(c00[,;] .*Try X\.$"):
        require_moving_labels(root, hint="Try X.")
    if n_missing > 10:
        with pytest.raises(ValueError, match=r"and 2 more"):
            require_moving_labels(root)
    # only the asked-for ids are checked
    assert require_moving_labels(root, ids=[f"c{n_missing:02d}"]) == [f"c{n_missing:02d}"]


def test_unknown_id_is_named(tmp_path):
    root = _dataset(tmp_path, {"a": True})
    with pytest.raises(ValueError, match=r"case ids not found: \['zz'\]"):
        require_moving_labels(root, ids=["zz"])
