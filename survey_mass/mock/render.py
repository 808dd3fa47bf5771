"""Rendering mock SDSS ugriz cutouts.

Profiles
    Galaxies are circular Sérsic profiles, n = 1 (exponential, truncated at 4 r_e) or n = 4 (de Vaucouleurs,
    truncated at 8 r_e), as in the SDSS photo pipeline. Each profile is a mixture of concentric Gaussians fitted
    once by non-negative least squares on fixed widths (:func:`sersic_mog`), after Hogg & Lang 2013. Stars are
    point sources.
PSF
    SDSS's PSF is close to a double Gaussian: 90% in a core of the band's FWHM and 10% in a wing twice as wide
    (:class:`~survey_mass.mock.physics.RenderPhysics`, defaults :data:`~survey_mass.photometry.PSF_FWHM`; every
    FWHM times ``seeing_scale``). Gaussians convolve analytically, so a galaxy seen through the PSF is again a
    Gaussian mixture, integrated exactly over each pixel (erf differences). Where pixels are so coarse that even
    the wing is sub-pixel (compact sources at the default 6.336"), core and wing are drawn as one moment-matched
    Gaussian.
Drawing
    Every component is separable, so a band is one matrix product ``G_y diag(a) G_x^T`` over all components of
    all objects. The profiles are shared by the five bands, whose pixel integrals are computed together
    (:func:`render_bands`): about 10 ms per five-band cutout of ~200 objects at the default 6.336".
Noise
    Sky noise per pixel is set so that a point source at the SDSS 95%-completeness magnitude has S/N = 5 in a
    PSF-optimal aperture (:func:`sky_sigma_nmgy`) at the nominal seeing, times ``sky_noise_scale``; source photon
    noise uses approximate SDSS gains.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..photometry import BANDS, mag_to_nmgy
from .physics import DEFAULT_PHYSICS, MockPhysics, RenderPhysics

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
#: profile components narrower than this (pixel^2 variance) are merged, moment-matched, before drawing
MERGE_BELOW_PIX2 = 0.1


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


def psf_mog(
    band: str, ph: MockPhysics | None = None, fwhm: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(weights, sigmas in arcsec) of the double-Gaussian PSF of a band: core FWHM ``fwhm`` (a field's own
    seeing), else the nominal FWHM times ``ph.seeing_scale``."""
    ph = ph or DEFAULT_PHYSICS
    rp = ph.render
    core = rp.psf_fwhm_arcsec[band] * ph.seeing_scale if fwhm is None else float(fwhm)
    s = core * FWHM_TO_SIGMA
    return np.array([1 - rp.psf_wing_fraction, rp.psf_wing_fraction]), np.array([s, rp.psf_wing_scale * s])


