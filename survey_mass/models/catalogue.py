"""The mass a user of the candidate catalogue already has: a mass-richness relation on the catalogue's own
richness lambda and redshift, fitted with the same survey likelihood and folds as the CNN.

log10 M500 = a + b ln(lambda / 40) + c (z - 0.3) [+ d (M_BCG,i + 22)], with a heteroscedastic scatter
log sigma = s0 + s1 (mu - 14.3) (:func:`~survey_mass.models.networks.log_sigma_of`): the redMaPPer-style
scaling relation (e.g. Simet et al. 2017; Rykoff et al. 2012), fitted per fold on the labels as X-ray-selected
clusters and the other clusters as non-detections (:meth:`survey_mass.selection.XraySelection.nll`); least
squares when the selection is unknown. Its errors are calibrated like the CNN's
(:func:`~survey_mass.models.mass_model.ensemble_errors`): fold spread, the out-of-fold scale, and the
extrapolation term calibrated on independent mocks.

With ``bcg`` the relation also takes the catalogue's central-galaxy i magnitude, as an absolute magnitude
(:func:`central_galaxy_feature`): the strongest baseline a redMaPPer user has (``log10_m500_lambda_bcg``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PIVOT_LAMBDA = 40.0
PIVOT_Z = 0.3
#: the central galaxy's feature is its absolute i magnitude about this pivot (a bright BCG: M_i ~ -22)
PIVOT_BCG_ABS_MAG = -22.0
#: apparent magnitudes outside this range are not a measured central galaxy (redMaPPer's sentinels)
BCG_MAG_RANGE = (10.0, 25.0)


def central_galaxy_feature(bcg_mag_i, z) -> np.ndarray:
    """The central galaxy's absolute i magnitude less the pivot, M_i + 22 = i - DM(z) + 22 (no k-correction: z
    is an input beside it); NaN where the magnitude or z is missing or not a measured galaxy."""
    from ..astro import distance_modulus

    m = np.asarray(bcg_mag_i, float)
    z = np.asarray(z, float)
    ok = np.isfinite(m) & (m > BCG_MAG_RANGE[0]) & (m < BCG_MAG_RANGE[1]) & np.isfinite(z) & (z > 0)
    out = np.full(m.shape, np.nan)
    if ok.any():
        out[ok] = m[ok] - distance_modulus(z[ok]) - PIVOT_BCG_ABS_MAG
    return out


def design(richness: np.ndarray, z: np.ndarray, bcg: np.ndarray | None = None) -> np.ndarray:
    """[1, ln(lambda / 40), z - 0.3] per row, and the central galaxy's feature where ``bcg`` is given."""
    lam = np.asarray(richness, float)
    cols = [np.ones_like(lam), np.log(lam / PIVOT_LAMBDA), np.asarray(z, float) - PIVOT_Z]
    if bcg is not None:
        cols.append(np.asarray(bcg, float))
    return np.stack(cols, axis=1)


def _moments(coef, richness, z, bcg=None) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from .networks import log_sigma_of

    x = design(richness, z, bcg)
    k = x.shape[1]
    mu = x @ np.asarray(coef[:k])
    ls = log_sigma_of(torch.from_numpy(mu), float(coef[k]), float(coef[k + 1])).numpy()
    return mu, np.exp(ls)


@dataclass
class CatalogueRelation:
    """The per-fold coefficients (a, b, c[, d], s0, s1) and the calibration (scale, tau, selection); ``bcg``:
    the relation takes the central galaxy (:func:`central_galaxy_feature`) as well."""

    folds: list[list[float]] = field(default_factory=list)
    calibration: dict = field(default_factory=dict)
    bcg: bool = False

    @staticmethod
    def fit_fold(richness, z, log_m, *, selection=None, m_lim=None, bcg=None) -> list[float]:
        """(a, b, c[, d], s0, s1) on one fold's pool (``log_m`` NaN for clusters without a label; ``bcg`` the
        central galaxy's feature, all finite, for the relation with it)."""
        x = design(richness, z, bcg)
        lab = np.isfinite(log_m)
        coef, *_ = np.linalg.lstsq(x[lab], log_m[lab], rcond=None)
        sigma = float(np.std(log_m[lab] - x[lab] @ coef))
        if selection is None:
            return [float(c) for c in coef] + [float(np.log(max(sigma, 1e-3))), 0.0]
        from scipy.optimize import minimize

        joint = not lab.all()

        def nll(p):
            mu, sig = _moments(p, richness, z, bcg)
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                rows = selection.nll(mu, sig, log_m, lab, m_lim, joint=joint)
            total = float(np.sum(rows))
            return total if np.isfinite(total) else 1e30

        start = np.array([*coef, np.log(max(sigma, 0.05)), 0.0])
        res = minimize(
            nll, start, method="Nelder-Mead", options={"maxiter": 20000, "xatol": 1e-6, "fatol": 1e-6}
        )
        return [float(v) for v in res.x]

    def fold_moments(self, richness, z, bcg=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per fold (K, N): mean, sigma^2 and a zero parameter-variance term (the fits are tiny)."""
        out = [_moments(c, richness, z, bcg if self.bcg else None) for c in self.folds]
        mus = np.stack([o[0] for o in out])
        return mus, np.stack([o[1] ** 2 for o in out]), np.zeros_like(mus)

    def predict(self, richness, z, flux_limit=None, bcg=None) -> dict[str, np.ndarray]:
        """The calibrated ensemble (:func:`~survey_mass.models.mass_model.ensemble_errors`); NaN where lambda or z
        is missing, and for the relation with the central galaxy where ``bcg`` (its feature) is."""
        from .mass_model import ensemble_errors

        lam = np.asarray(richness, float)
        z = np.asarray(z, float)
        ok = np.isfinite(lam) & (lam > 0) & np.isfinite(z)
        if self.bcg:
            bcg = np.full(lam.size, np.nan) if bcg is None else np.asarray(bcg, float)
            ok &= np.isfinite(bcg)
        out = {
            k: np.full(lam.size, np.nan)
            for k in ("log10_m500", "log10_m500_err", "log10_m500_err_aleatoric", "log10_m500_err_fold")
        }
        out["log10_m500_err_extrapolation"] = np.full(lam.size, np.nan)
        if ok.any() and self.folds:
            fl = None if flux_limit is None else np.asarray(flux_limit, float)[ok]
            b = bcg[ok] if self.bcg else None
            res = ensemble_errors(*self.fold_moments(lam[ok], z[ok], b), z[ok], self.calibration, fl)
            for k, v in res.items():
                out[k][ok] = v
        return out

    def to_dict(self) -> dict:
        return {"folds": self.folds, "calibration": self.calibration, "bcg": self.bcg}

    @classmethod
    def from_dict(cls, d: dict | None) -> CatalogueRelation:
        d = d or {}
        return cls(
            folds=[list(map(float, f)) for f in d.get("folds", [])],
            calibration=dict(d.get("calibration", {})),
            bcg=bool(d.get("bcg", False)),
        )
