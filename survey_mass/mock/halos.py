"""Haloes of the mock: mass, the deviations a halo shares at fixed mass, its central galaxy, its X-ray label and
the observing conditions of its field.

A halo of mass M at redshift z has three standard-normal deviations at fixed mass, correlated as
:class:`~survey_mass.mock.physics.HaloScatter` says: eps_lambda (richness), eps_B (central galaxy luminosity)
and eps_L (X-ray luminosity). Then

* ln lambda_obs = <ln lambda | M> + sigma_int eps_lambda + Poisson (variance 1 / <lambda>);
* faint members ~ Poisson(<n_faint | M> exp(sigma_int eps_lambda)) (they share eps_lambda);
* m_BCG,i = :func:`bcg_mean_mag` (M, z) - sigma_B eps_B;
* ln L_X = <ln L_X | M, z> + sigma_ln_L eps_L, observed with a flux error; the label mass is the mass the
  mean L_X-M relation gives for the observed L_X, and the cluster is labelled when its flux passes the limit
  of the X-ray survey at its position.

**With a candidate** (real lambda, z and central galaxy), (M, eps_lambda) are drawn from
p(M, eps_lambda | lambda, m_BCG, z) ∝ n(M, z) N(eps) p(lambda, m_BCG | M, eps): (ln lambda, m_BCG) are jointly
Gaussian at fixed M, so the mass posterior is exact on a grid and eps_lambda | M is Gaussian. eps_B follows from
the real central galaxy, and eps_L from its conditional given eps_lambda and eps_B.
**From the mass function**, (M, z) come from n(M, z) dV/dz P(lambda >= floor | M), the three deviations
from their joint normal, and lambda_obs >= floor by rejection.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .. import astro
from . import physics
from .physics import DEFAULT_PHYSICS, LOGM_GRID, MockPhysics

BANDS = ("u", "g", "r", "i", "z")

# --- central galaxy at fixed mass ---------------------------------------------------------------------------


def bcg_mean_mag(log10_m500, z, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    """Mean central-galaxy i magnitude of an M500c halo at z, pinned so that the mock's centrals at fixed
    richness follow the real catalogue's (:data:`BCG_FIT`): the real mean at lambda = 40 for haloes of the mean
    mass of lambda = 40 clusters at z, dimmer by ``bcg.dmag_dlog10M`` per dex below it, and corrected for the
    central's correlation with the richness excess of such clusters (E[eps_lambda | lambda = 40] > 0)."""
    z = np.asarray(z, float)
    m40, e40 = _bcg_pin(ph)
    ref = physics.bcg_reference_mag(z, np.full(np.shape(z), 40.0), ph)
    shift = bcg_sigma_mag(ph) * ph.halo_scatter.rho_bcg_lambda * physics.interp_z(e40, z)
    return ref + ph.bcg.dmag_dlog10M * (np.asarray(log10_m500) - physics.interp_z(m40, z)) + shift


