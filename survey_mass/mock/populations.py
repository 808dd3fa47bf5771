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

These are the defaults; the numbers are fields of :class:`~survey_mass.mock.physics.MockPhysics` (``members``,
``field``, ``stars``), which every function here takes as ``ph``.
"""

from __future__ import annotations

import numpy as np

from ..galaxies import RealGalaxies, real_galaxies  # noqa: F401  (re-exported: the mock reads them here)
from .physics import DEFAULT_PHYSICS, MockPhysics

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


def red_sequence_colours(
    z: float, n: int, rng: np.random.Generator, ph: MockPhysics = DEFAULT_PHYSICS
) -> np.ndarray:
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
    scatter = ph.members.colour_scatter_mag
    return rg.colours[pick] + scatter * rng.standard_normal((n, 5)) * np.array([1, 1, 0, 1, 1])


def field_galaxies(
    n: int, rng: np.random.Generator, ph: MockPhysics = DEFAULT_PHYSICS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mags (n, 5), r_e arcsec, sersic n) of field galaxies."""
    fg = ph.field
    lo, hi = fg.r_range
    slope = fg.count_slope * np.log(10)
    u = rng.random(n)
    r = np.log(np.exp(slope * lo) + u * (np.exp(slope * hi) - np.exp(slope * lo))) / slope
    rg = real_galaxies()
    pick = rng.integers(0, rg.z.size, n)
    mags = r[:, None] + rg.colours[pick]
    re = 10 ** (
        fg.log10_re_at_r20 + fg.log10_re_slope * (r - 20.0) + fg.log10_re_scatter * rng.standard_normal(n)
    )
    sersic = np.where(rg.red[pick], 4, 1)
    return mags, re, sersic


def field_count_per_deg2(ph: MockPhysics = DEFAULT_PHYSICS) -> float:
    fg = ph.field
    lo, hi = fg.r_range
    a = fg.count_slope * np.log(10)
    return float(fg.counts_at_r20 / a * (np.exp(a * (hi - 20)) - np.exp(a * (lo - 20))))


def star_count_per_deg2(gal_b_deg: float, ph: MockPhysics = DEFAULT_PHYSICS) -> float:
    st = ph.stars
    return st.per_deg2 / max(np.sin(np.radians(max(abs(gal_b_deg), st.min_abs_b_deg))), 0.2)


def stars(n: int, rng: np.random.Generator, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    """(n, 5) magnitudes of stars on the stellar locus."""
    lo, hi = ph.stars.r_range
    a = ph.stars.count_slope * np.log(10)
    u = rng.random(n)
    r = np.log(np.exp(a * lo) + u * (np.exp(a * hi) - np.exp(a * lo))) / a
    gr = np.where(rng.random(n) < 0.5, rng.uniform(0.25, 0.6, n), rng.uniform(0.6, 1.45, n))
    ug = np.interp(gr, STELLAR_LOCUS[:, 0], STELLAR_LOCUS[:, 1])
    ri = np.interp(gr, STELLAR_LOCUS[:, 0], STELLAR_LOCUS[:, 2])
    iz = np.interp(gr, STELLAR_LOCUS[:, 0], STELLAR_LOCUS[:, 3])
    g = r + gr
    return np.stack([g + ug, g, r, r - ri, r - ri - iz], axis=1)
