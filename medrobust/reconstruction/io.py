"""Read (and write) k-space: fastMRI HDF5, ISMRMRD/MRD, BART ``.cfl/.hdr``; simulate from NIfTI/DICOM.

Every reader returns a :class:`KspaceVolume` with k-space ``(S, C, H, W, 2)`` float32 (slices,
coils, readout, phase encode, real/imaginary; the MONAI convention) and metadata that holds only
technical fields (sizes, field of view, field strength, protocol name): never patient, study,
site or device identifiers from the file headers. Bad files raise ``ValueError`` naming the file
and the problem (missing file, not HDF5, missing keys, wrong dimensions, NaN/inf, truncated).

* fastMRI HDF5 (h5py): ``kspace`` ``(S, H, W)`` single-coil or ``(S, C, H, W)`` multi-coil
  complex64; reference ``reconstruction_rss`` (preferred) or ``reconstruction_esc``, cropped by
  fastMRI to the reconstruction matrix (e.g. 320 x 320), so it may be smaller than ``H, W``;
  optional ``mask`` (W,); the ``ismrmrd_header`` XML is read only for matrix sizes and field of view.
* ISMRMRD/MRD (the ``ismrmrd`` package): Cartesian 2-D acquisitions, one readout per line
  (``kspace_encode_step_1`` = column, ``slice`` = slice); noise, navigator, phase-correction and
  dummy scans are skipped; repeated lines (averages) are averaged; unsampled columns stay 0 and
  the sampled ones are returned as ``mask``.
* BART ``.cfl/.hdr``: no package reads it (BART ships a 20-line ``cfl.py`` that is not on PyPI),
  so :func:`read_cfl` / :func:`write_cfl` implement the documented format: ``.hdr`` is text,
  ``# Dimensions`` then the sizes; ``.cfl`` is complex64 in column-major order. K-space axes:
  0 READ -> H, 1 PHS1 -> W, 3 COIL -> C, 13 SLICE -> S; any other axis > 1 is refused.
* NIfTI/DICOM magnitude (:func:`medrobust.data.load_image`): slices along the last axis, scaled
  by :func:`~medrobust.reconstruction.simulation.normalize_magnitude`, then acquired by
  :func:`~medrobust.reconstruction.simulation.simulate_kspace` (seeded).

Example:
    >>> import tempfile, numpy as np
    >>> d = tempfile.mkdtemp()
    >>> k = np.ones((2, 4, 8, 6), np.complex64)  # (S, C, H, W)
    >>> write_bart_kspace(f"{d}/k", k)
    >>> v = read_kspace(f"{d}/k.cfl")
    >>> tuple(v.kspace.shape), v.metadata["format"]
    ((2, 4, 8, 6, 2), 'bart')
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medrobust.reconstruction.simulation import normalize_magnitude, simulate_kspace

__all__ = [
    "KspaceVolume",
    "read_kspace",
    "read_fastmri",
    "write_fastmri",
    "read_ismrmrd",
    "write_ismrmrd",
    "read_cfl",
    "write_cfl",
    "read_bart_kspace",
    "write_bart_kspace",
    "read_magnitude",
]

logger = logging.getLogger(__name__)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: BART axis numbers (src/misc/mri.h): READ, PHS1, PHS2, COIL, ..., SLICE
BART_READ, BART_PHS1, BART_PHS2, BART_COIL, BART_SLICE = 0, 1, 2, 3, 13


@dataclass
class KspaceVolume:
    """K-space of one volume (a stack of 2-D slices).

    Attributes:
        kspace: float32 ``(S, C, H, W, 2)``.
        reference: float32 magnitude ``(S, h, w)`` shipped with the data (fastMRI
            ``reconstruction_rss``/``_esc``, or the normalised magnitude a simulation started
            from), else None. fastMRI crops it, so ``h, w`` may be smaller than ``H, W``.
        mask: float32 ``(1, 1, 1, W, 1)`` of sampled columns when the file says some were not
            sampled (fastMRI ``mask``, ISMRMRD lines), else None (fully sampled).
        metadata: technical fields only (``format``, ``shape``, ``num_slices``, ``num_coils``, ...).
        path: the file read.
    """

    kspace: torch.Tensor
    reference: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    metadata: dict = field(default_factory=dict)
    path: Path | None = None


def _bad(path: str | Path, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}")


def _to_tensor(kspace: np.ndarray, path: Path) -> torch.Tensor:
    """Complex ``(S, C, H, W)`` -> float32 ``(S, C, H, W, 2)``; checks dims, size and finiteness."""
    if not np.iscomplexobj(kspace):
        raise _bad(path, f"k-space must be complex, got dtype {kspace.dtype}")
    if kspace.ndim != 4:
        raise _bad(path, f"k-space must have 4 axes (slices, coils, H, W) here, got shape {kspace.shape}")
    if kspace.size == 0 or min(kspace.shape[2:]) < 2:
        raise _bad(path, f"k-space is empty or degenerate, shape {kspace.shape}")
    bad = int(np.count_nonzero(~np.isfinite(kspace)))
    if bad:
        raise _bad(path, f"k-space has {bad} NaN/inf values")
    return torch.from_numpy(np.stack([kspace.real, kspace.imag], -1).astype(np.float32))


def _meta(fmt: str, kspace: torch.Tensor, **extra) -> dict:
    s, c, h, w, _ = kspace.shape
    return {"format": fmt, "shape": [s, c, h, w], "num_slices": s, "num_coils": c, **extra}


def _column_mask(sampled: np.ndarray) -> torch.Tensor | None:
    sampled = np.asarray(sampled).astype(bool).reshape(-1)
    if sampled.all():
        return None
    return torch.from_numpy(sampled.astype(np.float32)).reshape(1, 1, 1, -1, 1)


def _header_meta(xml: bytes | str) -> dict:
    """Matrix sizes, field of view and field strength from an ISMRMRD XML header (nothing else)."""
    import ismrmrd

    try:
        hdr = ismrmrd.xsd.CreateFromDocument(xml)
    except Exception as e:  # xsdata raises ParserError and friends on non-conforming headers
        logger.warning("ISMRMRD header not parsed (%s); matrix sizes left out of the metadata", type(e).__name__)
        return {}
    out: dict = {}
    if hdr.encoding:
        enc = hdr.encoding[0]
        for key, space in (("encoded", enc.encodedSpace), ("recon", enc.reconSpace)):
            m, f = space.matrixSize, space.fieldOfView_mm
            out[f"{key}_matrix"] = [int(m.x), int(m.y), int(m.z)]
            out[f"{key}_fov_mm"] = [float(f.x), float(f.y), float(f.z)]
    asi = hdr.acquisitionSystemInformation
    if asi is not None and asi.systemFieldStrength_T is not None:
        out["field_strength_t"] = float(asi.systemFieldStrength_T)
    return out


def _make_header(shape: tuple[int, int, int, int], fov_mm: tuple[float, float, float]) -> str:
    """A minimal ISMRMRD XML header (Cartesian, technical fields only) for ``(S, C, H, W)``."""
    from ismrmrd import xsd

    s, c, h, w = shape
    space = xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=h, y=w, z=1), fieldOfView_mm=xsd.fieldOfViewMm(x=fov_mm[0], y=fov_mm[1], z=fov_mm[2])
    )
    limits = xsd.encodingLimitsType(
        kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=w - 1, center=w // 2),
        slice=xsd.limitType(minimum=0, maximum=s - 1, center=s // 2),
    )
    enc = xsd.encodingType(encodedSpace=space, reconSpace=space, encodingLimits=limits, trajectory=xsd.trajectoryType.CARTESIAN)
    hdr = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63_870_000),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(receiverChannels=c, systemFieldStrength_T=1.5),
        encoding=[enc],
    )
    return xsd.ToXML(hdr)


def _as_complex(kspace: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """``(S, C, H, W)`` complex or ``(S, C, H, W, 2)`` real/imag -> complex64 ``(S, C, H, W)``."""
    if isinstance(kspace, torch.Tensor):
        kspace = kspace.detach().cpu().numpy()
    a = np.asarray(kspace)
    if not np.iscomplexobj(a):
        if a.shape[-1:] != (2,):
            raise ValueError(f"{name}: kspace must be complex (S, C, H, W) or real (S, C, H, W, 2), got {a.dtype} {a.shape}")
        a = a[..., 0] + 1j * a[..., 1]
    if a.ndim != 4:
        raise ValueError(f"{name}: kspace must be (S, C, H, W) [complex], got shape {a.shape}")
    return a.astype(np.complex64)


# ---------------------------------------------------------------- fastMRI HDF5
def read_fastmri(path: str | Path) -> KspaceVolume:
    """Read a fastMRI HDF5 file (single- or multi-coil). See the module docstring.

    Raises:
        ValueError: missing file, not HDF5, no ``kspace``, wrong dims, NaN/inf, mismatched reference.
    """
    import h5py

    path = Path(path)
    f = _open_h5(path)
    with f:
        if "kspace" not in f:
            raise _bad(path, f"no 'kspace' dataset (a fastMRI file has one); keys: {sorted(f.keys())[:10]}")
        ks = np.asarray(f["kspace"][()])
        if ks.ndim == 3:
            ks = ks[:, None]
        elif ks.ndim != 4:
            raise _bad(path, f"'kspace' must be (slices, H, W) or (slices, coils, H, W), got shape {ks.shape}")
        kspace = _to_tensor(ks, path)
        ref, ref_key = None, None
        for key in ("reconstruction_rss", "reconstruction_esc"):
            if key in f and isinstance(f[key], h5py.Dataset):
                r = np.asarray(f[key][()], dtype=np.float32)
                if r.ndim != 3 or r.shape[0] != ks.shape[0]:
                    raise _bad(path, f"'{key}' must be (slices={ks.shape[0]}, h, w), got shape {r.shape}")
                if not np.isfinite(r).all():
                    raise _bad(path, f"'{key}' has NaN/inf values")
                ref = torch.from_numpy(r)
                ref_key = key
                break
        mask = None
        if "mask" in f:
            m = np.asarray(f["mask"][()]).reshape(-1)
            if m.shape[0] != ks.shape[-1]:
                raise _bad(path, f"'mask' has {m.shape[0]} entries for {ks.shape[-1]} k-space columns")
            mask = _column_mask(m)
        extra: dict = {"reference_key": ref_key}
        for key in ("acquisition", "max", "norm"):  # technical attributes; patient_id is never read
            if key in f.attrs:
                v = f.attrs[key]
                extra[key] = v.decode() if isinstance(v, bytes) else (float(v) if np.isscalar(v) and not isinstance(v, str) else str(v))
        if "ismrmrd_header" in f:
            raw = f["ismrmrd_header"][()]
            extra.update(_header_meta(raw.tobytes() if isinstance(raw, np.ndarray) else raw))
    return KspaceVolume(kspace, ref, mask, _meta("fastmri", kspace, **extra), path)


def write_fastmri(
    path: str | Path,
    kspace: np.ndarray | torch.Tensor,
    *,
    reference: np.ndarray | torch.Tensor | None = None,
    single_coil: bool | None = None,
    acquisition: str = "SIMULATED",
    fov_mm: tuple[float, float, float] = (160.0, 160.0, 3.0),
) -> Path:
    """Write k-space ``(S, C, H, W)`` (complex or ``(..., 2)``) in the fastMRI layout.

    Args:
        path: output ``.h5``.
        kspace: k-space; stored ``(S, H, W)`` when single-coil.
        reference: magnitude ``(S, h, w)`` stored as ``reconstruction_esc`` (single-coil) or
            ``reconstruction_rss`` (multi-coil).
        single_coil: default ``C == 1``.
        acquisition: the ``acquisition`` attribute (a protocol name, e.g. ``CORPD_FBK``).
        fov_mm: field of view written to the ISMRMRD header.
    """
    import h5py

    ks = _as_complex(kspace, "write_fastmri")
    single = ks.shape[1] == 1 if single_coil is None else bool(single_coil)
    if single and ks.shape[1] != 1:
        raise ValueError(f"write_fastmri: single_coil=True needs one coil, got {ks.shape[1]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=ks[:, 0] if single else ks)
        f.create_dataset("ismrmrd_header", data=np.bytes_(_make_header(ks.shape, fov_mm).encode()))
        if reference is not None:
            r = np.asarray(reference.detach().cpu() if isinstance(reference, torch.Tensor) else reference, dtype=np.float32)
            f.create_dataset("reconstruction_esc" if single else "reconstruction_rss", data=r)
            f.attrs["max"] = float(r.max())
        f.attrs["norm"] = float(np.linalg.norm(ks))
        f.attrs["acquisition"] = acquisition
    return path


def _open_h5(path: Path):
    import h5py

    if not path.is_file():
        raise _bad(path, "file not found")
    with open(path, "rb") as fh:
        if fh.read(8) != HDF5_SIGNATURE:
            raise _bad(path, "not an HDF5 file (no HDF5 signature)")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise _bad(path, f"unreadable HDF5 file ({str(e)[:160]})") from None


# ---------------------------------------------------------------- ISMRMRD / MRD
def read_ismrmrd(path: str | Path, *, dataset: str = "dataset") -> KspaceVolume:
    """Read Cartesian 2-D ISMRMRD/MRD raw data into ``(S, C, H, W)`` (``H`` = readout samples).

    Uses the package's ``ismrmrd.File`` container API, which reads all acquisitions in one HDF5
    call (``ismrmrd.Dataset.read_acquisition`` costs ~10 ms per line here: 75 s for 30 x 256 lines).

    Raises:
        ValueError: missing file, not HDF5, no ``dataset`` group with ``data`` and ``xml``, 3-D
            or non-Cartesian encoding, inconsistent readouts or coils, NaN/inf.
    """
    import ismrmrd

    path = Path(path)
    _open_h5(path).close()
    skip = [ismrmrd.ACQ_IS_NOISE_MEASUREMENT, ismrmrd.ACQ_IS_NAVIGATION_DATA, ismrmrd.ACQ_IS_PHASECORR_DATA, ismrmrd.ACQ_IS_DUMMYSCAN_DATA]
    with ismrmrd.File(str(path), "r") as f:
        if dataset not in f:
            raise _bad(path, f"no ISMRMRD group '{dataset}' (groups: {list(f)[:10]})")
        box = f[dataset]
        if not box.has_header() or not box.has_acquisitions():
            raise _bad(path, f"ISMRMRD group '{dataset}' lacks the 'xml' header or the 'data' acquisitions")
        xml = box._contents["xml"][0]  # raw bytes: the container's .header property fails on unknown XML
        meta = _header_meta(xml)
        acqs = box.acquisitions[:]
    if meta.get("encoded_matrix", [1, 1, 1])[2] > 1:
        raise _bad(path, f"3-D encoded acquisition (matrix {meta['encoded_matrix']}); only 2-D Cartesian slices are read")
    acqs = [a for a in acqs if not any(a.is_flag_set(fl) for fl in skip)]
    if not acqs:
        raise _bad(path, "no imaging acquisitions")
    if any(a.traj.size for a in acqs):
        raise _bad(path, "non-Cartesian acquisition (trajectories present); only Cartesian data are read")
    samples = {a.number_of_samples for a in acqs}
    coils = {a.active_channels for a in acqs}
    if len(samples) != 1 or len(coils) != 1:
        raise _bad(path, f"readouts differ in length {sorted(samples)} or coil count {sorted(coils)}")
    if any(a.idx.kspace_encode_step_2 for a in acqs):
        raise _bad(path, "kspace_encode_step_2 > 0 (3-D encoding); only 2-D Cartesian slices are read")
    h, c = samples.pop(), coils.pop()
    w = max(max(a.idx.kspace_encode_step_1 for a in acqs) + 1, meta.get("encoded_matrix", [0, 0])[1])
    s = max(a.idx.slice for a in acqs) + 1
    ks = np.zeros((s, c, h, w), np.complex128)
    count = np.zeros((s, w), np.int64)
    for a in acqs:
        ks[a.idx.slice, :, :, a.idx.kspace_encode_step_1] += a.data
        count[a.idx.slice, a.idx.kspace_encode_step_1] += 1
    ks /= np.maximum(count, 1)[:, None, None, :]  # repeated lines (averages) are averaged
    kspace = _to_tensor(ks.astype(np.complex64), path)
    return KspaceVolume(kspace, None, _column_mask(count.any(axis=0)), _meta("ismrmrd", kspace, **meta), path)


def write_ismrmrd(
    path: str | Path,
    kspace: np.ndarray | torch.Tensor,
    *,
    mask: np.ndarray | torch.Tensor | None = None,
    fov_mm: tuple[float, float, float] = (160.0, 160.0, 3.0),
) -> Path:
    """Write k-space ``(S, C, H, W)`` as Cartesian ISMRMRD acquisitions (one per sampled column).

    Args:
        path: output ``.h5`` (overwritten).
        kspace: complex ``(S, C, H, W)`` or real ``(S, C, H, W, 2)``; H = readout.
        mask: columns to write (``W`` entries, broadcastable ``(..., W, 1)`` accepted); default all.
        fov_mm: field of view in the header.
    """
    import ismrmrd

    ks = _as_complex(kspace, "write_ismrmrd")
    s, c, h, w = ks.shape
    cols = np.ones(w, bool) if mask is None else np.asarray(torch.as_tensor(mask).reshape(-1) > 0)
    if cols.shape[0] != w:
        raise ValueError(f"write_ismrmrd: mask has {cols.shape[0]} columns, k-space {w}")
    written = np.flatnonzero(cols)
    acqs = []
    for sl in range(s):
        for j, e1 in enumerate(written):
            acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(ks[sl, :, :, e1]), center_sample=h // 2)
            acq.idx.kspace_encode_step_1 = int(e1)
            acq.idx.slice = sl
            if j == 0:
                acq.set_flag(ismrmrd.ACQ_FIRST_IN_SLICE)
            if j == len(written) - 1:
                acq.set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
            acqs.append(acq)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ismrmrd.File(str(path), "w") as f:
        box = f["dataset"]
        box.header = ismrmrd.xsd.CreateFromDocument(_make_header(ks.shape, fov_mm))
        box.acquisitions = acqs
    return path


# ---------------------------------------------------------------- BART .cfl/.hdr
def _bart_base(name: str | Path) -> Path:
    p = Path(name)
    return p.with_suffix("") if p.suffix in (".cfl", ".hdr") else p


def read_cfl(name: str | Path) -> np.ndarray:
    """Read a BART ``name.hdr`` / ``name.cfl`` pair as complex64, trailing size-1 axes dropped.

    Raises:
        ValueError: a missing file, a header without ``# Dimensions``, bad sizes, or a ``.cfl``
            whose size does not match the header (truncated or too long).
    """
    base = _bart_base(name)
    hdr, cfl = base.with_suffix(".hdr"), base.with_suffix(".cfl")
    for p in (hdr, cfl):
        if not p.is_file():
            raise _bad(p, "file not found (a BART array is a .hdr/.cfl pair)")
    lines = hdr.read_text(errors="replace").splitlines()
    try:
        i = next(k for k, line in enumerate(lines) if line.strip() == "# Dimensions")
        dims = [int(t) for t in lines[i + 1].split()]
    except (StopIteration, IndexError, ValueError):
        raise _bad(hdr, "not a BART header: expected '# Dimensions' followed by a line of integer sizes") from None
    if not dims or len(dims) > 16 or min(dims) < 1:
        raise _bad(hdr, f"bad BART dimensions {dims} (1-16 positive sizes)")
    n = math.prod(dims)
    size = cfl.stat().st_size
    if size != 8 * n:
        what = "truncated" if size < 8 * n else "longer than its header says"
        raise _bad(cfl, f"{what}: {size} bytes for dims {dims} ({8 * n} bytes of complex64 expected)")
    last = max([k for k, d in enumerate(dims) if d > 1], default=0)
    return np.fromfile(cfl, dtype=np.complex64, count=n).reshape(dims, order="F").reshape(dims[: last + 1], order="F")


def write_cfl(name: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as BART ``name.hdr`` + ``name.cfl`` (complex64, column-major); returns ``name``."""
    a = np.asarray(array)
    if a.ndim == 0 or a.ndim > 16:
        raise ValueError(f"write_cfl: array must have 1-16 axes, got {a.ndim}")
    base = _bart_base(name)
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in a.shape) + " \n")
    a.astype(np.complex64).ravel(order="F").tofile(base.with_suffix(".cfl"))
    return base


