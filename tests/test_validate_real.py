"""``validate --real`` (#29 item 3): the statistics on simulated labels whose answer is known, and the command
on a real catalogue."""

from __future__ import annotations

import numpy as np

from survey_mass.labels import LabelSelection
from survey_mass.validate_real import label_predictive, truncated_pit


def _selected_labels(n=200_000, seed=1):
    """Clusters m ~ N(mu, sigma); labels from L_X y = m + e, e ~ N(0, s); labelled where y >= m_lim."""
    rng = np.random.default_rng(seed)
    sel = LabelSelection.parse("xray:3e-12").selection()
    mu = rng.uniform(14.0, 14.8, n)
    sigma = np.full(n, 0.15)
    z = rng.uniform(0.05, 0.3, n)
    m_lim = sel.m_lim(z)
    y = mu + sigma * rng.standard_normal(n) + sel.s * rng.standard_normal(n)
    keep = y >= m_lim
    return sel, mu[keep], sigma[keep], m_lim[keep], y[keep]


def test_the_selected_label_model_is_unbiased_and_calibrated_on_selected_labels():
    sel, mu, sigma, m_lim, y = _selected_labels()
    mean, width, centre, _ = label_predictive(mu, sigma, m_lim, sel, (0.0, 0.0))
    # the population estimate is biased low against selected labels; the selected model is not
    assert np.mean(mu - y) < -0.05
    assert abs(np.mean(mean - y)) < 0.003
    pit = truncated_pit(y, centre, width, m_lim)
    hist = np.histogram(pit, bins=10, range=(0, 1))[0] / pit.size
    assert np.abs(hist - 0.1).max() < 0.01
    assert abs(np.mean(np.abs(pit - 0.5) <= 0.3413) - 0.6827) < 0.01
    # in tertiles of the population mass too (the selection bites hardest at low mass)
    for lo, hi in ((14.0, 14.27), (14.27, 14.53), (14.53, 14.8)):
        k = (mu >= lo) & (mu < hi)
        assert abs(np.mean(mean[k] - y[k])) < 0.005


def test_a_scale_offset_moves_the_estimate_and_widens_the_interval():
    sel, mu, sigma, m_lim, y = _selected_labels(20_000)
    m0, w0, *_ = label_predictive(mu, sigma, m_lim, sel, (0.0, 0.0))
    m1, w1, *_ = label_predictive(mu + 0.1, sigma, m_lim, sel, (-0.1, 0.05))
    np.testing.assert_allclose(w1, np.hypot(w0, 0.05))
    assert abs(np.mean(m1 - m0)) < 0.01  # the same prediction on the label's scale, a wider distribution
