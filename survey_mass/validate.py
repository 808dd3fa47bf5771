"""Robustness suite: a trained model scored on mock surveys rendered with perturbed physics.

``survey-mass validate`` (or :func:`validate`) renders one mock store per perturbation of a suite (the same
footprint, seed and candidates; only the physics differs), runs the model over each store (attribution off)
and scores every mass estimator of :data:`survey_mass.inference.predict.ESTIMATORS` against the mock's true
masses (``log10_m500_true``): MAE, bias (mean predicted - true) and 68% coverage (the fraction with
``|pred - true| < err``), plus the coverage in tertiles of the candidate catalogue's richness, of z and of the
estimator's own predicted mass. Estimators whose column is absent or all-NaN are skipped (and listed); one
without an ``_err`` column has a null coverage.

Command line::

    survey-mass validate                                  # the shipped model, the default suite
    survey-mass validate --model my_model --out val --only nominal --only sky-noise-1.25
    survey-mass validate --suite my_suite.toml --footprint box:200,210,20,30 --seed 11 --workers 2

From Python::

    from survey_mass.validate import format_table, load_suite, validate

    report = validate("my_model", load_suite(only=["nominal", "seeing-1.2"]), "val", workers=1, progress=False)
    print(format_table(report))

A suite is a TOML file (the default ships as ``survey_mass/data/validation_suite.toml``)::

    footprint = "box:200,210,20,30"   # any --footprint value
    seed = 11                         # mock seed of every store

    [[perturbations]]
    name = "nominal"                  # letters, digits, '.', '_', '-': names the store and the catalog
    overrides = []                    # MockPhysics overrides NAME=VALUE, as `survey-mass mock --set`
    note = "the default physics"

    [[perturbations]]
    name = "sky-noise-1.25"
    overrides = ["sky_noise_scale=1.25"]

What lands in ``OUT``::

    OUT/validation.json        the ValidationReport (schemas/validation_report.schema.json)
    OUT/validation.md          the table, in markdown
    OUT/stores/NAME-HASH.zarr  one mock store per perturbation; HASH covers the footprint and the mock config
                               (physics included), so a rerun reuses a store only when it would render the same
                               pixels (an interrupted build resumes), and a changed physics gets a new store
    OUT/catalogs/NAME-HASH/MODEL_ID/   the model's HATS catalog of that store (resumed on a rerun)

The stores are rendered with the model's own input geometry (model card ``input``), so any model can be
validated. Note that the shipped model was trained on the whole ``dr12`` mock at seed 2022: the default
footprint's candidates (positions, z, richness) were seen in training, but seed 11 draws other true masses,
members, BCGs and noise.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import SurveyMassError

#: the default suite (package data)
DEFAULT_SUITE = "validation_suite.toml"
REPORT_JSON = "validation.json"
REPORT_MD = "validation.md"
STORES = "stores"
CATALOGS = "catalogs"
#: variables whose tertiles break the coverage down: report key -> catalog column (None: the estimator's mass)
TERTILE_VARIABLES: dict[str, str | None] = {"richness": "richness_catalog", "z": "z", "mass": None}
TRUE_MASS = "log10_m500_true"
#: bootstrap resamples of the clusters for the intervals, and their seed (fixed: a rerun reports the same)
BOOTSTRAP = 1000
BOOTSTRAP_SEED = 29
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- the suite ------------------------------------------------------------------------------------------------


class Perturbation(_Model):
    """One mock survey of the suite: the default physics with ``overrides`` (``NAME=VALUE``)."""

    name: str = Field(pattern=NAME_PATTERN, description="short name; names the store and the catalog")
    overrides: list[str] = Field(
        [], description="MockPhysics overrides NAME=VALUE (as survey-mass mock --set)"
    )
    note: str = Field("", description="what the perturbation tests")


class ValidationSuite(_Model):
    """Perturbations rendered over one footprint with one seed (a TOML file, see :func:`load_suite`)."""

    perturbations: list[Perturbation] = Field(min_length=1)
    footprint: str = Field(min_length=1, description="dr12, a MOC FITS file, or box:RA0,RA1,DEC0,DEC1")
    seed: int = Field(ge=0, description="mock seed of every store")

    @model_validator(mode="after")
    def _unique_names(self) -> ValidationSuite:
        names = [p.name for p in self.perturbations]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"perturbation {dup[0]!r} is named twice")
        return self

    def only(self, names: Sequence[str] | None) -> ValidationSuite:
        """The suite restricted to the perturbations ``names`` (in the suite's order); all of it for None/[]."""
        if not names:
            return self
        known = [p.name for p in self.perturbations]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SurveyMassError(
                f"validation suite: no perturbation {unknown[0]!r}; the suite has {', '.join(known)}"
            )
        return self.model_copy(update={"perturbations": [p for p in self.perturbations if p.name in names]})


def load_suite(
    path: str | Path | None = None,
    *,
    footprint: str | None = None,
    seed: int | None = None,
    only: Sequence[str] | None = None,
) -> ValidationSuite:
    """Read a suite TOML (default: the shipped one); ``footprint``/``seed`` replace its own, ``only`` subsets it.

    A file that does not fit is a one-line :class:`SurveyMassError` naming the file and the key.
    """
    from .resources import data_path

    p = Path(path) if path is not None else data_path(DEFAULT_SUITE)
    if not p.is_file():
        raise SurveyMassError(f"validation suite {str(p)!r}: no such file")
    try:
        doc = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SurveyMassError(f"validation suite {str(p)!r}: not valid TOML ({exc})") from None
    if footprint is not None:
        doc["footprint"] = footprint
    if seed is not None:
        doc["seed"] = seed
    try:
        suite = ValidationSuite.model_validate(doc)
    except ValidationError as exc:
        e = exc.errors()[0]
        key = ".".join(str(k) for k in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        raise SurveyMassError(f"validation suite {str(p)!r}: {key}: {msg}") from None
    return suite.only(only)


# --- the report -------------------------------------------------------------------------------------------------


class TertileBin(_Model):
    lo: float = Field(description="lowest value in the bin")
    hi: float = Field(description="highest value in the bin")
    n: int = Field(ge=0, description="scored clusters in the bin")
    coverage: float | None = Field(description="68% coverage in the bin (None without an error column)")
    bias: float | None = Field(None, description="mean (predicted - true) in the bin (dex)")


class CoverageTertiles(_Model):
    """68% coverage and bias in tertiles (low, middle, high) of three variables; [] when fewer than 3 clusters."""

    richness: list[TertileBin] = Field(description="tertiles of the candidate catalogue's richness")
    z: list[TertileBin] = Field(description="tertiles of the redshift")
    mass: list[TertileBin] = Field(description="tertiles of the estimator's predicted mass")


class ValidationRow(_Model):
    perturbation: str
    estimator: str = Field(
        description="key of survey_mass.inference.predict.ESTIMATORS, or 'oracle' (the mock's E[M | lambda, BCG, z])"
    )
    column: str = Field(description="the catalog's mass column of the estimator")
    n: int = Field(ge=0, description="clusters with a finite predicted and true mass")
    mae: float = Field(description="mean |predicted - true| (dex)")
    bias: float = Field(description="mean (predicted - true) (dex)")
    mae_95: tuple[float, float] | None = Field(
        None, description="95% bootstrap interval of the MAE (resampling the clusters; BOOTSTRAP resamples)"
    )
    bias_95: tuple[float, float] | None = Field(None, description="95% bootstrap interval of the bias")
    mae_over_lambda: float | None = Field(
        None,
        description="MAE / the catalogue-lambda estimator's MAE on the same clusters (None for lambda itself or "
        "without it)",
    )
    mae_over_lambda_95: tuple[float, float] | None = Field(
        None, description="95% interval of mae_over_lambda (the same resamples for both estimators: paired)"
    )
    mae_over_lambda_bcg: float | None = Field(
        None,
        description="MAE / the catalogue lambda + central-galaxy estimator's MAE on the same clusters (None for "
        "it or without it): the strongest baseline a redMaPPer user has",
    )
    mae_over_lambda_bcg_95: tuple[float, float] | None = Field(
        None, description="95% interval of mae_over_lambda_bcg (paired, as mae_over_lambda_95)"
    )
    coverage: float | None = Field(
        description="fraction with |predicted - true| < the column's _err (None without an _err column)"
    )
    tertiles: CoverageTertiles
    coverage_detected: float | None = Field(
        None,
        description="coverage of the clusters the labels' X-ray survey detected (a finite log10_m500_label in the "
        "mock): the massive, low-z kind, which must not be under-covered either",
    )


class PerturbationResult(Perturbation):
    store: str = Field(description="the mock store rendered for the perturbation")
    catalog: str = Field(description="the model's catalog of that store")
    clusters: int = Field(ge=0, description="rows in the catalog")
    store_partitions_built: int = Field(ge=0, description="store partitions rendered by this run")
    store_partitions_skipped: int = Field(ge=0, description="store partitions reused from an earlier run")
    catalog_partitions_computed: int = Field(ge=0)
    catalog_partitions_skipped: int = Field(ge=0)
    skipped_estimators: list[str] = Field(description="estimators whose column is absent or all-NaN here")


class ValidationReport(_Model):
    """What ``survey-mass validate`` measured: ``OUT/validation.json``."""

    model_config = ConfigDict(
        extra="forbid",
        title="survey-mass validation report (OUT/validation.json)",
        json_schema_extra={"$id": "survey-mass/validation_report/1"},
    )

    model_id: str
    model_dir: str
    footprint: str
    seed: int
    estimators: dict[str, str] = Field(description="estimator -> mass column, as at the time of the run")
    perturbations: list[PerturbationResult]
    rows: list[ValidationRow] = Field(description="one per (perturbation, estimator present)")
    wall_s: float

    def row(self, perturbation: str, estimator: str) -> ValidationRow:
        """The row of one perturbation and estimator (KeyError if there is none)."""
        for r in self.rows:
            if r.perturbation == perturbation and r.estimator == estimator:
                return r
        raise KeyError((perturbation, estimator))


# --- scoring ------------------------------------------------------------------------------------------------------


def _f(x) -> float:
    return round(float(x), 5)


def _covered(pred: np.ndarray, true: np.ndarray, err: np.ndarray | None) -> float | None:
    if err is None:
        return None
    ok = np.isfinite(err)
    if not ok.any():
        return None
    return _f(np.mean(np.abs(pred[ok] - true[ok]) < err[ok]))


def tertile_coverage(
    values: np.ndarray, pred: np.ndarray, true: np.ndarray, err: np.ndarray | None
) -> list[TertileBin]:
    """Coverage in the low, middle and high third of ``values`` (rows with a finite value); [] below 3 rows."""
    ok = np.isfinite(values)
    v, pred, true = values[ok], pred[ok], true[ok]
    err = err[ok] if err is not None else None
    if v.size < 3:
        return []
    e1, e2 = np.quantile(v, [1 / 3, 2 / 3])
    masks = [v <= e1, (v > e1) & (v <= e2), v > e2]
    bins = []
    for m in masks:
        bins.append(
            TertileBin(
                lo=_f(v[m].min()) if m.any() else _f(e1),
                hi=_f(v[m].max()) if m.any() else _f(e2),
                n=int(m.sum()),
                coverage=_covered(pred[m], true[m], err[m] if err is not None else None) if m.any() else None,
                bias=_f(np.mean(pred[m] - true[m])) if m.any() else None,
            )
        )
    return bins


def _detected_coverage(catalog, ok, pred, true, err) -> float | None:
    if err is None or "log10_m500_label" not in catalog:
        return None
    det = np.isfinite(catalog["log10_m500_label"].to_numpy(float))[ok]
    return _covered(pred[det], true[det], err[det]) if det.sum() >= 10 else None


def _interval(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [0.025, 0.975])
    return (_f(lo), _f(hi))


def bootstrap_means(values: dict[str, np.ndarray], seed: int = BOOTSTRAP_SEED, chunk: int = 50) -> dict:
    """Each array's mean over the same :data:`BOOTSTRAP` resamples of its rows (paired; all arrays the same
    length), drawn ``chunk`` resamples at a time so that memory stays at chunk x rows."""
    rng = np.random.default_rng(seed)
    n = len(next(iter(values.values()))) if values else 0
    out = {k: np.empty(BOOTSTRAP) for k in values}
    if n == 0:
        return {k: np.full(BOOTSTRAP, np.nan) for k in values}
    for start in range(0, BOOTSTRAP, chunk):
        idx = rng.integers(0, n, size=(min(chunk, BOOTSTRAP - start), n))
        for k, v in values.items():
            out[k][start : start + len(idx)] = v[idx].mean(axis=1)
    return out


def score(catalog, perturbation: str, estimators: dict[str, str]) -> tuple[list[ValidationRow], list[str]]:
    """Rows of one perturbation's catalog (a DataFrame with ``log10_m500_true``) and the estimators skipped."""
    if TRUE_MASS not in catalog or not np.isfinite(catalog[TRUE_MASS].to_numpy(float)).any():
        raise SurveyMassError(
            f"perturbation {perturbation!r}: the catalog has no true masses ({TRUE_MASS}); is the store a mock?"
        )
    if "id" in catalog:  # one order whatever the files' listing order: the bootstrap resamples are then fixed
        catalog = catalog.sort_values("id", ignore_index=True)
    true_all = catalog[TRUE_MASS].to_numpy(float)
    rows, skipped = [], []
    present = {
        n: c for n, c in estimators.items() if c in catalog and np.isfinite(catalog[c].to_numpy(float)).any()
    }
    skipped = [n for n in estimators if n not in present]
    # every estimator on the same rows: those where all of them give a mass (no-mass quality bits excluded)
    common = np.logical_and.reduce([np.isfinite(catalog[c].to_numpy(float)) for c in present.values()])
    common &= np.isfinite(true_all)
    resid = {n: (catalog[c].to_numpy(float) - true_all)[common] for n, c in present.items()}
    boot = bootstrap_means(
        {**{f"d.{n}": d for n, d in resid.items()}, **{f"a.{n}": np.abs(d) for n, d in resid.items()}}
    )
    for name, col in present.items():
        pred_all = np.where(common, catalog[col].to_numpy(float), np.nan)
        ok = np.isfinite(pred_all) & np.isfinite(true_all)
        pred, true = pred_all[ok], true_all[ok]
        err = catalog[f"{col}_err"].to_numpy(float)[ok] if f"{col}_err" in catalog else None
        d = pred - true
        ratios = {base: _ratio(name, base, resid, boot) for base in ("lambda", "lambda_bcg")}
        tert = {}
        for key, var in TERTILE_VARIABLES.items():
            values = pred if var is None else (catalog[var].to_numpy(float)[ok] if var in catalog else None)
            tert[key] = [] if values is None else tertile_coverage(values, pred, true, err)
        rows.append(
            ValidationRow(
                perturbation=perturbation,
                estimator=name,
                column=col,
                n=int(ok.sum()),
                mae=_f(np.mean(np.abs(d))),
                bias=_f(np.mean(d)),
                mae_95=_interval(boot[f"a.{name}"]) if d.size else None,
                bias_95=_interval(boot[f"d.{name}"]) if d.size else None,
                mae_over_lambda=ratios["lambda"][0],
                mae_over_lambda_95=ratios["lambda"][1],
                mae_over_lambda_bcg=ratios["lambda_bcg"][0],
                mae_over_lambda_bcg_95=ratios["lambda_bcg"][1],
                coverage=_covered(pred, true, err),
                tertiles=CoverageTertiles(**tert),
                coverage_detected=_detected_coverage(catalog, ok, pred, true, err),
            )
        )
    return rows, skipped


def _ratio(name: str, base: str, resid: dict, boot: dict):
    """MAE(name) / MAE(base) on the common rows, and its paired bootstrap interval (None, None for the base
    itself, or without it)."""
    if name == base or base not in resid or not resid[name].size:
        return None, None
    value = _f(np.mean(np.abs(resid[name])) / np.mean(np.abs(resid[base])))
    return value, _interval(boot[f"a.{name}"] / boot[f"a.{base}"])


# --- the run --------------------------------------------------------------------------------------------------------


def store_key(footprint: str, config) -> str:
    """Ten hex digits of the footprint and the mock config (physics included): what a store's pixels depend on."""
    doc = json.dumps({"footprint": footprint, "config": config.provenance()}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:10]


def _read_catalog(catalog: Path):
    import pandas as pd

    from .catalog.query import primary_root
    from .paths import catalog_partition_files

    files = catalog_partition_files(primary_root(catalog))
    if not files:
        raise SurveyMassError(f"catalog {str(catalog)!r}: no partition files")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def validate(
    model_dir: str | Path,
    suite: ValidationSuite,
    out_dir: str | Path,
    *,
    workers: int = 1,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> ValidationReport:
    """Score a model on every perturbation of ``suite``; write ``validation.json`` and ``validation.md``.

    For each perturbation: build (or reuse) its mock store over ``suite.footprint`` with seed ``suite.seed``
    and the real redMaPPer candidates, run the model over it with attribution off
    (:func:`survey_mass.api.run_pipeline`; ``workers`` > 1 starts a Dask LocalCluster), and score the catalog
    (:func:`score`). Every override is checked before any work. ``log`` gets one line per step (None: silence).
    """
    from .api import run_pipeline, safe_name
    from .candidates import load_redmapper
    from .footprint import parse_footprint
    from .inference.predict import ESTIMATORS
    from .mock.survey import MockConfig, build_mock_store
    from .models.bundle import load_bundle
    from .pipelines import validate as pipeline_from_doc

    t0 = time.perf_counter()
    out = Path(out_dir)
    bundle = load_bundle(model_dir)  # a bad model fails before anything is rendered
    geometry = bundle.card.input
    fp = parse_footprint(suite.footprint)
    configs = {}
    for p in suite.perturbations:
        try:
            configs[p.name] = MockConfig.with_overrides(
                p.overrides,
                seed=suite.seed,
                cutout_size=int(geometry.cutout_size),
                pixel_scale_arcsec=float(geometry.pixel_scale_arcsec),
                order=fp.order,
            )
        except SurveyMassError as exc:
            raise SurveyMassError(f"perturbation {p.name!r}: {exc}") from None
    candidates = load_redmapper()
    # and, for reference, the mock's own E[M | lambda, BCG, z] (no error): what the catalogue and the central
    # galaxy tell at best
    estimators = {**ESTIMATORS, "oracle": "log10_m500_oracle"}
    results, rows = [], []
    for k, p in enumerate(suite.perturbations, 1):
        cfg = configs[p.name]
        stem = f"{p.name}-{store_key(fp.name, cfg)}"
        store = out / STORES / f"{stem}.zarr"
        catalog = out / CATALOGS / stem / bundle.model_id
        if log:
            what = ", ".join(p.overrides) or "default physics"
            log(f"[{k}/{len(suite.perturbations)}] {p.name} ({what}): store {store}")
        store.parent.mkdir(parents=True, exist_ok=True)
        built = build_mock_store(
            fp, store, candidates=candidates, config=cfg, workers=workers, progress=progress
        )
        pipe = pipeline_from_doc(
            {
                "name": safe_name(f"validate-{p.name}"),
                "footprint": {"spec": suite.footprint, "partition_order": fp.order},
                "store": {"path": str(store)},
                "model": {"path": str(model_dir)},
                "attribution": {"mode": "none"},
                "cluster": {"workers": workers},
            },
            f"validation of {p.name!r}",
        )
        catalog.parent.mkdir(parents=True, exist_ok=True)
        run = run_pipeline(pipe, out=catalog, progress=progress, log=None)
        table = _read_catalog(catalog)
        r, skipped = score(table, p.name, estimators)
        rows += r
        results.append(
            PerturbationResult(
                **p.model_dump(),
                store=str(store),
                catalog=str(catalog),
                clusters=len(table),
                store_partitions_built=built["partitions_built"],
                store_partitions_skipped=built["partitions_skipped"],
                catalog_partitions_computed=run.partitions_computed,
                catalog_partitions_skipped=run.partitions_skipped,
                skipped_estimators=skipped,
            )
        )
        if log:
            head = next((x for x in r if x.estimator == "headline"), r[0] if r else None)
            if head is not None:
                log(
                    f"    {len(table)} clusters ({built['partitions_built']} store partitions rendered, "
                    f"{built['partitions_skipped']} reused); {head.estimator}: MAE {head.mae:.3f} dex, "
                    f"bias {head.bias:+.3f}, coverage {_fmt(head.coverage)}"
                )
    report = ValidationReport(
        model_id=bundle.model_id,
        model_dir=str(model_dir),
        footprint=fp.name,
        seed=suite.seed,
        estimators=estimators,
        perturbations=results,
        rows=rows,
        wall_s=round(time.perf_counter() - t0, 1),
    )
    write_report(report, out)
    return report


def write_report(report: ValidationReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``validation.json`` and ``validation.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    j, m = out / REPORT_JSON, out / REPORT_MD
    j.write_text(json.dumps(report.model_dump(mode="json"), indent=1) + "\n")
    m.write_text(markdown(report))
    return j, m


# --- the table --------------------------------------------------------------------------------------------------------


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _tertiles(bins: list[TertileBin]) -> str:
    """``0.71/0.65/0.70`` (low/middle/high); ``-`` without bins or without an error column."""
    if not bins or all(b.coverage is None for b in bins):
        return "-"
    return "/".join(_fmt(b.coverage) for b in bins)


def _biases(bins: list[TertileBin]) -> str:
    """``+0.05/+0.01/-0.02`` (low/middle/high); ``-`` without bins."""
    if not bins or all(b.bias is None for b in bins):
        return "-"
    return "/".join(_fmt(b.bias, "+.3f") for b in bins)


def _range(v: tuple[float, float] | None, spec: str) -> str:
    return "" if v is None else f" ({_fmt(v[0], spec)}, {_fmt(v[1], spec)})"


HEADER = (
    "perturbation",
    "estimator",
    "n",
    "MAE",
    "bias (95%)",
    "bias λ⅓",
    "MAE/λ (95%)",
    "MAE/λ+BCG (95%)",
    "cov68",
    "cov λ⅓",
    "cov z⅓",
    "cov M⅓",
    "cov det",
)


def table_rows(report: ValidationReport) -> list[tuple[str, ...]]:
    """The table's cells, one tuple per row (the order of :data:`HEADER`)."""
    return [
        (
            r.perturbation,
            r.estimator,
            str(r.n),
            _fmt(r.mae, ".3f"),
            _fmt(r.bias, "+.3f") + _range(r.bias_95, "+.3f"),
            _biases(r.tertiles.richness),
            "-"
            if r.mae_over_lambda is None
            else _fmt(r.mae_over_lambda, ".3f") + _range(r.mae_over_lambda_95, ".3f"),
            "-"
            if r.mae_over_lambda_bcg is None
            else _fmt(r.mae_over_lambda_bcg, ".3f") + _range(r.mae_over_lambda_bcg_95, ".3f"),
            _fmt(r.coverage),
            _tertiles(r.tertiles.richness),
            _tertiles(r.tertiles.z),
            _tertiles(r.tertiles.mass),
            _fmt(r.coverage_detected),
        )
        for r in report.rows
    ]


def format_table(report: ValidationReport, *, markdown: bool = False) -> str:
    """The table for the terminal (aligned columns), or as a markdown table.

    MAE and bias in dex against the true masses, the bias with its 95% bootstrap interval and by tertile of
    catalogue richness; MAE/λ: the MAE over the catalogue-λ estimator's on the same clusters (paired bootstrap
    interval); cov68: fraction with |pred - true| < err; the ``cov ⅓`` columns the coverage in the low/middle/high
    tertiles of catalogue richness, z and predicted mass ("-": no _err).
    """
    cells = table_rows(report)
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines) + "\n"
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(HEADER)]
    right = {2, 3, 4, 8, 12}

    def line(c):
        return "  ".join(
            v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(c, widths, strict=True))
        )

    return "\n".join(line(c).rstrip() for c in [HEADER, *cells]) + "\n"


def markdown(report: ValidationReport) -> str:
    """``validation.md``: what was run, then the table."""
    lines = [
        "# Robustness validation",
        "",
        f"Model `{report.model_id}` ({report.model_dir}) on mock surveys of `{report.footprint}`, seed "
        f"{report.seed}; {report.wall_s} s.",
        "",
        "| perturbation | overrides | clusters | note |",
        "|---|---|---|---|",
    ]
    for p in report.perturbations:
        ov = ", ".join(f"`{o}`" for o in p.overrides) or "(default physics)"
        lines.append(f"| {p.name} | {ov} | {p.clusters} | {p.note} |")
    skipped = sorted({e for p in report.perturbations for e in p.skipped_estimators})
    lines += [
        "",
        "MAE and bias (predicted - true) in dex against the mock's true log10 M500c, the bias with its 95% "
        f"bootstrap interval ({BOOTSTRAP} resamples of the clusters) and by tertile of the catalogue's richness; "
        "MAE/λ: the MAE over the catalogue-λ estimator's on the same clusters, with its paired bootstrap interval; "
        "MAE/λ+BCG: the same over the catalogue λ + central-galaxy estimator's; "
        "cov68: fraction with |predicted - true| < the estimator's 68% error; cov λ⅓, z⅓, M⅓: the coverage in the "
        "low/middle/high tertiles of the candidate catalogue's richness, the redshift and the predicted mass. "
        "'-': the estimator has no error column (or, for a ratio, is its baseline).",
    ]
    if skipped:
        lines.append(f"Not in the catalogs (skipped): {', '.join(skipped)}.")
    lines += ["", format_table(report, markdown=True)]
    return "\n".join(lines)
