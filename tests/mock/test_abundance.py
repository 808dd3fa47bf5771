"""`survey-mass mock --no-candidates` predicts the real redMaPPer catalogue's abundance."""

import numpy as np
import pytest

from survey_mass.candidates import load_redmapper
from survey_mass.footprint import parse_footprint
from survey_mass.mock.survey import MockConfig, partition_clusters, plan


@pytest.mark.parametrize("box", ["box:130,240,5,60", "box:140,200,10,40", "box:150,230,30,60"])
def test_mass_function_draws_match_the_real_count_in_large_boxes(box):
    """The clusters `mock --no-candidates` renders (drawn exactly as it draws them, without the pixels) with
    lambda >= 20 at 0.1 < z < 0.33 number the real catalogue's within 15% in large boxes of the northern cap."""
    fp = parse_footprint(box)
    cfg = MockConfig(seed=5)
    drawn = [partition_clusters(cfg, job) for job in plan(fp, cfg, None)]
    z = np.concatenate([d["z"].to_numpy() for d in drawn])
    lam = np.concatenate([d["richness"].to_numpy() for d in drawn])
    ra = np.concatenate([d["ra"].to_numpy() for d in drawn])
    dec = np.concatenate([d["dec"].to_numpy() for d in drawn])
    inside = fp.contains(ra, dec)
    n_mock = int(((z > 0.1) & (z < 0.33) & (lam >= 20) & inside).sum())
    cat = load_redmapper()
    real = fp.contains(cat["ra"].to_numpy(), cat["dec"].to_numpy())
    n_real = int((real & (cat["z"] > 0.1) & (cat["z"] < 0.33) & (cat["richness"] >= 20)).sum())
    assert n_real > 500
    assert abs(n_mock / n_real - 1) < 0.15, (n_mock, n_real)
    assert (lam >= 20).all()  # the floor
