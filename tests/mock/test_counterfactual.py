"""Counterfactual renders of the same mock scene (survey_mass.mock.survey.scene_variants): the stored scene, and
the same scene without its BCG or without its members, with the same field sources and noise draws."""

from __future__ import annotations

import numpy as np
import pytest

from survey_mass.errors import StoreError
from survey_mass.mock.survey import MockConfig, render_cluster, scene_variants
from survey_mass.photometry import BANDS
from survey_mass.store import open_store
from survey_mass.testing import make_store, same_scenes, small_candidates

N = 12
I_BAND = BANDS.index("i")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict:
    """A 12-cluster mock store (two partitions), its cutouts and sky sigmas, and every variant of all its scenes
    (ids in an order that interleaves the partitions, so the rows must follow ``ids``)."""
    store = same_scenes(tmp_path_factory.mktemp("cf") / "s.zarr", n=N)
    st = open_store(store)
    assert len(st.partitions) > 1
    rows = [(p, k) for p in st.partitions for k in range(st.n_cutouts(p))]
    order = np.random.default_rng(0).permutation(len(rows))
    cols = {p: st.columns(p) for p in st.partitions}
    ids = np.array([cols[p]["id"][k] for p, k in (rows[j] for j in order)])
    sky = np.array([[cols[p][f"obs_sky_sigma_{b}"][k] for b in BANDS] for p, k in (rows[j] for j in order)])
    stored = np.stack([st.read_by_id(int(i))[0] for i in ids])
    return {"store": store, "ids": ids, "sky": sky, "stored": stored, "variants": scene_variants(store, ids)}


def _near_centre(size: int, radius: float = 4.0) -> np.ndarray:
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[:size, :size]
    return np.hypot(yy - c, xx - c) <= radius


def test_full_is_the_stored_cutouts(scenes):
    v = scenes["variants"]
    assert set(v) == {"full", "no_central", "no_members"}
    for arr in v.values():
        assert arr.dtype == np.float32 and arr.shape == scenes["stored"].shape == (N, 5, 64, 64)
    assert np.array_equal(v["full"], scenes["stored"])


def test_no_central_removes_light_at_the_centre_only(scenes):
    full, cf, sky = scenes["variants"]["full"], scenes["variants"]["no_central"], scenes["sky"]
    diff = np.abs(full - cf).sum(axis=1)  # (N, H, W), over bands
    near = _near_centre(full.shape[-1])
    frac_near = diff[:, near].sum(axis=1) / diff.sum(axis=(1, 2))
    assert (frac_near > 0.5).all(), frac_near
    # the central 2 x 2 pixels (the centre is at 31.5) lose the BCG's light in i, by many sky sigmas
    centre = np.s_[:, I_BAND, 31:33, 31:33]
    drop = full[centre].sum(axis=(1, 2)) - cf[centre].sum(axis=(1, 2))
    assert (drop > 20 * sky[:, I_BAND]).all(), (drop, sky[:, I_BAND])
    # the same noise draws: independent noise would make the median |difference| ~0.95 sky sigma; what is left
    # is the BCG's faint de Vaucouleurs wings
    med = np.median(np.abs(full - cf), axis=(2, 3))
    assert (med < 0.05 * sky).all(), (med / sky).max()


def test_no_members_removes_light_away_from_the_centre(scenes):
    full, cf, sky = scenes["variants"]["full"], scenes["variants"]["no_members"], scenes["sky"]
    diff = np.abs(full - cf).sum(axis=1)
    near = _near_centre(full.shape[-1])
    frac_outside = diff[:, ~near].sum(axis=1) / diff.sum(axis=(1, 2))
    assert (frac_outside > 0.5).all(), frac_outside
    assert (diff[:, ~near].sum(axis=1) > 100 * sky.mean(axis=1)).all()
    assert (cf.sum(axis=(1, 2, 3)) < full.sum(axis=(1, 2, 3))).all()
    # the BCG stays: the central i-band pixels keep most of their light
    centre = np.s_[:, I_BAND, 31:33, 31:33]
    assert (cf[centre].sum(axis=(1, 2)) > 0.5 * full[centre].sum(axis=(1, 2))).all()
    med = np.median(np.abs(full - cf), axis=(2, 3))
    assert (med < 0.05 * sky).all(), (med / sky).max()


def test_unknown_variant_or_component_raises(scenes):
    with pytest.raises(ValueError, match="no_halo"):
        scene_variants(scenes["store"], scenes["ids"][:1], ("full", "no_halo"))
    row = {"id": 1, "z": 0.2, "richness": 30.0, "log10_m500_true": 14.3, "bcg_i_model": 17.0}
    with pytest.raises(ValueError, match="'halo'"):
        render_cluster(row, MockConfig(), 60.0, without=("central", "halo"))


def test_bad_ids_and_stores_raise_store_error(scenes, tmp_path):
    store = scenes["store"]
    with pytest.raises(StoreError, match=f"{store}.*no cutout with id 999999999"):
        scene_variants(store, [int(scenes["ids"][0]), 999999999])
    st = open_store(store)
    p = st.partitions[0]
    other = make_store(tmp_path / "other.zarr", p, st.images(p), st.columns(p))  # provenance not a MockConfig
    with pytest.raises(StoreError, match="other.zarr.*MockConfig"):
        scene_variants(other, st.columns(p)["id"][:1])


def test_candidates_the_store_was_built_from(scenes):
    cand = small_candidates().iloc[:N]
    i = int(scenes["ids"][0])
    got = scene_variants(scenes["store"], [i], ("no_central",), candidates=cand)
    assert np.array_equal(got["no_central"], scenes["variants"]["no_central"][:1])
    # other candidates make other clusters, which must not pass for the stored scenes
    wrong = cand.assign(richness=cand["richness"] * 1.1)
    with pytest.raises(StoreError, match="rebuilt clusters differ"):
        scene_variants(scenes["store"], [i], ("no_central",), candidates=wrong)
