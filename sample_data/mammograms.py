"""Seeded synthetic mammograms written as real DICOM MG files, with ROI masks and labels.

Each case is one view (CC or MLO, left or right breast) of a compressed breast: a breast-shaped
region with a thickness fall-off at the periphery, a skin line, fibroglandular tissue from
power-law (1/f^beta, beta ~ 3) noise, a pectoral muscle triangle on MLO views and one lesion:

===============  =========================================  ==============================================
subgroup         benign (label 0)                           malignant (label 1)
===============  =========================================  ==============================================
soft_tissue      round/oval circumscribed mass, sharp edge, irregular lobulated mass, ill-defined edge,
                 radius 3.5-8 mm, contrast 0.12-0.24        spicules; radius 5-10 mm, contrast 0.22-0.34
calcification    2-5 coarse round calcifications (0.35-0.8  40-80 fine pleomorphic calcifications
                 mm radius), scattered, moderate density    (0.12-0.35 mm), clustered (2.5-4.5 mm), dense
===============  =========================================  ==============================================

Lesions are specified in millimetres, so they keep their physical size at any matrix size;
calcifications are rendered with partial-volume (4x supersampled) footprints, so the fine ones
are one to three pixels wide at the default 0.2275 mm pixels and vanish under strong Gaussian
low-pass filtering, while masses survive it.

DICOM encodings vary across cases (as across vendors): BitsStored 12 or 14 in 16-bit storage,
MONOCHROME1 (stored inverted) or MONOCHROME2, three Rescale Slope/Intercept pairs, a
Window Center/Width, ImagerPixelSpacing (and PixelSpacing for some), ViewPosition,
ImageLaterality, and fake identifiers (``SYNTH^0001``) so de-identification is exercised. A few
files are written without extension (common in the wild).

Layout written to ``out_dir``::

    images/mammo_0000.dcm ...      DICOM MG (some without .dcm)
    masks/mammo_0000_roi.nii.gz    lesion ROI (mass incl. spicules, or calcification cluster region)
    masks/mammo_0000_calc.nii.gz   the calcification specks (empty for masses)
    labels.csv                     case_id,label,subgroup (1 = malignant)
    lesions.csv                    per-case lesion geometry and DICOM encoding

Masks are 2-D NIfTI in the same (rows, columns) order as the DICOM pixels, so
``medrobust.data.load_image`` returns aligned ``(1, H, W)`` arrays for both.

Example:
    >>> from pathlib import Path
    >>> out = generate_mammograms(Path("/tmp/mammo"), n=8, seed=0, size=(256, 208))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["generate_mammograms", "generate", "render_case", "write_dicom", "Case", "CELLS", "DEFAULT_SIZE", "FULL_SIZE"]

logger = logging.getLogger(__name__)

DEFAULT_SIZE = (1024, 832)
FULL_SIZE = (3328, 2560)
FULL_PIXEL_MM = 0.07  # detector pixel of the full-size image; smaller matrices cover the same field
CELLS = ((0, "soft_tissue"), (1, "soft_tissue"), (0, "calcification"), (1, "calcification"))
_ENCODINGS = ((1.0, 0.0), (2.0, -100.0), (0.5, 50.0))  # (RescaleSlope, RescaleIntercept)


@dataclass
class Case:
    """One rendered case: ``image`` in [0, 1] (display brightness, higher = denser), masks (H, W)."""

    case_id: str
    label: int
    subgroup: str
    view: str
    laterality: str
    image: np.ndarray
    roi: np.ndarray
    calc: np.ndarray
    pixel_mm: float
    info: dict


def _power_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Zero-mean, unit-std noise with power spectrum 1/f^beta (FFT shaping of white noise)."""
    from scipy import fft  # single-precision transforms: twice as fast as numpy.fft here

    h, w = shape
    spec = fft.rfft2(rng.standard_normal(shape, dtype=np.float32))
    fy = fft.fftfreq(h).astype(np.float32)[:, None]
    fx = fft.rfftfreq(w).astype(np.float32)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0 / max(h, w)
    spec *= f ** (-beta / 2)
    spec[0, 0] = 0
    out = fft.irfft2(spec, s=shape).astype(np.float32, copy=False)
    return out / (out.std() + 1e-12)


