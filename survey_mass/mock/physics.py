"""The physics of the mock survey: cosmology, halo masses, richness, BCGs, members, field and labels.

Everything here is a documented, literature-anchored approximation. The numbers that set the mock are
collected in :data:`PHYSICS` so that the README, the model card and the store's provenance can quote them.

Cosmology
    Flat LambdaCDM with H0 = 70 km/s/Mpc, Om0 = 0.3, Ob0 = 0.048, sigma8 = 0.81, ns = 0.96 (astropy for
    distances, colossus for the halo mass function and concentrations). Masses are M500c in Msun (no h).

Masses given a candidate (P(M | lambda, BCG, z))
    p(log M | lambda, d_BCG, z) ∝ n(M, z) P(lambda | M, z) P(d_BCG | M, lambda, z), where

    * n(M, z): Tinker et al. 2008 mass function for M500c (colossus);
    * P(lambda | M): log-normal around the Simet et al. 2017 relation log10 M200m = 14.344 + 1.33 log10(lambda/40)
      [h^-1 Msun], with 0.25 intrinsic scatter in ln lambda plus Poisson variance 1/lambda; M500c -> M200m with
      the Diemer & Joyce 2019 concentrations (colossus);
    * P(d_BCG | M): d_BCG is the real central galaxy's i magnitude minus the population mean at its redshift
      and richness. At fixed richness brighter BCGs sit in more massive haloes (Hansen et al. 2009; Reyes et
      al. 2008): d_BCG = -2.5 * 0.5 * (log10 M - <log10 M | lambda, z>) + scatter, with the scatter set so that
      the marginal spread matches the real catalogue's.

Things the catalogue does not give are drawn given the mass: the members' NFW scale radius (Duffy et al. 2008
c(M)), the number of faint (0.05-0.2 L*) members, a Poisson draw from the halo's mean occupation <lambda | M>
(satellite counts are close to Poisson at fixed mass; Kravtsov et al. 2004), and every member's luminosity and
position. The catalogue's lambda carries measurement and projection noise that the faint satellites do not share. So a network that reads the whole image can beat richness alone through
physics; no pixel encodes the mass in any other way.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

H0 = 70.0
OM0 = 0.3
LITTLE_H = H0 / 100.0

PHYSICS: dict[str, object] = {
    "cosmology": {"flat": True, "H0": H0, "Om0": OM0, "Ob0": 0.048, "sigma8": 0.81, "ns": 0.96},
    "mass_definition": "M500c [Msun]",
    "mass_function": "Tinker et al. 2008 (colossus)",
    "richness_relation": {
        "source": "Simet et al. 2017",
        "log10_M200m_at_lambda40_hinv": 14.344,
        "slope": 1.33,
        "sigma_ln_lambda_intrinsic": 0.25,
        "poisson": True,
    },
    "bcg": {"source": "Hansen et al. 2009; Reyes et al. 2008", "dmag_dlog10M": -1.25},
    "concentration": "Duffy et al. 2008 c200c(M, z)",
    "labels": {
        "selection": "X-ray flux limit, MCXC/REFLEX-like: L500 = 1.38e44 E(z)^(7/3) (M500/3e14)^1.64 erg/s, "
        "sigma_lnL = 0.40 (Pratt et al. 2009; Arnaud et al. 2010)",
        "flux_limit_cgs": 2.0e-12,
        "label_noise_dex": 0.12,
    },
    "richness_floor": 20.0,
    "mass_grid_log10": [13.3, 15.6],
    "redshift_range_no_candidates": [0.05, 0.6],
    "mass_range_no_candidates_log10": [13.5, 15.3],
}

LOGM_GRID = np.round(np.arange(13.3, 15.6001, 0.01), 4)
Z_GRID = np.round(np.arange(0.02, 0.70001, 0.01), 4)


@lru_cache(maxsize=1)
def astropy_cosmology():
    """The astropy flat LambdaCDM used for distances."""
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=H0, Om0=OM0, Ob0=0.048, name="survey-mass")


@lru_cache(maxsize=1)
def _colossus():
    from colossus.cosmology import cosmology

    return cosmology.setCosmology("survey_mass", params=dict(PHYSICS["cosmology"]), persistence="")


@dataclass(frozen=True)
class _Grids:
    dn_dlog10m: np.ndarray  # (nz, nm) comoving number density per dex, Mpc^-3
    dv_dz_deg2: np.ndarray  # (nz,) comoving volume per unit z per deg^2, Mpc^3
    dlog_200m: np.ndarray  # (nz, nm) log10(M200m / M500c)
    ez: np.ndarray  # (nz,)
    dl_cm: np.ndarray  # (nz,)


@lru_cache(maxsize=1)
def grids() -> _Grids:
    """Tabulate the mass function and the distance measures once per process (about 3 s)."""
    import warnings

    import astropy.units as u
    from colossus.halo import mass_adv
    from colossus.lss import mass_function

    _colossus()
    cosmo = astropy_cosmology()
    m_h = 10**LOGM_GRID * LITTLE_H
    dn = np.empty((Z_GRID.size, LOGM_GRID.size))
    for i, z in enumerate(Z_GRID):
        dndlnm = mass_function.massFunction(m_h, z, mdef="500c", model="tinker08", q_out="dndlnM")
        dn[i] = dndlnm * LITTLE_H**3 * np.log(10.0)  # (h/Mpc)^3 -> Mpc^-3, per ln -> per dex
    # M500c -> M200m ratio on a coarse grid, interpolated (it is smooth).
    zc = Z_GRID[::4]
    mc = m_h[::10]
    ratio = np.empty((zc.size, mc.size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, z in enumerate(zc):
            m200m, _, _ = mass_adv.changeMassDefinitionCModel(mc, z, "500c", "200m", c_model="diemer19")
            ratio[i] = np.log10(m200m / mc)
    from scipy.interpolate import RegularGridInterpolator

    interp = RegularGridInterpolator((zc, np.log10(mc)), ratio, bounds_error=False, fill_value=None)
    zz, mm = np.meshgrid(Z_GRID, np.log10(m_h), indexing="ij")
    dlog = interp(np.stack([zz.ravel(), mm.ravel()], axis=1)).reshape(zz.shape)
    dv = cosmo.differential_comoving_volume(Z_GRID).to(u.Mpc**3 / u.deg**2).value
    return _Grids(
        dn_dlog10m=dn,
        dv_dz_deg2=dv,
        dlog_200m=dlog,
        ez=cosmo.efunc(Z_GRID),
        dl_cm=cosmo.luminosity_distance(Z_GRID).to(u.cm).value,
    )


def _zi(z: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((np.asarray(z) - Z_GRID[0]) / 0.01).astype(int), 0, Z_GRID.size - 1)


def interp_z(table: np.ndarray, z) -> np.ndarray:
    """Linear interpolation of a per-redshift table."""
    return np.interp(np.asarray(z, dtype=float), Z_GRID, table)


@lru_cache(maxsize=1)
def _distances() -> tuple[np.ndarray, np.ndarray]:
    """(kpc per arcsec, distance modulus) on Z_GRID from astropy alone (fast; no mass function needed)."""
    cosmo = astropy_cosmology()
    return cosmo.kpc_proper_per_arcmin(Z_GRID).value / 60.0, cosmo.distmod(Z_GRID).value


def kpc_per_arcsec(z) -> np.ndarray:
    return interp_z(_distances()[0], z)


def distance_modulus(z) -> np.ndarray:
    return interp_z(_distances()[1], z)


# --- richness -------------------------------------------------------------------------------------------


def mean_ln_lambda(log10_m500: np.ndarray, z: np.ndarray) -> np.ndarray:
    """<ln lambda | M500c, z> from Simet et al. 2017 (their masses are M200m in h^-1 Msun)."""
    g = grids()
    zi = _zi(z)
    mi = np.clip(np.rint((np.asarray(log10_m500) - LOGM_GRID[0]) / 0.01).astype(int), 0, LOGM_GRID.size - 1)
    log10_m200m_h = np.asarray(log10_m500) + g.dlog_200m[zi, mi] + np.log10(LITTLE_H)
    rr = PHYSICS["richness_relation"]
    pivot = rr["log10_M200m_at_lambda40_hinv"] + _richness_offset()
    return np.log(40.0) + (log10_m200m_h - pivot) / rr["slope"] * np.log(10.0)


@lru_cache(maxsize=1)
def _richness_offset() -> float:
    """Offset (dex) of the <ln lambda | M> pivot so that <log10 M200m | lambda = 40, z = 0.3> = 14.344.

    Simet et al. 2017 measure the mean mass of clusters *at fixed richness*. Inverting a <lambda | M> relation
    through the steep mass function (Eddington bias) lowers <M | lambda> by ~0.15 dex, so the pivot of
    P(lambda | M) is shifted until the posterior reproduces their measurement.
    """
    import math

    target = PHYSICS["richness_relation"]["log10_M200m_at_lambda40_hinv"]
    g = grids()
    zi = int(_zi(np.array([0.3]))[0])
    off = 0.0
    for _ in range(6):
        logp = _log_posterior_raw(np.array([40.0]), np.array([0.3]), off)[0]
        p = np.exp(logp - logp.max())
        p /= p.sum()
        m200m_h = LOGM_GRID + g.dlog_200m[zi] + math.log10(LITTLE_H)
        off += target - float((p * m200m_h).sum())
    return off


def sigma_ln_lambda(mean_ln: np.ndarray) -> np.ndarray:
    s_int = PHYSICS["richness_relation"]["sigma_ln_lambda_intrinsic"]
    return np.sqrt(s_int**2 + np.exp(-np.asarray(mean_ln)))


def draw_richness(log10_m500, z, rng: np.random.Generator) -> np.ndarray:
    mu = mean_ln_lambda(log10_m500, z)
    return np.exp(mu + sigma_ln_lambda(mu) * rng.standard_normal(np.shape(mu)))


def r_lambda_arcsec(richness, z) -> np.ndarray:
    """redMaPPer radius R_lambda = 1.0 (lambda/100)^0.2 h^-1 Mpc, in arcsec at redshift z."""
    r_kpc = 1000.0 / LITTLE_H * (np.asarray(richness) / 100.0) ** 0.2
    return r_kpc / kpc_per_arcsec(z)


# --- BCG ------------------------------------------------------------------------------------------------


def bcg_reference_mag(z, richness) -> np.ndarray:
    """Mean i magnitude of real redMaPPer central galaxies at (z, lambda) (fit to the shipped DR8 catalogue).

    A smooth fit, i_BCG = DM(z) + a0 + a1 (z - 0.3) + a2 (z - 0.3)^2 + b ln(lambda/30), made once by
    :func:`fit_bcg_reference` and stored in :data:`BCG_FIT`.
    """
    a0, a1, a2, b, _ = BCG_FIT
    z = np.asarray(z, dtype=float)
    return (
        distance_modulus(z)
        + a0
        + a1 * (z - 0.3)
        + a2 * (z - 0.3) ** 2
        + b * np.log(np.asarray(richness) / 30.0)
    )


#: (a0, a1, a2, b, rms) of :func:`bcg_reference_mag`, fitted to the real redMaPPer DR8 central galaxies by
#: ``fit_bcg_reference`` (run ``python -m survey_mass.mock.physics`` to refit). rms is the real scatter in mag.
BCG_FIT = (-23.496, 0.457, 3.694, -0.41, 0.467)


def fit_bcg_reference(z: np.ndarray, richness: np.ndarray, imag: np.ndarray) -> tuple[float, ...]:
    """Least-squares fit of the real BCG i magnitudes, returning ``BCG_FIT``-style coefficients."""
    ok = np.isfinite(imag) & (imag > 10) & (imag < 25)
    z, lam, y = z[ok], richness[ok], imag[ok] - distance_modulus(z[ok])
    a = np.stack([np.ones_like(z), z - 0.3, (z - 0.3) ** 2, np.log(lam / 30.0)], axis=1)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    rms = float(np.std(y - a @ coef))
    return (*[round(float(c), 3) for c in coef], round(rms, 3))


# --- mass posterior ---------------------------------------------------------------------------------------


def log_mass_posterior(richness, z, d_bcg=None) -> np.ndarray:
    """Unnormalised log p(log10 M500 | lambda, d_BCG, z) on :data:`LOGM_GRID`, shape (N, n_mass)."""
    richness = np.atleast_1d(np.asarray(richness, dtype=float))
    z = np.atleast_1d(np.asarray(z, dtype=float))
    logm = LOGM_GRID[None, :]
    logp = _log_posterior_raw(richness, z, _richness_offset())
    if d_bcg is not None:
        d_bcg = np.atleast_1d(np.asarray(d_bcg, dtype=float))
        p = np.exp(logp - logp.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        mean_logm = (p * logm).sum(axis=1, keepdims=True)
        var_logm = (p * (logm - mean_logm) ** 2).sum(axis=1).mean()
        slope = PHYSICS["bcg"]["dmag_dlog10M"]
        # scatter chosen so the marginal spread of d_BCG equals the real catalogue's
        s_d = np.sqrt(max(BCG_FIT[4] ** 2 - slope**2 * var_logm, 0.05**2))
        ok = np.isfinite(d_bcg)[:, None]
        like = -0.5 * ((d_bcg[:, None] - slope * (logm - mean_logm)) / s_d) ** 2
        logp = logp + np.where(ok, like, 0.0)
    return logp


def _log_posterior_raw(richness: np.ndarray, z: np.ndarray, offset: float) -> np.ndarray:
    g = grids()
    zi = _zi(z)
    logm = np.broadcast_to(LOGM_GRID[None, :], (z.size, LOGM_GRID.size))
    mi = np.broadcast_to(np.arange(LOGM_GRID.size)[None, :], logm.shape)
    rr = PHYSICS["richness_relation"]
    m200m_h = logm + g.dlog_200m[zi[:, None], mi] + np.log10(LITTLE_H)
    mu = np.log(40.0) + (m200m_h - (rr["log10_M200m_at_lambda40_hinv"] + offset)) / rr["slope"] * np.log(10.0)
    sig = sigma_ln_lambda(mu)
    lnl = np.log(richness)[:, None]
    return np.log(g.dn_dlog10m[zi] + 1e-300) - 0.5 * ((lnl - mu) / sig) ** 2 - np.log(sig)


def sample_mass_given_richness(richness, z, rng: np.random.Generator, d_bcg=None) -> np.ndarray:
    """Draw log10 M500c from P(M | lambda, d_BCG, z), one per candidate."""
    logp = log_mass_posterior(richness, z, d_bcg)
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    u = rng.random(cdf.shape[0])
    idx = np.array([np.searchsorted(c, v) for c, v in zip(cdf, u, strict=True)])
    return LOGM_GRID[np.clip(idx, 0, LOGM_GRID.size - 1)] + (rng.random(idx.size) - 0.5) * 0.01


def sample_clusters_from_mass_function(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw (log10 M500c, z) from n(M, z) dV/dz, over the ranges in PHYSICS, weighted by P(lambda >= 20)."""
    w, zs, ms = _mf_weights()
    flat = np.cumsum(w.ravel())
    flat /= flat[-1]
    k = np.searchsorted(flat, rng.random(n))
    iz, im = np.unravel_index(k, w.shape)
    return ms[im] + (rng.random(n) - 0.5) * 0.01, zs[iz] + (rng.random(n) - 0.5) * 0.01


