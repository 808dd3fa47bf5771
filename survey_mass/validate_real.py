"""``survey-mass validate --real``: every estimator of a catalogue scored against real mass labels at the real
clusters, with the labels' selection, errors and mass scale folded in.

Two scores per estimator:

* **raw**: the catalogue's mass minus the label, and the 68% interval widened by the label's error (its own
  ``log10_m500_err``, else the L_X scatter that a label from L_X carries);
* **as selected** (the selection-aware estimator, for labels with a declared selection): the catalogue's
  population prediction (mu, sigma) turned into the distribution of a *selected* cluster's label. Labels made
  from the same L_X (or SZ signal) that selected them are a normal in the label truncated at the row's limit:
  y ~ N(mu + offset, sqrt(sigma^2 + s^2 + sd_offset^2)), y >= m_lim(z, the row's survey). The estimate is that
  distribution's mean, the PIT its CDF at the label and the 68% interval its central one. With no selection it
  is the raw score with the label errors.

``offset`` is the mass scale's: the catalogue's masses are on the true (lensing-calibrated) scale of the mock
they were trained on; hydrostatic labels (MCXC's, through the REXCESS L-M relation) are lower by
log10(1 - b) = log10(0.80 +- 0.10) (:data:`~survey_mass.labels.HYDROSTATIC_ONE_MINUS_B`), whose uncertainty
widens every interval.

The strongest baselines a redMaPPer user has are fitted on the labels themselves and scored out of fold (10
seeded folds; no row is scored by a fit that saw it): label ~ 1 + ln lambda + ln(1 + z) and the same plus the
central galaxy's absolute i magnitude. Everything is reported overall and in tertiles of the catalogue lambda
and of z, with bootstrap 95% intervals; ``OUT/real_validation.{json,md,png}``.

From Python::

    from survey_mass.validate_real import validate_real, write_real
    report = validate_real("dr12_masses")            # the shipped MCXC labels, declared selection "mcxc"
    write_real(report, "val")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from .errors import SurveyMassError
from .labels import LabelSelection, MassScale

REPORT_JSON = "real_validation.json"
REPORT_MD = "real_validation.md"
REPORT_PNG = "real_validation.png"
#: estimators a catalogue may carry: name -> mass column (the error is column + "_err")
ESTIMATOR_COLUMNS = {
    "headline": "log10_m500",
    "lambda": "log10_m500_lambda",
    "lambda_bcg": "log10_m500_lambda_bcg",
    "pixels": "log10_m500_pixels",
    "richness": "log10_m500_richness",
    "given_detection": "log10_m500_given_detection",
}
#: the population estimators that the selection folds into (the given-detection mass is already conditioned)
SELECTABLE = ("headline", "lambda", "lambda_bcg", "pixels", "richness")
PIT_BINS = 10


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Score(_Model):
    """Bias (estimate - label), MAE, 68% coverage and PIT of one estimator on the matched rows."""

    n: int
    bias: float
    bias_95: tuple[float, float]
    mae: float
    mae_95: tuple[float, float]
    coverage_68: float | None = None
    coverage_68_95: tuple[float, float] | None = None
    #: fraction of rows in each of PIT_BINS equal bins of the PIT (flat for a calibrated error)
    pit_histogram: list[float] | None = None
    #: tertiles of the catalogue lambda, then of z (low, middle, high)
    bias_by_lambda: list[float | None]
    bias_by_lambda_95: list[tuple[float, float] | None]
    bias_by_z: list[float | None]
    bias_by_z_95: list[tuple[float, float] | None]
    coverage_by_lambda: list[float | None] | None = None
    coverage_by_z: list[float | None] | None = None


class EstimatorResult(_Model):
    column: str
    raw: Score
    as_selected: Score | None = None


class Ranking(_Model):
    """How well one estimator orders and tracks the labels (raw estimates; no scale offset or selection, which
    shift every row alike): against the catalogue-lambda mass on the same rows, with paired intervals."""

    n: int
    spearman: float
    spearman_95: tuple[float, float]
    #: sd of (estimate - label)
    scatter: float
    scatter_95: tuple[float, float]
    #: spearman - lambda's, and scatter / lambda's, on the same bootstrap resamples
    spearman_minus_lambda: float | None = None
    spearman_minus_lambda_95: tuple[float, float] | None = None
    scatter_over_lambda: float | None = None
    scatter_over_lambda_95: tuple[float, float] | None = None


class RealValidationReport(_Model):
    """``real_validation.json``."""

    catalog: str
    labels: str
    n_labels: int
    n_matched: int
    selection: LabelSelection
    label_scale: MassScale
    catalogue_scale: str = "true (the mock's lensing-calibrated masses)"
    scale_offset_dex: float
    #: the offset's sd: a systematic shared by every row, so not in the bootstrap intervals of the bias (add it)
    scale_offset_sd_dex: float
    #: True where the selection and 1 - b were fitted to these same labels (the default MCXC validation: the mock's
    #: label fit): the bias and coverage are then a goodness of fit, not a held-out test
    fitted_on_scored_labels: bool = False
    lambda_tertile_edges: list[float]
    z_tertile_edges: list[float]
    estimators: dict[str, EstimatorResult]
    #: label ~ 1 + ln lambda + ln(1+z) [+ BCG absolute i], least squares on the labels, out of fold
    baselines: dict[str, Score]
    headline_over_lambda_mae: float | None = None
    headline_over_lambda_mae_95: tuple[float, float] | None = None
    #: per estimator: rank correlation and residual scatter against the labels, and against lambda's
    ranking: dict[str, Ranking] = {}
    seed: int


# --- reading ---------------------------------------------------------------------------------------------------


def read_catalog_columns(catalog: str | Path, wanted: list[str]) -> pd.DataFrame:
    """The ``wanted`` columns that a catalogue (or collection) has, every row."""
    import pyarrow.parquet as pq

    from . import paths
    from .catalog.query import open_catalog

    _, root = open_catalog(catalog)
    files = paths.catalog_partition_files(root)
    if not files:
        raise SurveyMassError(f"validate --real: catalog {str(catalog)!r} has no partitions")
    have = set(pq.read_schema(files[0]).names)
    return pq.ParquetDataset(files).read(columns=[c for c in wanted if c in have]).to_pandas()


def matched_rows(catalog: str | Path, labels: pd.DataFrame) -> pd.DataFrame:
    """The catalogue rows that carry a label, with ``label``, ``label_err`` and ``survey`` beside them."""
    from .labels import match_labels

    cols = ["id", "ra", "dec", "z", "richness_catalog", "bcg_mag_i"]
    cols += [c for col in ESTIMATOR_COLUMNS.values() for c in (col, f"{col}_err")]
    cat = read_catalog_columns(catalog, cols)
    missing = [c for c in ("id", "ra", "dec", "z", "richness_catalog", "log10_m500") if c not in cat]
    if missing:
        raise SurveyMassError(f"validate --real: catalog {str(catalog)!r} has no column {missing[0]!r}")
    if cat["id"].duplicated().any():
        dup = int(cat["id"][cat["id"].duplicated()].iloc[0])
        raise SurveyMassError(f"validate --real: catalog {str(catalog)!r} holds id {dup} twice")
    ic, il = match_labels(labels, cat["id"].to_numpy(), cat["ra"], cat["dec"], cat["z"])
    out = cat.iloc[ic].reset_index(drop=True)
    lab = labels.iloc[il].reset_index(drop=True)
    out["label"] = lab["log10_m500"].to_numpy(float)
    out["label_err"] = lab["log10_m500_err"].to_numpy(float)
    out["survey"] = lab["survey"].to_numpy()
    return out


# --- statistics ------------------------------------------------------------------------------------------------


def _ci(samples: np.ndarray) -> tuple[float, float]:
    return float(np.quantile(samples, 0.025)), float(np.quantile(samples, 0.975))


def _boot_mean(x: np.ndarray, idx: np.ndarray) -> tuple[float, float]:
    return _ci(x[idx].mean(axis=1))


def _boot_index(n: int, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    return rng.integers(0, n, (n_boot, n))


def tertiles(v: np.ndarray) -> tuple[np.ndarray, list[float]]:
    edges = np.nanquantile(v, [1 / 3, 2 / 3])
    return np.digitize(v, edges), [float(e) for e in edges]


def score(
    d: np.ndarray,
    inside: np.ndarray | None,
    pit: np.ndarray | None,
    bins: tuple[np.ndarray, np.ndarray],
    rng,
    n_boot,
) -> Score:
    """A :class:`Score` from per-row residuals ``d``, 68%-interval hits and PITs (NaN rows dropped)."""
    ok = np.isfinite(d)
    d = d[ok]
    t_lam, t_z = bins[0][ok], bins[1][ok]
    idx = _boot_index(d.size, rng, n_boot)
    hit = None if inside is None else inside[ok].astype(float)

    def per_bin(x, t):
        return [float(x[t == k].mean()) if (t == k).any() else None for k in range(3)]

    def per_bin_ci(x, t):
        out = []
        for k in range(3):
            v = x[t == k]
            out.append(_boot_mean(v, _boot_index(v.size, rng, n_boot)) if v.size > 2 else None)
        return out

    return Score(
        n=int(d.size),
        bias=float(d.mean()),
        bias_95=_boot_mean(d, idx),
        mae=float(np.abs(d).mean()),
        mae_95=_boot_mean(np.abs(d), idx),
        coverage_68=None if hit is None else float(hit.mean()),
        coverage_68_95=None if hit is None else _boot_mean(hit, idx),
        pit_histogram=None
        if pit is None
        else (np.histogram(pit[ok], bins=PIT_BINS, range=(0, 1))[0] / d.size).round(4).tolist(),
        bias_by_lambda=per_bin(d, t_lam),
        bias_by_lambda_95=per_bin_ci(d, t_lam),
        bias_by_z=per_bin(d, t_z),
        bias_by_z_95=per_bin_ci(d, t_z),
        coverage_by_lambda=None if hit is None else per_bin(hit, t_lam),
        coverage_by_z=None if hit is None else per_bin(hit, t_z),
    )


@dataclass(frozen=True)
class LabelPredictive:
    """The distribution of a *selected* cluster's label given the catalogue's (mu, sigma): N(centre, width)
    (the label scale's offset and its sd, the label's scatter) times P(detected | label) = Phi((y - m_lim) /
    soft) (soft 0: a hard limit, the label truncated at m_lim; m_lim -inf: no selection)."""

    centre: np.ndarray
    width: np.ndarray
    m_lim: np.ndarray
    soft: float

    def mean(self) -> np.ndarray:
        from .selection import selected_moments  # the same truncated-normal mean the training scores with

        return selected_moments(self.centre, self.width, self.m_lim, self.soft, 0.0)[0]

    def pit(self, y) -> np.ndarray:
        """P(label <= y) for each row: with a soft limit, P(T <= y, D >= m_lim) / P(D >= m_lim) for the label T
        and the detection variable D = T + soft Z, a bivariate normal (closed form, scipy)."""
        from scipy.special import ndtr
        from scipy.stats import multivariate_normal

        y = np.asarray(y, float)
        if self.soft == 0:
            lo = ndtr((self.m_lim - self.centre) / self.width)
            return np.clip((ndtr((y - self.centre) / self.width) - lo) / np.clip(1 - lo, 1e-300, None), 0, 1)
        wd = np.sqrt(self.width**2 + self.soft**2)
        a = (y - self.centre) / self.width
        b = (self.m_lim - self.centre) / wd
        rho = self.width / wd
        out = np.empty(y.size)
        for i in range(y.size):  # P(T <= y) - P(T <= y, D < m) = P(T <= y, D >= m)
            joint = multivariate_normal.cdf([a[i], b[i]], mean=[0, 0], cov=[[1, rho[i]], [rho[i], 1]])
            out[i] = (ndtr(a[i]) - joint) / max(1 - ndtr(b[i]), 1e-300)
        return np.clip(out, 0, 1)


def label_predictive(mu, sigma, m_lim, selection, offset: tuple[float, float]) -> LabelPredictive:
    """The selected label's distribution (:class:`LabelPredictive`) for the catalogue's (mu, sigma)."""
    sig_eff, soft, sn = selection.effective(np.asarray(sigma, float))
    width = np.sqrt(sig_eff**2 + sn**2 + offset[1] ** 2)  # sig_eff holds the label's scatter s
    centre = np.asarray(mu, float) + offset[0]
    return LabelPredictive(
        centre, width, np.broadcast_to(np.asarray(m_lim, float), centre.shape), float(soft)
    )


def out_of_fold(x: np.ndarray, y: np.ndarray, *, folds: int = 10, seed: int = 29) -> np.ndarray:
    """Least-squares predictions of ``y`` from ``x``, each row's from a fit on the other folds only."""
    k = np.random.default_rng(seed).permutation(len(y)) % folds
    pred = np.full(len(y), np.nan)
    for f in range(folds):
        coef, *_ = np.linalg.lstsq(x[k != f], y[k != f], rcond=None)
        pred[k == f] = x[k == f] @ coef
    return pred


