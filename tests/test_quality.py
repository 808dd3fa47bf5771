"""Quality bits that say "garbage in": no cluster in the pixels (NO_CLUSTER), a redshift the model was not trained
on (OUTSIDE_Z_RANGE)."""

import json

import numpy as np
import pytest

from survey_mass.models import richness
from survey_mass.quality import Quality, describe, redshift_quality
from survey_mass.resources import model_dir


@pytest.fixture(scope="module")
def baseline() -> richness.RichnessBaseline:
    """The shipped model's richness baseline (what prediction judges cutouts with)."""
    card = json.loads((model_dir() / "model_card.json").read_text())
    return richness.RichnessBaseline.from_dict(card["richness_baseline"])


@pytest.fixture(scope="module")
def blank_sources():
    """Detections in 120 mock cutouts with no cluster (sky, field galaxies, stars), held out of the field model's
    renders (keys 20000-20599) and of the threshold's (keys 10000-10399)."""
    from survey_mass.mock.survey import MockConfig, render_blank

    cfg = MockConfig()
    rng = np.random.default_rng(11)
    return [
        richness.detect(render_blank(cfg, 60_000 + k, float(rng.uniform(25, 85)), field=True))
        for k in range(120)
    ]


@pytest.fixture(scope="module")
def cluster_significance(small_store, baseline):
    """(z, catalogue lambda, significance) of every cluster of the small mock store."""
    from survey_mass.store import open_store

    st = open_store(small_store)
    z, lam, sig = [], [], []
    for p in st.partitions:
        cols, images = st.columns(p), st.images(p)
        for k in range(images.shape[0]):
            zk = float(cols["z"][k])
            z.append(zk)
            lam.append(float(cols["richness"][k]))
            sig.append(baseline.cluster_significance(richness.detect(images[k]), zk))
    return np.array(z), np.array(lam), np.array(sig)


def test_bits_are_new_and_named():
    assert int(Quality.NO_CLUSTER) == 256 and int(Quality.OUTSIDE_Z_RANGE) == 512
    others = [int(q) for q in Quality if q not in (Quality.NO_CLUSTER, Quality.OUTSIDE_Z_RANGE)]
    assert not any(o & (256 | 512) for o in others)
    assert describe(256 | 512 | 1) == "NAN_PIXELS|NO_CLUSTER|OUTSIDE_Z_RANGE"


def test_redshift_quality_flags_finite_redshifts_outside_the_range():
    z = np.array([0.05, 0.08, 0.3, 0.55, 0.5500001, 0.9, np.nan, np.inf, -0.1])
    bits = redshift_quality(z, (0.08, 0.55))
    assert bits.dtype == np.int32 and bits.shape == z.shape
    # the ends are inside; NaN is NO_REDSHIFT's business, not this bit's; inf is not finite either
    assert bits.tolist() == [512, 0, 0, 0, 512, 512, 0, 0, 512]
    assert redshift_quality(0.9, (0.08, 0.55)).tolist() == 512
    assert redshift_quality(np.zeros(0), (0.08, 0.55)).shape == (0,)
    with pytest.raises(ValueError, match="z_range"):
        redshift_quality(z, (0.55, 0.08))


@pytest.mark.parametrize("z", [0.12, 0.2, 0.3, 0.38])
def test_blank_cutouts_are_flagged_no_cluster(baseline, blank_sources, z):
    sig = np.array([baseline.cluster_significance(s, z) for s in blank_sources])
    assert np.isfinite(sig).all()
    # the field model makes a blank's significance ~N(0, 1); measured: 91-95% of blanks below the threshold
    assert abs(float(np.mean(sig))) < 0.35 and 0.7 < float(np.std(sig)) < 1.3
    flagged = richness.no_cluster(sig)
    assert flagged.mean() >= 0.85, f"z = {z}: only {flagged.mean():.0%} of blank cutouts flagged"


def test_real_mock_clusters_are_not_flagged(cluster_significance):
    z, lam, sig = cluster_significance
    judged = z <= richness.NO_CLUSTER_Z_MAX
    assert judged.sum() >= 150 and (lam[judged] >= 19.5).all()
    assert np.isfinite(sig[judged]).all()
    flagged = richness.no_cluster(sig[judged])
    # measured: 1 of 169 (0.6%) of this store's clusters; 3 of 893 over three seeds
    assert flagged.mean() <= 0.02, f"{flagged.sum()} of {flagged.size} real clusters flagged NO_CLUSTER"
    # and the clusters stand far above the field, not just above the threshold
    assert np.median(sig[judged]) > 4 * richness.NO_CLUSTER_THRESHOLD


def test_not_judged_above_the_detectors_reach(baseline, blank_sources, cluster_significance):
    z, _, sig = cluster_significance
    beyond = z > richness.NO_CLUSTER_Z_MAX
    assert beyond.any() and np.isnan(sig[beyond]).all()
    assert not richness.no_cluster(sig[beyond]).any()
    assert np.isnan(baseline.cluster_significance(blank_sources[0], 0.5))
    assert np.isnan(baseline.cluster_significance(blank_sources[0], float("nan")))


def test_a_cutout_with_nothing_detected_shows_no_cluster(baseline):
    empty = richness.detect(np.zeros((5, 64, 64), np.float32))
    assert empty["x"].size == 0
    assert richness.no_cluster([baseline.cluster_significance(empty, 0.25)]).tolist() == [True]
    assert richness.no_cluster([np.nan, -1.0, 10.0]).tolist() == [False, True, False]
