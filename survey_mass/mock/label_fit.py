"""The mock's X-ray labels held against the real MCXC masses of redMaPPer clusters (#29 item 2).

The mock labels a subset of the real redMaPPer clusters as MCXC does: from an L_X drawn given the halo, through
a flux limit per X-ray survey. This module draws those labels for every real candidate of a footprint exactly
as the mock does (:func:`survey_mass.mock.halos.haloes_from_candidates`, :func:`~survey_mass.mock.halos.draw_labels`;
no pixels) and compares them with the real labels on one footing (``../shared/DESIGN.md``, "The label-level
comparison"): the least-squares fit label ~ 1 + log10 lambda + log10(1 + z) + M_i,BCG (the catalogue's i
magnitude minus the distance modulus), its lambda slope and BCG coefficient with bootstrap errors, the 5-fold
cross-validated MAE of the lambda + z fit, the mean offset of the labels from the mock's E[M | lambda, z], and
the number of labels.

``python -m survey_mass.mock.label_fit`` prints the comparison for the default physics and for each alternative
it is asked for (``--set NAME=VALUE``, as ``survey-mass mock --set``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from .physics import DEFAULT_PHYSICS, MockPhysics

#: bootstrap resamples of the label-level fit
N_BOOT = 400


class LabelStats(BaseModel):
    """The label-level comparison of one label set."""

    model_config = ConfigDict(extra="forbid")

    n: int
    lambda_slope: float
    lambda_slope_sd: float
    bcg_coefficient: float
    bcg_coefficient_sd: float
    cv_mae_lambda_z: float
    #: mean of label - E[log10 M | lambda, z] (the mock's relation, true scale)
    offset_from_mean_relation: float
    offset_sd: float


def _design(lam, z, bcg_abs) -> np.ndarray:
    return np.column_stack([np.ones_like(z), np.log10(lam), np.log10(1 + z), bcg_abs])


def _cv_mae(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 1) -> float:
    k = np.random.default_rng(seed).permutation(y.size) % folds
    err = np.empty(y.size)
    for f in range(folds):
        c, *_ = np.linalg.lstsq(x[k != f], y[k != f], rcond=None)
        err[k == f] = x[k == f] @ c - y[k == f]
    return float(np.abs(err).mean())


def label_stats(lam, z, bcg_mag_i, label, mean_relation, *, seed: int = 29) -> LabelStats:
    """The comparison's statistics of labelled rows (``label`` finite; rows without a BCG are dropped)."""
    from .. import astro

    lam, z, label = (np.asarray(a, float) for a in (lam, z, label))
    bcg_abs = np.asarray(bcg_mag_i, float) - astro.distance_modulus(np.clip(z, 1e-3, None))
    ok = np.isfinite(label) & np.isfinite(bcg_abs) & (lam > 0)
    x, y = _design(lam[ok], z[ok], bcg_abs[ok]), label[ok]
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(N_BOOT):
        i = rng.integers(0, y.size, y.size)
        boots.append(np.linalg.lstsq(x[i], y[i], rcond=None)[0])
    sd = np.std(boots, axis=0)
    off = y - np.asarray(mean_relation, float)[ok]
    return LabelStats(
        n=int(ok.sum()),
        lambda_slope=float(coef[1]),
        lambda_slope_sd=float(sd[1]),
        bcg_coefficient=float(coef[3]),
        bcg_coefficient_sd=float(sd[3]),
        cv_mae_lambda_z=_cv_mae(x[:, :3], y),
        offset_from_mean_relation=float(off.mean()),
        offset_sd=float(off.std() / np.sqrt(off.size)),
    )


