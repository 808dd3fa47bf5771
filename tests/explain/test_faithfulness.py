"""Do the maps explain the catalogued mass? The three validation tests of survey_mass.faithfulness, on the small
mock store (a seed the model never saw), at sizes that fit the suite; benchmarks/attribution_validation.py runs
them at the README's sizes."""

from __future__ import annotations

import numpy as np
import pytest

from survey_mass.attribution import attribute, contributions, integrated_gradients, sky_baselines
from survey_mass.faithfulness import counterfactual, deletion_insertion, randomisation
from survey_mass.models.bundle import load_bundle
from survey_mass.resources import model_dir
from survey_mass.store import open_store
from survey_mass.testing import spearman


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(model_dir())


@pytest.fixture(scope="module")
def rows(small_store):
    """The first 16 rows of the biggest partition with a catalogue richness and a redshift."""
    st = open_store(small_store)
    p = max(st.partitions, key=st.n_cutouts)
    cols = st.columns(p)
    ok = np.flatnonzero(np.isfinite(cols["z"]) & (np.asarray(cols["richness"]) > 0))[:16]
    return {
        "images": st.images(p)[ok],
        "z": np.asarray(cols["z"], float)[ok],
        "richness": np.asarray(cols["richness"], float)[ok],
        "ids": np.asarray(cols["id"])[ok],
        "pixel_scale": st.pixel_scale,
    }


def test_contributions_are_exact_and_the_map_sums_to_its_change(bundle, rows):
    raw = bundle.pixels.raw_inputs_of(rows["images"], rows["z"])
    raw_h = bundle.model.extend_raw(raw, rows["richness"])
    c = contributions(bundle.model, raw_h)
    total = c["log10_m500_reference"] + sum(v for k, v in c.items() if k.startswith("contrib_"))
    mass = bundle.model.predict_raw(raw_h, rows["z"])["log10_m500"]
    np.testing.assert_allclose(total, mass, atol=1e-5)
    assert np.ptp(c["contrib_richness"]) > 0.05  # the richness does move the mass
    a = attribute(
        bundle, rows["images"][:6], rows["z"][:6], ids=rows["ids"][:6], richness=rows["richness"][:6]
    )
    assert (a["ig_completeness_dex"] <= 0.005).all() and (a["ig_steps"] >= 32).all()
    bands = sum(a[f"attr_{b}_dex"] for b in "ugriz")
    np.testing.assert_allclose(bands, a["attr_delta_dex"], atol=0.0051)


def test_nested_trapezoid_agrees_with_captum(bundle, rows):
    """The adaptive quadrature is integrated gradients: with refinement off it is captum's trapezoid rule, up to
    captum's weights, which are 1/n for n nodes over n - 1 intervals and so sum to (n - 1) / n (ours sum to 1)."""
    import torch
    from captum.attr import IntegratedGradients

    from survey_mass.attribution import row_function
    from survey_mass.models.mass_model import prepare_images

    x, ls, _ = prepare_images(rows["images"][:3])
    fn = row_function(bundle, rows["z"][:3], ls, rows["richness"][:3])
    base = sky_baselines(tuple(x.shape), rows["ids"][:3], baselines=1)
    ours = integrated_gradients(fn, x, base, steps=16, tolerance=1e9)["attr"]
    zz = torch.from_numpy(rows["z"][:3].astype(np.float32))
    lam = torch.from_numpy(rows["richness"][:3].astype(np.float32))
    theirs = IntegratedGradients(bundle.model.eval()).attribute(
        x, baselines=base[0], additional_forward_args=(zz, ls, lam), n_steps=17, method="riemann_trapezoid"
    )
    theirs = theirs.detach().numpy() * 17 / 16
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5 * float(np.abs(theirs).max()))