def read_bart_kspace(name: str | Path) -> KspaceVolume:
    """Read BART k-space (READ, PHS1, -, COIL, ..., SLICE) as ``(S, C, H, W)``.

    Raises:
        ValueError: as :func:`read_cfl`, an axis other than READ/PHS1/COIL/SLICE larger than 1, NaN/inf.
    """
    base = _bart_base(name)
    a = read_cfl(base)
    dims = list(a.shape) + [1] * (16 - a.ndim)
    extra = [k for k, d in enumerate(dims) if d > 1 and k not in (BART_READ, BART_PHS1, BART_COIL, BART_SLICE)]
    if extra:
        raise _bad(base.with_suffix(".cfl"), f"unsupported BART axes {extra} (sizes {[dims[k] for k in extra]}); k-space is read "
                   "from READ (0), PHS1 (1), COIL (3) and SLICE (13) only (a 3-D PHS2 axis is not supported)")
    a = a.reshape(dims, order="F")
    ks = np.transpose(a[:, :, 0, :, 0, 0, 0, 0, 0, 0, 0, 0, 0, :, 0, 0], (3, 2, 0, 1))  # (H, W, C, S) -> (S, C, H, W)
    kspace = _to_tensor(np.ascontiguousarray(ks), base.with_suffix(".cfl"))
    return KspaceVolume(kspace, None, None, _meta("bart", kspace), base.with_suffix(".cfl"))


