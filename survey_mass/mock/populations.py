"""Galaxy and star populations of the mock, sampled from the 10,000 real SDSS galaxies.

Colours
    Every galaxy takes the ugriz colours of a real SDSS galaxy (model fluxes, not extinction-corrected, as in
    the frames). Cluster members take the colours of a real *red* galaxy at the cluster's redshift: red means
    redder in g-r (below z = 0.35) or r-i (above) than the median of real galaxies within dz = 0.02. The
    real sample's own k-corrections and passive evolution thus set the red sequence at each z; a 0.04 mag
    scatter is added per colour.
Fainter than the spectroscopic limit
    The real galaxies stop near r = 17.8 (main sample) and i ~ 19.9 (LRGs). Field galaxies fainter than that
    keep the colour of a randomly chosen real galaxy, with r from galaxy number counts
    dN/dm = 1000 * 10^(0.45 (r - 20)) deg^-2 mag^-1 (approximating Yasuda et al. 2001) down to r = 23.5.
    Faint galaxies in reality are bluer and at higher z than the spectroscopic sample; the mock does not model
    that, which makes its faint field a little too red.
Sizes
    Field galaxies: log10 r_e["] = 0.3 - 0.12 (r - 20) +- 0.15; red ones are de Vaucouleurs, blue ones
    exponential. Members: r_e = 3 kpc (L/L*)^0.5, de Vaucouleurs. BCG: r_e = 12 kpc (L/L_ref)^0.7.
Stars
    Point sources on an approximate SDSS stellar locus (Covey et al. 2007), r in [14, 23.5] with
    dN/dm ∝ 10^(0.12 r), 2,000 (sin|b|)^-1 deg^-2 in all at |b| > 20 deg.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..photometry import BANDS

#: (g-r, u-g, r-i, i-z) along an approximate SDSS stellar locus (after Covey et al. 2007).
STELLAR_LOCUS = np.array(
    [
        [0.20, 0.95, 0.05, 0.00],
        [0.40, 1.15, 0.13, 0.04],
        [0.60, 1.60, 0.22, 0.10],
        [0.90, 2.05, 0.36, 0.19],
        [1.20, 2.50, 0.70, 0.35],
        [1.45, 2.60, 1.40, 0.70],
    ]
)
FIELD_R_RANGE = (14.0, 23.5)


@dataclass(frozen=True)
class RealGalaxies:
    z: np.ndarray
    colours: np.ndarray  # (N, 5): m_band - m_r
    red: np.ndarray  # bool


@lru_cache(maxsize=1)
def real_galaxies() -> RealGalaxies:
    """The real SDSS galaxies as colours relative to r, with a red-sequence flag."""
    from ..candidates import load_sdss_galaxies

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


def red_sequence_colours(z: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 5) colours m_band - m_r of red galaxies at redshift z, from the real sample plus 0.04 mag scatter."""
    rg = real_galaxies()
    idx = np.array([], dtype=int)
    for dz in (0.02, 0.04, 0.08, 0.2):
        idx = np.flatnonzero(rg.red & (np.abs(rg.z - z) < dz))
        if idx.size >= 8:
            break
    if idx.size == 0:
        idx = np.flatnonzero(rg.red)
    pick = rng.choice(idx, size=n)
    return rg.colours[pick] + 0.04 * rng.standard_normal((n, 5)) * np.array([1, 1, 0, 1, 1])


def field_galaxies(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mags (n, 5), r_e arcsec, sersic n) of field galaxies."""
    lo, hi = FIELD_R_RANGE
    slope = 0.45 * np.log(10)
    u = rng.random(n)
    r = np.log(np.exp(slope * lo) + u * (np.exp(slope * hi) - np.exp(slope * lo))) / slope
    rg = real_galaxies()
    pick = rng.integers(0, rg.z.size, n)
    mags = r[:, None] + rg.colours[pick]
    re = 10 ** (0.3 - 0.12 * (r - 20.0) + 0.15 * rng.standard_normal(n))
    sersic = np.where(rg.red[pick], 4, 1)
    return mags, re, sersic


def field_count_per_deg2() -> float:
    lo, hi = FIELD_R_RANGE
    a = 0.45 * np.log(10)
    return float(1000.0 / a * (np.exp(a * (hi - 20)) - np.exp(a * (lo - 20))))


def star_count_per_deg2(gal_b_deg: float) -> float:
    return 2000.0 / max(np.sin(np.radians(max(abs(gal_b_deg), 20.0))), 0.2)


def stars(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 5) magnitudes of stars on the stellar locus."""
    lo, hi = FIELD_R_RANGE
    a = 0.12 * np.log(10)
    u = rng.random(n)
    r = np.log(np.exp(a * lo) + u * (np.exp(a * hi) - np.exp(a * lo))) / a
    gr = np.where(rng.random(n) < 0.5, rng.uniform(0.25, 0.6, n), rng.uniform(0.6, 1.45, n))
    ug = np.interp(gr, STELLAR_LOCUS[:, 0], STELLAR_LOCUS[:, 1])
    ri = np.interp(gr, STELLAR_LOCUS[:, 0], STELLAR_LOCUS[:, 2])
    iz = np.interp(gr, STELLAR_LOCUS[:, 0], STELLAR_LOCUS[:, 3])
    g = r + gr
    return np.stack([g + ug, g, r, r - ri, r - ri - iz], axis=1)
