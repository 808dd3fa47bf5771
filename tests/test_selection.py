"""Selection-aware fitting recovers the population relation from selected labels; a plain fit does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import ndtr

from survey_mass.models.richness import RichnessBaseline
from survey_mass.selection import (
    XraySelection,
    detection_probability,
    extrapolation_sigma,
    fit_extrapolation_tau,
    selected_moments,
    truncated_nll,
)


def _population(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.1, 0.5, n)
    lam = np.exp(rng.uniform(np.log(20), np.log(150), n))
    m = 13.2 + 0.8 * np.log10(lam) + 0.3 * z + 0.2 * rng.standard_normal(n)
    sel = XraySelection(flux_limit_cgs=2e-12)
    p_sel = ndtr((m - sel.m_lim(z)) / sel.s)
    chosen = rng.random(n) < p_sel
    y = m + sel.label_noise_dex * rng.standard_normal(n)
    return z, lam, m, y, chosen, sel


def test_selection_aware_fit_recovers_the_population():
    z, lam, m, y, chosen, sel = _population()
    assert 300 < chosen.sum() < 0.5 * chosen.size  # a small, biased labelled subset
    b = RichnessBaseline()
    plain = b.fit_fold(lam[chosen], z[chosen], y[chosen])
    # the survey's likelihood: labelled clusters as selected, the others as non-detections
    aware = b.fit_fold(lam, z, np.where(chosen, y, np.nan), selection=sel)
    # the labels alone, given their selection, recover it too (less precisely)
    truncated = b.fit_fold(lam[chosen], z[chosen], y[chosen], selection=sel)
    assert abs(truncated[1] - 0.8) < 0.2
    err_plain = np.mean(np.abs(b.predict(plain, lam, z) - m))
    err_aware = np.mean(np.abs(b.predict(aware, lam, z) - m))
    bias_aware = np.mean(b.predict(aware, lam, z) - m)
    assert abs(aware[1] - 0.8) < 0.12 and abs(aware[3] - 0.2) < 0.05
    assert abs(bias_aware) < 0.05
    floor = 0.2 * np.sqrt(2 / np.pi)  # the MAE of the intrinsic scatter itself
    assert err_aware < 1.1 * floor < 1.2 * floor < err_plain
    # and the population 68% interval holds about 68% of all clusters
    cover = np.mean(np.abs(b.predict(aware, lam, z) - m) < aware[3])
    assert 0.6 < cover < 0.76


def test_torch_and_numpy_likelihoods_agree_and_selected_moments_match_simulation():
    sel = XraySelection(flux_limit_cgs=2e-12)
    mu, sig, y, lim = 14.2, 0.25, 14.6, 14.4
    a = truncated_nll(np.array([mu]), np.array([sig]), np.array([y]), np.array([lim]), sel.s, 0.12)
    t = truncated_nll(
        torch.tensor([mu], dtype=torch.float64),
        torch.tensor([sig], dtype=torch.float64),
        torch.tensor([y], dtype=torch.float64),
        torch.tensor([lim], dtype=torch.float64),
        sel.s,
        0.12,
        xp=torch,
    )
    assert np.allclose(a, t.numpy())
    rng = np.random.default_rng(1)
    m = mu + sig * rng.standard_normal(400000)
    keep = rng.random(m.size) < ndtr((m - lim) / sel.s)
    lab = m[keep] + 0.12 * rng.standard_normal(keep.sum())
    mean, sd = selected_moments(np.array([mu]), np.array([sig]), np.array([lim]), sel.s, 0.12)
    assert abs(mean[0] - lab.mean()) < 0.005 and abs(sd[0] - lab.std()) < 0.005


def test_extrapolation_term_calibrates_the_undetected_population_and_spares_the_detected():
    """Quoted sigma 0.20 holds where the labels' survey detects clusters; far below its flux limit the scatter
    is 0.26. tau, fitted on one simulated draw, restores 68% coverage on another and leaves detected clusters
    alone."""
    sel = XraySelection(flux_limit_cgs=2e-12)

    def draw(seed, n=30000):
        rng = np.random.default_rng(seed)
        z = rng.uniform(0.1, 0.5, n)
        mu = sel.m_lim(z) + rng.uniform(-1.0, 0.6, n)
        sigma = np.full(n, 0.20)
        p = detection_probability(mu, sigma, sel.m_lim(z), sel.s)
        true_sd = np.sqrt(0.20**2 + 0.17**2 * (1 - p))
        return mu - (mu + true_sd * rng.standard_normal(n)), sigma, p

    r, sigma, p = draw(0)
    assert np.mean(np.abs(r) < sigma) < 0.62  # the labels' sigma alone under-covers
    tau = fit_extrapolation_tau(r, sigma, p)
    assert 0.12 < tau < 0.22
    r2, sigma2, p2 = draw(1)
    total = np.hypot(sigma2, extrapolation_sigma(tau, p2))
    assert 0.66 < np.mean(np.abs(r2) < total) < 0.70
    detected = p2 > 0.9
    assert detected.sum() > 500 and np.all(total[detected] < 0.21)
    assert 0.63 < np.mean(np.abs(r2[detected]) < total[detected]) < 0.73
    # a well calibrated sigma needs no extra term
    rng = np.random.default_rng(2)
    assert fit_extrapolation_tau(0.2 * rng.standard_normal(20000), np.full(20000, 0.21), np.zeros(20000)) == 0


def test_a_default_mock_store_declares_hydrostatic_labels_with_a_soft_limit(labelled_store):
    """The mock's labels are on MCXC's hydrostatic scale (1 - b = 0.60) and detected with a flux that scatters
    0.4 in ln about the label's: training reads both from the store and works on the true scale."""
    from survey_mass.labels import MCXC_DETECTION_ERROR_LN, MCXC_ONE_MINUS_B_FIT
    from survey_mass.selection import selection_for_store
    from survey_mass.store import open_store
    from survey_mass.training.train import read_table

    sel = selection_for_store(open_store(labelled_store))
    assert sel.label_offset_dex == pytest.approx(np.log10(MCXC_ONE_MINUS_B_FIT))
    assert sel.detection_error_ln == MCXC_DETECTION_ERROR_LN and sel.s_detection > 0
    t = read_table(open_store(labelled_store))
    assert np.isfinite(t.label).sum() > 100  # the store lowers the flux limit: many labels
    lab = np.isfinite(t.label)
    # on the true scale the labels scatter about the truth; on their own they sit 1 - b below it
    assert (
        abs(
            np.mean(sel.to_true(t.label[lab]) - t.truth[lab])
            - np.mean(t.label[lab] - t.truth[lab])
            + np.log10(0.6)
        )
        < 1e-9
    )
    assert np.mean(t.label[lab] - t.truth[lab]) < -0.1
    # a soft limit: the label likelihood's probit width is the detection's
    sig, s, _ = sel.effective(np.array([0.2]))
    assert s == pytest.approx(sel.s_detection) and sig[0] == pytest.approx(np.hypot(0.2, sel.s))


def test_a_soft_limit_leaves_labels_below_it_and_the_selected_moments_follow():
    from dataclasses import replace

    sel = replace(
        XraySelection(flux_limit_cgs=2e-12, labels_from_lx=True, flux_error_ln=0.3), detection_error_ln=0.4
    )
    rng = np.random.default_rng(4)
    n = 400_000
    mu, sigma = np.full(n, 14.3), 0.15
    m_lim = sel.m_lim(np.full(n, 0.2))
    y = mu + np.hypot(sigma, sel.s) * rng.standard_normal(n)
    det = y + sel.s_detection * rng.standard_normal(n) >= m_lim
    assert (y[det] < m_lim[det]).mean() > 0.2  # as MCXC's NORAS labels reach below the nominal limit
    mean, sd = sel.selected_moments(mu[:1], np.array([sigma]), m_lim[:1])
    assert mean[0] == pytest.approx(y[det].mean(), abs=0.003) and sd[0] == pytest.approx(
        y[det].std(), abs=0.005
    )
