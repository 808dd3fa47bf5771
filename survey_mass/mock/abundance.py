"""The mass-richness relation, fitted jointly to the real redMaPPer abundance and the lensing mean mass.

A mock that conditions masses on the real catalogue's richnesses must also *predict* that catalogue: the
number of clusters per deg^2 and per richness bin its mass function and P(lambda | M) give must match the real
counts, while the mean mass at fixed richness matches weak lensing. Two anchors, fitted at once (as Costanzi et
al. 2019 and Murata et al. 2018 do with the abundance and lensing of SDSS redMaPPer):

* **Abundance.** The real redMaPPer DR8 v5.10 clusters (shipped as package data) with lambda >= 20 at
  0.1 < z < 0.33, where the catalogue is volume-limited, in :data:`REFERENCE_BOX` (a 4,884 deg^2 box inside the
  contiguous northern imaging), counted in the richness bins :data:`LAMBDA_EDGES`, per deg^2. Errors: Poisson
  plus 5% (the box's masked area and photometric-redshift leakage across z = 0.1 and 0.33).
* **Lensing.** Simet et al. 2017: <M200m | lambda> = 10^14.344 (lambda / 40)^1.33 h^-1 Msun over
  20 <= lambda <= 100 at 0.1 <= z <= 0.33 (their median z = 0.25), with 0.04 dex on the amplitude (statistical
  and systematic) and the slope's +-0.1 error, at :data:`SIMET_LAMBDAS`.

The model: ln lambda ~ N(ln 40 + ln 10 (log10 M200m - pivot) / slope, sigma_int^2 + 1/<lambda>), with M200m in
h^-1 Msun from M500c through the Diemer & Joyce 2019 concentrations, and the Tinker et al. 2008 M500c mass
function of the mock's cosmology. The three parameters (pivot, slope, sigma_int) minimise the chi^2 of both
anchors; :class:`~survey_mass.mock.physics.RichnessRelation`'s defaults are the result, which
``python -m survey_mass.mock.abundance`` reproduces (and ``tests/mock/test_abundance.py`` checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .physics import DEFAULT_PHYSICS, LOGM_GRID, Z_GRID, MockPhysics, RichnessRelation, grids, mean_ln_lambda

#: where the real abundance is counted: box:RA0,RA1,DEC0,DEC1 (degrees), inside the contiguous north
REFERENCE_BOX = "box:130,240,5,60"
Z_RANGE = (0.1, 0.33)
LAMBDA_EDGES = (20.0, 25.0, 30.0, 40.0, 55.0, 75.0, 100.0, 150.0, 300.0)
ABUNDANCE_SYSTEMATIC = 0.05
SIMET_LAMBDAS = (20.0, 30.0, 40.0, 60.0, 100.0)
SIMET_AMPLITUDE = 14.344
SIMET_SLOPE = 1.33
SIMET_Z = 0.25
SIMET_AMPLITUDE_ERR = 0.04
SIMET_SLOPE_ERR = 0.1


@dataclass(frozen=True)
class RealAbundance:
    """Real redMaPPer counts per deg^2 in :data:`LAMBDA_EDGES` bins, and the count and area behind them."""

    per_deg2: np.ndarray
    counts: np.ndarray
    area_deg2: float


@lru_cache(maxsize=1)
def real_abundance(box: str = REFERENCE_BOX) -> RealAbundance:
    from ..candidates import load_redmapper
    from ..footprint import parse_footprint

    cat = load_redmapper()
    fp = parse_footprint(box)
    inside = fp.contains(cat["ra"].to_numpy(), cat["dec"].to_numpy())
    z = cat["z"].to_numpy()
    sel = inside & (z > Z_RANGE[0]) & (z < Z_RANGE[1])
    counts = np.histogram(cat["richness"].to_numpy()[sel], LAMBDA_EDGES)[0].astype(float)
    return RealAbundance(counts / fp.area_deg2, counts, float(fp.area_deg2))


def _p_lambda_bins(mu: np.ndarray, sig: np.ndarray) -> np.ndarray:
    """P(lambda in each bin | mu, sigma of ln lambda): (..., n_bins)."""
    from scipy.special import ndtr

    ln_edges = np.log(np.asarray(LAMBDA_EDGES))
    cdf = ndtr((ln_edges - mu[..., None]) / sig[..., None])
    return np.diff(cdf, axis=-1)


def predicted_abundance(ph: MockPhysics = DEFAULT_PHYSICS, z_range=Z_RANGE) -> np.ndarray:
    """Clusters per deg^2 in each :data:`LAMBDA_EDGES` bin the mock's physics predicts over ``z_range``."""
    from .physics import sigma_ln_lambda

    g = grids(ph.cosmology)
    zs = (Z_GRID > z_range[0] - 1e-9) & (Z_GRID < z_range[1] + 1e-9)
    # half weight at the two ends: a trapezoid over z
    wz = np.where(zs, 1.0, 0.0)
    idx = np.flatnonzero(zs)
    wz[idx[[0, -1]]] = 0.5
    zz, mm = np.meshgrid(Z_GRID[zs], LOGM_GRID, indexing="ij")
    mu = mean_ln_lambda(mm, zz, ph)
    p = _p_lambda_bins(mu, sigma_ln_lambda(mu, ph))
    w = g.dn_dlog10m[zs] * g.dv_dz_deg2[zs][:, None] * 0.01 * 0.01 * wz[zs][:, None]
    return (w[..., None] * p).sum(axis=(0, 1))


