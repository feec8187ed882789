"""MRI reconstruction: k-space data layer (FFT, masks, simulated acquisition, readers) and networks.

Complex tensors carry a trailing (real, imaginary) axis of size 2 (MONAI convention); FFTs are
orthonormal and centred (:mod:`medrobust.reconstruction.fft`). Data contract: RECON_API (team notes).

Example:
    >>> import torch
    >>> from medrobust.reconstruction import simulate_kspace, undersampling_mask, zero_filled
    >>> k, _ = simulate_kspace(torch.rand(2, 1, 32, 32), num_coils=4, generator=torch.Generator().manual_seed(0))
    >>> m = undersampling_mask(32, acceleration=4, generator=torch.Generator().manual_seed(0))
    >>> tuple(zero_filled(k, m).shape)
    (2, 1, 32, 32)
"""

from __future__ import annotations

from medrobust.reconstruction.data import (
    PROMISE12_SPACING_MM,
    KspaceSliceDataset,
    MagnitudeVolume,
    load_magnitude_folder,
    load_promise12,
    prepare_volume,
    read_split,
    split_volumes,
)
from medrobust.reconstruction.fft import fft2c, ifft2c
from medrobust.reconstruction.masks import FASTMRI_CENTER_FRACTIONS, ColumnMask, center_columns, undersampling_mask
from medrobust.reconstruction.io import (
    KspaceVolume,
    read_bart_kspace,
    read_cfl,
    read_fastmri,
    read_ismrmrd,
    read_kspace,
    read_magnitude,
    write_bart_kspace,
    write_cfl,
    write_fastmri,
    write_ismrmrd,
)
from medrobust.reconstruction.simulation import (
    coil_sensitivities,
    normalize_magnitude,
    rss,
    simulate_kspace,
    smooth_phase,
    zero_filled,
)

__all__ = [
    # fft
    "fft2c",
    "ifft2c",
    # masks
    "FASTMRI_CENTER_FRACTIONS",
    "ColumnMask",
    "center_columns",
    "undersampling_mask",
    # simulation
    "coil_sensitivities",
    "normalize_magnitude",
    "rss",
    "simulate_kspace",
    "smooth_phase",
    "zero_filled",
    # io
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
    # data
    "PROMISE12_SPACING_MM",
    "MagnitudeVolume",
    "prepare_volume",
    "load_promise12",
    "load_magnitude_folder",
    "KspaceSliceDataset",
    "split_volumes",
    "read_split",
]