# --- the validation --------------------------------------------------------------------------------------------


def _label_scatter(rows: pd.DataFrame, selection) -> np.ndarray:
    """Each label's error: its own where given, else the selection's label scatter (0.01 dex without one)."""
    own = rows["label_err"].to_numpy(float)
    default = selection.s if selection is not None else 0.0
    return np.where(np.isfinite(own), own, default)


def _estimator(rows, name, col, sel_model, m_lim, offset, bins, rng, n_boot) -> EstimatorResult | None:
    from scipy.special import ndtr

    if col not in rows or not np.isfinite(rows[col]).any():
        return None
    y = rows["label"].to_numpy(float)
    mu = rows[col].to_numpy(float)
    err = rows[f"{col}_err"].to_numpy(float) if f"{col}_err" in rows else None
    lab_err = _label_scatter(rows, sel_model)
    raw_in = raw_pit = None
    if err is not None:
        w = np.sqrt(err**2 + lab_err**2 + offset[1] ** 2)
        raw_pit = ndtr((y - mu - offset[0]) / w)
        raw_in = np.abs(raw_pit - 0.5) <= 0.3413
    raw = score(mu + offset[0] - y, raw_in, raw_pit, bins, rng, n_boot)
    if err is None or name not in SELECTABLE:
        return EstimatorResult(column=col, raw=raw)
    if sel_model is None:  # no selection: the label errors only
        return EstimatorResult(column=col, raw=raw, as_selected=raw)
    sel = score(*selected_residuals(rows, col, sel_model, m_lim, offset), bins, rng, n_boot)
    return EstimatorResult(column=col, raw=raw, as_selected=sel)


