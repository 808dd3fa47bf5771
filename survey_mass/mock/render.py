"""Rendering mock SDSS ugriz cutouts.

Profiles
    Galaxies are circular Sérsic profiles, n = 1 (exponential, truncated at 4 r_e) or n = 4 (de Vaucouleurs,
    truncated at 8 r_e), as in the SDSS photo pipeline. Each profile is a mixture of concentric Gaussians fitted
    once by non-negative least squares on fixed widths (:func:`sersic_mog`), after Hogg & Lang 2013. Stars are
    point sources.
PSF
    SDSS's PSF is close to a double Gaussian: 90% in a core of the band's FWHM and 10% in a wing twice as wide
    (:data:`~survey_mass.photometry.PSF_FWHM`). Gaussians convolve analytically, so a galaxy seen through the PSF
    is again a Gaussian mixture, integrated exactly over each pixel (erf differences). Where pixels are so coarse
    that even the wing is sub-pixel (not at the default 3.168"), core and wing are drawn as one moment-matched
    Gaussian.
Drawing
    Every component is separable, so a band is one matrix product ``G_y diag(a) G_x^T`` over all components of
    all objects: about 1 ms per band for ~150 objects.
Noise
    Sky noise per pixel is set so that a point source at the SDSS 95%-completeness magnitude has S/N = 5 in a
    PSF-optimal aperture (:func:`sky_sigma_nmgy`); source photon noise uses approximate SDSS gains.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..photometry import BANDS, DEPTH_95, PSF_FWHM, mag_to_nmgy

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
PSF_WING_FRACTION = 0.1
PSF_WING_SCALE = 2.0
#: profile components narrower than this (pixel^2 variance) are merged, moment-matched, before drawing
MERGE_BELOW_PIX2 = 0.1
#: Approximate nanomaggies per photo-electron for a 53.9 s SDSS exposure (nmgy/DN over gain ~4.7 e/DN).
NMGY_PER_ELECTRON = {"u": 0.0021, "g": 0.0008, "r": 0.0010, "i": 0.0014, "z": 0.0070}


def _sersic_bn(n: float) -> float:
    from scipy.special import gammaincinv

    return float(gammaincinv(2 * n, 0.5))


def sersic_profile(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Radii (units of r_e) and the circular Sérsic profile, truncated as SDSS does (exp 4 r_e, deV 8 r_e)."""
    trunc = 4.0 if n == 1 else 8.0
    r = np.linspace(1e-3, trunc * 1.2, 1200)
    prof = np.exp(-_sersic_bn(n) * (r ** (1.0 / n) - 1.0))
    prof[r > trunc] = 0.0
    return r, prof


