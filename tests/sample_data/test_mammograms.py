"""Synthetic mammograms: determinism, DICOM encodings, loading through medrobust.data, masks, balance."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medrobust.data import load_image, match_labels, read_labels, scan_dataset
from sample_data.mammograms import CELLS, FULL_PIXEL_MM, generate_mammograms, render_case


@pytest.fixture(scope="module")
def mammo(tmp_path_factory) -> Path:
    return generate_mammograms(tmp_path_factory.mktemp("gen") / "mammo", n=8, seed=3)


def _pixels(folder: Path) -> dict[str, bytes]:
    import pydicom

    return {p.name: pydicom.dcmread(p).PixelData for p in sorted((folder / "images").iterdir())}


def test_same_seed_is_byte_identical_other_seed_differs(tmp_path):
    a = generate_mammograms(tmp_path / "a", n=4, seed=7, size=(256, 208))
    b = generate_mammograms(tmp_path / "b", n=4, seed=7, size=(256, 208))
    c = generate_mammograms(tmp_path / "c", n=4, seed=8, size=(256, 208))
    assert _pixels(a) == _pixels(b)
    for name in _pixels(a):  # whole DICOM files, UIDs included
        assert (a / "images" / name).read_bytes() == (b / "images" / name).read_bytes()
    assert (a / "labels.csv").read_text() == (b / "labels.csv").read_text()
    for m in sorted((a / "masks").iterdir()):
        np.testing.assert_array_equal(load_image(m).array, load_image(b / "masks" / m.name).array)
    assert all(pa != pc for pa, pc in zip(_pixels(a).values(), _pixels(c).values()))


def test_files_load_through_medrobust_data_with_labels(mammo):
    items, errors = scan_dataset(mammo)
    assert errors == [] and len(items) == 8 and {i.kind for i in items} == {"dicom"}  # masks/ is not scanned
    assert any(not i.path.suffix for i in items), "some files are written without extension"
    labels = read_labels(mammo / "labels.csv")
    match = match_labels(items, labels)
    assert len(match.pairs) == 8 and not match.warnings
    rows = {r["case_id"]: r for r in csv.DictReader(open(mammo / "lesions.csv"))}
    seen = Counter()
    for item, lab in match.pairs:
        img = load_image(item)
        row = rows[item.case_id]
        assert img.modality == "MG" and img.array.shape == (1, 1024, 832) and img.array.dtype == np.float32
        assert img.spacing == pytest.approx((0.2275, 0.2275), abs=1e-4)
        assert (lab.label, lab.subgroup) == (int(row["label"]), row["subgroup"])
        assert img.meta["ViewPosition"] == row["view"] and img.meta["ImageLaterality"] == row["laterality"]
        assert img.meta["BitsStored"] in (12, 14) and "voi_lut" in img.meta["steps"]
        assert "SYNTH" not in json.dumps(img.meta, default=str)
        seen[img.meta["PhotometricInterpretation"]] += 1
        # display-ready: tissue is brighter than the air background whatever the encoding
        lo, hi = img.meta["value_range"]
        x = (img.array[0] - lo) / (hi - lo)
        chest = x[:, :40] if row["laterality"] == "L" else x[:, -40:]
        corner = x[-30:, -30:] if row["laterality"] == "L" else x[-30:, :30]
        assert chest.mean() > corner.mean() + 0.2
    assert set(seen) == {"MONOCHROME1", "MONOCHROME2"}


def test_masks_align_with_lesions(mammo):
    rows = list(csv.DictReader(open(mammo / "lesions.csv")))
    for row in rows:
        image = load_image(next(p for p in (mammo / "images").iterdir() if p.name.startswith(row["case_id"]))).array[0]
        roi = load_image(mammo / row["roi_mask"]).array[0] > 0
        calc = load_image(mammo / row["calc_mask"]).array[0] > 0
        assert roi.shape == image.shape and roi[int(row["center_row"]), int(row["center_col"])] or calc.any()
        if row["subgroup"] == "calcification":
            assert calc.any() and not (calc & ~roi).any(), "calcifications lie inside the ROI"
            background = image[roi & ~calc]
            cnr = (image[calc].mean() - background.mean()) / background.std()
            assert cnr > 2.0, f"{row['case_id']}: calcification CNR {cnr:.2f}"
        else:
            assert not calc.any()
            ring = ndimage.binary_dilation(roi, iterations=15) & ~ndimage.binary_dilation(roi, iterations=5)
            assert image[roi].mean() > image[ring].mean(), f"{row['case_id']}: mass not brighter than its surroundings"


@pytest.mark.parametrize("n", [4, 10, 13])
def test_class_and_subgroup_balance(n):
    cells = [CELLS[i % 4] for i in range(n)]
    counts = Counter(cells)
    assert max(counts.values()) - min(counts.values()) <= 1 and set(counts) == set(CELLS)


def test_labels_csv_balance(mammo):
    rows = list(csv.DictReader(open(mammo / "labels.csv")))
    assert [list(r) for r in rows[:1]] == [["case_id", "label", "subgroup"]]
    assert Counter((r["label"], r["subgroup"]) for r in rows) == {
        ("0", "soft_tissue"): 2, ("1", "soft_tissue"): 2, ("0", "calcification"): 2, ("1", "calcification"): 2}
    labels = [int(r["label"]) for r in rows]
    assert labels != sorted(labels), "case order must not reveal the class"


def test_lowpass_removes_calcifications_but_not_masses():
    """The study's point: strong Gaussian low-pass filtering erases fine calcifications, not masses."""
    calc_drop, mass_drop = [], []
    for k in range(2):
        case = render_case(np.random.default_rng(100 + k), "c", 1, "calcification")
        smooth = ndimage.gaussian_filter(case.image, 4.0)
        bg = case.roi & ~case.calc
        cnr = lambda im: (im[case.calc].mean() - im[bg].mean()) / case.image[bg].std()  # noqa: E731
        calc_drop.append(cnr(smooth) / cnr(case.image))
        mass = render_case(np.random.default_rng(200 + k), "m", 0, "soft_tissue")
        ring = ndimage.binary_dilation(mass.roi, iterations=15) & ~ndimage.binary_dilation(mass.roi, iterations=5)
        contrast = lambda im: im[mass.roi].mean() - im[ring].mean()  # noqa: E731
        mass_drop.append(contrast(ndimage.gaussian_filter(mass.image, 4.0)) / contrast(mass.image))
    assert max(calc_drop) < 0.5, calc_drop
    assert min(mass_drop) > 0.7, mass_drop


def test_size_controls_pixel_size_and_bad_arguments(tmp_path):
    case = render_case(np.random.default_rng(0), "s", 1, "soft_tissue", size=(512, 416))
    assert case.image.shape == (512, 416) and case.pixel_mm == pytest.approx(FULL_PIXEL_MM * 3328 / 512)
    assert case.image.min() >= 0 and case.image.max() <= 1 and case.roi.any()
    with pytest.raises(ValueError, match="n must be >= 4"):
        generate_mammograms(tmp_path, n=3)
    with pytest.raises(ValueError, match="size must be at least"):
        render_case(np.random.default_rng(0), "s", 1, "soft_tissue", size=(64, 64))
    with pytest.raises(ValueError, match="subgroup"):
        render_case(np.random.default_rng(0), "s", 1, "mass")