def selected_residuals(rows: pd.DataFrame, col: str, sel_model, m_lim, offset) -> tuple[np.ndarray, ...]:
    """Per matched row: E[label | the estimate, selected] - label, whether the label falls in the central 68%
    of its selected distribution, and its PIT."""
    y = rows["label"].to_numpy(float)
    pred = label_predictive(
        rows[col].to_numpy(float), rows[f"{col}_err"].to_numpy(float), m_lim, sel_model, offset
    )
    mean = pred.mean()
    if not np.isfinite(mean).any():
        raise SurveyMassError(
            f"validate --real: no {col} label is possible under the declared selection (its limits lie far above "
            "every cluster); check the limits"
        )
    pit = pred.pit(y)
    return mean - y, np.abs(pit - 0.5) <= 0.3413, pit


def _baselines(rows: pd.DataFrame, bins, rng, n_boot, seed: int) -> dict[str, Score]:
    from . import astro

    y = rows["label"].to_numpy(float)
    lam, z = rows["richness_catalog"].to_numpy(float), rows["z"].to_numpy(float)
    ok = np.isfinite(lam) & (lam > 0) & np.isfinite(z)
    if ok.sum() < 20:
        return {}
    base = np.column_stack([np.ones(ok.sum()), np.log(lam[ok]), np.log1p(z[ok])])
    out = {}
    d = np.full(y.size, np.nan)
    d[ok] = out_of_fold(base, y[ok], seed=seed) - y[ok]
    out["oof_lambda"] = score(d, None, None, bins, rng, n_boot)
    if "bcg_mag_i" in rows:
        m = rows["bcg_mag_i"].to_numpy(float) - astro.distance_modulus(np.clip(z, 1e-3, None))
        ok2 = ok & np.isfinite(m)
        if ok2.sum() >= 20:
            x = np.column_stack([np.ones(ok2.sum()), np.log(lam[ok2]), np.log1p(z[ok2]), m[ok2]])
            d2 = np.full(y.size, np.nan)
            d2[ok2] = out_of_fold(x, y[ok2], seed=seed) - y[ok2]
            out["oof_lambda_bcg"] = score(d2, None, None, bins, rng, n_boot)
    return out


