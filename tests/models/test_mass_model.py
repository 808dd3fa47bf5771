"""The mass model's contract: one function for the catalogue and attribution, sane on blank sky, and masses that
do not follow the observing conditions."""

import numpy as np
import pytest
import torch

from survey_mass.models.bundle import load_bundle
from survey_mass.models.mass_model import FEATURE_CLIP, NEGLIGIBLE_STD, Standardisation, prepare_images
from survey_mass.resources import model_dir
from survey_mass.testing import predict_store, same_scenes


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(model_dir())


def test_no_input_has_a_degenerate_standardisation(bundle):
    std = bundle.model.std.numpy()
    assert std.min() >= NEGLIGIBLE_STD * np.median(std)
    card = bundle.card.features
    assert card.n_raw == len(bundle.model.input_names()) == len(card.keep) + len(card.dropped)
    assert "z" not in card.dropped


def test_standardisation_drops_constant_inputs_and_keeps_z():
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((500, 6))
    raw[:, 1] = 3.0  # constant
    raw[:, 2] = 1e-9 * rng.standard_normal(500)  # negligible
    raw[:, 5] = 0.2  # the redshift column of a single-z pool is kept all the same
    s = Standardisation.fit(raw, always_keep=(5,))
    assert s.keep.tolist() == [0, 3, 4, 5]


def test_the_attributed_function_is_the_catalogued_one(bundle, small_store):
    """MassModel.forward (what attribution differentiates) equals the catalogue's log10_m500 on every row of a
    store, the rows whose inputs the soft clip bends included."""
    from survey_mass.inference.predict import predict_partition
    from survey_mass.quality import Quality
    from survey_mass.store import open_store

    st = open_store(small_store)
    rows = clipped = blank = 0
    for p in st.partitions:
        images, cols = st.images(p), st.columns(p)
        pred = predict_partition(bundle, images, cols, richness=False)
        ok = np.isfinite(pred["log10_m500"])
        blank += int((pred["quality"][~ok] & int(Quality.NO_CLUSTER) != 0).sum())
        x, log_sigma, _ = prepare_images(images[ok])
        z = torch.from_numpy(np.asarray(cols["z"], np.float32)[ok])
        lam = torch.from_numpy(np.asarray(cols["richness"], np.float32)[ok])
        for model, col, args in (
            (bundle.model, "log10_m500", (lam,)),  # the headline: pixels and the catalogue richness
            (bundle.pixels, "log10_m500_pixels", ()),
        ):
            with torch.no_grad():
                f = model(x, z, log_sigma, *args).numpy()
                pre = model.standardise_raw(model.raw_inputs(x, z, log_sigma, *args))
            np.testing.assert_allclose(f, pred[col][ok], atol=1e-5, rtol=0)
            with torch.no_grad():  # the bend into MASS_RANGE leaves real clusters alone
                np.testing.assert_allclose(
                    _heads_mean(model, x, z, log_sigma, *args).numpy(), f, atol=1e-4, rtol=0
                )
            clipped += int((pre.abs() > FEATURE_CLIP / 2).any(dim=1).sum())
        rows += int(ok.sum())
    assert rows + blank == st.n_total and blank <= 2
    assert clipped > 0  # rows the soft clip bends were compared too


def _heads_mean(model, x, z, log_sigma, *richness):
    """The ensemble mean *before* the bend into MASS_RANGE."""
    xs = model.standardise(model.raw_inputs(x, z, log_sigma, *richness))
    return torch.stack([h(xs)[0] for h in model.heads]).mean(0)


