"""Compressed DICOM (JPEG-LS, 12-bit JPEG, JPEG 2000): decoded with the ``dicom-codecs`` extra, reported clearly without it.

Files are pydicom's own test files (``get_testdata_files()``: local files only, never a download).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medrobust.data.dicom import CODECS_EXTRA, load_dicom_file

# file -> (transfer syntax name, lossless reference file or None)
CASES = {
    "MR_small_jpeg_ls_lossless.dcm": ("JPEG-LS Lossless Image Compression", "MR_small.dcm"),
    "MR_small_jp2klossless.dcm": ("JPEG 2000 Image Compression (Lossless Only)", "MR_small.dcm"),
    "JPGExtended.dcm": ("JPEG Extended (Process 2 and 4)", None),
}


def _testdata() -> dict[str, Path]:
    from pydicom.data import get_testdata_files  # never get_testdata_file: it may download

    return {Path(f).name: Path(f) for f in get_testdata_files() if Path(f).is_file()}


@pytest.fixture(scope="module")
def files() -> dict[str, Path]:
    found = _testdata()
    missing = [n for n in CASES if n not in found]
    if missing:
        pytest.skip(f"pydicom test files not found: {missing}")
    return found


def _codecs_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("pylibjpeg", "libjpeg", "openjpeg"))


@pytest.mark.skipif(not _codecs_installed(), reason=f"the {CODECS_EXTRA} extra is not installed")
@pytest.mark.parametrize("name", list(CASES))
def test_compressed_files_load_with_the_extra(files, name):
    arr, spacing, modality, _ = load_dicom_file(files[name])
    assert arr.dtype == np.float32 and arr.ndim == 3 and np.isfinite(arr).all() and arr.std() > 0
    reference = CASES[name][1]
    if reference is not None:  # lossless: the same pixels as the uncompressed file
        ref, ref_spacing, _, _ = load_dicom_file(files[reference])
        np.testing.assert_array_equal(arr, ref)
        assert spacing == ref_spacing


HIDE = r"""
import importlib.abc, json, sys
HIDDEN = ("pylibjpeg", "libjpeg", "openjpeg", "rle", "gdcm", "jpeg_ls", "PIL")
class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _Hide())
from medrobust.data.records import UnusableImageError
from medrobust.data.dicom import load_dicom_file
out = {}
for path in PATHS:
    try:
        load_dicom_file(path)
        out[path] = "loaded"
    except UnusableImageError as e:
        out[path] = str(e)
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_without_decoders_the_error_names_file_syntax_and_extra(files):
    paths = [str(files[n]) for n in CASES]
    r = subprocess.run([sys.executable, "-c", f"PATHS = {paths!r}\n" + HIDE], capture_output=True, text=True, timeout=300)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line, r.stderr[-3000:]
    results = json.loads(line[len("RESULT") :])
    for name, (syntax, _) in CASES.items():
        message = results[str(files[name])]
        assert name in message, message
        assert syntax in message, message
        assert f"pip install 'medrobust[{CODECS_EXTRA}]'" in message, message