def _breast(rng: np.random.Generator, shape: tuple[int, int], view: str) -> tuple[np.ndarray, ...]:
    """Normalised radius rho (< 1 inside the breast), pectoral-muscle weight, and (u, v) grids.

    The chest wall is column 0 (the caller mirrors right breasts).
    """
    h, w = shape
    y = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    a = rng.uniform(0.72, 0.92)  # depth from the chest wall, fraction of the width
    if view == "CC":
        b, y0 = rng.uniform(0.72, 0.9), rng.uniform(-0.08, 0.08)
    else:  # MLO: taller, centred lower, runs off the top edge into the axilla
        b, y0 = rng.uniform(1.0, 1.2), rng.uniform(0.05, 0.2)
    u, v = x / a, (y - y0) / b
    theta = np.arctan2(v, u)
    wobble = sum(rng.uniform(-0.03, 0.03) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
    rho = np.sqrt(u * u + v * v) / (1.0 + wobble)
    pect = np.zeros(shape, np.float32)
    if view == "MLO":  # triangle at the top of the chest wall, soft edge
        pw, ph = rng.uniform(0.22, 0.35), rng.uniform(0.45, 0.7)
        top = (y + 1.0) / 2.0  # 0 at the top row
        edge = pw * (1.0 - top / ph) - x
        pect = np.clip(edge / 0.01 + 0.5, 0.0, 1.0) * (rho < 1)
    return rho.astype(np.float32), pect, u, v


def _paste(canvas: np.ndarray, patch: np.ndarray, r0: int, c0: int) -> None:
    """Add ``patch`` into ``canvas`` with its top-left at (r0, c0), clipped to the canvas."""
    h, w = canvas.shape
    pr0, pc0 = max(0, -r0), max(0, -c0)
    r1, c1 = min(h, r0 + patch.shape[0]), min(w, c0 + patch.shape[1])
    if r1 <= max(r0, 0) or c1 <= max(c0, 0):
        return
    canvas[max(r0, 0) : r1, max(c0, 0) : c1] += patch[pr0 : pr0 + r1 - max(r0, 0), pc0 : pc0 + c1 - max(c0, 0)]


def _mass(rng: np.random.Generator, malignant: bool, px: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Density patch and ROI patch of a mass (radius and spicules in mm, converted with ``px``)."""
    radius = (rng.uniform(5.0, 10.0) if malignant else rng.uniform(3.5, 8.0)) / px
    reach = radius * (3.2 if malignant else 1.3) + 4
    half = int(np.ceil(reach))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    theta = np.arctan2(yy, xx)
    if malignant:  # lobulated, irregular outline
        bumps = sum(rng.uniform(0.06, 0.16) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in range(2, 8))
        outline = radius * (1.0 + bumps)
        edge = rng.uniform(0.5, 1.0) / px  # ill-defined margin
    else:  # circumscribed ellipse
        ratio, phi = rng.uniform(0.65, 1.0), rng.uniform(0, np.pi)
        c, s = np.cos(theta - phi), np.sin(theta - phi)
        outline = radius * ratio / np.sqrt((ratio * c) ** 2 + s**2)
        edge = rng.uniform(0.08, 0.15) / px  # sharp margin
    r = np.hypot(yy, xx)
    inside = np.clip((outline - r) / edge + 0.5, 0.0, 1.0)
    dome = np.sqrt(np.clip(1.0 - (r / (outline + edge)) ** 2, 0.0, 1.0))  # a lump's thickness profile
    dens = inside * (0.35 + 0.65 * dome)
    n_spic = 0
    if malignant:
        n_spic = int(rng.integers(8, 17))
        spic = np.zeros_like(dens)
        for ang in rng.uniform(0, 2 * np.pi, n_spic):
            length = radius * rng.uniform(1.5, 3.2)
            width = rng.uniform(0.5, 1.0) / px  # half-width at the base
            dx, dy = np.cos(ang), np.sin(ang)
            t = np.clip(xx * dx + yy * dy, 0.0, length)  # distance along the spicule
            d = np.hypot(xx - t * dx, yy - t * dy)
            taper = width * (1.0 - t / length) + 0.3
            spic = np.maximum(spic, np.clip(taper - d, 0.0, 1.0) * (1.0 - 0.5 * t / length))
        dens = np.maximum(dens, 0.8 * spic)
    roi = dens > 0.15
    return dens.astype(np.float32), roi, {"radius_mm": round(radius * px, 3), "n_spicules": n_spic, "n_calcs": 0, "spread_mm": 0.0}


def _speck(rng: np.random.Generator, a: float, b: float, ring: bool) -> np.ndarray:
    """Partial-volume footprint (0..1) of an ellipse with semi-axes a, b pixels (4x supersampled)."""
    ss = 4
    half = int(np.ceil(max(a, b))) + 1
    g = (np.arange(-half * ss, (half + 1) * ss, dtype=np.float32) + 0.5) / ss - 0.5
    yy, xx = np.meshgrid(g, g, indexing="ij")
    phi = rng.uniform(0, np.pi)
    c, s = np.cos(phi), np.sin(phi)
    q = ((xx * c + yy * s) / a) ** 2 + ((-xx * s + yy * c) / b) ** 2
    fill = (q <= 1.0).astype(np.float32)
    if ring:  # "eggshell" benign calcification: lucent centre
        fill *= np.where(q < 0.35, 0.35, 1.0)
    n = 2 * half + 1
    fp = fill[: n * ss, : n * ss].reshape(n, ss, n, ss).mean(axis=(1, 3))
    area = np.pi * a * b
    if not ring and fp.sum() < 0.9 * area:  # sub-pixel speck missed by the subsamples: keep its integral
        if fp.sum() > 0:
            fp *= area / fp.sum()
        else:
            fp[half, half] = area
    return np.minimum(fp, 1.0)


def _cluster(rng: np.random.Generator, malignant: bool, px: float) -> tuple[list, dict]:
    """Calcification offsets (pixels), footprints and amplitudes of one cluster."""
    if malignant:
        n = int(rng.integers(40, 81))
        spread = rng.uniform(2.5, 4.5) / px
        if rng.random() < 0.5:  # linear/branching (ductal) arrangement
            angles = rng.uniform(0, 2 * np.pi, int(rng.integers(1, 4)))
            seg = rng.integers(0, len(angles), n)
            t = rng.uniform(-1.0, 1.0, n) * spread * 1.6
            offs = np.stack([t * np.sin(angles[seg]), t * np.cos(angles[seg])], 1) + rng.normal(0, spread * 0.12, (n, 2))
        else:
            offs = rng.normal(0, spread * 0.55, (n, 2))
        specs = []
        for o in offs:
            a = rng.uniform(0.12, 0.35) / px
            specs.append((o, _speck(rng, a, a / rng.uniform(1.0, 3.0), False), rng.uniform(0.8, 1.0)))
    else:
        n = int(rng.integers(2, 6))
        spread = rng.uniform(5.0, 9.0) / px
        offs = rng.uniform(-1.0, 1.0, (n, 2)) * spread
        specs = []
        for o in offs:
            a = rng.uniform(0.35, 0.8) / px
            specs.append((o, _speck(rng, a, a * rng.uniform(0.8, 1.0), rng.random() < 0.3), rng.uniform(0.25, 0.45)))
    return specs, {"radius_mm": 0.0, "n_spicules": 0, "n_calcs": n, "spread_mm": round(spread * px, 3)}


def _lesion_centre(rng: np.random.Generator, rho: np.ndarray, pect: np.ndarray, half: int) -> tuple[int, int]:
    """A random pixel well inside the breast, outside the pectoral muscle, ``half`` px from the chest wall."""
    margin = half / min(rho.shape)
    ok = (rho < 0.72 - margin) & (pect < 0.01) & (rho > 0.15)
    ok[:, : half + 8] = False  # the chest wall is column 0
    rows, cols = np.nonzero(ok[::4, ::4])
    if len(rows) == 0:
        raise ValueError("mammogram too small to place a lesion; use a larger size")
    k = int(rng.integers(len(rows)))
    return int(rows[k] * 4), int(cols[k] * 4)


def render_case(
    rng: np.random.Generator, case_id: str, label: int, subgroup: str, size: tuple[int, int] = DEFAULT_SIZE
) -> Case:
    """Render one synthetic mammogram and its masks.

    Args:
        rng: the case's generator (all randomness comes from it).
        case_id, label, subgroup: label 1 = malignant; subgroup "soft_tissue" or "calcification".
        size: (H, W) pixels; the pixel size is chosen so the field of view equals that of the
            3328 x 2560, 0.07 mm full-field image.

    Returns:
        :class:`Case` with ``image`` float32 (H, W) in [0, 1] and boolean (H, W) masks.
    """
    h, w = int(size[0]), int(size[1])
    if h < 128 or w < 96:
        raise ValueError(f"size must be at least (128, 96), got {size}")
    if subgroup not in ("soft_tissue", "calcification") or label not in (0, 1):
        raise ValueError(f"label must be 0/1 and subgroup soft_tissue/calcification, got {label}, {subgroup!r}")
    px = FULL_PIXEL_MM * FULL_SIZE[0] / h
    view = str(rng.choice(["CC", "MLO"]))
    lat = str(rng.choice(["L", "R"]))
    rho, pect, u, v = _breast(rng, (h, w), view)
    inside = rho < 1.0
    thick = np.sqrt(np.clip((1.0 - rho) / 0.18, 0.0, 1.0))  # compressed-breast thickness fall-off
    density = rng.uniform(0.25, 0.75)  # fraction of fibroglandular tissue (breast density)
    coarse, fine = _power_noise(rng, (h, w), 3.0), _power_noise(rng, (h, w), 1.8)
    centre = np.exp(-(((u - 0.4) / 0.45) ** 2 + (v / 0.65) ** 2))  # glands behind the nipple
    gland = 1.0 / (1.0 + np.exp(-3.0 * (coarse + 1.6 * centre - 2.2 * (0.75 - density))))
    tissue = thick * (0.30 + 0.32 * gland + 0.035 * fine * (0.4 + gland))
    edge_px = (1.0 - rho) * 0.8 * w  # approximate distance to the skin surface in pixels
    skin = np.exp(-((edge_px / (1.5 / px)) ** 2)) * inside  # ~1.5 mm skin line
    tissue += 0.12 * skin + pect * (0.30 + 0.03 * fine)
    image = np.where(inside, tissue, 0.0).astype(np.float32)

    roi = np.zeros((h, w), np.float32)
    calc = np.zeros((h, w), np.float32)
    malignant = label == 1
    if subgroup == "soft_tissue":
        dens, roi_patch, info = _mass(rng, malignant, px)
        half = dens.shape[0] // 2
        r, c = _lesion_centre(rng, rho, pect, half)
        # malignant masses tend to be larger and denser (BI-RADS "high density"); the ranges overlap
        contrast = rng.uniform(0.22, 0.34) if malignant else rng.uniform(0.12, 0.24)
        _paste(image, contrast * dens, r - half, c - half)
        _paste(roi, roi_patch.astype(np.float32), r - half, c - half)
    else:
        specs, info = _cluster(rng, malignant, px)
        r, c = _lesion_centre(rng, rho, pect, int(info["spread_mm"] / px * 1.5))
        for off, patch, amp in specs:
            pr, pc = int(round(r + off[0])) - patch.shape[0] // 2, int(round(c + off[1])) - patch.shape[1] // 2
            _paste(image, amp * patch, pr, pc)
            _paste(calc, (patch >= 0.25 * patch.max()).astype(np.float32), pr, pc)  # the speck's own pixels
        calc_mask = calc > 0
        # ROI: the cluster region (calcs dilated by 1.5 mm, holes closed)
        grow = max(1, int(round(1.5 / px)))
        rows, cols = np.nonzero(calc_mask)
        pad = 3 * grow + 2
        r0, c0 = max(rows.min() - pad, 0), max(cols.min() - pad, 0)
        box = (slice(r0, rows.max() + pad + 1), slice(c0, cols.max() + pad + 1))  # work on the cluster's box only
        grown = ndimage.binary_dilation(calc_mask[box], iterations=grow)
        roi[box] = ndimage.binary_closing(np.pad(grown, grow), iterations=grow)[grow:-grow, grow:-grow]
    noise = rng.standard_normal((h, w), dtype=np.float32) * (0.006 + 0.01 * np.sqrt(np.clip(image, 0, None)))
    image = np.clip(0.02 + image + noise, 0.0, 1.0)
    roi_mask, calc_mask = roi > 0.5, calc > 0
    if lat == "R":  # right breasts: chest wall on the right edge
        image, roi_mask, calc_mask = image[:, ::-1], roi_mask[:, ::-1], calc_mask[:, ::-1]
        c = w - 1 - c
    info.update(view=view, laterality=lat, center_row=r, center_col=c, density=round(float(density), 3))
    return Case(case_id, label, subgroup, view, lat, np.ascontiguousarray(image, np.float32),
                np.ascontiguousarray(roi_mask), np.ascontiguousarray(calc_mask), px, info)


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])  # deterministic: reruns are byte-identical


def write_dicom(case: Case, path: Path, rng: np.random.Generator, index: int, seed: int) -> dict:
    """Write ``case.image`` as a DICOM MG For Presentation file; returns the encoding used."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation as MG_SOP
    from pydicom.uid import ExplicitVRLittleEndian

    bits = int(rng.choice([12, 14]))
    mono1 = bool(rng.random() < 0.4)
    slope, icpt = _ENCODINGS[int(rng.integers(len(_ENCODINGS)))]
    top = 2**bits - 1
    p = np.clip(case.image, 0.0, 1.0)
    stored = np.round((1.0 - p if mono1 else p) * top).astype(np.uint16)
    modality_at = lambda q: icpt + slope * q * top  # noqa: E731  brightness -> modality value (MONOCHROME2 sense)
    sop_uid = _uid("mammo", seed, index, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG_SOP
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MG_SOP, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid("mammo", seed, index, "study"), _uid("mammo", seed, index, "series")
    # fake identifiers, so the de-identification path is exercised
    ds.PatientName = f"SYNTH^{index + 1:04d}"
    ds.PatientID = f"SYNTH{index + 1:04d}"
    ds.PatientBirthDate = "19700101"
    ds.AccessionNumber = f"SYNACC{index + 1:04d}"
    ds.InstitutionName = "Synthetic Imaging Institute"
    ds.StudyDate = ds.SeriesDate = "20200101"
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.Manufacturer = "medrobust synthetic"
    ds.BodyPartExamined = "BREAST"
    ds.ViewPosition = case.view
    ds.ImageLaterality = case.laterality
    ds.Rows, ds.Columns = case.image.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.PresentationLUTShape = "INVERSE" if mono1 else "IDENTITY"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", f"{icpt:g}", "US"
    lo, hi = modality_at(0.12), modality_at(0.985)
    if mono1:  # stored values are inverted, so is the window in modality units
        lo, hi = modality_at(1 - 0.985), modality_at(1 - 0.12)
    ds.WindowCenter, ds.WindowWidth = f"{(lo + hi) / 2:.1f}", f"{hi - lo:.1f}"
    ds.VOILUTFunction = "LINEAR"
    spacing = [f"{case.pixel_mm:.4f}", f"{case.pixel_mm:.4f}"]
    ds.ImagerPixelSpacing = spacing
    if index % 2 == 0:
        ds.PixelSpacing = spacing
    ds.EstimatedRadiographicMagnificationFactor = "1.0"
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return {"bits_stored": bits, "photometric": ds.PhotometricInterpretation, "rescale_slope": slope, "rescale_intercept": icpt}


def _write_mask(mask: np.ndarray, path: Path, px: float) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(mask.astype(np.uint8), np.diag([px, px, 1.0, 1.0]))
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def generate_mammograms(
    out_dir: str | Path,
    *,
    n: int = 48,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    full_size: bool = False,
) -> Path:
    """Write ``n`` synthetic mammogram cases (balanced label x subgroup) into ``out_dir``.

    Args:
        out_dir: output folder (created); see the module docstring for the layout.
        n: number of cases (>= 4; the four label/subgroup cells differ in size by at most one).
        seed: all randomness derives from it; the same seed gives byte-identical files.
        size: (H, W) of each image.
        full_size: use the full-field 3328 x 2560 matrix (0.07 mm pixels) instead of ``size``.

    Returns:
        ``out_dir`` as a Path.

    Example:
        >>> generate_mammograms("/tmp/mammo", n=4, size=(256, 208))  # doctest: +SKIP
        PosixPath('/tmp/mammo')
    """
    if n < 4:
        raise ValueError(f"n must be >= 4 (one case per label/subgroup cell), got {n}")
    size = FULL_SIZE if full_size else (int(size[0]), int(size[1]))
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    root = np.random.default_rng(seed)
    cells = [CELLS[i % 4] for i in range(n)]
    cells = [cells[i] for i in root.permutation(n)]  # case order does not reveal the class
    children = np.random.SeedSequence(seed).spawn(n)
    rows, lesion_rows = [], []
    try:
        from tqdm import tqdm

        iterator = tqdm(range(n), desc="mammograms", unit="case", leave=False, disable=n < 8)
    except ImportError:  # tqdm is a dependency; this only guards a stripped install
        iterator = range(n)
    for i in iterator:
        rng = np.random.default_rng(children[i])
        label, subgroup = cells[i]
        case_id = f"mammo_{i:04d}"
        case = render_case(rng, case_id, label, subgroup, size)
        name = case_id if i % 6 == 5 else f"{case_id}.dcm"  # some files without extension, as in the wild
        enc = write_dicom(case, out / "images" / name, rng, i, seed)
        _write_mask(case.roi, out / "masks" / f"{case_id}_roi.nii.gz", case.pixel_mm)
        _write_mask(case.calc, out / "masks" / f"{case_id}_calc.nii.gz", case.pixel_mm)
        rows.append((case_id, label, subgroup))
        lesion_rows.append({"case_id": case_id, "label": label, "subgroup": subgroup, "file": f"images/{name}",
                            "roi_mask": f"masks/{case_id}_roi.nii.gz", "calc_mask": f"masks/{case_id}_calc.nii.gz",
                            "roi_pixels": int(case.roi.sum()), "calc_pixels": int(case.calc.sum()),
                            "pixel_mm": round(case.pixel_mm, 5), **case.info, **enc})
    with open(out / "labels.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["case_id", "label", "subgroup"])
        wr.writerows(rows)
    with open(out / "lesions.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(lesion_rows[0]))
        wr.writeheader()
        wr.writerows(lesion_rows)
    logger.info("wrote %d synthetic mammograms (%dx%d) to %s", n, size[0], size[1], out)
    return out


def generate(out_dir: str | Path, *, n: int = 48, seed: int = 0) -> Path:
    """The ``sample_data.generate`` entry point: :func:`generate_mammograms` at the default size."""
    return generate_mammograms(out_dir, n=n, seed=seed)