def _profile_components(
    re_arcsec: np.ndarray, sersic_n: np.ndarray, pixel_scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Band-independent profile components of every object: (object index, amplitude, variance in pixel^2)."""
    objs, amps, vars_ = [], [], []
    for kind in (0, 1, 4):
        idx = np.flatnonzero(sersic_n == kind)
        if not idx.size:
            continue
        if kind == 0:
            prof_amp = np.ones((idx.size, 1))
            prof_var = np.zeros((idx.size, 1))
        else:
            a_k, v_k = sersic_mog(kind)
            pv = v_k[None, :] * (re_arcsec[idx][:, None] / pixel_scale) ** 2
            # profile components much smaller than a pixel are indistinguishable after the PSF and the
            # pixel: merge them into one, moment-matched (same flux, same second moment)
            small = pv < MERGE_BELOW_PIX2
            a = np.broadcast_to(a_k[None, :], pv.shape)
            a_small = (a * small).sum(axis=1)
            v_small = (a * pv * small).sum(axis=1) / np.maximum(a_small, 1e-12)
            prof_amp = np.concatenate([np.where(small, 0.0, a), a_small[:, None]], axis=1)
            prof_var = np.concatenate([np.where(small, 0.0, pv), v_small[:, None]], axis=1)
        keep = prof_amp > 0
        objs.append(idx[np.nonzero(keep)[0]])
        amps.append(prof_amp[keep])
        vars_.append(prof_var[keep])
    if not objs:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    return np.concatenate(objs), np.concatenate(amps), np.concatenate(vars_)


def render_bands(
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    re_arcsec: np.ndarray,
    sersic_n: np.ndarray,
    bands: tuple[str, ...] | list[str],
    size: int,
    pixel_scale: float,
    ph: MockPhysics | None = None,
    psf_fwhm: np.ndarray | None = None,
) -> np.ndarray:
    """Noise-free images (nanomaggies per pixel), shape (len(bands), size, size), of point sources and Sérsic
    galaxies. ``psf_fwhm`` (one per band, arcsec) is the field's seeing; None: the nominal one.

    ``x``/``y`` are pixel coordinates (0 at the centre of the first pixel), ``flux`` is (n objects, n bands),
    ``sersic_n`` is 0 for a star, 1 or 4 for a galaxy. The profiles are shared by all bands; only the PSF and
    the fluxes differ, so all bands' pixel integrals are computed in one pass. The PSF is that of ``ph`` (the
    default physics when None).
    """
    import torch

    x, y = np.asarray(x, float), np.asarray(y, float)
    flux = np.asarray(flux, float).reshape(x.size, len(bands))
    obj, pa, pv = _profile_components(np.asarray(re_arcsec, float), np.asarray(sersic_n), pixel_scale)
    amps, sigs, owner, counts = [], [], [], []
    for b, band in enumerate(bands):
        pw, ps = psf_mog(band, ph, None if psf_fwhm is None else psf_fwhm[b])
        amp = (flux[obj, b] * pa)[:, None] * pw[None, :]
        var = pv[:, None] + ((ps / pixel_scale) ** 2)[None, :]
        # where even the PSF's wing is much smaller than a pixel, the two PSF Gaussians are indistinguishable
        # after pixel integration: draw one, moment-matched (compact sources at 6.336"; at 3.168" and finer
        # the wing is wider)
        tiny = var.max(axis=1) < MERGE_BELOW_PIX2
        if tiny.any():
            var[tiny, 0] = (var[tiny] * pw[None, :]).sum(axis=1)
            amp[tiny, 0] = amp[tiny].sum(axis=1)
            amp[tiny, 1:] = 0.0
        o = np.repeat(obj, pw.size)
        amp, var = amp.ravel(), var.ravel()
        sig = np.sqrt(var)
        cx, cy = x[o], y[o]
        # drop components that cannot touch the cutout
        keep = (cx > -6 * sig) & (cx < size - 1 + 6 * sig) & (cy > -6 * sig) & (cy < size - 1 + 6 * sig)
        keep &= amp != 0
        amps.append(amp[keep])
        sigs.append(sig[keep])
        owner.append(o[keep])
        counts.append(int(keep.sum()))
    amp, o = np.concatenate(amps), np.concatenate(owner)
    sig = np.concatenate(sigs)
    n = o.size
    # exact integral of each Gaussian over each pixel: the PSF is undersampled (sigma ~ 0.1 pixel at 6.336"), so
    # sampling at pixel centres would not conserve flux. x and y integrals of all bands in one call.
    g = _pixel_integrals(np.concatenate([x[o], y[o]]), np.concatenate([sig, sig]), size)
    gx, gy = g[:n], g[n:]
    gy *= amp.astype(np.float32)[:, None]
    out = torch.zeros((len(bands), size, size), dtype=torch.float32)
    gx, gy = torch.from_numpy(gx), torch.from_numpy(gy)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    for b in range(len(bands)):
        lo, hi = bounds[b], bounds[b + 1]
        if hi > lo:
            torch.mm(gy[lo:hi].T, gx[lo:hi], out=out[b])
    return out.numpy()


#: window lengths (pixels) of the windowed drawing of :func:`render_bands_windowed`; wider components are drawn
#: over the whole image as in :func:`render_bands`
_WINDOWS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384)
#: elements (components x window pixels) drawn per chunk: bounds the memory of the windowed drawing
_CHUNK_ELEMENTS = 1 << 22


def render_bands_windowed(
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    re_arcsec: np.ndarray,
    sersic_n: np.ndarray,
    bands: tuple[str, ...] | list[str],
    shape: tuple[int, int],
    pixel_scale: float,
    ph: MockPhysics | None = None,
    psf_fwhm: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`render_bands` for large, finely sampled images: (len(bands), ny, nx) nanomaggies per pixel.

    The same profiles (:func:`sersic_mog`, merged the same way), the same double-Gaussian PSF and the same exact
    pixel integrals, but each Gaussian is drawn only over a window of pixels around it (beyond 5 sigma it holds
    < 1e-6 of its flux), so the cost follows the sources' area rather than the image's: what a whole SDSS
    frame of native 0.396" pixels needs (:mod:`survey_mass.mock.frames`). Components wider than the widest
    window are drawn over the whole image.

    ``shape`` is (rows, columns); ``psf_fwhm`` is None (the nominal seeing), one FWHM per band (arcsec), or one
    per object and band, (n objects, n bands): sources of several fields' scenes, each seen with its own.
    """
    ph = ph or DEFAULT_PHYSICS
    ny, nx = (int(v) for v in shape)
    x, y = np.asarray(x, float), np.asarray(y, float)
    nb = len(bands)
    flux = np.asarray(flux, float).reshape(x.size, nb)
    if psf_fwhm is None:
        fwhm = np.array([ph.render.psf_fwhm_arcsec[b] * ph.seeing_scale for b in bands])
    else:
        fwhm = np.asarray(psf_fwhm, float)
    fwhm = np.broadcast_to(fwhm if fwhm.ndim == 2 else fwhm[None, :], (x.size, nb))
    obj, pa, pv = _profile_components(np.asarray(re_arcsec, float), np.asarray(sersic_n), pixel_scale)
    out = np.zeros((nb, ny, nx), dtype=np.float32)
    for b, band in enumerate(bands):
        pw, ps = psf_mog(band, ph, 1.0)  # the PSF's widths scale with the FWHM
        amp = (flux[obj, b] * pa)[:, None] * pw[None, :]
        var = pv[:, None] + (ps[None, :] * fwhm[obj, b][:, None] / pixel_scale) ** 2
        tiny = var.max(axis=1) < MERGE_BELOW_PIX2  # as render_bands: unresolved PSF pairs drawn as one
        if tiny.any():
            var[tiny, 0] = (var[tiny] * pw[None, :]).sum(axis=1)
            amp[tiny, 0] = amp[tiny].sum(axis=1)
            amp[tiny, 1:] = 0.0
        o = np.repeat(obj, pw.size)
        amp, sig = amp.ravel(), np.sqrt(var.ravel())
        cx, cy = x[o], y[o]
        keep = (cx > -6 * sig) & (cx < nx - 1 + 6 * sig) & (cy > -6 * sig) & (cy < ny - 1 + 6 * sig)
        keep &= amp != 0
        _draw_windowed(out[b], cx[keep], cy[keep], sig[keep], amp[keep])
    return out


