import numpy as np

from survey_mass.footprint import partition_of
from survey_mass.mock.survey import MockConfig, PartitionJob, build_partition
from survey_mass.store import open_store
from survey_mass.testing import assert_store_valid, spearman


def test_store_is_valid_and_holds_every_candidate(small_store, small_candidates):
    assert_store_valid(small_store)
    st = open_store(small_store)
    ids = np.concatenate([st.columns(p)["id"] for p in st.partitions])
    assert sorted(ids.tolist()) == sorted(small_candidates["id"].tolist())
    assert st.attrs["provenance"]["seed"] == 7 and st.attrs["kind"] == "mock"
    for p in st.partitions:
        c = st.columns(p)
        assert np.isfinite(c["log10_m500_true"]).all()
        assert (c["quality"] == 0).all()


def test_same_seed_same_arrays_and_partition_rebuilt_alone(small_store, small_candidates):
    st = open_store(small_store)
    p = st.partitions[0]
    part = partition_of(small_candidates["ra"], small_candidates["dec"], 2)
    job = PartitionJob(p, small_candidates[part == p])
    images, cols = build_partition(MockConfig(seed=7), job)
    np.testing.assert_array_equal(images, st.images(p))
    np.testing.assert_array_equal(cols["log10_m500_true"], st.columns(p)["log10_m500_true"])
    other, _ = build_partition(MockConfig(seed=8), job)
    assert not np.array_equal(other, images)


def test_central_light_rises_with_mass(small_store):
    """i-band luminosity inside 100 kpc of the centre rises with the true mass (all redshifts together)."""
    from survey_mass.mock import physics

    st = open_store(small_store)
    lum, mass = [], []
    yy, xx = np.mgrid[0:64, 0:64]
    rr = np.hypot(xx - 31.5, yy - 31.5)
    for p in st.partitions:
        imgs = st.images(p)
        c = st.columns(p)
        for img, z, m in zip(imgs[:, 3], c["z"], c["log10_m500_true"], strict=True):
            r_pix = 100.0 / float(physics.kpc_per_arcsec(z)) / st.pixel_scale
            aperture = rr < r_pix
            bkg = np.median(img[rr > 28])
            flux = (img[aperture] - bkg).sum()
            lum.append(np.log10(max(flux, 1e-3)) + 0.4 * float(physics.distance_modulus(z)))
            mass.append(m)
    # L_BCG ∝ M^0.24 (the real MCXC labels' BCG coefficient), and the members' light
    assert spearman(mass, lum) > 0.2


def test_mass_function_draws_without_candidates(tmp_path):
    from survey_mass.footprint import parse_footprint
    from survey_mass.mock.survey import build_mock_store

    out = tmp_path / "mf.zarr"
    s = build_mock_store(
        parse_footprint("box:20,24,-62,-58"),
        out,
        candidates=None,
        config=MockConfig(seed=3),
        workers=1,
        progress=False,
    )
    assert s["candidates"] == "mass-function"
    st = open_store(out)
    n = st.n_total
    area = parse_footprint("box:20,24,-62,-58").area_deg2
    # the mass function predicts ~4.6 clusters with lambda >= 20 per deg^2 over 0.05 < z < 0.6
    assert 2.0 * area < n < 8.0 * area
    c = st.columns(st.partitions[0])
    assert (c["richness"] >= 20).all() and (c["z"] > 0.04).all() and (c["z"] < 0.61).all()
    assert_store_valid(out)


def test_interrupted_build_resumes_only_missing_partitions(tmp_path, small_candidates, small_store):
    import shutil

    from survey_mass.footprint import parse_footprint
    from survey_mass.mock.survey import build_mock_store

    out = tmp_path / "copy.zarr"
    shutil.copytree(small_store, out)
    st = open_store(out)
    lost = st.partitions[-1]
    shutil.rmtree(out / "Norder=2" / f"Npix={lost}")
    (out / "Norder=2" / f".tmp-Npix={lost}-deadbeef").mkdir()  # what a killed writer leaves behind
    s = build_mock_store(
        parse_footprint("box:150,160,0,12"),
        out,
        candidates=small_candidates,
        config=MockConfig(seed=7),
        workers=1,
        progress=False,
    )
    assert s["partitions_built"] == 1 and s["partitions_skipped"] == len(st.partitions) - 1
    np.testing.assert_array_equal(open_store(out).images(lost), open_store(small_store).images(lost))
    assert not list((out / "Norder=2").glob(".tmp-*"))


def test_resuming_with_another_seed_is_refused(tmp_path, small_candidates, small_store):
    import shutil

    import pytest

    from survey_mass.errors import StoreError
    from survey_mass.footprint import parse_footprint
    from survey_mass.mock.survey import build_mock_store

    out = tmp_path / "copy.zarr"
    shutil.copytree(small_store, out)
    with pytest.raises(StoreError, match="different provenance"):
        build_mock_store(
            parse_footprint("box:150,160,0,12"),
            out,
            candidates=small_candidates,
            config=MockConfig(seed=8),
            workers=1,
            progress=False,
        )
