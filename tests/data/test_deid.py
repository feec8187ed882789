"""Identifiers from DICOM headers never reach case ids, meta, error reasons, logs or warnings."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np

from medrobust.data import (
    IDENTIFYING_KEYWORDS,
    SAFE_DICOM_KEYWORDS,
    LoadedImage,
    iter_loaded,
    load_dataset,
    match_labels,
    read_labels,
    scan_dataset,
)


def test_identifiers_never_leak(tmp_path, make_dicom, identifiers, caplog):
    from pydicom.uid import generate_uid

    root = tmp_path / "data"
    ramp = np.arange(64).reshape(8, 8)
    make_dicom(root / "case_a.dcm", ramp, photometric="MONOCHROME1", bits_stored=12, ViewPosition="CC")
    make_dicom(root / "case_b", ramp)  # no extension
    make_dicom(root / "rt.dcm", None, modality="RTSTRUCT")  # an error record
    make_dicom(root / "trunc.dcm", np.zeros((32, 32)))
    (root / "trunc.dcm").write_bytes((root / "trunc.dcm").read_bytes()[:-500])
    uid = generate_uid()
    for z in (0.0, 1.0, 2.0):
        make_dicom(root / "series1" / f"{z}", ramp, modality="CT", SeriesInstanceUID=uid,
                   ImagePositionPatient=[0, 0, z], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    # an over-long, invalid PN would make pydicom's validation quote the value: it must stay quiet
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns while *writing* the invalid value
        make_dicom(root / "longname.dcm", ramp, OtherPatientNames=identifiers["PatientName"] * 6)
    (root / "labels.csv").write_text("case_id,label\ncase_a,1\nmissing_case,0\n")

    logging.getLogger("pydicom").setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            items, scan_errors = scan_dataset(root)
            images, load_errors = load_dataset(root)
            outcomes = list(iter_loaded(items))
            match = match_labels(items, read_labels(root / "labels.csv"))
    finally:
        logging.getLogger("pydicom").setLevel(logging.WARNING)

    assert sorted(i.case_id for i in items) == ["case_a", "case_b", "longname", "series1", "trunc"]
    assert len(images) == 4 and {e.path.name for e in load_errors} == {"rt.dcm", "trunc.dcm"}
    assert images[0].meta and all(isinstance(o, LoadedImage) or o.reason for o in outcomes)
    texts = [
        caplog.text,
        "\n".join(str(w.message) for w in caught),
        json.dumps([img.meta for img in images], default=str),
        repr(items) + repr(scan_errors) + repr(load_errors) + repr(match.warnings),
        " ".join(img.case_id for img in images),
    ]
    assert "loaded" in caplog.text  # the debug log was captured
    for value in identifiers.values():
        for part in {value, *value.split("^")}:
            for text in texts:
                assert part not in text, f"identifier {part!r} leaked"
    for img in images:
        assert not set(img.meta) & set(IDENTIFYING_KEYWORDS)
        assert {k for k in img.meta if k[0].isupper()} <= set(SAFE_DICOM_KEYWORDS) | {"TransferSyntax"}
    assert images[0].meta["ViewPosition"] == "CC" and images[0].meta["PhotometricInterpretation"] == "MONOCHROME1"
