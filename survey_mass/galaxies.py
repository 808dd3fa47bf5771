"""The 10,000 real SDSS galaxies as colours: what the mock's populations and the richness baseline share.

A leaf module (numpy, the package's data and :mod:`~survey_mass.photometry`), so that the richness baseline can
read the real red sequence without importing the mock.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .photometry import BANDS


@dataclass(frozen=True)
class RealGalaxies:
    z: np.ndarray
    colours: np.ndarray  # (N, 5): m_band - m_r
    red: np.ndarray  # bool


@lru_cache(maxsize=1)
def real_galaxies() -> RealGalaxies:
    """The real SDSS galaxies as colours relative to r, with a red-sequence flag.

    Red means redder in g-r (below z = 0.35) or r-i (above) than the median of real galaxies within dz = 0.02.
    """
    from .candidates import load_sdss_galaxies

    df = load_sdss_galaxies()
    flux = np.stack([df[f"modelflux_{b}"].to_numpy(np.float64) for b in BANDS], axis=1)
    ok = (flux[:, 1:] > 0).all(axis=1)
    flux, z = flux[ok], df["z"].to_numpy(np.float64)[ok]
    # u can be non-positive for faint red galaxies: floor it at 1% of g
    flux[:, 0] = np.maximum(flux[:, 0], 0.01 * flux[:, 1])
    mags = 22.5 - 2.5 * np.log10(flux)
    colours = mags - mags[:, [2]]
    gr = mags[:, 1] - mags[:, 2]
    ri = mags[:, 2] - mags[:, 3]
    red = np.zeros(z.size, dtype=bool)
    order = np.argsort(z)
    zs = z[order]
    for i in order:
        lo, hi = np.searchsorted(zs, [z[i] - 0.02, z[i] + 0.02])
        nb = order[lo:hi]
        c = gr if z[i] < 0.35 else ri
        red[i] = c[i] > np.median(c[nb])
    return RealGalaxies(z=z, colours=colours, red=red)