def write_bart_kspace(name: str | Path, kspace: np.ndarray | torch.Tensor) -> None:
    """Write k-space ``(S, C, H, W)`` (complex or ``(..., 2)``) with BART's axis order."""
    ks = _as_complex(kspace, "write_bart_kspace")
    s, c, h, w = ks.shape
    out = np.zeros((h, w, 1, c) + (1,) * 9 + (s,), np.complex64)
    out[:, :, 0, :, 0, 0, 0, 0, 0, 0, 0, 0, 0, :] = np.transpose(ks, (2, 3, 1, 0))
    write_cfl(name, out)


# ---------------------------------------------------------------- magnitude images
def read_magnitude(
    path: str | Path, *, num_coils: int = 1, seed: int = 0, phase: bool = True, noise_std: float = 0.0
) -> KspaceVolume:
    """Simulate the acquisition of a NIfTI/DICOM magnitude image or volume.

    The image is loaded by :func:`medrobust.data.load_image` (de-identified), slices are taken
    along its last axis (a 2-D image is one slice), the volume is scaled by
    :func:`~medrobust.reconstruction.simulation.normalize_magnitude` and acquired with
    :func:`~medrobust.reconstruction.simulation.simulate_kspace` (a generator seeded with ``seed``).

    Raises:
        ValueError: unreadable image (``UnusableImageError``), more than one channel, NaN/inf.
    """
    from medrobust.data import load_image  # lazily: keeps this package importable without the data layer

    img = load_image(path)
    arr = np.asarray(img.array, dtype=np.float32)
    if arr.shape[0] != 1:
        raise _bad(path, f"expected a single-channel (grey) magnitude image, got {arr.shape[0]} channels")
    vol = arr[0] if arr.ndim == 4 else arr[0][..., None]  # (H, W, S)
    mag = normalize_magnitude(np.moveaxis(vol, -1, 0))  # (S, H, W)
    gen = torch.Generator().manual_seed(int(seed))
    kspace, _ = simulate_kspace(mag[:, None], num_coils=num_coils, phase=phase, generator=gen, noise_std=noise_std)
    spacing = [float(x) for x in img.spacing]
    meta = _meta(img.meta.get("format", "image"), kspace, simulated=True, seed=int(seed), spacing=spacing)
    return KspaceVolume(kspace, mag, None, meta, Path(path))


