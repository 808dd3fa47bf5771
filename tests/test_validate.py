"""survey-mass validate: a smoke model scored on two tiny mock surveys (nominal, sky noise x2)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from survey_mass import testing
from survey_mass.candidates import load_redmapper
from survey_mass.errors import SurveyMassError
from survey_mass.footprint import parse_footprint
from survey_mass.inference.predict import ESTIMATORS
from survey_mass.paths import partition_group_path
from survey_mass.store import open_store
from survey_mass.testing import read_catalog
from survey_mass.validate import (
    BOOTSTRAP,
    BOOTSTRAP_SEED,
    REPORT_JSON,
    REPORT_MD,
    Perturbation,
    ValidationReport,
    ValidationSuite,
    format_table,
    load_suite,
    validate,
)

#: ~2 x 2 deg, 26 redMaPPer clusters in one partition, outside the smoke model's training box (140-165, 0-15)
FOOTPRINT = "box:180,182,30,32"
SEED = 13
SUITE = ValidationSuite(
    footprint=FOOTPRINT,
    seed=SEED,
    perturbations=[
        Perturbation(name="nominal", note="default physics"),
        Perturbation(name="sky-noise-2", overrides=["sky_noise_scale=2"], note="twice the sky noise"),
    ],
)
NAMES = [p.name for p in SUITE.perturbations]
#: the module trains the smoke model and renders two mock surveys (~30 s on 2 cores)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def validated(tmp_path_factory, smoke_model):
    model, _ = smoke_model
    out = tmp_path_factory.mktemp("validate") / "val"
    report = validate(model, SUITE, out, workers=1, progress=False)
    return model, out, report


def _catalog(path) -> pd.DataFrame:
    return read_catalog(path)


def test_a_row_per_perturbation_and_available_estimator(validated):
    _, _, report = validated
    assert [p.name for p in report.perturbations] == NAMES
    for p in report.perturbations:
        cat = _catalog(p.catalog)
        present = {
            e for e, col in ESTIMATORS.items() if col in cat and cat[col].notna().any()
        }  # read independently of the scorer
        assert present == set(ESTIMATORS)  # a mock catalogue carries all four
        assert "log10_m500_oracle" in cat  # and the mock's own reference
        assert {r.estimator for r in report.rows if r.perturbation == p.name} == present | {"oracle"}
        assert set(p.skipped_estimators) == set(ESTIMATORS) - present
    assert len(report.rows) == len({(r.perturbation, r.estimator) for r in report.rows})


def test_scores_cover_every_cluster_of_the_store(validated):
    _, _, report = validated
    fp = parse_footprint(FOOTPRINT)
    cands = load_redmapper()
    n_box = int(fp.contains(cands["ra"].to_numpy(), cands["dec"].to_numpy()).sum())
    assert n_box >= 20
    for p in report.perturbations:
        n_store = open_store(p.store).n_total
        assert n_store == n_box == p.clusters
        cat = _catalog(p.catalog)
        # every estimator is scored on the same rows: those where all give a mass (no no-mass quality bit)
        n_common = int(cat[list(ESTIMATORS.values())].notna().all(axis=1).sum())
        assert n_common >= n_store - 3
        for r in (r for r in report.rows if r.perturbation == p.name):
            assert r.n == n_common, (p.name, r.estimator)
            assert r.mae > 0 and abs(r.bias) <= r.mae
            has_err = f"{r.column}_err" in _catalog(p.catalog)
            assert (r.coverage is not None) == has_err
            for bins in (r.tertiles.richness, r.tertiles.z, r.tertiles.mass):
                assert len(bins) == 3 and sum(b.n for b in bins) == r.n
                assert all(b.lo <= b.hi for b in bins) and bins[0].hi <= bins[1].lo <= bins[2].lo
                for b in bins:
                    assert (b.coverage is None) == (not has_err)
                    assert b.coverage is None or 0 <= b.coverage <= 1
            if has_err:
                assert 0 <= r.coverage <= 1
                # the overall coverage is the tertiles' weighted mean
                bins = r.tertiles.z
                assert r.coverage == pytest.approx(sum(b.n * b.coverage for b in bins) / r.n, abs=1e-4)


def test_scores_match_the_catalogs_and_only_the_physics_differs(validated):
    _, _, report = validated
    nominal, noisy = (_catalog(p.catalog).sort_values("id", ignore_index=True) for p in report.perturbations)
    # same seed, same candidates: the same true masses; twice the sky noise changes the predictions
    np.testing.assert_array_equal(nominal["log10_m500_true"], noisy["log10_m500_true"])
    assert not np.allclose(nominal["log10_m500"], noisy["log10_m500"])
    common = nominal[list(ESTIMATORS.values())].notna().all(axis=1)
    nominal = nominal[common]
    d = nominal["log10_m500"] - nominal["log10_m500_true"]
    row = report.row("nominal", "headline")
    assert row.mae == pytest.approx(np.abs(d).mean(), abs=1e-4)
    assert row.bias == pytest.approx(d.mean(), abs=1e-4)
    assert row.coverage == pytest.approx((np.abs(d) < nominal["log10_m500_err"]).mean(), abs=1e-4)
    assert report.row("sky-noise-2", "headline").mae != row.mae
    # the bias by tertile of the catalogue's richness, and the intervals
    lam = nominal["richness_catalog"].to_numpy()
    e1, e2 = np.quantile(lam, [1 / 3, 2 / 3])
    for b, m in zip(row.tertiles.richness, (lam <= e1, (lam > e1) & (lam <= e2), lam > e2), strict=True):
        assert b.bias == pytest.approx(d[m].mean(), abs=1e-4)
    assert row.bias_95[0] < row.bias < row.bias_95[1] and row.mae_95[0] < row.mae < row.mae_95[1]
    half = (row.bias_95[1] - row.bias_95[0]) / 2  # about 1.96 standard errors of the mean
    assert half == pytest.approx(1.96 * d.std() / np.sqrt(d.size), rel=0.3)
    d_lam = nominal["log10_m500_lambda"] - nominal["log10_m500_true"]
    assert row.mae_over_lambda == pytest.approx(np.abs(d).mean() / np.abs(d_lam).mean(), abs=1e-4)
    assert row.mae_over_lambda_95[0] < row.mae_over_lambda < row.mae_over_lambda_95[1]
    # the interval is the paired one: both estimators' MAE on the same resamples of the clusters
    idx = np.random.default_rng(BOOTSTRAP_SEED).integers(0, d.size, size=(BOOTSTRAP, d.size))
    a, b = np.abs(d.to_numpy())[idx].mean(axis=1), np.abs(d_lam.to_numpy())[idx].mean(axis=1)
    assert row.mae_over_lambda_95 == pytest.approx(tuple(np.quantile(a / b, [0.025, 0.975])), abs=2e-5)
    assert row.bias_95 == pytest.approx(
        tuple(np.quantile(d.to_numpy()[idx].mean(axis=1), [0.025, 0.975])), abs=2e-5
    )
    # an unpaired interval (lambda on other resamples) is wider: the pairing is what the test sees
    other = np.abs(d_lam.to_numpy())[np.random.default_rng(1).integers(0, d.size, size=idx.shape)].mean(
        axis=1
    )
    unpaired = np.quantile(a / other, [0.025, 0.975])
    assert unpaired[1] - unpaired[0] > row.mae_over_lambda_95[1] - row.mae_over_lambda_95[0]
    assert report.row("nominal", "lambda").mae_over_lambda is None
    # and against the strongest baseline, lambda + BCG, the same way
    d_bcg = nominal["log10_m500_lambda_bcg"] - nominal["log10_m500_true"]
    assert row.mae_over_lambda_bcg == pytest.approx(np.abs(d).mean() / np.abs(d_bcg).mean(), abs=1e-4)
    c = np.abs(d_bcg.to_numpy())[idx].mean(axis=1)
    assert row.mae_over_lambda_bcg_95 == pytest.approx(tuple(np.quantile(a / c, [0.025, 0.975])), abs=2e-5)
    assert report.row("nominal", "lambda_bcg").mae_over_lambda_bcg is None


def test_report_files(validated):
    _, out, report = validated
    doc = json.loads((out / REPORT_JSON).read_text())
    assert ValidationReport.model_validate(doc) == report
    md = (out / REPORT_MD).read_text()
    for name in NAMES:
        assert f"| {name} |" in md
    assert report.model_id in md
    table = format_table(report)
    assert len(table.strip().splitlines()) == 1 + len(report.rows)
    assert all(name in table for name in NAMES)


def _partition_stamps(store) -> dict[int, int]:
    st = open_store(store)
    return {
        p: (st.path / partition_group_path(st.order, p) / "zarr.json").stat().st_mtime_ns
        for p in st.partitions
    }


def test_rerun_reuses_the_stores_and_catalogs(validated, tmp_path, capsys):
    model, out, report = validated
    stores = [p.store for p in report.perturbations]
    stamps = {s: _partition_stamps(s) for s in stores}
    assert all(p.store_partitions_built >= 1 for p in report.perturbations)
    suite = tmp_path / "suite.toml"
    suite.write_text(
        f'footprint = "{FOOTPRINT}"\nseed = {SEED}\n'
        + "".join(
            f'[[perturbations]]\nname = "{p.name}"\noverrides = {json.dumps(p.overrides)}\n'
            for p in SUITE.perturbations
        )
    )
    code, stdout, _ = testing.cli(
        ["validate", "--model", model, "--suite", suite, "--out", out, "--workers", 1, "--no-progress"],
        capsys,
    )
    assert code == 0
    again = ValidationReport.model_validate_json((out / REPORT_JSON).read_text())
    assert [p.store for p in again.perturbations] == stores
    for p in again.perturbations:
        assert p.store_partitions_built == 0 and p.store_partitions_skipped >= 1
        assert p.catalog_partitions_computed == 0 and p.catalog_partitions_skipped >= 1
        assert _partition_stamps(p.store) == stamps[p.store]  # no partition was rewritten
    assert [r.model_dump() for r in again.rows] == [r.model_dump() for r in report.rows]
    assert "sky-noise-2" in stdout and "headline" in stdout


def test_default_suite_and_subsets():
    from survey_mass.mock.survey import MockConfig

    suite = load_suite()
    names = [p.name for p in suite.perturbations]
    assert names[0] == "nominal" and len(names) == len(set(names)) >= 11
    assert parse_footprint(suite.footprint).area_deg2 > 50
    for p in suite.perturbations:  # every override names a current MockPhysics parameter
        MockConfig.with_overrides(p.overrides, seed=suite.seed)
    sub = load_suite(only=["seeing-1.2", "nominal"], seed=3, footprint=FOOTPRINT)
    assert [p.name for p in sub.perturbations] == ["nominal", "seeing-1.2"]
    assert (sub.seed, sub.footprint) == (3, FOOTPRINT)
    with pytest.raises(SurveyMassError, match="no perturbation 'nope'"):
        load_suite(only=["nope"])


def test_bad_override_fails_before_any_work(smoke_model, tmp_path):
    bad = ValidationSuite(
        footprint=FOOTPRINT, seed=1, perturbations=[Perturbation(name="x", overrides=["nope=1"])]
    )
    with pytest.raises(SurveyMassError, match="perturbation 'x'.*nope"):
        validate(smoke_model[0], bad, tmp_path / "v", workers=1, progress=False)
    assert not (tmp_path / "v").exists()
