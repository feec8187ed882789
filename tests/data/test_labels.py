"""Labels CSV parsing, its errors, and matching labels to scanned images."""

from __future__ import annotations

from pathlib import Path

import pytest

from medrobust.data import CaseLabel, ImageItem, match_labels, read_labels


def _csv(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "labels.csv"
    p.write_text(text)
    return p


def test_case_id_label_subgroup(tmp_path):
    labels = read_labels(_csv(tmp_path, "case_id,label,subgroup,extra\na,1,calcification,x\nb,0,soft_tissue,y\nc,,,\n"))
    assert labels == {"a": CaseLabel(1, "calcification"), "b": CaseLabel(0, "soft_tissue"), "c": CaseLabel(None, None)}


def test_file_column_matched_by_stem_and_case_insensitive_headers(tmp_path):
    labels = read_labels(_csv(tmp_path, "\ufeffFile,Label\nimages/x1.dcm,1\ny2.nii.gz,2.0\nz3,0\n"))
    assert labels == {"x1": CaseLabel(1), "y2": CaseLabel(2), "z3": CaseLabel(0)}


@pytest.mark.parametrize(
    "text, match",
    [
        ("id,label\na,1\n", r"missing column\(s\) \['case_id or file'\]; found \['id', 'label'\]"),
        ("case_id,diagnosis\na,1\n", r"missing column\(s\) \['label'\]"),
        ("case_id,label\na,1\nb,0\na,0\n", r"duplicate case ids: 'a' \(lines 2 and 4\)"),
        ("case_id,label\na,1\nb,maybe\n", r"line 3: label 'maybe' is not an integer"),
        ("case_id,label\na,1.5\n", r"line 2: label '1.5' must be a non-negative integer"),
        ("case_id,label\n,1\n", r"line 2: empty 'case_id'"),
        ("", r"empty file"),
    ],
)
def test_bad_csv_errors_name_file_and_problem(tmp_path, text, match):
    with pytest.raises(ValueError, match=match) as info:
        read_labels(_csv(tmp_path, text))
    assert "labels.csv" in str(info.value)


def test_missing_csv(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_labels(tmp_path / "nope.csv")


def test_match_reports_both_directions_without_raising(tmp_path, caplog):
    items = [ImageItem("a", tmp_path / "a.dcm", "dicom"), ImageItem("b", tmp_path / "b.dcm", "dicom")]
    labels = {"a": CaseLabel(1, "soft_tissue"), "z": CaseLabel(0, None)}
    with caplog.at_level("WARNING", logger="medrobust"):
        m = match_labels(items, labels)
    assert [(i.case_id, lab.label) for i, lab in m.pairs] == [("a", 1)]
    assert [i.case_id for i in m.images_without_labels] == ["b"] and m.labels_without_images == ["z"]
    assert m.warnings == [f"image without label: b ({tmp_path / 'b.dcm'})", "label row without image: z"]
    assert "1 images have no label" in caplog.text and "1 label rows have no image" in caplog.text
