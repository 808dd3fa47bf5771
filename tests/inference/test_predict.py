"""One partition's prediction (survey_mass.inference.predict) with a model that takes the central galaxy."""

import numpy as np
import pytest

from survey_mass.inference.predict import predict_partition
from survey_mass.models.bundle import load_bundle
from survey_mass.models.catalogue import central_galaxy_feature
from survey_mass.store import open_store


@pytest.fixture(scope="module")
def partition(smoke_model, labelled_store):
    st = open_store(labelled_store)
    p = max(st.partitions, key=lambda q: len(st.columns(q)["id"]))
    return load_bundle(smoke_model[0]), st.images(p), dict(st.columns(p))


def test_lambda_bcg_is_the_relation_on_the_rows_central_galaxy(partition):
    bundle, images, cols = partition
    out = predict_partition(bundle, images, cols, richness=False)
    got = out["log10_m500_lambda_bcg"]
    ok = np.isfinite(got)
    assert ok.mean() > 0.8  # every row with a mass and a central galaxy
    z, lam = np.asarray(cols["z"], float), np.asarray(cols["richness"], float)
    want = bundle.relation_bcg.predict(lam, z, bcg=central_galaxy_feature(cols["bcg_mag_i"], z))["log10_m500"]
    np.testing.assert_allclose(got[ok], want[ok], atol=1e-9)
    # and it differs from the lambda mass by the central galaxy's term, which is not zero
    assert np.nanstd(got - out["log10_m500_lambda"]) > 0.01
    assert np.all(np.isfinite(out["log10_m500_lambda_bcg_err"][ok]))


def test_the_headline_reads_the_central_galaxy_and_stands_in_for_a_missing_one(partition):
    bundle, images, cols = partition
    base = predict_partition(bundle, images, cols, richness=False)
    ok = np.isfinite(base["log10_m500"])
    # the contributions still add up to the mass, the central galaxy's among them
    total = base["log10_m500_reference"] + sum(base[c] for c in base if c.startswith("contrib_"))
    np.testing.assert_allclose(total[ok], base["log10_m500"][ok], atol=1e-4)
    assert np.nanstd(base["contrib_bcg"][ok]) > 0.005
    # a brighter central galaxy raises the headline, as it raises the lambda + BCG mass
    brighter = dict(cols, bcg_mag_i=np.asarray(cols["bcg_mag_i"], float) - 0.5)
    up = predict_partition(bundle, images, brighter, richness=False)
    assert np.nanmean(up["log10_m500"][ok] - base["log10_m500"][ok]) > 0
    assert np.nanmean(up["log10_m500_lambda_bcg"] - base["log10_m500_lambda_bcg"]) > 0
    # without a central galaxy: the expectation given lambda and z stands in, and no lambda + BCG mass
    none = dict(cols, bcg_mag_i=np.full(len(cols["id"]), np.nan))
    miss = predict_partition(bundle, images, none, richness=False)
    assert np.isfinite(miss["log10_m500"][ok]).all() and np.isnan(miss["log10_m500_lambda_bcg"]).all()
    gone = {k: v for k, v in cols.items() if k != "bcg_mag_i"}  # a store without the column: the same
    np.testing.assert_allclose(
        predict_partition(bundle, images, gone, richness=False)["log10_m500"], miss["log10_m500"]
    )
    # the stand-in is the mean of the central galaxy at the row's lambda and z: the headline moves less, on
    # average, than the spread of real central galaxies moves it
    assert (
        np.nanmean(np.abs(miss["log10_m500"] - base["log10_m500"])[ok])
        < np.nanstd(base["contrib_bcg"][ok]) * 1.5
    )
