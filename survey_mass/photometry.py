"""SDSS photometric conventions.

Corrected SDSS frames are in nanomaggies: ``m = 22.5 - 2.5 log10(f)``. SDSS magnitudes are formally asinh
magnitudes (Lupton et al. 1999); for the sources we render (well above the softening flux) the two agree and we
use the Pogson form, which round-trips exactly.
"""

from __future__ import annotations

import numpy as np

BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z")
ZEROPOINT_NMGY = 22.5

#: Native SDSS pixel scale in arcsec.
SDSS_PIXEL_SCALE = 0.396
#: Size of an SDSS corrected frame in pixels (columns, rows).
SDSS_FRAME_SHAPE = (2048, 1489)
#: Exposure time per band in seconds.
SDSS_EXPOSURE_S = 53.9
#: 95% completeness magnitudes for point sources (SDSS DR7/DR8 imaging papers).
DEPTH_95 = {"u": 22.0, "g": 22.2, "r": 22.2, "i": 21.3, "z": 20.5}
#: Typical PSF FWHM in arcsec per band; r is 1.3-1.5 arcsec in SDSS, bluer bands a little worse.
PSF_FWHM = {"u": 1.55, "g": 1.48, "r": 1.40, "i": 1.33, "z": 1.33}


def mag_to_nmgy(mag: np.ndarray | float) -> np.ndarray:
    """Convert AB magnitudes to nanomaggies.

    Examples
    --------
    >>> float(mag_to_nmgy(22.5))
    1.0
    """
    return np.power(10.0, -0.4 * (np.asarray(mag, dtype=np.float64) - ZEROPOINT_NMGY))


def nmgy_to_mag(flux: np.ndarray | float) -> np.ndarray:
    """Convert nanomaggies to AB magnitudes (NaN for non-positive flux).

    Examples
    --------
    >>> round(float(nmgy_to_mag(100.0)), 6)
    17.5
    """
    f = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, ZEROPOINT_NMGY - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)