#: bootstrap resamples for the rank correlations (each resample ranks every row once per estimator)
RANK_BOOT = 500


def _spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of (B, n) arrays (ties take their mean rank)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=-1), rankdata(y, axis=-1)
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    return (rx * ry).sum(-1) / np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))


def rankings(rows: pd.DataFrame, rng, n_boot: int = RANK_BOOT) -> dict[str, Ranking]:
    """:class:`Ranking` of every estimator present, on the rows where all of them and lambda give a mass."""
    y = rows["label"].to_numpy(float)
    cols = {n: c for n, c in ESTIMATOR_COLUMNS.items() if n in SELECTABLE and c in rows}
    cols = {n: c for n, c in cols.items() if np.isfinite(rows[c].to_numpy(float)).any()}
    if "lambda" not in cols:
        return {}
    ok = np.isfinite(y) & np.logical_and.reduce([np.isfinite(rows[c].to_numpy(float)) for c in cols.values()])
    if ok.sum() < 10:
        return {}
    y = y[ok]
    idx = _boot_index(y.size, rng, n_boot)
    est = {n: rows[c].to_numpy(float)[ok] for n, c in cols.items()}
    rho = {n: _spearman(e[idx], y[idx]) for n, e in est.items()}
    sd = {n: (e - y)[idx].std(axis=1) for n, e in est.items()}
    out = {}
    for n, e in est.items():
        paired = n != "lambda"
        out[n] = Ranking(
            n=int(y.size),
            spearman=float(_spearman(e, y)),
            spearman_95=_ci(rho[n]),
            scatter=float((e - y).std()),
            scatter_95=_ci(sd[n]),
            spearman_minus_lambda=float(_spearman(e, y) - _spearman(est["lambda"], y)) if paired else None,
            spearman_minus_lambda_95=_ci(rho[n] - rho["lambda"]) if paired else None,
            scatter_over_lambda=float((e - y).std() / (est["lambda"] - y).std()) if paired else None,
            scatter_over_lambda_95=_ci(sd[n] / sd["lambda"]) if paired else None,
        )
    return out


