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