def _window_integrals(c: np.ndarray, sig: np.ndarray, start: np.ndarray, length: int) -> np.ndarray:
    """(n, length) integrals of unit Gaussians over the pixels start .. start + length - 1."""
    edges = (start[:, None] + np.arange(length + 1)[None, :]).astype(np.float32) - 0.5
    k = (1.0 / (np.sqrt(2.0) * sig)).astype(np.float32)
    e = _erf((edges - c.astype(np.float32)[:, None]) * k[:, None])
    return 0.5 * (e[:, 1:] - e[:, :-1])


def _draw_windowed(img: np.ndarray, cx, cy, sig, amp) -> None:
    """Add Gaussians (centres in pixels, widths, fluxes) to ``img`` (ny, nx) in place, each over a window of
    pixels holding all but < 1e-6 of its flux, or over the whole image when wider than every window."""
    ny, nx = img.shape
    need = 10.0 * sig + 1.0  # a window of L pixels starting at floor(c) - L/2 + 1 reaches L/2 - 0.5 from c
    cls = np.searchsorted(np.asarray(_WINDOWS), need)
    flat = img.reshape(-1)
    for k, length in enumerate(_WINDOWS):
        idx = np.flatnonzero(cls == k)
        if not idx.size:
            continue
        sx = np.floor(cx[idx]).astype(np.int64) - length // 2 + 1
        sy = np.floor(cy[idx]).astype(np.int64) - length // 2 + 1
        order = np.argsort(sy, kind="stable")  # chunks of nearby rows scatter into a short span of the image
        idx, sx, sy = idx[order], sx[order], sy[order]
        step = max(1, _CHUNK_ELEMENTS // (length * length))
        offs = np.arange(length)
        for lo in range(0, idx.size, step):
            i = idx[lo : lo + step]
            gx = _window_integrals(cx[i], sig[i], sx[lo : lo + step], length)
            gy = _window_integrals(cy[i], sig[i], sy[lo : lo + step], length)
            gy *= amp[i].astype(np.float32)[:, None]
            rows = sy[lo : lo + step, None] + offs[None, :]
            cols = sx[lo : lo + step, None] + offs[None, :]
            ok = ((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :]
            pix = (rows[:, :, None] * nx + cols[:, None, :])[ok]
            vals = (gy[:, :, None] * gx[:, None, :])[ok]
            if not pix.size:
                continue
            first = int(pix.min())
            span = np.bincount(pix - first, weights=vals, minlength=int(pix.max()) - first + 1)
            flat[first : first + span.size] += span.astype(np.float32)
    wide = np.flatnonzero(cls == len(_WINDOWS))
    if wide.size:
        import torch

        gx = torch.from_numpy(_pixel_integrals(cx[wide], sig[wide], nx))
        gy = _pixel_integrals(cy[wide], sig[wide], ny)
        gy *= amp[wide].astype(np.float32)[:, None]
        img += torch.mm(torch.from_numpy(gy).T, gx).numpy()


def render_band(
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    re_arcsec: np.ndarray,
    sersic_n: np.ndarray,
    band: str,
    size: int,
    pixel_scale: float,
    ph: MockPhysics | None = None,
) -> np.ndarray:
    """One band of :func:`render_bands`: ``flux`` is a vector, the result (size, size)."""
    return render_bands(
        x, y, np.asarray(flux, float)[:, None], re_arcsec, sersic_n, [band], size, pixel_scale, ph
    )[0]


NARROW_HALF = 5  # pixels each side; a Gaussian of sigma <= 1 pixel holds < 1e-6 of its flux beyond
TINY_HALF, TINY_SIGMA = 2, 0.4  # and one of sigma <= 0.4 pixel beyond 2 pixels (5 sigma)
#: torch runs an element-wise op on the calling thread below this many elements (at::internal::GRAIN_SIZE);
#: waking its thread pool for every small call between NumPy calls made rendering 20% slower on 2 cores.
_ERF_CHUNK = 32768


def _erf(a: np.ndarray) -> np.ndarray:
    """Float32 error function (in place when ``a`` is contiguous float32), with torch's vectorised kernel: about
    10x scipy's here."""
    import torch

    flat = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).view(-1)
    for lo in range(0, flat.numel(), _ERF_CHUNK):
        chunk = flat[lo : lo + _ERF_CHUNK]
        torch.special.erf(chunk, out=chunk)
    return flat.numpy().reshape(np.shape(a))


def _pixel_integrals(c: np.ndarray, sig: np.ndarray, size: int) -> np.ndarray:
    """(n, size) integrals over each pixel of 1-D unit Gaussians centred at c (pixels) with widths sig.

    One row per Gaussian, so that each Gaussian's pixels are written contiguously.
    """
    out = np.zeros((c.size, size), dtype=np.float32)
    c32 = c.astype(np.float32)
    k = (1.0 / (np.sqrt(2.0) * sig)).astype(np.float32)
    narrow = sig <= 1.0
    wide = np.flatnonzero(~narrow)
    if wide.size:
        edges = np.arange(size + 1, dtype=np.float32) - 0.5
        e = _erf((edges[None, :] - c32[wide, None]) * k[wide, None])
        vals = 0.5 * (e[:, 1:] - e[:, :-1])
        # far tails underflow to float32 denormals, which make the matrix product ~10x slower: flush them
        vals[vals < 1e-12] = 0.0
        out[wide] = vals
    # narrow components: only a window of pixels around each centre (beyond it < 1e-6 of the flux), starting
    # ``half`` pixels left of the pixel that holds the centre (tiny) or of floor(c)
    windows = (
        (TINY_HALF, sig <= TINY_SIGMA, np.rint),
        (NARROW_HALF, narrow & (sig > TINY_SIGMA), np.floor),
    )
    for half, sel, start in windows:
        idx = np.flatnonzero(sel)
        if not idx.size:
            continue
        first = start(c[idx]).astype(np.int64) - half
        offs = np.arange(2 * half + 2)
        edges = (first[:, None] + offs[None, :]).astype(np.float32) - 0.5
        e = _erf((edges - c32[idx, None]) * k[idx, None])
        vals = 0.5 * (e[:, 1:] - e[:, :-1])
        vals[vals < 1e-12] = 0.0
        cols = first[:, None] + offs[None, :-1]
        ok = (cols >= 0) & (cols < size)
        out.ravel()[(idx[:, None] * size + cols)[ok]] = vals[ok]
    return out


def noise_equivalent_area(band: str, pixel_scale: float, ph: MockPhysics | None = None) -> float:
    """Noise-equivalent area (pixels) of a point source at the nominal seeing, averaged over sub-pixel positions.

    ``ph.seeing_scale`` is left out: the sky noise per pixel is a property of the sky and the exposure, so worse
    seeing leaves it alone and makes point sources shallower.
    """
    return _noise_equivalent_area(band, float(pixel_scale), (ph or DEFAULT_PHYSICS).render)


@lru_cache(maxsize=16)
def _noise_equivalent_area(band: str, pixel_scale: float, rp: RenderPhysics) -> float:
    nominal = DEFAULT_PHYSICS if rp == DEFAULT_PHYSICS.render else MockPhysics(render=rp)
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
            nominal,
        ).astype(np.float64)
        vals.append(1.0 / np.sum(img**2))
    return float(np.mean(vals))


