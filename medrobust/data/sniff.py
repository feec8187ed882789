"""What kind of file is this? Decided from the file's content, with the extension as a hint.

DICOM files often have no extension, and some lack the 128-byte preamble + ``DICM`` magic
(old ACR-NEMA style); NIfTI, PNG, MetaImage and NRRD all have recognisable headers.

Example:
    >>> sniff("/data/IM00001")  # doctest: +SKIP
    Sniffed(kind='dicom', reason=None)
"""

from __future__ import annotations

import gzip
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Sniffed", "sniff", "NON_IMAGE_SUFFIXES", "UNSUPPORTED_FORMATS"]

logger = logging.getLogger(__name__)

#: suffixes of files that are plainly not images; a scan skips them without an error record.
NON_IMAGE_SUFFIXES = frozenset(
    ".csv .tsv .json .txt .md .rst .yaml .yml .toml .ini .cfg .py .pyc .ipynb .log .html .xml "
    ".sh .bat .m .mat .pkl .pt .pth .ts .onnx .npz .npy .zip .tar .pdf .icc .dump .gitignore".split()
)

#: known medical/other image formats we do not load, with a hint for the reason text.
UNSUPPORTED_FORMATS = {
    ".mnc": "MINC",
    ".mgz": "FreeSurfer MGH (compressed)",
    ".mgh": "FreeSurfer MGH",
    ".par": "Philips PAR/REC",
    ".rec": "Philips PAR/REC",
    ".head": "AFNI BRIK/HEAD",
    ".brik": "AFNI BRIK/HEAD",
    ".trk": "TrackVis streamlines",
    ".tck": "MRtrix streamlines",
    ".v": "ECAT",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".img": "Analyze/NIfTI data without a header",
}

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Sniffed:
    """Outcome of :func:`sniff`.

    Attributes:
        kind: ``"dicom" | "nifti" | "itk" | "png"``, ``"skip"`` (plainly not an image, e.g. a
            CSV) or None (an unusable / unsupported file: see ``reason``).
        reason: why ``kind`` is None (human readable), else None.
    """

    kind: str | None
    reason: str | None = None


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    if name.endswith(".gz"):
        return Path(name[:-3]).suffix + ".gz"
    return path.suffix.lower()


def _nifti_magic(head: bytes) -> bool:
    """NIfTI-1 (magic at byte 344) or NIfTI-2 (magic at byte 4)."""
    return head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00")


def _looks_like_raw_dicom(head: bytes) -> bool:
    """A dataset without preamble starts with a group 0x0002 or 0x0008 element (either endianness)."""
    if len(head) < 8:
        return False
    group_le, elem_le = struct.unpack("<HH", head[:4])
    group_be, elem_be = struct.unpack(">HH", head[:4])
    return (group_le in (0x0002, 0x0008) and elem_le < 0x0200) or (group_be in (0x0002, 0x0008) and elem_be < 0x0200)


def _dicom_by_parse(path: Path) -> bool:
    """Try pydicom with ``force=True`` and check the result has DICOM-ish content."""
    import pydicom

    from medrobust.data.dicom import quiet_pydicom

    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        return any(k in ds for k in ("SOPClassUID", "Modality", "StudyInstanceUID", "Rows", "DirectoryRecordSequence"))
    except Exception:  # pydicom raises many kinds of errors on non-DICOM bytes
        return False


def sniff(path: str | Path) -> Sniffed:
    """Decide the kind of ``path`` from its content (and, only as a hint, its suffix).

    Args:
        path: a file.

    Returns:
        :class:`Sniffed`; never raises for unreadable or odd files (that becomes ``reason``).
    """
    path = Path(path)
    suffix = _suffix(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return Sniffed(None, "empty file (0 bytes)")
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as e:
        return Sniffed(None, f"cannot read file: {e.strerror or e}")

    if suffix in NON_IMAGE_SUFFIXES or path.name.lower() in ("readme", "license", "lockfile", "version"):
        return Sniffed("skip")
    if head[128:132] == b"DICM":
        return Sniffed("dicom")
    if head.startswith(_PNG_MAGIC):
        return Sniffed("png")
    if head.startswith(b"NRRD000"):
        return Sniffed("itk")
    if _nifti_magic(head):
        if suffix == ".hdr" and not path.with_suffix(".img").exists():
            return Sniffed(None, "NIfTI header (.hdr) without its .img data file")
        return Sniffed("nifti")
    if head[:2] == b"\x1f\x8b":  # gzip: look inside for NIfTI
        try:
            with gzip.open(path, "rb") as g:
                inner = g.read(352)
        except (OSError, EOFError) as e:
            return Sniffed(None, f"corrupt gzip stream: {e}")
        if _nifti_magic(inner):
            return Sniffed("nifti")
        if inner.startswith(b"NRRD000"):
            return Sniffed("itk")
        fmt = UNSUPPORTED_FORMATS.get(suffix) or UNSUPPORTED_FORMATS.get(Path(path.name.lower().removesuffix(".gz")).suffix)
        return Sniffed(None, f"unsupported format: {fmt or 'gzip-compressed file that is not NIfTI'}")
    text = head[:200].lstrip()
    if suffix in (".mha", ".mhd") or text.startswith((b"ObjectType", b"NDims")):
        if b"NDims" in head or b"ObjectType" in head:
            return Sniffed("itk")
        return Sniffed(None, f"{suffix} file without a MetaImage header (no NDims/ObjectType)")
    if suffix == ".nii" or suffix == ".nii.gz":
        return Sniffed(None, "named like NIfTI but has no NIfTI magic (truncated or corrupt)")
    if suffix == ".png":
        return Sniffed(None, "named .png but has no PNG signature (corrupt)")
    if suffix in UNSUPPORTED_FORMATS:
        return Sniffed(None, f"unsupported format: {UNSUPPORTED_FORMATS[suffix]} ({suffix}); convert to NIfTI, DICOM or PNG")
    if suffix == ".hdr":
        return Sniffed(None, "unsupported format: Analyze 7.5 header (.hdr without NIfTI magic)")
    if _looks_like_raw_dicom(head) and _dicom_by_parse(path):
        return Sniffed("dicom")
    if suffix in (".dcm", ".dicom", ".ima"):
        if _dicom_by_parse(path):
            return Sniffed("dicom")
        return Sniffed(None, "named like DICOM but not parseable as DICOM (no 'DICM' magic, no valid elements)")
    return Sniffed(None, f"unsupported format: not DICOM, NIfTI, MHA/MHD/NRRD or PNG (suffix {suffix or 'none'})")