# ---------------------------------------------------------------- dispatch
def read_kspace(path: str | Path, **magnitude_kwargs) -> KspaceVolume:
    """Read k-space from any supported file, deciding the format by content.

    ``.cfl``/``.hdr`` (or a BART base name) -> :func:`read_bart_kspace`; HDF5 with ``kspace`` ->
    :func:`read_fastmri`; HDF5 with an ISMRMRD ``dataset`` group -> :func:`read_ismrmrd`; any
    other file -> :func:`read_magnitude` (NIfTI/DICOM; ``magnitude_kwargs`` go there).

    Raises:
        ValueError: the file is missing, unsupported or bad (the message names file and problem).
    """
    import h5py

    path = Path(path)
    if path.suffix in (".cfl", ".hdr") or (not path.exists() and path.with_suffix(".cfl").is_file()):
        return read_bart_kspace(path)
    if not path.exists():
        raise _bad(path, "file not found")
    if path.is_file():
        with open(path, "rb") as fh:
            is_h5 = fh.read(8) == HDF5_SIGNATURE
        if is_h5:
            with _open_h5(path) as f:
                keys = list(f.keys())
                ismrmrd_groups = [k for k in keys if isinstance(f[k], h5py.Group) and "xml" in f[k]]
            if "kspace" in keys:
                return read_fastmri(path)
            if ismrmrd_groups:
                return read_ismrmrd(path, dataset=ismrmrd_groups[0])
            raise _bad(path, f"HDF5 file with neither a fastMRI 'kspace' dataset nor an ISMRMRD group; keys: {sorted(keys)[:10]}")
        if path.suffix.lower() in (".h5", ".hdf5", ".mrd"):
            raise _bad(path, "not an HDF5 file (no HDF5 signature)")
    return read_magnitude(path, **magnitude_kwargs)