def sky_sigma_nmgy(band: str, pixel_scale: float, ph: MockPhysics | None = None) -> float:
    """Per-pixel sky noise (nanomaggies): S/N = 5 at the band's 95%-completeness magnitude at the nominal
    seeing, times ``ph.sky_noise_scale``."""
    ph = ph or DEFAULT_PHYSICS
    nea = noise_equivalent_area(band, pixel_scale, ph)
    return float(mag_to_nmgy(ph.render.depth_95[band]) / (5.0 * np.sqrt(nea))) * ph.sky_noise_scale


def point_source_depth(
    sigma_pix: float, band: str, pixel_scale: float, ph: MockPhysics | None = None
) -> float:
    """Inverse of :func:`sky_sigma_nmgy`: the 5-sigma point-source magnitude implied by a pixel noise."""
    nea = noise_equivalent_area(band, pixel_scale, ph)
    return float(22.5 - 2.5 * np.log10(5.0 * sigma_pix * np.sqrt(nea)))


def add_noise(
    images: np.ndarray,
    pixel_scale: float,
    rng: np.random.Generator,
    ph: MockPhysics | None = None,
    sky_factor: np.ndarray | None = None,
) -> np.ndarray:
    """Add sky and source photon noise to a (5, H, W) noise-free cutout in place and return it.

    The sky sigma is the nominal one times ``sky_factor`` (one per band: the field's sky), else times
    ``ph.sky_noise_scale``. Factors scale the sky sigma, not the draws: the same ``rng`` gives the same noise
    pattern.
    """
    ph = ph or DEFAULT_PHYSICS
    for b, band in enumerate(BANDS):
        sky = sky_sigma_nmgy(band, pixel_scale, ph)
        if sky_factor is not None:
            sky = sky / ph.sky_noise_scale * float(sky_factor[b])
        src_var = np.clip(images[b], 0, None) * ph.render.nmgy_per_electron[band]
        images[b] += (np.sqrt(sky**2 + src_var) * rng.standard_normal(images[b].shape)).astype(np.float32)
    return images