def test_sky_only_cutouts_and_the_baseline_get_bounded_masses(bundle):
    from survey_mass.mock.survey import MockConfig, render_blank

    cfg = MockConfig(seed=11)
    field = np.stack([render_blank(cfg, k, 30.0 + 5 * k) for k in range(12)])  # sky, field galaxies, stars
    noise = np.stack([render_blank(cfg, 100 + k, field=False) for k in range(6)])  # sky noise alone
    for model in (bundle.pixels, bundle.model):  # the headline with the catalogue's lowest richness, 20
        lam = (torch.full((len(field),), 20.0),) if model.richness_input else ()
        lam_n = (torch.full((len(noise),), 20.0),) if model.richness_input else ()
        for z in (0.08, 0.3, 0.55):
            zz = torch.full((len(field),), z)
            x, log_sigma, _ = prepare_images(field)
            with torch.no_grad():
                raw_mean = _heads_mean(model, x, zz, log_sigma, *lam).numpy()
            # a line of sight with no cluster already lands inside the range, without the bend
            assert np.all((raw_mean > 12.5) & (raw_mean < 15.5)), (z, raw_mean)
            # pure sky noise and the integrated-gradients baseline (blank normalised sky at each cutout's noise)
            # extrapolate lowest; the catalogue bends them into the range
            out = model.predict(noise, np.full(len(noise), z), lam_n[0].numpy() if lam_n else None)[
                "log10_m500"
            ]
            xn, ls_n, _ = prepare_images(noise)
            with torch.no_grad():
                base = model(torch.zeros_like(xn), torch.full((len(noise),), z), ls_n, *lam_n).numpy()
            for m in (out, base):
                assert np.all(np.isfinite(m) & (m >= 12.5) & (m < 15.5)), (z, m)


def test_masses_do_not_follow_the_observing_conditions(bundle, tmp_path):
    """The same 60 scenes re-rendered with 10^0.1 times the sky noise, and with a 1.2 times wider PSF."""
    ref = predict_store(same_scenes(tmp_path / "ref.zarr"))
    noisy = predict_store(same_scenes(tmp_path / "noise.zarr", ["sky_noise_scale=1.2589254"]))
    seeing = predict_store(same_scenes(tmp_path / "seeing.zarr", ["seeing_scale=1.2"]))
    for other in (noisy, seeing):
        np.testing.assert_array_equal(other["id"], ref["id"])
    # the measured sky noise follows the conditions ...
    assert np.median(noisy["sky_sigma_r"] / ref["sky_sigma_r"]) > 1.1
    # ... the masses do not
    d_noise = np.nanmean(noisy["log10_m500"] - ref["log10_m500"])
    d_seeing = np.nanmean(seeing["log10_m500"] - ref["log10_m500"])
    assert abs(d_noise) <= 0.02, d_noise
    assert abs(d_seeing) <= 0.03, d_seeing


def test_central_photometry_is_the_light_in_the_apertures():
    """The central-galaxy inputs equal asinh magnitudes of the sky-subtracted flux summed in circular apertures
    (exact recovery through the normalisation), and the apertures have the area of their circles."""
    from survey_mass.mock.survey import MockConfig, render_blank
    from survey_mass.models.mass_model import (
        APERTURE_RADII_PIX,
        aperture_weights,
        central_photometry,
        measure_sky,
    )

    w = aperture_weights(64).numpy()
    np.testing.assert_allclose(w.sum(axis=(1, 2)), np.pi * np.square(APERTURE_RADII_PIX), rtol=0.05)
    images = np.stack([render_blank(MockConfig(seed=3), k) for k in range(3)])
    images[:, :, 30:34, 30:34] += 50.0  # a bright central source
    x, log_sigma, _ = prepare_images(images)
    level, _ = measure_sky(images)
    flux = ((images - level[..., None, None])[:, :, None] * w[None, None]).sum(axis=(-1, -2))
    want = -2.5 / np.log(10) * np.arcsinh(flux / 2.0)
    got = central_photometry(x, log_sigma).numpy().reshape(want.shape)
    np.testing.assert_allclose(got, want, atol=2e-3)
    assert (
        got[:, :, 2] < got[:, :, 0]
    ).all()  # more light in the wider aperture: brighter (smaller) magnitude
