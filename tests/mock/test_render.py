import numpy as np
import pytest

from survey_mass.mock import render
from survey_mass.photometry import BANDS, DEPTH_95

PIX = 3.168


@pytest.mark.parametrize("band", BANDS)
def test_sky_noise_reaches_sdss_depths_within_10_percent(band):
    rng = np.random.default_rng(1)
    img = np.zeros((5, 256, 256), np.float32)
    render.add_noise(img, PIX, rng)
    measured = float(np.std(img[BANDS.index(band)]))
    depth = render.point_source_depth(measured, band, PIX)
    # 10% in flux is 0.11 mag
    assert abs(10 ** (-0.4 * (depth - DEPTH_95[band])) - 1) < 0.10


@pytest.mark.parametrize("n", [1, 4])
def test_sersic_mixture_half_light_radius(n):
    amp, var = render.sersic_mog(n)
    assert amp.sum() == pytest.approx(1.0)
    r = np.linspace(0, 20, 20001)
    # enclosed fraction of a 2-D circular Gaussian mixture
    enc = (amp[None, :] * (1 - np.exp(-0.5 * r[:, None] ** 2 / var[None, :]))).sum(1)
    r_half = r[np.searchsorted(enc, 0.5)]
    # the truncated profile's own half-light radius (1.0 before truncation)
    rp, prof = render.sersic_profile(n)
    cum = np.cumsum(prof * rp)
    true_half = rp[np.searchsorted(cum / cum[-1], 0.5)]
    assert 0.85 < true_half <= 1.0
    assert r_half == pytest.approx(true_half, rel=0.05)


def test_render_conserves_flux_and_places_sources():
    img = render.render_band(
        np.array([20.0, 40.3]),
        np.array([30.0, 12.7]),
        np.array([100.0, 50.0]),
        np.array([0.0, 2.0]),
        np.array([0, 4]),
        "r",
        64,
        PIX,
    )
    assert img.sum() == pytest.approx(150.0, rel=0.03)
    star = img[25:36, 15:26]
    yy, xx = np.mgrid[25:36, 15:26]
    assert (star * xx).sum() / star.sum() == pytest.approx(20.0, abs=0.05)
    assert (star * yy).sum() / star.sum() == pytest.approx(30.0, abs=0.05)


@pytest.mark.parametrize("band", ["u", "z"])
def test_coarse_pixels_match_binned_fine_rendering(band):
    """At coarse pixels the renderer merges sub-pixel PSF components and draws narrow windows; the result must
    still be the fine-pixel image binned 4x4 (pixel integrals are exact, so binning is the reference)."""
    rng = np.random.default_rng(3)
    n = 60
    x, y = rng.uniform(4, 27, n), rng.uniform(4, 27, n)
    flux = rng.uniform(1, 100, n)
    re_ = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(0.2, 3.0, n))
    sersic = np.where(re_ == 0, 0, rng.choice([1, 4], n))
    coarse = render.render_band(x, y, flux, re_, sersic, band, 32, 4 * PIX)
    fine = render.render_band(4 * x + 1.5, 4 * y + 1.5, flux, re_, sersic, band, 128, PIX)
    binned = fine.reshape(32, 4, 32, 4).sum(axis=(1, 3))
    assert coarse.sum() == pytest.approx(binned.sum(), rel=1e-3)
    # moment-matching sub-pixel components is the renderer's only approximation: small against the peak
    assert np.sqrt(np.mean((coarse - binned) ** 2)) < 0.005 * binned.max()
    assert np.abs(coarse - binned).max() < 0.08 * binned.max()


def test_pixel_integral_windows_equal_full_integrals():
    from scipy.special import erf

    rng = np.random.default_rng(4)
    c = rng.uniform(-3, 35, 500)
    sig = np.concatenate([rng.uniform(0.02, 0.4, 250), rng.uniform(0.4, 3.0, 250)])
    got = render._pixel_integrals(c, sig, 32).T
    edges = np.arange(33)[:, None] - 0.5
    full = 0.5 * np.diff(erf((edges - c[None, :]) / (np.sqrt(2) * sig[None, :])), axis=0)
    assert np.abs(got - full).max() < 1e-5  # float32 erf; a window a pixel short loses up to 6e-3


def test_five_bands_in_one_pass_equal_each_band_alone():
    """render_bands shares the profiles and one pixel-integral table across bands; each band's slice of it must
    give exactly that band rendered alone, with the band's own flux."""
    rng = np.random.default_rng(5)
    n = 80
    x, y = rng.uniform(-3, 66, n), rng.uniform(-3, 66, n)
    flux = rng.uniform(0.5, 200, (n, 5))
    re_ = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(0.2, 8.0, n))
    sersic = np.where(re_ == 0, 0, rng.choice([1, 4], n))
    pix = 2 * PIX
    together = render.render_bands(x, y, flux, re_, sersic, BANDS, 64, pix)
    for b, band in enumerate(BANDS):
        alone = render.render_band(x, y, flux[:, b], re_, sersic, band, 64, pix)
        np.testing.assert_allclose(together[b], alone, rtol=1e-5, atol=1e-5 * alone.max())
    inside = (x > 8) & (x < 55) & (y > 8) & (y < 55) & (re_ < 2)
    bright = render.render_bands(
        x[inside], y[inside], flux[inside], re_[inside], sersic[inside], BANDS, 64, pix
    )
    np.testing.assert_allclose(bright.sum(axis=(1, 2)), flux[inside].sum(0), rtol=0.01)
