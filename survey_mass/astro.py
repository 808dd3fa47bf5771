"""Shared astronomy: the cosmology, distances, m*(z), R_lambda and the L_X-M relation.

A leaf module (numpy, scipy and astropy only; nothing from survey_mass but :mod:`~survey_mass.photometry`), so
that the richness baseline, the labels' selection model and the mock all read the same numbers without any of
them importing the mock.

Cosmology
    Flat LambdaCDM, H0 = 70 km/s/Mpc, Om0 = 0.3, Ob0 = 0.048 (astropy). Every function here evaluates astropy
    at the redshifts it is given (no table, no clamping), and takes an optional ``cosmo`` (an astropy
    cosmology) for callers that use another one.

Examples
--------
>>> round(float(kpc_per_arcsec(0.3)), 3)
4.454
>>> bool(distance_modulus(0.8) > distance_modulus(0.7))
True
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

H0 = 70.0
OM0 = 0.3
OB0 = 0.048
LITTLE_H = H0 / 100.0

#: (a0, a1, a2, b, rms) of :func:`bcg_reference_mag`, fitted to the real redMaPPer DR8 central galaxies by
#: ``survey_mass.mock.physics.fit_bcg_reference`` (run ``python -m survey_mass.mock.physics`` to refit). rms is
#: the real scatter in mag.
BCG_FIT = (-23.496, 0.457, 3.694, -0.41, 0.467)
#: redMaPPer central galaxies are on average this many L* (Rykoff et al. 2014); it ties m*_i(z) to them.
BCG_LUMINOSITY_LSTAR = 4.0
#: redMaPPer's reference richness of :func:`mstar_i`.
MSTAR_REFERENCE_RICHNESS = 30.0

#: L500 (0.1-2.4 keV) = LX_L0 E(z)^LX_EZ_POWER (M500 / LX_M0)^LX_SLOPE erg/s with LX_SIGMA_LN_L log-normal
#: scatter (Pratt et al. 2009; Arnaud et al. 2010).
LX_L0 = 1.38e44
LX_M0 = 3e14
LX_SLOPE = 1.64
LX_EZ_POWER = 7.0 / 3.0
LX_SIGMA_LN_L = 0.40


@lru_cache(maxsize=8)
def flat_lambda_cdm(h0: float = H0, om0: float = OM0, ob0: float = OB0):
    """An astropy flat LambdaCDM (cached per parameters)."""
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=h0, Om0=om0, Ob0=ob0, name="survey-mass")


def cosmology():
    """The survey's astropy flat LambdaCDM (H0 = 70, Om0 = 0.3, Ob0 = 0.048)."""
    return flat_lambda_cdm()


def efunc(z, cosmo=None) -> np.ndarray:
    """E(z) = H(z) / H0."""
    return np.asarray((cosmo or cosmology()).efunc(np.asarray(z, dtype=float)))


def luminosity_distance_cm(z, cosmo=None) -> np.ndarray:
    """Luminosity distance in cm."""
    import astropy.units as u

    return (cosmo or cosmology()).luminosity_distance(np.asarray(z, dtype=float)).to(u.cm).value


def kpc_per_arcsec(z, cosmo=None) -> np.ndarray:
    """Proper kpc per arcsec."""
    return (cosmo or cosmology()).kpc_proper_per_arcmin(np.asarray(z, dtype=float)).value / 60.0


def distance_modulus(z, cosmo=None) -> np.ndarray:
    """Distance modulus (mag)."""
    return (cosmo or cosmology()).distmod(np.asarray(z, dtype=float)).value


def r_lambda_kpc(richness, h: float = LITTLE_H) -> np.ndarray:
    """redMaPPer radius R_lambda = 1.0 (lambda/100)^0.2 h^-1 Mpc, in proper kpc."""
    return 1000.0 / h * (np.asarray(richness) / 100.0) ** 0.2


def r_lambda_arcsec(richness, z) -> np.ndarray:
    """R_lambda in arcsec at redshift z."""
    return r_lambda_kpc(richness) / kpc_per_arcsec(z)


def bcg_reference_mag(z, richness, distmod=None) -> np.ndarray:
    """Mean i magnitude of real redMaPPer central galaxies at (z, lambda) (fit to the shipped DR8 catalogue).

    A smooth fit, i_BCG = DM(z) + a0 + a1 (z - 0.3) + a2 (z - 0.3)^2 + b ln(lambda/30), coefficients
    :data:`BCG_FIT`. ``distmod`` replaces :func:`distance_modulus` of z (the mock passes its tabulated one).
    """
    a0, a1, a2, b, _ = BCG_FIT
    z = np.asarray(z, dtype=float)
    dm = distance_modulus(z) if distmod is None else distmod
    return dm + a0 + a1 * (z - 0.3) + a2 * (z - 0.3) ** 2 + b * np.log(np.asarray(richness) / 30.0)


def mstar_i(z, distmod=None) -> np.ndarray:
    """Characteristic i magnitude of red-sequence members at z.

    Tied to the real catalogue: redMaPPer central galaxies are on average ~4 L* (Rykoff et al. 2014), so
    m*_i(z) = <i_BCG>(z, lambda=30) + 2.5 log10(4).
    """
    return bcg_reference_mag(z, MSTAR_REFERENCE_RICHNESS, distmod) + 2.5 * np.log10(BCG_LUMINOSITY_LSTAR)