@lru_cache(maxsize=1)
def _mf_weights():
    from scipy.stats import norm

    g = grids()
    zlo, zhi = PHYSICS["redshift_range_no_candidates"]
    mlo, mhi = PHYSICS["mass_range_no_candidates_log10"]
    zsel = (Z_GRID >= zlo) & (Z_GRID <= zhi)
    msel = (LOGM_GRID >= mlo) & (LOGM_GRID <= mhi)
    zs, ms = Z_GRID[zsel], LOGM_GRID[msel]
    zz, mm = np.meshgrid(zs, ms, indexing="ij")
    mu = mean_ln_lambda(mm, zz)
    p_sel = norm.sf((np.log(PHYSICS["richness_floor"]) - mu) / sigma_ln_lambda(mu))
    w = g.dn_dlog10m[np.ix_(zsel, msel)] * g.dv_dz_deg2[zsel][:, None] * 0.01 * 0.01 * p_sel
    return w, zs, ms


def expected_density_per_deg2() -> float:
    """Clusters with lambda >= 20 per deg^2 that the mass function predicts over the no-candidate ranges."""
    return float(_mf_weights()[0].sum())


# --- labels ---------------------------------------------------------------------------------------------


def xray_flux_cgs(log10_m500, z, rng: np.random.Generator) -> np.ndarray:
    """0.1-2.4 keV flux of a cluster from an L_X-M relation with log-normal scatter (no K-correction)."""
    g = grids()
    ez = interp_z(g.ez, z)
    dl = interp_z(g.dl_cm, z)
    lx = 1.38e44 * ez ** (7.0 / 3.0) * (10 ** (np.asarray(log10_m500) - np.log10(3e14))) ** 1.64
    lx = lx * np.exp(0.40 * rng.standard_normal(np.shape(lx)))
    return lx / (4 * np.pi * dl**2)


