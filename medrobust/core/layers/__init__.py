"""Model-level building blocks that replace layers of an existing network.

- :mod:`.bandlimited`: band-limited FFT convolutions (Dziedzic et al., ICML 2019) and
  :func:`bandlimit_convs`, which swaps a network's ``nn.Conv{1,2,3}d`` for them.
"""

from medrobust.core.layers.bandlimited import (
    BandLimitedConv,
    band_fraction,
    band_indices,
    band_mask,
    bandlimit_convs,
    bandlimited_conv,
    fft_size,
)

__all__ = ["BandLimitedConv", "bandlimit_convs", "bandlimited_conv", "band_indices", "band_mask", "band_fraction",
           "fft_size"]