def _mae_ratio(rows, rng, n_boot, offset: float):
    a = np.abs(rows.get("log10_m500", np.nan) + offset - rows["label"]).to_numpy(float)
    b = np.abs(rows.get("log10_m500_lambda", np.nan) + offset - rows["label"]).to_numpy(float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return None, None
    a, b = a[ok], b[ok]
    idx = _boot_index(a.size, rng, n_boot)
    return float(a.mean() / b.mean()), _ci(a[idx].mean(axis=1) / b[idx].mean(axis=1))


def validate_real(
    catalog: str | Path,
    labels: pd.DataFrame | None = None,
    *,
    labels_name: str = "MCXC x redMaPPer DR8 (package data)",
    selection: LabelSelection | None = None,
    scale: MassScale = "hydrostatic",
    one_minus_b: tuple[float, float] | None = None,
    n_boot: int = 2000,
    seed: int = 29,
    add_bcg: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> RealValidationReport:
    """Score a catalogue against real labels (default: the shipped MCXC cross-match, declared ``mcxc``, on the
    hydrostatic scale with ``one_minus_b`` = (1 - b, sd), default the lensing calibrations' 0.80 +- 0.10). ``add_bcg`` may add a ``bcg_mag_i`` column to the matched rows where the catalogue has
    none (the default takes it from the shipped redMaPPer table by id)."""
    from .labels import MCXC_ONE_MINUS_B_FIT, MCXC_ONE_MINUS_B_SD, mcxc_label_table, scale_offset_dex

    fitted = False
    if labels is None:
        labels = mcxc_label_table()
        if selection is None:  # the mock's label fit: its limits and its 1 - b, both set by these labels
            selection = LabelSelection.parse("mcxc")
            one_minus_b = one_minus_b or (MCXC_ONE_MINUS_B_FIT, MCXC_ONE_MINUS_B_SD)
            fitted = True
    selection = selection or LabelSelection()
    rows = matched_rows(catalog, labels)
    if len(rows) < 10:
        raise SurveyMassError(
            f"validate --real: {len(rows)} of the {len(labels)} labels match a row of {str(catalog)!r}; need 10"
        )
    rows = (add_bcg or _bcg_from_redmapper)(rows)
    sel_model = selection.selection()
    z = rows["z"].to_numpy(float)
    m_lim = (
        sel_model.m_lim(z, selection.row_limits(rows["survey"].to_numpy()))
        if sel_model
        else np.full(z.size, -np.inf)
    )
    offset = scale_offset_dex(scale, *([one_minus_b] if one_minus_b else []))
    t_lam, e_lam = tertiles(rows["richness_catalog"].to_numpy(float))
    t_z, e_z = tertiles(z)
    bins = (t_lam, t_z)
    rng = np.random.default_rng(seed)
    est = {}
    for name, col in ESTIMATOR_COLUMNS.items():
        r = _estimator(rows, name, col, sel_model, m_lim, offset, bins, rng, n_boot)
        if r is not None:
            est[name] = r
    ratio, ratio_95 = _mae_ratio(rows, rng, n_boot, offset[0])
    return RealValidationReport(
        catalog=str(catalog),
        labels=labels_name,
        n_labels=len(labels),
        n_matched=len(rows),
        selection=selection,
        label_scale=scale,
        scale_offset_dex=offset[0],
        fitted_on_scored_labels=fitted,
        scale_offset_sd_dex=offset[1],
        lambda_tertile_edges=e_lam,
        z_tertile_edges=e_z,
        estimators=est,
        baselines=_baselines(rows, bins, rng, n_boot, seed),
        headline_over_lambda_mae=ratio,
        headline_over_lambda_mae_95=ratio_95,
        ranking=rankings(rows, rng),
        seed=seed,
    )


def _bcg_from_redmapper(rows: pd.DataFrame) -> pd.DataFrame:
    """The central galaxy's i magnitude from the shipped redMaPPer table, by id, where the catalogue has none."""
    if "bcg_mag_i" in rows and np.isfinite(rows["bcg_mag_i"]).any():
        return rows
    from .candidates import load_redmapper

    rm = load_redmapper().set_index("id")["bcg_mag_i"]
    return rows.assign(bcg_mag_i=rm.reindex(rows["id"].to_numpy()).to_numpy(float))


# --- writing ---------------------------------------------------------------------------------------------------


def _three(v, fmt: str) -> str:
    return "" if v is None else " / ".join("—" if x is None else format(x, fmt) for x in v)


def _row(name: str, kind: str, s: Score) -> str:
    cov = "" if s.coverage_68 is None else f"{s.coverage_68:.2f} ({_three(s.coverage_by_lambda, '.2f')})"
    return (
        f"| `{name}` | {kind} | {s.n} | {s.bias:+.3f} ({s.bias_95[0]:+.3f}, {s.bias_95[1]:+.3f}) | "
        f"{s.mae:.3f} | {_three(s.bias_by_lambda, '+.3f')} | {_three(s.bias_by_z, '+.3f')} | {cov} |"
    )


def markdown(r: RealValidationReport) -> str:
    lines = [
        f"{r.n_matched} of {r.n_labels} labels ({r.labels}) matched in `{r.catalog}`. Selection: "
        f"`{r.selection.kind}`; labels on the {r.label_scale} scale, the catalogue on the {r.catalogue_scale} "
        f"scale: offset {r.scale_offset_dex:+.3f} ± {r.scale_offset_sd_dex:.3f} dex applied to the estimates "
        "(the ± is shared by every row: add it to each bias's interval). "
        f"λ tertile edges {r.lambda_tertile_edges[0]:.1f}, {r.lambda_tertile_edges[1]:.1f}; z tertile edges "
        f"{r.z_tertile_edges[0]:.3f}, {r.z_tertile_edges[1]:.3f}.",
        "",
        "| estimator | score | n | bias (95%) | MAE | bias by λ tertile | bias by z tertile | 68% coverage "
        "(by λ tertile) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in r.estimators.items():
        lines.append(_row(name, "raw", e.raw))
        if e.as_selected is not None and e.as_selected is not e.raw:
            lines.append(_row(name, "as selected", e.as_selected))
    for name, s in r.baselines.items():
        lines.append(_row(name, "fit on the labels, out of fold", s))
    lines += [
        "",
        "The `oof_*` baselines are least squares on these labels (out of fold): their intercept absorbs the mass "
        "scale and the selection's mean shift, so compare their MAE, not their bias.",
    ]
    if r.fitted_on_scored_labels:
        lines += [
            "",
            "**Not a held-out test.** The selection (survey limits, their softness, the flux scatter) and 1 − b "
            "were fitted to these same labels by the mock's label fit (`survey_mass.mock.label_fit`), so the bias "
            "and coverage here are a goodness of fit; the bias is degenerate with 1 − b. "
            "`benchmarks/results/real_validation.md` holds the cross-fitted test (fitted on one half of the sky, "
            "scored on the other).",
        ]
    if r.headline_over_lambda_mae is not None:
        lo, hi = r.headline_over_lambda_mae_95
        lines += [
            "",
            f"Headline MAE / catalogue-λ MAE (raw): {r.headline_over_lambda_mae:.3f} ({lo:.3f}–{hi:.3f}).",
        ]
    if r.ranking:
        lines += [
            "",
            "Ranking and scatter against the labels (raw estimates, on the rows where every estimator gives a mass; "
            f"95% intervals from {RANK_BOOT} resamples, paired with λ's):",
            "",
            "| estimator | n | Spearman ρ | ρ − λ's | residual scatter (dex) | scatter / λ's |",
            "|---|---|---|---|---|---|",
        ]
        for name, k in r.ranking.items():
            d_rho = (
                "–"
                if k.spearman_minus_lambda is None
                else (
                    f"{k.spearman_minus_lambda:+.3f} ({k.spearman_minus_lambda_95[0]:+.3f}, "
                    f"{k.spearman_minus_lambda_95[1]:+.3f})"
                )
            )
            ratio = (
                "–"
                if k.scatter_over_lambda is None
                else (
                    f"{k.scatter_over_lambda:.3f} ({k.scatter_over_lambda_95[0]:.3f}–{k.scatter_over_lambda_95[1]:.3f})"
                )
            )
            lines.append(
                f"| `{name}` | {k.n} | {k.spearman:.3f} ({k.spearman_95[0]:.3f}–{k.spearman_95[1]:.3f}) | {d_rho} | "
                f"{k.scatter:.4f} ({k.scatter_95[0]:.3f}–{k.scatter_95[1]:.3f}) | {ratio} |"
            )
    return "\n".join(lines) + "\n"


def figure(r: RealValidationReport, out: Path) -> Path:
    """Bias by λ and z tertile (as selected where there is a selection) and the PIT histograms, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, e in r.estimators.items():
        s = e.as_selected or e.raw
        for k, (vals, cis) in enumerate(
            ((s.bias_by_lambda, s.bias_by_lambda_95), (s.bias_by_z, s.bias_by_z_95))
        ):
            x = np.arange(3) + 0.05 * list(r.estimators).index(name)
            v = np.array([np.nan if b is None else b for b in vals])
            lo = np.array([np.nan if c is None else c[0] for c in cis])
            hi = np.array([np.nan if c is None else c[1] for c in cis])
            ax[k].errorbar(x, v, yerr=[v - lo, hi - v], marker="o", capsize=3, label=name)
        if s.pit_histogram is not None:
            ax[2].step(np.linspace(0.05, 0.95, PIT_BINS), s.pit_histogram, where="mid", label=name)
    for k, (what, edges) in enumerate((("λ", r.lambda_tertile_edges), ("z", r.z_tertile_edges))):
        ax[k].axhline(0, color="k", lw=0.8)
        ax[k].axhspan(-0.03, 0.03, color="0.9")
        ax[k].set_xticks(
            range(3), [f"< {edges[0]:.3g}", f"{edges[0]:.3g}–{edges[1]:.3g}", f"> {edges[1]:.3g}"]
        )
        ax[k].set_xlabel(f"{what} tertile")
        ax[k].set_ylabel("bias: estimate − label (dex)")
    ax[2].axhline(1 / PIT_BINS, color="k", lw=0.8)
    ax[2].set_xlabel("PIT (uniform when the errors are right)")
    ax[2].set_ylabel("fraction of rows")
    ax[0].legend(fontsize=8)
    fig.suptitle(
        f"{r.n_matched} real labels ({r.labels}), selection {r.selection.kind}, {r.label_scale} scale"
    )
    fig.tight_layout()
    path = out / REPORT_PNG
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_real(r: RealValidationReport, out_dir: str | Path) -> list[Path]:
    """``real_validation.json``, ``.md`` and ``.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_JSON).write_text(r.model_dump_json(indent=1) + "\n")
    (out / REPORT_MD).write_text(markdown(r))
    return [out / REPORT_JSON, out / REPORT_MD, figure(r, out)]
