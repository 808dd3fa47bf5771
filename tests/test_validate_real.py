"""``validate --real`` (#29 item 3): the statistics on simulated labels whose answer is known, and the command
on a real catalogue."""

from __future__ import annotations

import numpy as np
import pytest

from survey_mass.labels import LabelSelection
from survey_mass.validate_real import label_predictive


def _selected_labels(n=200_000, seed=1, soft=0.0):
    """Clusters m ~ N(mu, sigma); labels from L_X y = m + e, e ~ N(0, s); detected where y + d >= m_lim,
    d ~ N(0, soft) (the detection's flux scatter about the label's; 0: a hard limit on the label)."""
    rng = np.random.default_rng(seed)
    sel = LabelSelection.parse("xray:3e-12").selection()
    if soft:
        from dataclasses import replace

        sel = replace(sel, detection_error_ln=soft * np.log(10) * sel.slope)
    mu = rng.uniform(14.0, 14.8, n)
    sigma = np.full(n, 0.15)
    z = rng.uniform(0.05, 0.3, n)
    m_lim = sel.m_lim(z)
    y = mu + sigma * rng.standard_normal(n) + sel.s * rng.standard_normal(n)
    keep = y + sel.s_detection * rng.standard_normal(n) >= m_lim  # a declared limit is never quite hard
    return sel, mu[keep], sigma[keep], m_lim[keep], y[keep]


@pytest.mark.parametrize("soft", [0.0, 0.1])
def test_the_selected_label_model_is_unbiased_and_calibrated_on_selected_labels(soft):
    sel, mu, sigma, m_lim, y = _selected_labels(soft=soft, n=60_000 if soft == 0 else 12_000)
    pred = label_predictive(mu, sigma, m_lim, sel, (0.0, 0.0))
    mean = pred.mean()
    # the population estimate is biased low against selected labels; the selected model is not
    assert np.mean(mu - y) < -0.05
    tol = 5 / np.sqrt(y.size)  # five standard errors of a mean of O(1) quantities
    assert abs(np.mean(mean - y)) < 0.3 * tol
    if soft:  # labels below the limit, as MCXC's NORAS labels are
        assert (y < m_lim).mean() > 0.1
    pit = pred.pit(y)
    hist = np.histogram(pit, bins=10, range=(0, 1))[0] / pit.size
    assert np.abs(hist - 0.1).max() < 0.3 * tol
    assert abs(np.mean(np.abs(pit - 0.5) <= 0.3413) - 0.6827) < 0.47 * tol
    # in tertiles of the population mass too (the selection bites hardest at low mass)
    for lo, hi in ((14.0, 14.27), (14.27, 14.53), (14.53, 14.8)):
        k = (mu >= lo) & (mu < hi)
        assert abs(np.mean(mean[k] - y[k])) < 0.5 * tol


def test_a_scale_offset_moves_the_estimate_and_widens_the_interval():
    sel, mu, sigma, m_lim, y = _selected_labels(20_000)
    p0 = label_predictive(mu, sigma, m_lim, sel, (0.0, 0.0))
    p1 = label_predictive(mu + 0.1, sigma, m_lim, sel, (-0.1, 0.05))
    np.testing.assert_allclose(p1.width, np.hypot(p0.width, 0.05))
    assert abs(np.mean(p1.mean() - p0.mean())) < 0.01  # the same prediction on the label's scale, wider


