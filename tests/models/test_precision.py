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
    ref = cnn_masses(bundle, images, z, lam)["log10_m500"]
    bundle.model.backbone_autocast = bundle.pixels.backbone_autocast = torch.bfloat16
    try:
        low = cnn_masses(bundle, images, z, lam)["log10_m500"]
    finally:
        bundle.model.backbone_autocast = bundle.pixels.backbone_autocast = None
    d = np.abs(np.asarray(low) - np.asarray(ref))
    assert (
        np.isfinite(d).all() and 0 < d.max() <= 0.005
    )  # it did run in bf16 (not bit-identical), within budget


def test_gradients_and_training_stay_fp32(small_store):
    """The reduced precision applies only where no gradient is taken: attribution and training see fp32."""
    _, images, _ = biggest_partition(small_store)
    bundle = load_bundle(model_dir()).with_precision("bf16")
    x = torch.from_numpy(np.nan_to_num(images[:4])).float()
    with torch.no_grad():
        low = bundle.model.band_features(x)
    bundle.with_precision("fp32")
    with torch.no_grad():
        ref = bundle.model.band_features(x)
    bundle.with_precision("bf16")
    with torch.enable_grad():
        graded = bundle.model.band_features(x.requires_grad_())
    torch.testing.assert_close(graded.detach(), ref, rtol=0, atol=0)
    assert not torch.equal(low, ref)


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