def _lambda_posterior_moments(lam: float, z: np.ndarray, ph: MockPhysics):
    """p(M | lambda, z) on (n_z, n_mass) and E[eps_lambda | M, lambda] and its variance there."""
    zs = np.asarray(z, float)
    mu, sig = _grid_moments(zs, ph)
    lp = richness_log_likelihood(np.full(zs.size, lam), zs, ph) + _log_mf(zs, ph)
    p = np.exp(lp - lp.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    s_int = ph.richness_relation.sigma_ln_lambda_intrinsic
    e = s_int * (np.log(lam) - mu) / sig**2
    return p, e, 1.0 - s_int**2 / sig**2


@lru_cache(maxsize=8)
def _bcg_pin(ph: MockPhysics) -> tuple[np.ndarray, np.ndarray]:
    """E[log10 M500 | lambda = 40, z] and E[eps_lambda | lambda = 40, z] on Z_GRID (lambda alone)."""
    p, e, _ = _lambda_posterior_moments(40.0, physics.Z_GRID, ph)
    return (p * LOGM_GRID[None, :]).sum(axis=1), (p * e).sum(axis=1)


@lru_cache(maxsize=8)
def bcg_sigma_mag(ph: MockPhysics = DEFAULT_PHYSICS) -> float:
    """Scatter s of the central's magnitude at fixed mass, so that the spread at fixed richness (lambda = 30,
    z = 0.25) is the real 0.47 mag: k^2 V_M + s^2 (rho^2 V_eps + 1 - rho^2) - 2 k rho s C = rms^2, with k the slope
    in mass, rho the correlation with eps_lambda and V_M, V_eps, C the moments of (M, eps_lambda) given lambda;
    floored at ``bcg.min_scatter_mag``."""
    p, e, v = _lambda_posterior_moments(30.0, np.array([0.25]), ph)
    p, e, v = p[0], e[0], v[0]
    m_mean = (p * LOGM_GRID).sum()
    e_mean = (p * e).sum()
    var_m = float((p * (LOGM_GRID - m_mean) ** 2).sum())
    var_e = float((p * (v + (e - e_mean) ** 2)).sum())
    cov = float((p * (LOGM_GRID - m_mean) * (e - e_mean)).sum())
    k, rho, rms = ph.bcg.dmag_dlog10M, ph.halo_scatter.rho_bcg_lambda, astro.BCG_FIT[4]
    a = rho**2 * var_e + 1 - rho**2
    b = -2 * k * rho * cov
    c = k**2 * var_m - rms**2
    disc = b**2 - 4 * a * c
    s = (-b + np.sqrt(disc)) / (2 * a) if disc > 0 else 0.0
    return float(max(s, ph.bcg.min_scatter_mag))


# --- the joint posterior of a candidate -----------------------------------------------------------------------


def _log_mf(z: np.ndarray, ph: MockPhysics) -> np.ndarray:
    g = physics.grids(ph.cosmology)
    return np.log(g.dn_dlog10m[physics._zi(z)] + 1e-300)


def _grid_moments(z: np.ndarray, ph: MockPhysics) -> tuple[np.ndarray, np.ndarray]:
    """<ln lambda | M, z> and the total sigma of ln lambda on (N, n_mass)."""
    zz = np.broadcast_to(np.asarray(z, float)[:, None], (np.size(z), LOGM_GRID.size))
    mm = np.broadcast_to(LOGM_GRID[None, :], zz.shape)
    mu = physics.mean_ln_lambda(mm, zz, ph)
    return mu, physics.sigma_ln_lambda(mu, ph)


def richness_log_likelihood(richness, z, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    """log p(lambda | M, z) on (N, n_mass) (eps_lambda integrated out)."""
    mu, sig = _grid_moments(np.asarray(z, float), ph)
    lnl = np.log(np.asarray(richness, float))[:, None]
    return -0.5 * ((lnl - mu) / sig) ** 2 - np.log(sig)


@dataclass(frozen=True)
class HaloPosterior:
    """p(M | lambda, m_BCG, z) on LOGM_GRID and eps_lambda | M's mean and sd, each (N, n_mass)."""

    logp: np.ndarray
    eps_mean: np.ndarray
    eps_sd: np.ndarray

    def mean_log10_m500(self) -> np.ndarray:
        p = np.exp(self.logp - self.logp.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return (p * LOGM_GRID[None, :]).sum(axis=1)


def halo_posterior(richness, z, bcg_mag_i=None, ph: MockPhysics = DEFAULT_PHYSICS) -> HaloPosterior:
    """The exact grid posterior of a candidate's mass given its lambda, z and (where finite) central galaxy."""
    lam = np.atleast_1d(np.asarray(richness, float))
    z = np.atleast_1d(np.asarray(z, float))
    n = lam.size
    bcg = np.full(n, np.nan) if bcg_mag_i is None else np.atleast_1d(np.asarray(bcg_mag_i, float))
    mu, sig = _grid_moments(z, ph)
    s_int = ph.richness_relation.sigma_ln_lambda_intrinsic
    s_b = bcg_sigma_mag(ph)
    rho = ph.halo_scatter.rho_bcg_lambda
    a = np.log(lam)[:, None] - mu
    va = sig**2
    zz = np.broadcast_to(z[:, None], mu.shape)
    b = bcg[:, None] - bcg_mean_mag(np.broadcast_to(LOGM_GRID[None, :], mu.shape), zz, ph)
    vb = s_b**2
    cov = -s_int * s_b * rho  # m_B = mean - s_b eps_B, corr(eps_B, eps_lambda) = rho
    det = va * vb - cov**2
    has = np.isfinite(bcg)[:, None]
    # bivariate normal of (a, b) where the BCG is known, else a alone
    q2 = (vb * a**2 - 2 * cov * a * np.nan_to_num(b) + va * np.nan_to_num(b) ** 2) / det
    loglike = np.where(has, -0.5 * q2 - 0.5 * np.log(det), -0.5 * a**2 / va - 0.5 * np.log(va))
    # eps_lambda | a, b: c Sigma^-1 [a, b] with c = [s_int, -s_b rho]
    c1, c2 = s_int, -s_b * rho
    w1 = (c1 * vb - c2 * cov) / det
    w2 = (c2 * va - c1 * cov) / det
    mean2 = w1 * a + w2 * np.nan_to_num(b)
    var2 = 1.0 - (w1 * c1 + w2 * c2)
    mean1 = s_int * a / va
    var1 = 1.0 - s_int**2 / va
    return HaloPosterior(
        logp=_log_mf(z, ph) + loglike,
        eps_mean=np.where(has, mean2, mean1),
        eps_sd=np.sqrt(np.clip(np.where(has, var2, var1), 1e-6, None)),
    )


def _sample_grid(logp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    u = rng.random(cdf.shape[0])
    idx = np.array([np.searchsorted(c, v) for c, v in zip(cdf, u, strict=True)], dtype=int)
    return np.clip(idx, 0, LOGM_GRID.size - 1)


@dataclass
class Haloes:
    """Everything the mock draws for a set of clusters (one entry per cluster)."""

    log10_m500: np.ndarray
    richness: np.ndarray
    eps_lambda: np.ndarray
    eps_bcg: np.ndarray
    eps_lx: np.ndarray
    bcg_mag_i: np.ndarray
    #: E[log10 M500 | lambda, m_BCG, z]: the mock's own best estimate from what it conditions masses on
    oracle: np.ndarray


def _conditional_eps_lx(eps_lambda, eps_bcg, rng, ph: MockPhysics) -> np.ndarray:
    r = ph.halo_scatter.correlation()
    s12 = r[2, :2]
    s11 = r[:2, :2]
    w = np.linalg.solve(s11, s12)
    var = max(1.0 - float(s12 @ w), 1e-6)
    return w[0] * eps_lambda + w[1] * eps_bcg + np.sqrt(var) * rng.standard_normal(np.shape(eps_lambda))


def haloes_from_candidates(richness, z, bcg_mag_i, rng: np.random.Generator, ph: MockPhysics) -> Haloes:
    """Masses and deviations of real candidates, drawn from their joint posterior."""
    lam = np.asarray(richness, float)
    post = halo_posterior(lam, z, bcg_mag_i, ph)
    idx = _sample_grid(post.logp, rng)
    rows = np.arange(lam.size)
    logm = LOGM_GRID[idx] + (rng.random(idx.size) - 0.5) * 0.01
    eps_l = post.eps_mean[rows, idx] + post.eps_sd[rows, idx] * rng.standard_normal(idx.size)
    bcg = np.asarray(bcg_mag_i, float)
    s_b = bcg_sigma_mag(ph)
    rho = ph.halo_scatter.rho_bcg_lambda
    mean_b = bcg_mean_mag(logm, z, ph)
    eps_b_free = rho * eps_l + np.sqrt(1 - rho**2) * rng.standard_normal(idx.size)
    eps_b = np.where(np.isfinite(bcg), (mean_b - np.nan_to_num(bcg)) / s_b, eps_b_free)
    bcg_out = np.where(np.isfinite(bcg), bcg, mean_b - s_b * eps_b)
    eps_x = _conditional_eps_lx(eps_l, eps_b, rng, ph)
    return Haloes(logm, lam, eps_l, eps_b, eps_x, bcg_out, post.mean_log10_m500())


def haloes_from_mass_function(n: int, rng: np.random.Generator, ph: MockPhysics) -> tuple[Haloes, np.ndarray]:
    """n haloes with lambda_obs >= the floor from the mass function, and their redshifts."""
    logm, z = physics.sample_clusters_from_mass_function(n, rng, ph)
    r = np.linalg.cholesky(ph.halo_scatter.correlation())
    eps = np.zeros((n, 3))
    lam = np.zeros(n)
    todo = np.arange(n)
    for _ in range(500):  # rejection: lambda >= floor given M (the draws already favour such masses)
        if not todo.size:
            break
        e = rng.standard_normal((todo.size, 3)) @ r.T
        mu = physics.mean_ln_lambda(logm[todo], z[todo], ph)
        s_int = ph.richness_relation.sigma_ln_lambda_intrinsic
        s_p = np.sqrt(np.exp(-mu)) if ph.richness_relation.poisson else 0.0
        lam_try = np.exp(mu + s_int * e[:, 0] + s_p * rng.standard_normal(todo.size))
        ok = lam_try >= ph.richness_floor
        eps[todo[ok]] = e[ok]
        lam[todo[ok]] = lam_try[ok]
        todo = todo[~ok]
    lam[todo] = ph.richness_floor
    bcg = bcg_mean_mag(logm, z, ph) - bcg_sigma_mag(ph) * eps[:, 1]
    oracle = halo_posterior(lam, z, bcg, ph).mean_log10_m500() if n else np.zeros(0)
    return Haloes(logm, lam, eps[:, 0], eps[:, 1], eps[:, 2], bcg, oracle), z


# --- X-ray labels ---------------------------------------------------------------------------------------------


def label_coverage(ra, dec, ph: MockPhysics = DEFAULT_PHYSICS) -> tuple[np.ndarray, np.ndarray]:
    """(flux limit in erg/s/cm^2, completeness) of the labels' X-ray survey at each position: the deepest one
    covering it."""
    import healpy as hp

    ra, dec = np.asarray(ra, float), np.asarray(dec, float)
    out = np.full(ra.size, np.inf)
    comp = np.ones(ra.size)
    cell = hp.ang2pix(2**6, ra, dec, nest=True, lonlat=True)
    for k, s in enumerate(ph.labels.surveys):
        inside = (dec >= s.dec_range[0]) & (dec < s.dec_range[1])
        if s.sky_fraction < 1:
            h = np.random.default_rng([int(c) for c in (k, 977)]).random(12 * 4**6)
            inside &= h[cell] < s.sky_fraction
        deeper = inside & (s.flux_limit_cgs < out)
        out = np.where(deeper, s.flux_limit_cgs, out)
        comp = np.where(deeper, s.completeness, comp)
    return out, comp


def label_flux_limit(ra, dec, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    """The flux limit (erg/s/cm^2) of the labels' X-ray survey at each position: the deepest one covering it."""
    return label_coverage(ra, dec, ph)[0]


def mean_ln_lx(log10_m500, z, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    g = physics.grids(ph.cosmology)
    lab = ph.labels
    ez = physics.interp_z(g.ez, z)
    hse = np.log10(lab.hydrostatic_one_minus_b)  # the relation is in hydrostatic masses
    return (
        np.log(lab.l0)
        + lab.ez_power * np.log(ez)
        + lab.slope * np.log(10) * (np.asarray(log10_m500) + hse - np.log10(lab.m0))
    )


def draw_labels(
    log10_m500,
    z,
    eps_lx,
    flux_limit,
    rng: np.random.Generator,
    ph: MockPhysics = DEFAULT_PHYSICS,
    completeness=None,
):
    """(selected, label): the label is the (hydrostatic) mass the mean L_X-M relation gives for the observed L_X,
    NaN where the observed flux is below the position's limit, or where the survey missed the cluster (a
    ``completeness`` draw; none: complete)."""
    g = physics.grids(ph.cosmology)
    lab = ph.labels
    mean = mean_ln_lx(log10_m500, z, ph)
    ln_obs = (
        mean + lab.sigma_ln_l * np.asarray(eps_lx) + lab.flux_error_ln * rng.standard_normal(np.shape(mean))
    )
    dl = physics.interp_z(g.dl_cm, z)
    # the survey detects on its own flux (count rate in its aperture), which scatters about the label's L500 flux
    ln_det = ln_obs
    if lab.detection_error_ln > 0:
        ln_det = ln_obs + lab.detection_error_ln * rng.standard_normal(np.shape(mean))
    flux = np.exp(ln_det) / (4 * np.pi * dl**2)
    sel = flux >= np.asarray(flux_limit, float)
    if completeness is not None:
        sel &= rng.random(np.shape(mean)) < np.asarray(completeness, float)
    hse = np.log10(lab.hydrostatic_one_minus_b)
    label = np.asarray(log10_m500) + hse + (ln_obs - mean) / (lab.slope * np.log(10))
    return sel, np.where(sel, label, np.nan)


# --- observing conditions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conditions:
    """One field's PSF FWHM (arcsec) and sky-noise factor per band (relative to the nominal depth)."""

    psf_fwhm: np.ndarray
    sky_factor: np.ndarray


def draw_conditions(rng: np.random.Generator, ph: MockPhysics = DEFAULT_PHYSICS) -> Conditions:
    """A field's seeing and sky per band (:class:`~survey_mass.mock.physics.ObservingConditions`), times the
    global ``seeing_scale`` and ``sky_noise_scale``."""
    oc = ph.observing
    nominal = np.array([ph.render.psf_fwhm_arcsec[b] for b in BANDS])
    xi = rng.standard_normal(6)
    zeta = rng.standard_normal(6)
    if not oc.vary:
        xi[:] = 0.0
        zeta[:] = 0.0
    rs, rk = oc.seeing_band_correlation, oc.sky_band_correlation  # correlations between two bands
    d_seeing = oc.seeing_sigma_ln * (np.sqrt(rs) * xi[0] + np.sqrt(1 - rs) * xi[1:])
    sky_mag = np.array([oc.sky_sigma_mag[b] for b in BANDS]) * (
        np.sqrt(rk) * zeta[0] + np.sqrt(1 - rk) * zeta[1:]
    )
    return Conditions(
        psf_fwhm=nominal * np.exp(d_seeing) * ph.seeing_scale,
        sky_factor=10 ** (-0.2 * sky_mag) * ph.sky_noise_scale,
    )


def haloes_given_mass(logm, z, rng: np.random.Generator, ph: MockPhysics) -> Haloes:
    """Deviations, lambda_obs and central galaxy of haloes of known mass (no richness floor)."""
    logm, z = np.asarray(logm, float), np.asarray(z, float)
    e = rng.standard_normal((logm.size, 3)) @ np.linalg.cholesky(ph.halo_scatter.correlation()).T
    mu = physics.mean_ln_lambda(logm, z, ph)
    s_p = np.sqrt(np.exp(-mu)) if ph.richness_relation.poisson else 0.0
    lam = np.exp(
        mu + ph.richness_relation.sigma_ln_lambda_intrinsic * e[:, 0] + s_p * rng.standard_normal(logm.size)
    )
    bcg = bcg_mean_mag(logm, z, ph) - bcg_sigma_mag(ph) * e[:, 1]
    oracle = halo_posterior(lam, z, bcg, ph).mean_log10_m500() if logm.size else np.zeros(0)
    return Haloes(logm, lam, e[:, 0], e[:, 1], e[:, 2], bcg, oracle)
