"""Reduced precision for the backbone alone (MassModel.backbone_autocast): the heads stay fp32, and the masses
move by less than the 0.005 dex the GPU path may spend on it."""

from __future__ import annotations

import numpy as np
import torch

from survey_mass.inference.predict import cnn_masses
from survey_mass.models.bundle import load_bundle
from survey_mass.resources import model_dir
from survey_mass.testing import biggest_partition


def test_bf16_backbone_moves_no_mass_by_more_than_5_millidex(small_store):
    _, images, cols = biggest_partition(small_store)
    images, z, lam = images[:48], np.asarray(cols["z"], float)[:48], np.asarray(cols["richness"], float)[:48]
    bundle = load_bundle(model_dir())
    ref = cnn_masses(bundle, images, z, lam)
    bundle.model.backbone_autocast = bundle.pixels.backbone_autocast = torch.bfloat16
    try:
        low = cnn_masses(bundle, images, z, lam)
    finally:
        bundle.model.backbone_autocast = bundle.pixels.backbone_autocast = None
    for key in ("log10_m500", "log10_m500_pixels"):
        d = np.abs(np.asarray(low[key]) - np.asarray(ref[key]))
        # it did run in bf16 (not bit-identical), within budget
        assert np.isfinite(d).all() and 0 < d.max() <= 0.005, key


def test_attribution_is_the_same_whatever_the_catalogues_precision(small_store):
    """The maps and their delta F(x) - F(blank) come from the plain fp32 network even when the catalogue's masses
    run the backbone in bf16."""
    from survey_mass.attribution import attribute

    _, images, cols = biggest_partition(small_store)
    z = np.asarray(cols["z"], float)[:2]
    lam = np.asarray(cols["richness"], float)[:2]
    maps = [
        attribute(load_bundle(model_dir()).with_precision(p), images[:2], z, steps=8, richness=lam)
        for p in ("fp32", "bf16")
    ]
    for key in ("attr_delta_dex", "ig_completeness_dex", "ig_steps", "attr_r_dex"):
        np.testing.assert_array_equal(maps[0][key], maps[1][key], err_msg=key)


def test_reduced_precision_leaves_the_out_of_distribution_verdict_to_fp32(small_store):
    """Rows near the OOD flag get fp32 inputs: with the flag put at the rows' median score (so that half of them
    lie within the guard band), their masses are fp32's, and every verdict is fp32's."""
    from survey_mass.inference.predict import near_ood_threshold

    _, images, cols = biggest_partition(small_store)
    images, z, lam = images[:48], np.asarray(cols["z"], float)[:48], np.asarray(cols["richness"], float)[:48]
    bundle = load_bundle(model_dir())
    raw = bundle.pixels.raw_inputs_of(images, z)
    flag = float(np.median(bundle.pixels.ood_score(raw)))
    bundle.pixels.ood_flag = bundle.model.ood_flag = flag
    ref = cnn_masses(bundle.with_precision("fp32"), images, z, lam)
    low = cnn_masses(bundle.with_precision("bf16"), images, z, lam)
    near = near_ood_threshold(bundle, raw, lam)
    assert 5 <= near.size < 48
    np.testing.assert_array_equal(low["out_of_distribution"], ref["out_of_distribution"])
    np.testing.assert_allclose(
        low["log10_m500_pixels"][near], ref["log10_m500_pixels"][near], atol=1e-5, rtol=0
    )
    far = np.setdiff1d(np.arange(48), near)
    assert np.abs(low["log10_m500_pixels"][far] - ref["log10_m500_pixels"][far]).max() > 1e-5  # bf16 did run


def test_a_run_records_its_precision_and_refuses_to_resume_in_another(small_store, tmp_path):
    import json

    import pytest

    from survey_mass.errors import SurveyMassError
    from survey_mass.paths import run_summary_file
    from survey_mass.testing import run_small

    out = tmp_path / "cat"
    summary = run_small(small_store, out, attribution="none", precision="bf16")
    assert summary.precision == "bf16"
    assert json.loads(run_summary_file(out).read_text())["precision"] == "bf16"
    with pytest.raises(SurveyMassError, match="precision"):
        run_small(small_store, out, attribution="none", precision="fp32")