def mean_mass_at_richness(ph: MockPhysics = DEFAULT_PHYSICS, lambdas=SIMET_LAMBDAS, z: float = SIMET_Z):
    """log10 <M200m | lambda, z> in h^-1 Msun (the mean mass, as lensing measures it) at each lambda."""
    from .physics import _log_posterior_raw

    g = grids(ph.cosmology)
    lam = np.asarray(lambdas, float)
    zz = np.full(lam.size, z)
    logp = _log_posterior_raw(lam, zz, g, ph.richness_relation, ph.cosmology.h)
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    zi = int(np.clip(np.rint((z - Z_GRID[0]) / 0.01), 0, Z_GRID.size - 1))
    m200m_h = LOGM_GRID + g.dlog_200m[zi] + np.log10(ph.cosmology.h)
    return np.log10((p * 10 ** (m200m_h - 14.0)).sum(axis=1)) + 14.0


def simet_mean_mass(lambdas=SIMET_LAMBDAS) -> np.ndarray:
    return SIMET_AMPLITUDE + SIMET_SLOPE * np.log10(np.asarray(lambdas, float) / 40.0)


def chi2_terms(ph: MockPhysics) -> tuple[np.ndarray, np.ndarray]:
    """Residuals / errors of the abundance bins and of the lensing masses."""
    real = real_abundance()
    pred = predicted_abundance(ph)
    err_ab = np.sqrt(np.maximum(real.counts, 1.0)) / real.area_deg2
    err_ab = np.hypot(err_ab, ABUNDANCE_SYSTEMATIC * real.per_deg2)
    lam = np.asarray(SIMET_LAMBDAS)
    err_m = np.hypot(SIMET_AMPLITUDE_ERR, SIMET_SLOPE_ERR * np.log10(lam / 40.0))
    return (pred - real.per_deg2) / err_ab, (mean_mass_at_richness(ph) - simet_mean_mass()) / err_m


def fit_richness_relation(ph: MockPhysics = DEFAULT_PHYSICS) -> RichnessRelation:
    """(pivot, slope, sigma_int) of P(lambda | M) that best fit both anchors, for ``ph``'s cosmology."""
    from scipy.optimize import minimize

    rr0 = ph.richness_relation

    def physics_of(theta) -> MockPhysics:
        rr = rr0.model_copy(
            update={
                "pivot_log10_M200m_hinv": float(theta[0]),
                "slope": float(theta[1]),
                "sigma_ln_lambda_intrinsic": float(abs(theta[2])),
            }
        )
        return ph.model_copy(update={"richness_relation": rr})

    def chi2(theta) -> float:
        a, b = chi2_terms(physics_of(theta))
        return float((a**2).sum() + (b**2).sum())

    x0 = [rr0.pivot_log10_M200m_hinv, rr0.slope, rr0.sigma_ln_lambda_intrinsic]
    res = minimize(chi2, x0, method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-4, "maxiter": 2000})
    return physics_of(res.x).richness_relation


def summary(ph: MockPhysics = DEFAULT_PHYSICS) -> dict:
    """The fit's numbers for the README: real and predicted densities, lensing masses, chi^2."""
    real = real_abundance()
    pred = predicted_abundance(ph)
    a, b = chi2_terms(ph)
    return {
        "lambda_edges": list(LAMBDA_EDGES),
        "real_per_deg2": real.per_deg2.round(4).tolist(),
        "predicted_per_deg2": pred.round(4).tolist(),
        "real_total_per_deg2": round(float(real.per_deg2.sum()), 4),
        "predicted_total_per_deg2": round(float(pred.sum()), 4),
        "lensing_log10_M200m_h": mean_mass_at_richness(ph).round(3).tolist(),
        "simet_log10_M200m_h": simet_mean_mass().round(3).tolist(),
        "chi2_abundance": round(float((a**2).sum()), 2),
        "chi2_lensing": round(float((b**2).sum()), 2),
    }


if __name__ == "__main__":
    import json

    fitted = fit_richness_relation()
    print(json.dumps(fitted.model_dump(), indent=1))
    print(json.dumps(summary(DEFAULT_PHYSICS.model_copy(update={"richness_relation": fitted})), indent=1))