def draw_labels(log10_m500, z, rng: np.random.Generator, flux_limit: float | None = None):
    """X-ray-selected labelled subset: returns (selected mask, label with 0.12 dex noise, NaN elsewhere)."""
    lab = PHYSICS["labels"]
    flux = xray_flux_cgs(log10_m500, z, rng)
    noise = lab["label_noise_dex"] * rng.standard_normal(np.shape(flux))
    sel = flux >= (lab["flux_limit_cgs"] if flux_limit is None else flux_limit)
    return sel, np.where(sel, np.asarray(log10_m500) + noise, np.nan)


# --- members --------------------------------------------------------------------------------------------


def concentration_200c(log10_m500, z) -> np.ndarray:
    """Duffy et al. 2008 (full sample, NFW): c200c = 5.71 (M200c / 2e12 h^-1 Msun)^-0.084 (1+z)^-0.47."""
    m200c_h = 10 ** (np.asarray(log10_m500) + 0.13) * LITTLE_H  # M200c/M500c ~ 1.35 for c ~ 4
    return 5.71 * (m200c_h / 2e12) ** -0.084 * (1 + np.asarray(z)) ** -0.47


def r200c_kpc(log10_m500, z) -> np.ndarray:
    """R200c in proper kpc, from M200c ~ 1.35 M500c and rho_crit(z)."""
    import astropy.units as u

    rho = astropy_cosmology().critical_density(np.asarray(z)).to(u.Msun / u.kpc**3).value
    m200 = 10 ** (np.asarray(log10_m500) + 0.13)
    return (3 * m200 / (4 * np.pi * 200 * rho)) ** (1.0 / 3.0)