@pytest.fixture(scope="module")
def mcxc_catalog(tmp_path_factory):
    """The shipped model's catalogue of 30 MCXC clusters (real lambda, z and central galaxy; mock pixels), moved
    onto a grid 12' apart inside one partition: labels match by id, so where they sit does not matter, and one
    partition renders fastest."""
    from survey_mass.candidates import load_redmapper
    from survey_mass.footprint import parse_footprint
    from survey_mass.inference.run import RunOptions, run_catalog
    from survey_mass.labels import load_mcxc_labels
    from survey_mass.mock.survey import MockConfig, build_mock_store
    from survey_mass.resources import model_dir

    rm = load_redmapper()
    c = rm[rm["id"].isin(load_mcxc_labels()["id"])].iloc[::12].iloc[:30].reset_index(drop=True)
    g = np.arange(len(c))
    c["ra"] = 150.1 + 0.2 * (g % 8)
    c["dec"] = 1.1 + 0.2 * (g // 8)
    fp = parse_footprint("box:150,152,1,3")
    root = tmp_path_factory.mktemp("mcxc")
    build_mock_store(fp, root / "s.zarr", candidates=c, config=MockConfig(seed=3), workers=1, progress=False)
    run_catalog(
        store_path=str(root / "s.zarr"),
        model_path=str(model_dir()),
        catalog=str(root / "masses"),
        footprint=fp,
        opts=RunOptions(attribution="none"),
        progress=False,
    )
    return root


def test_validate_real_scores_the_mcxc_clusters_with_their_selection(mcxc_catalog, capsys):
    import json

    from survey_mass.schemas import first_error
    from survey_mass.testing import cli

    root = mcxc_catalog
    code, out, err = cli(
        ["validate", "--real", "--catalog", root / "masses", "--out", root / "val", "--no-progress"], capsys
    )
    assert code == 0, err
    r = json.loads((root / "val" / "real_validation.json").read_text())
    assert first_error("real_validation_report.schema.json", r) is None
    assert r["n_matched"] == 30 and r["label_scale"] == "hydrostatic" and r["selection"]["kind"] == "xray"
    assert r["fitted_on_scored_labels"] and "Not a held-out test" in out  # the default is the label fit's
    assert (root / "val" / "real_validation.png").stat().st_size > 10_000
    head = r["estimators"]["headline"]
    # the population mass, moved to the hydrostatic scale, sits below the selected labels; the selection moves
    # the estimate up in every tertile
    assert head["raw"]["bias"] < -0.04
    assert head["as_selected"]["bias"] > head["raw"]["bias"] + 0.08
    shift = np.subtract(head["as_selected"]["bias_by_lambda"], head["raw"]["bias_by_lambda"])
    assert (shift > 0.05).all()
    assert 0.4 < head["as_selected"]["coverage_68"] < 0.9
    assert sum(head["as_selected"]["pit_histogram"]) == pytest.approx(1.0, abs=1e-3)
    assert len(head["as_selected"]["bias_by_lambda"]) == 3 == len(head["as_selected"]["bias_by_z_95"])
    assert {"oof_lambda", "oof_lambda_bcg"} <= set(r["baselines"])
    assert "`headline` | as selected" in out
    # another hydrostatic bias moves the as-selected estimate by up to its log ratio, log10(0.8 / 0.6) = 0.125
    # (the selection re-weights: part of the shift goes into the selected distribution), and widens the scale's
    # error
    argv = [
        "validate",
        "--real",
        "--catalog",
        root / "masses",
        "--out",
        root / "val8",
        "--one-minus-b",
        "0.8+-0.1",
    ]
    code, _, err = cli(argv, capsys)
    assert code == 0, err
    r8 = json.loads((root / "val8" / "real_validation.json").read_text())
    moved = r8["estimators"]["headline"]["as_selected"]["bias"] - head["as_selected"]["bias"]
    assert 0.05 < moved < 0.14 and r8["scale_offset_sd_dex"] > r["scale_offset_sd_dex"]


def test_validate_real_takes_a_users_labels_and_refuses_bad_input(mcxc_catalog, capsys):
    import json

    import pandas as pd

    from survey_mass.labels import load_mcxc_labels
    from survey_mass.testing import assert_one_line_error, cli

    root = mcxc_catalog
    m = load_mcxc_labels()
    pd.DataFrame({"id": m["id"], "log10_m500": m["log10_m500"], "log10_m500_err": 0.1}).to_csv(
        root / "mine.csv", index=False
    )
    code, out, err = cli(
        [
            "validate",
            "--real",
            "--catalog",
            root / "masses",
            "--labels",
            root / "mine.csv",
            "--out",
            root / "v2",
        ],
        capsys,
    )
    assert code == 0, err
    r = json.loads((root / "v2" / "real_validation.json").read_text())
    assert r["selection"]["kind"] == "none" and r["label_scale"] == "true" and r["scale_offset_dex"] == 0
    assert r["estimators"]["headline"]["as_selected"] == r["estimators"]["headline"]["raw"]  # no selection
    for argv, words in (
        (["--real"], ("--catalog",)),
        (["--real", "--catalog", root / "nowhere"], ("nowhere",)),
        (["--real", "--catalog", root / "masses", "--label-selection", "xray:0"], ("label selection",)),
        (["--real", "--catalog", root / "masses", "--labels", root / "missing.csv"], ("missing.csv",)),
        (["--real", "--catalog", root / "masses", "--one-minus-b", "2"], ("--one-minus-b",)),
        (["--real", "--catalog", root / "masses", "--one-minus-b", "x+-y"], ("--one-minus-b",)),
    ):
        code, _, err = cli(["validate", *argv, "--out", root / "v3"], capsys)
        assert_one_line_error(code, err, *words)
    code, _, err = cli(
        ["validate", "--real", "--catalog", root / "masses", "--out", root / "mine.csv"], capsys
    )
    assert_one_line_error(code, err, "is a file")
    code, _, err = cli(["validate", "--labels", root / "mine.csv"], capsys)
    assert_one_line_error(code, err, "needs --real")


def test_rankings_are_spearman_and_scatter_paired_with_lambdas():
    import pandas as pd
    from scipy.stats import spearmanr

    from survey_mass.validate_real import RANK_BOOT, rankings

    rng = np.random.default_rng(3)
    x = rng.normal(14.3, 0.25, 400)
    rows = pd.DataFrame(
        {
            "label": x + rng.normal(0, 0.05, x.size),
            "log10_m500_lambda": x + rng.normal(0, 0.10, x.size),
            "log10_m500": x + rng.normal(0, 0.20, x.size),  # a worse headline
            "log10_m500_lambda_bcg": x + rng.normal(0, 0.08, x.size),  # a better baseline
        }
    )
    rows.loc[5, "log10_m500"] = np.nan  # every estimator is scored on the same rows
    r = rankings(rows, np.random.default_rng(1))
    assert set(r) == {"headline", "lambda", "lambda_bcg"} and r["lambda"].n == 399
    ok = rows.notna().all(axis=1)
    for name, col in (("headline", "log10_m500"), ("lambda", "log10_m500_lambda")):
        want = spearmanr(rows.loc[ok, col], rows.loc[ok, "label"]).statistic
        assert r[name].spearman == pytest.approx(want, abs=1e-12)
        assert r[name].scatter == pytest.approx((rows.loc[ok, col] - rows.loc[ok, "label"]).std(ddof=0))
    h, b = r["headline"], r["lambda_bcg"]
    assert h.spearman_minus_lambda == pytest.approx(h.spearman - r["lambda"].spearman)
    assert h.spearman_minus_lambda_95[1] < 0 < b.spearman_minus_lambda_95[1]
    assert h.scatter_over_lambda_95[0] > 1.5 and b.scatter_over_lambda_95[1] < 1.0
    assert r["lambda"].spearman_minus_lambda is None and RANK_BOOT >= 200