def mean_relation(lam, z, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    """E[log10 M500 | lambda, z] of the mock (its mass function and P(lambda | M); no BCG)."""
    from .halos import halo_posterior

    return halo_posterior(np.asarray(lam, float), np.asarray(z, float), None, ph).mean_log10_m500()


def mock_labels(candidates: pd.DataFrame, ph: MockPhysics = DEFAULT_PHYSICS, seed: int = 2022) -> np.ndarray:
    """The mock's label of every candidate (NaN: not labelled), drawn as a mock store draws them."""
    from . import halos

    rng = np.random.default_rng(seed)
    lam = candidates["richness"].to_numpy(float)
    z = candidates["z"].to_numpy(float)
    bcg = candidates["bcg_mag_i"].to_numpy(float)
    bcg = np.where((bcg > 10) & (bcg < 25), bcg, np.nan)
    h = halos.haloes_from_candidates(lam, z, bcg, rng, ph)
    limit, comp = halos.label_coverage(
        candidates["ra"].to_numpy(float), candidates["dec"].to_numpy(float), ph
    )
    return halos.draw_labels(h.log10_m500, z, h.eps_lx, limit, rng, ph, comp)[1]


def real_and_mock(ph: MockPhysics = DEFAULT_PHYSICS, footprint: str = "dr12", seed: int = 2022):
    """(real MCXC stats, the mock's stats) over the footprint's real redMaPPer candidates."""
    from ..candidates import load_redmapper
    from ..footprint import parse_footprint
    from ..labels import load_mcxc_labels

    cand = load_redmapper()
    cand = cand[parse_footprint(footprint).contains(cand["ra"].to_numpy(), cand["dec"].to_numpy())]
    cand = cand.reset_index(drop=True)
    e = mean_relation(cand["richness"], cand["z"], ph)
    real = load_mcxc_labels().set_index("id")["log10_m500"].reindex(cand["id"].to_numpy()).to_numpy(float)
    args = (cand["richness"], cand["z"], cand["bcg_mag_i"])
    return label_stats(*args, real, e), label_stats(*args, mock_labels(cand, ph, seed), e)


# --- the fit ----------------------------------------------------------------------------------------------------

#: the label parameters fitted, with their starting values and a (low, high) box: the deep serendipitous
#: surveys' sky fraction, the RASS surveys' completeness, 1 - b (hydrostatic bias; prior 0.80 +- 0.10), the
#: scatter between the label's flux and the detection's (ln)
LABEL_PARAMETERS = {
    "deep_sky_fraction": (0.01, (0.002, 0.05)),
    "rass_completeness": (1.0, (0.2, 1.0)),
    "hydrostatic_one_minus_b": (0.8, (0.5, 1.1)),
    "flux_error_ln": (0.2, (0.02, 0.6)),
    "rass_limit_scale": (1.0, (0.3, 3.0)),
}
ONE_MINUS_B_PRIOR = (0.80, 0.10)


@dataclass
class LabelFitData:
    """What the fit compares: the real labels' statistics and the mock's haloes of the same candidates."""

    cand: pd.DataFrame
    real: LabelStats
    n_real_deep: int
    mean_relation: np.ndarray
    haloes: object
    #: the real label of each candidate (NaN: none) and whether a deep survey gave it
    real_label: np.ndarray
    real_deep: np.ndarray

    def resampled(self, rng: np.random.Generator) -> LabelFitData:
        """The same data with the real labels resampled with replacement (a bootstrap of the real sample)."""
        from dataclasses import replace

        lab = np.flatnonzero(np.isfinite(self.real_label))
        pick = lab[rng.integers(0, lab.size, lab.size)]
        c = self.cand.iloc[pick]
        real = label_stats(
            c["richness"], c["z"], c["bcg_mag_i"], self.real_label[pick], self.mean_relation[pick]
        )
        return replace(self, real=real, n_real_deep=int(self.real_deep[pick].sum()))


#: the label surveys' flux limits the fit starts from: RASS north and south (scaled together by the fit), and
#: 400SD's for the deep serendipitous fields
RASS_LIMITS = (2e-12, 2.3e-12)  # the fit scales both (``rass_limit_scale``)
DEEP_LIMIT = 1.65e-13


def physics_with(ph: MockPhysics, p: dict[str, float]) -> MockPhysics:
    """``ph`` with the label parameters ``p`` (:data:`LABEL_PARAMETERS`) in its label surveys."""
    from .physics import LabelSurvey

    north, south = (x * p["rass_limit_scale"] for x in RASS_LIMITS)
    c = p["rass_completeness"]
    surveys = (
        LabelSurvey(name="RASS-north", flux_limit_cgs=north, dec_range=(2.5, 90.0), completeness=c),
        LabelSurvey(name="RASS-south", flux_limit_cgs=south, dec_range=(-90.0, 2.5), completeness=c),
        LabelSurvey(name="serendipitous", flux_limit_cgs=DEEP_LIMIT, sky_fraction=p["deep_sky_fraction"]),
    )
    update = {
        "surveys": surveys,
        "hydrostatic_one_minus_b": p["hydrostatic_one_minus_b"],
        "flux_error_ln": p["flux_error_ln"],
    }
    return ph.model_copy(update={"labels": ph.labels.model_copy(update=update)})


def fit_data(ph: MockPhysics, footprint: str = "dr12", seed: int = 2022) -> LabelFitData:
    from ..candidates import load_redmapper
    from ..footprint import parse_footprint
    from ..labels import MCXC_NOMINAL_FLUX_LIMITS, load_mcxc_labels
    from . import halos

    cand = load_redmapper()
    cand = cand[parse_footprint(footprint).contains(cand["ra"].to_numpy(), cand["dec"].to_numpy())]
    cand = cand.reset_index(drop=True)
    e = mean_relation(cand["richness"], cand["z"], ph)
    m = load_mcxc_labels().set_index("id")
    real = m["log10_m500"].reindex(cand["id"].to_numpy()).to_numpy(float)
    sub = m["sub_cat"].reindex(cand["id"].to_numpy()).astype(str).to_numpy()
    deep = np.isfinite(real) & np.array([MCXC_NOMINAL_FLUX_LIMITS.get(s, 1.0) < 5e-13 for s in sub])
    bcg = cand["bcg_mag_i"].to_numpy(float)
    h = halos.haloes_from_candidates(
        cand["richness"].to_numpy(float),
        cand["z"].to_numpy(float),
        np.where((bcg > 10) & (bcg < 25), bcg, np.nan),
        np.random.default_rng(seed),
        ph,
    )
    return LabelFitData(
        cand,
        label_stats(cand["richness"], cand["z"], cand["bcg_mag_i"], real, e),
        int(deep.sum()),
        e,
        h,
        real,
        deep,
    )


def mock_stats(
    d: LabelFitData, ph: MockPhysics, p: dict[str, float], seed: int = 7
) -> tuple[LabelStats, int]:
    """The mock's label statistics and its count of deep-survey labels, for label parameters ``p``."""
    from . import halos

    php = physics_with(ph, p)
    limit, comp = halos.label_coverage(d.cand["ra"].to_numpy(float), d.cand["dec"].to_numpy(float), php)
    deep = limit == DEEP_LIMIT
    z = d.cand["z"].to_numpy(float)
    _, lab = halos.draw_labels(
        d.haloes.log10_m500, z, d.haloes.eps_lx, limit, np.random.default_rng(seed), php, comp
    )
    s = label_stats(d.cand["richness"], d.cand["z"], d.cand["bcg_mag_i"], lab, d.mean_relation)
    return s, int((np.isfinite(lab) & deep).sum())


def label_chi2_terms(d: LabelFitData, s: LabelStats, n_deep: int, p: dict[str, float]) -> dict[str, float]:
    """(mock - real) / error of each statistic the fit matches, and the hydrostatic bias's prior."""
    r = d.real
    n_rass_real, n_rass = r.n - d.n_real_deep, s.n - n_deep
    return {
        "n_rass": (n_rass - n_rass_real) / np.sqrt(n_rass_real),
        "n_deep": (n_deep - d.n_real_deep) / np.sqrt(d.n_real_deep),
        "lambda_slope": (s.lambda_slope - r.lambda_slope) / np.hypot(s.lambda_slope_sd, r.lambda_slope_sd),
        "bcg": (s.bcg_coefficient - r.bcg_coefficient) / np.hypot(s.bcg_coefficient_sd, r.bcg_coefficient_sd),
        "cv_mae": (s.cv_mae_lambda_z - r.cv_mae_lambda_z) / 0.008,
        "offset": (s.offset_from_mean_relation - r.offset_from_mean_relation)
        / np.hypot(s.offset_sd, r.offset_sd),
        "prior_one_minus_b": (p["hydrostatic_one_minus_b"] - ONE_MINUS_B_PRIOR[0]) / ONE_MINUS_B_PRIOR[1],
    }


def fit_labels(
    d: LabelFitData,
    ph: MockPhysics,
    seeds=(7, 8, 9),
    iterations: int = 6,
    fit_completeness: bool = False,
    p0=None,
) -> dict[str, float]:
    """The label parameters, each solved from the statistic it sets while the others hold (a fixed point; the
    label draws use common random numbers): the deep surveys' sky fraction from their label count, the RASS
    completeness from theirs, 1 - b from the labels' mean offset combined with its prior
    (:data:`ONE_MINUS_B_PRIOR`), the flux scatter from the cross-validated MAE."""
    p = {k: v[0] for k, v in LABEL_PARAMETERS.items()} | dict(p0 or {})
    r = d.real
    for _ in range(iterations):
        runs = [mock_stats(d, ph, p, sd) for sd in seeds]
        n_deep = np.mean([nd for _, nd in runs])
        n_rass = np.mean([s.n - nd for s, nd in runs])
        off = np.mean([s.offset_from_mean_relation for s, _ in runs])
        mae = np.mean([s.cv_mae_lambda_z for s, _ in runs])
        off_sd = np.hypot(np.mean([s.offset_sd for s, _ in runs]), r.offset_sd)
        p["deep_sky_fraction"] *= d.n_real_deep / max(n_deep, 1.0)
        ratio = (r.n - d.n_real_deep) / max(n_rass, 1.0)
        if fit_completeness:
            p["rass_completeness"] = min(1.0, p["rass_completeness"] * ratio)
        else:  # the count falls with the limit as F^-1.3 (log N - log S of RASS clusters)
            p["rass_limit_scale"] *= ratio ** (-1 / 1.3)
        # log10(1 - b) moves the labels' offset one to one: the data's value and the prior's, inverse-variance
        x_data = np.log10(p["hydrostatic_one_minus_b"]) + r.offset_from_mean_relation - off
        x_prior, sd_prior = (
            np.log10(ONE_MINUS_B_PRIOR[0]),
            ONE_MINUS_B_PRIOR[1] / ONE_MINUS_B_PRIOR[0] / np.log(10),
        )
        w = np.array([1 / off_sd**2, 1 / sd_prior**2])
        p["hydrostatic_one_minus_b"] = float(10 ** ((w[0] * x_data + w[1] * x_prior) / w.sum()))
        # the labels' scatter: sigma_ln_l and the flux error add in quadrature; the MAE follows the total
        lab = ph.labels
        tot = np.hypot(lab.sigma_ln_l, p["flux_error_ln"]) * (r.cv_mae_lambda_z / mae) ** 2
        p["flux_error_ln"] = float(np.clip(np.sqrt(max(tot**2 - lab.sigma_ln_l**2, 0.0004)), 0.02, 0.6))
        for k, (_, (lo, hi)) in LABEL_PARAMETERS.items():
            p[k] = float(np.clip(p[k], lo, hi))
    return p


def binned_offsets(lam, z, label, mean_rel, lam_edges, z_edge: float) -> list[list[dict]]:
    """Mean label - E[M | lambda, z] (and its error and count) in len(lam_edges) - 1 lambda bins x 2 z bins."""
    lam, z, label, mean_rel = (np.asarray(a, float) for a in (lam, z, label, mean_rel))
    ok = np.isfinite(label)
    out = []
    for i in range(len(lam_edges) - 1):
        row = []
        for lo_z, hi_z in ((0.0, z_edge), (z_edge, 9.0)):
            k = ok & (lam >= lam_edges[i]) & (lam < lam_edges[i + 1]) & (z >= lo_z) & (z < hi_z)
            d = label[k] - mean_rel[k]
            row.append(
                {
                    "n": int(k.sum()),
                    "offset": float(d.mean()) if k.any() else None,
                    "error": float(d.std(ddof=1) / np.sqrt(k.sum())) if k.sum() > 1 else None,
                }
            )
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .physics import apply_overrides

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--seeds", type=int, default=5, help="mock realisations (seeds 2022, 2023, ...)")
    args = ap.parse_args(argv)
    ph = apply_overrides(DEFAULT_PHYSICS, args.set)
    rows = [real_and_mock(ph, seed=2022 + k) for k in range(args.seeds)]
    for name, s in [("real MCXC", rows[0][0])] + [(f"mock {2022 + k}", m) for k, (_, m) in enumerate(rows)]:
        print(_line(name, s))
    print(_line("mock mean", mean_stats([m for _, m in rows])))
    return 0


def _line(name: str, s: LabelStats) -> str:
    return (
        f"{name:10s} n={s.n:4d} lambda slope {s.lambda_slope:.3f}±{s.lambda_slope_sd:.3f}  BCG "
        f"{s.bcg_coefficient:+.3f}±{s.bcg_coefficient_sd:.3f}  CV MAE {s.cv_mae_lambda_z:.3f}  offset "
        f"{s.offset_from_mean_relation:+.3f}±{s.offset_sd:.3f}"
    )


def mean_stats(runs: list[LabelStats]) -> LabelStats:
    """The mean of several mock realisations' statistics (their own errors: one realisation's, as a real
    sample of that size would have)."""
    d = {k: float(np.mean([getattr(r, k) for r in runs])) for k in LabelStats.model_fields}
    d["n"] = int(round(d["n"]))
    return LabelStats(**d)


if __name__ == "__main__":
    raise SystemExit(main())