def sample_projected_nfw(n: int, rs: float, rmax: float, rng: np.random.Generator) -> np.ndarray:
    """Radii of n points from a projected NFW profile with scale radius rs, truncated at rmax (same units)."""
    x = np.geomspace(1e-3, max(rmax / rs, 2e-3), 400)
    # projected NFW surface density (Bartelmann 1996), integrated as 2 pi x Sigma(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(
            x < 1,
            1 - 2 / np.sqrt(1 - x**2) * np.arctanh(np.sqrt(np.clip((1 - x) / (1 + x), 0, None))),
            1 - 2 / np.sqrt(x**2 - 1) * np.arctan(np.sqrt(np.clip((x - 1) / (1 + x), 0, None))),
        )
        sigma = np.where(np.abs(x - 1) < 1e-6, 1 / 3.0, f / (x**2 - 1))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (sigma[1:] * x[1:] + sigma[:-1] * x[:-1]) * np.diff(x))])
    cdf /= cdf[-1]
    return np.interp(rng.random(n), cdf, x) * rs


def schechter_draw(n: int, mstar: float, lmin_frac: float, lmax_frac: float, rng, alpha: float = -1.0):
    """Magnitudes of n galaxies from a Schechter function (alpha) between lmin_frac and lmax_frac of L*."""
    lum = np.geomspace(lmin_frac, lmax_frac, 512)
    pdf = lum ** (alpha + 1) * np.exp(-lum)  # per d ln L
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(np.log(lum)))])
    cdf /= cdf[-1]
    lnl = np.interp(rng.random(n), cdf, np.log(lum))
    return mstar - 2.5 * lnl / np.log(10)


def schechter_fraction(l_lo: float, l_hi: float, alpha: float = -1.0) -> float:
    lum = np.geomspace(l_lo, l_hi, 512)
    pdf = lum ** (alpha + 1) * np.exp(-lum)
    return float(np.trapezoid(pdf, np.log(lum)))


def mstar_i(z) -> np.ndarray:
    """Characteristic i magnitude of red-sequence members at z.

    Tied to the real catalogue: redMaPPer central galaxies are on average ~4 L* (Rykoff et al. 2014), so
    m*_i(z) = <i_BCG>(z, lambda=30) + 2.5 log10(4).
    """
    return bcg_reference_mag(z, 30.0) + 2.5 * np.log10(4.0)


if __name__ == "__main__":  # refit BCG_FIT from the shipped redMaPPer catalogue
    from ..candidates import load_redmapper

    cat = load_redmapper()
    print(fit_bcg_reference(cat["z"].to_numpy(), cat["richness"].to_numpy(), cat["bcg_mag_i"].to_numpy()))
