"""The mock's labels against the 365 real MCXC labels of redMaPPer clusters (#29 item 2)."""

from __future__ import annotations

import numpy as np

from survey_mass.mock.label_fit import real_and_mock


def test_the_mocks_labels_look_like_mcxcs_at_the_label_level():
    """One realisation of the default physics over dr12 against the real labels (the mean of five realisations
    is in benchmarks/results/label_fit.md): the label-level fit's lambda slope and BCG coefficient, its
    cross-validated MAE, the labels' mean offset from E[M | lambda, z] and their number. Tolerances are the two
    samples' errors combined (one realisation scatters as much as the real sample)."""
    real, mock = real_and_mock()
    assert real.n == 365
    assert abs(mock.lambda_slope - real.lambda_slope) < 2 * np.hypot(
        mock.lambda_slope_sd, real.lambda_slope_sd
    )
    assert abs(mock.bcg_coefficient - real.bcg_coefficient) < 2 * np.hypot(
        mock.bcg_coefficient_sd, real.bcg_coefficient_sd
    )
    assert abs(mock.cv_mae_lambda_z - real.cv_mae_lambda_z) < 0.012
    assert abs(mock.offset_from_mean_relation - real.offset_from_mean_relation) < 0.04
    assert 0.8 < mock.n / real.n < 1.25
    # the physics before the fit made labels 0.2 dex above the mean relation, twice as many, with a BCG that
    # said twice as much: the test can tell
    from survey_mass.mock.physics import DEFAULT_PHYSICS, apply_overrides

    old = apply_overrides(
        DEFAULT_PHYSICS,
        [
            "bcg.dmag_dlog10M=-0.88",
            "halo_scatter.rho_bcg_lambda=-0.3",
            "labels.hydrostatic_one_minus_b=1.0",
            "labels.detection_error_ln=0.0",
            "labels.flux_error_ln=0.1",
            "labels.l0=1.38e44",
        ],
    )
    _, before = real_and_mock(old)
    assert before.offset_from_mean_relation - real.offset_from_mean_relation > 0.1
    assert before.bcg_coefficient < real.bcg_coefficient - 2 * real.bcg_coefficient_sd