def test_deletion_in_the_maps_order_beats_random_orders(bundle, rows):
    n = 10  # rows (the benchmark runs the README's 200)
    sub = {k: rows[k][:n] for k in ("images", "z", "ids", "richness")}
    a = attribute(bundle, sub["images"], sub["z"], ids=sub["ids"], richness=sub["richness"], return_maps=True)
    d = deletion_insertion(bundle, a, ids=sub["ids"], richness=sub["richness"], z=sub["z"])
    assert np.mean(d["aopc"] > d["aopc_random"]) >= 0.8
    assert np.mean(d["insertion"] > d["insertion_random"]) >= 0.8
    # a map that ranks nothing (shuffled) loses its advantage
    rng = np.random.default_rng(0)
    shuffled = dict(a, maps=np.stack([rng.permutation(m.ravel()).reshape(m.shape) for m in a["maps"]]))
    s = deletion_insertion(bundle, shuffled, ids=sub["ids"], richness=sub["richness"], z=sub["z"])
    assert np.median(s["aopc"] - s["aopc_random"]) < 0.25 * np.median(d["aopc"] - d["aopc_random"])


def test_cascading_randomisation_changes_the_maps(bundle, rows):
    # one row: seven attributions of it at 8 baselines (the benchmark runs the README's rows)
    r = randomisation(
        bundle,
        rows["images"][:1],
        rows["z"][:1],
        ids=rows["ids"][:1],
        richness=rows["richness"][:1],
        pixel_scale=rows["pixel_scale"],
    )
    assert min(r["runs"]) > 0.9
    assert len(r["randomised"]) == 5  # the heads, then the four convolutions from the top
    for stage, rho in r["randomised"].items():
        assert max(rho) < 0.3, stage


def test_counterfactual_scenes_rank_with_the_map(bundle, rows, small_store, small_candidates):
    from survey_mass.mock.survey import scene_variants

    n = 8
    ids = rows["ids"][:n]
    scenes = scene_variants(small_store, ids, candidates=small_candidates)
    np.testing.assert_array_equal(scenes["full"], rows["images"][:n])
    cf = counterfactual(
        bundle,
        scenes,
        rows["z"][:n],
        ids=ids,
        richness=rows["richness"][:n],
        pixel_scale=rows["pixel_scale"],
    )
    assert set(cf["component"]) == {"central", "members"} and len(cf["removal_dex"]) == 2 * n
    assert spearman(cf["attributed_dex"], cf["removal_dex"]) >= 0.5


def test_rows_with_and_without_a_richness_are_each_explained_by_their_own_model(bundle, rows):
    """A batch mixing rows with and without a catalogue richness: each row's path runs through its own
    catalogued function (the headline model, or the pixels model), and the maps stay complete."""
    import torch

    from survey_mass.attribution import row_function
    from survey_mass.models.mass_model import prepare_images

    lam = rows["richness"][:6].copy()
    lam[::2] = np.nan
    x, ls, _ = prepare_images(rows["images"][:6])
    fn = row_function(bundle, rows["z"][:6], ls, lam)
    with torch.no_grad():
        got = fn(x, torch.arange(6)).numpy()
        zz = torch.from_numpy(rows["z"][:6].astype(np.float32))
        head = bundle.model(
            x, zz, ls, torch.from_numpy(np.nan_to_num(lam, nan=1.0).astype(np.float32))
        ).numpy()
        pix = bundle.pixels(x, zz, ls).numpy()
    np.testing.assert_allclose(got[1::2], head[1::2], atol=1e-5)
    np.testing.assert_allclose(got[::2], pix[::2], atol=1e-5)
    assert (
        np.abs(head[::2] - pix[::2]).max() > 0.01
    )  # the two functions differ, so the test can tell them apart
    a = attribute(bundle, rows["images"][:6], rows["z"][:6], ids=rows["ids"][:6], richness=lam)
    assert (a["ig_completeness_dex"] <= 0.005).all()


def test_attribute_defaults_are_the_pipelines():
    import inspect

    from survey_mass.pipelines import AttributionSection

    p = inspect.signature(attribute).parameters
    d = AttributionSection()
    assert (p["baselines"].default, p["steps"].default, p["tolerance"].default) == (
        d.ig_baselines,
        d.ig_steps,
        d.ig_tolerance_dex,
    )
    assert p["max_steps"].default == 16 * d.ig_steps
    with pytest.raises(ValueError, match="antithetic"):
        AttributionSection(ig_baselines=3)