@lru_cache(maxsize=4)
def sersic_mog(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes (summing to 1) and variances (in units of r_e^2) of a Gaussian mixture for Sérsic index n."""
    from scipy.optimize import nnls

    r, prof = sersic_profile(n)
    var = np.geomspace(1e-4, 30.0, 9) if n == 4 else np.geomspace(2e-3, 6.0, 7)
    basis = np.exp(-0.5 * r[:, None] ** 2 / var[None, :]) / (2 * np.pi * var[None, :])
    w = r  # weight by annulus circumference so the fit matches the flux per unit radius
    amp, _ = nnls(basis * w[:, None], prof * w)
    keep = amp > 0
    amp, var = amp[keep], var[keep]
    return amp / amp.sum(), var


def psf_mog(band: str) -> tuple[np.ndarray, np.ndarray]:
    """(weights, sigmas in arcsec) of the double-Gaussian PSF of a band."""
    s = PSF_FWHM[band] * FWHM_TO_SIGMA
    return np.array([1 - PSF_WING_FRACTION, PSF_WING_FRACTION]), np.array([s, PSF_WING_SCALE * s])


def render_band(
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    re_arcsec: np.ndarray,
    sersic_n: np.ndarray,
    band: str,
    size: int,
    pixel_scale: float,
) -> np.ndarray:
    """Noise-free image (nanomaggies per pixel) of point sources and Sérsic galaxies in one band.

    ``x``/``y`` are pixel coordinates (0 at the centre of the first pixel), ``sersic_n`` is 0 for a star,
    1 or 4 for a galaxy.
    """
    amps, vars_px, xs, ys = [], [], [], []
    pw, ps = psf_mog(band)
    psf_var = (ps / pixel_scale) ** 2
    for kind in (0, 1, 4):
        sel = sersic_n == kind
        if not sel.any():
            continue
        f = flux[sel]
        if kind == 0:
            prof_amp = np.ones((f.size, 1))
            prof_var = np.zeros((f.size, 1))
        else:
            a_k, v_k = sersic_mog(kind)
            pv = v_k[None, :] * (re_arcsec[sel][:, None] / pixel_scale) ** 2
            # profile components much smaller than a pixel are indistinguishable after the PSF and the
            # pixel: merge them into one, moment-matched (same flux, same second moment)
            small = pv < MERGE_BELOW_PIX2
            a = np.broadcast_to(a_k[None, :], pv.shape)
            a_small = (a * small).sum(axis=1)
            v_small = (a * pv * small).sum(axis=1) / np.maximum(a_small, 1e-12)
            prof_amp = np.concatenate([np.where(small, 0.0, a), a_small[:, None]], axis=1)
            prof_var = np.concatenate([np.where(small, 0.0, pv), v_small[:, None]], axis=1)
        keep = prof_amp > 0
        obj = np.nonzero(keep)[0]
        pa, pv = prof_amp[keep], prof_var[keep]
        amp = (f[obj] * pa)[:, None] * pw[None, :]
        var = pv[:, None] + psf_var[None, :]
        # where even the PSF's wing is much smaller than a pixel, the two PSF Gaussians are indistinguishable
        # after pixel integration: draw one, moment-matched (coarse pixels only; at 3.168" the wing is wider)
        tiny = var.max(axis=1) < MERGE_BELOW_PIX2
        if tiny.any():
            var[tiny, 0] = (var[tiny] * pw[None, :]).sum(axis=1)
            amp[tiny, 0] = amp[tiny].sum(axis=1)
            amp[tiny, 1:] = 0.0
        amps.append(amp.ravel())
        vars_px.append(var.ravel())
        xs.append(np.repeat(x[sel][obj], pw.size))
        ys.append(np.repeat(y[sel][obj], pw.size))
    if not amps:
        return np.zeros((size, size), dtype=np.float32)
    amp = np.concatenate(amps)
    var = np.concatenate(vars_px)
    cx = np.concatenate(xs)
    cy = np.concatenate(ys)
    sig = np.sqrt(var)
    # drop components that cannot touch the cutout
    keep = (
        (cx > -6 * sig) & (cx < size - 1 + 6 * sig) & (cy > -6 * sig) & (cy < size - 1 + 6 * sig) & (amp != 0)
    )
    amp, var, cx, cy, sig = amp[keep], var[keep], cx[keep], cy[keep], sig[keep]
    # exact integral of each Gaussian over each pixel: the PSF is undersampled (sigma ~ 0.2 pixel), so
    # sampling at pixel centres would not conserve flux
    gx = _pixel_integrals(cx, sig, size)
    gy = _pixel_integrals(cy, sig, size)
    gy *= amp.astype(np.float32)[None, :]
    return gy @ gx.T


NARROW_HALF = 5  # pixels each side; a Gaussian of sigma <= 1 pixel holds < 1e-6 of its flux beyond
TINY_HALF, TINY_SIGMA = 2, 0.4  # and one of sigma <= 0.4 pixel beyond 2 pixels (5 sigma)


def _pixel_integrals(c: np.ndarray, sig: np.ndarray, size: int) -> np.ndarray:
    """(size, n) integrals over each pixel of 1-D unit Gaussians centred at c (pixels) with widths sig."""
    from scipy.special import erf

    out = np.zeros((size, c.size), dtype=np.float32)
    k = (1.0 / (np.sqrt(2.0) * sig)).astype(np.float32)
    narrow = sig <= 1.0
    wide = ~narrow
    if wide.any():
        edges = (np.arange(size + 1, dtype=np.float32) - 0.5)[:, None]
        vals = 0.5 * np.diff(erf((edges - c[wide].astype(np.float32)[None, :]) * k[None, wide]), axis=0)
        # far tails underflow to float32 denormals, which make the matrix product ~10x slower: flush them
        vals[vals < 1e-12] = 0.0
        out[:, wide] = vals
    # narrow components: only a window of pixels around each centre (beyond it < 1e-6 of the flux), starting
    # ``half`` pixels left of the pixel that holds the centre (tiny) or of floor(c)
    windows = (
        (TINY_HALF, sig <= TINY_SIGMA, np.rint),
        (NARROW_HALF, narrow & (sig > TINY_SIGMA), np.floor),
    )
    for half, sel, start in windows:
        if not sel.any():
            continue
        cn = c[sel]
        first = start(cn).astype(np.int64) - half
        offs = np.arange(2 * half + 2)
        edges = (first[None, :] + offs[:, None]).astype(np.float32) - 0.5
        vals = 0.5 * np.diff(erf((edges - cn.astype(np.float32)[None, :]) * k[None, sel]), axis=0)
        vals[vals < 1e-12] = 0.0
        rows = first[None, :] + offs[:-1, None]
        cols = np.broadcast_to(np.flatnonzero(sel)[None, :], rows.shape)
        ok = (rows >= 0) & (rows < size)
        out[rows[ok], cols[ok]] = vals[ok]
    return out


@lru_cache(maxsize=16)
def noise_equivalent_area(band: str, pixel_scale: float) -> float:
    """Noise-equivalent area (pixels) of a point source, averaged over sub-pixel positions."""
    vals = []
    for off in (0.0, 0.25, 0.5):
        img = render_band(
            np.array([15.0 + off]),
            np.array([15.0 + off]),
            np.array([1.0]),
            np.array([0.0]),
            np.array([0]),
            band,
            32,
            pixel_scale,
        ).astype(np.float64)
        vals.append(1.0 / np.sum(img**2))
    return float(np.mean(vals))


def sky_sigma_nmgy(band: str, pixel_scale: float) -> float:
    """Per-pixel sky noise (nanomaggies) giving S/N = 5 at the band's 95%-completeness magnitude."""
    return float(mag_to_nmgy(DEPTH_95[band]) / (5.0 * np.sqrt(noise_equivalent_area(band, pixel_scale))))


def point_source_depth(sigma_pix: float, band: str, pixel_scale: float) -> float:
    """Inverse of :func:`sky_sigma_nmgy`: the 5-sigma point-source magnitude implied by a pixel noise."""
    return float(22.5 - 2.5 * np.log10(5.0 * sigma_pix * np.sqrt(noise_equivalent_area(band, pixel_scale))))


def add_noise(images: np.ndarray, pixel_scale: float, rng: np.random.Generator) -> np.ndarray:
    """Add sky and source photon noise to a (5, H, W) noise-free cutout in place and return it."""
    for b, band in enumerate(BANDS):
        sky = sky_sigma_nmgy(band, pixel_scale)
        src_var = np.clip(images[b], 0, None) * NMGY_PER_ELECTRON[band]
        images[b] += (np.sqrt(sky**2 + src_var) * rng.standard_normal(images[b].shape)).astype(np.float32)
    return images
