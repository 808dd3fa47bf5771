"""resample_reproject (issue #18): flux, positions, coverage and the combination of overlapping frames, on fake
SDSS frames (two 12-degree rotated fields sharing 64 rows) with point sources of known flux and position. The
bounds are a few times what benchmarks/reproject_comparison.py measured (flux 0.25%, centroid 0.006 px)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from survey_mass.store.ingest import cutout_wcs, frame_files, read_frame_data, read_frame_header
from survey_mass.store.resample import resample_reproject
from survey_mass.testing import write_fake_sdss_frames

RA0, DEC0, NX, NY = 150.0, 2.0, 800, 700
FWHM, AP = 1.4, 19.0  # the fake frames' PSF; the photometry aperture radius (arcsec)
SIZE = 24
# (frame, x, y, flux): in frame 0 only; in the overlap; 4 pixels inside frame 1's edge (frame 0 covers it); in
# frame 1 only
SOURCES = {
    "single": (0, 400.3, 290.6, 300.0),
    "overlap": (1, 450.7, 36.2, 500.0),
    "edge_of_one": (1, 300.2, 4.0, 400.0),
    "other_field": (1, 380.6, 450.1, 250.0),
}


def _frames(d):
    return [read_frame_header(p) for p in frame_files(d)]


def _world(frame, x, y):
    return tuple(float(v) for v in frame.wcs.all_pix2world([[x, y]], 0)[0])


def _inside(frame, ra, dec):
    """Native pixels inside the frame's nearest edge (negative: outside)."""
    x, y = frame.wcs.all_world2pix(np.atleast_2d(np.column_stack([ra, dec])), 0).T
    return np.minimum.reduce([x + 0.5, NX - 0.5 - x, y + 0.5, NY - 0.5 - y])


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    d = tmp_path_factory.mktemp("resample") / "frames"
    kw = dict(ra0=RA0, dec0=DEC0, nx=NX, ny=NY, n_fields=2, overlap=64, bands=("r",), sky_sigma=0.002, seed=4)
    write_fake_sdss_frames(d, **kw)  # the geometry first, to place the sources in it
    frames = _frames(d)
    src = {k: (*_world(frames[f], x, y), flux) for k, (f, x, y, flux) in SOURCES.items()}
    write_fake_sdss_frames(d, sources=list(src.values()), **kw)
    frames = _frames(d)
    cover = {k: [float(_inside(f, ra, dec)[0]) for f in frames] for k, (ra, dec, _) in src.items()}
    assert cover["single"][0] > 40 and cover["single"][1] < -40
    assert min(cover["overlap"]) > 20
    assert 3 < cover["edge_of_one"][1] < 5 and cover["edge_of_one"][0] > 40
    assert cover["other_field"][1] > 40 and cover["other_field"][0] < -40
    arrays = {f.path: read_frame_data(f.path) for f in frames}
    return frames, src, lambda f: arrays[f.path]


def _ideal(x, y, flux, ps, size):
    """The PSF integrated over each cutout pixel (the north-up grid makes it separable)."""
    s = FWHM / 2.3548 / ps * np.sqrt(2)
    e = np.arange(size + 1) - 0.5
    return flux * np.outer(np.diff(0.5 * erf((e - y) / s)), np.diff(0.5 * erf((e - x) / s)))


def _photometry(img, x, y, ps):
    """Aperture flux and the centroid in +-1 pixel (6.336") or +-2 (3.168") around the brightest pixel."""
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    ap = np.hypot(xx - x, yy - y) * ps < AP
    iy, ix = np.unravel_index(np.argmax(np.where(ap, img, -np.inf)), img.shape)
    h = int(round(6.5 / ps))
    st = img[iy - h : iy + h + 1, ix - h : ix + h + 1]
    return (
        float(img[ap].sum()),
        float((st * xx[iy - h : iy + h + 1, ix - h : ix + h + 1]).sum() / st.sum()),
        float((st * yy[iy - h : iy + h + 1, ix - h : ix + h + 1]).sum() / st.sum()),
    )


@pytest.mark.parametrize("ps", [6.336, 3.168])
@pytest.mark.parametrize("name", list(SOURCES))
def test_flux_and_position(fake, name, ps):
    frames, src, data = fake
    ra, dec, flux = src[name]
    # the cutout's centre off the source by a few pixels and a fraction of one
    w0 = cutout_wcs(ra, dec, SIZE, ps)
    ra_c, dec_c = (float(v) for v in w0.all_pix2world([[SIZE / 2 + 1.37, SIZE / 2 - 2.21]], 0)[0])
    img = resample_reproject(frames, ra_c, dec_c, SIZE, ps, data=data)
    assert img.shape == (SIZE, SIZE) and img.dtype == np.float32
    x, y = cutout_wcs(ra_c, dec_c, SIZE, ps).all_world2pix([[ra, dec]], 0)[0]
    f, cx, cy = _photometry(img, x, y, ps)
    _, ix, iy = _photometry(_ideal(x, y, flux, ps, SIZE), x, y, ps)
    assert f == pytest.approx(flux, rel=0.01)
    assert np.hypot(cx - ix, cy - iy) < 0.05, (cx, cy, ix, iy)  # where the pixel-integrated PSF puts it
    assert np.hypot(cx - x, cy - y) < 0.6  # and the coarse pixels' own error bound


def test_whole_cutout_holds_the_native_flux(fake):
    frames, src, data = fake
    ra, dec, _ = src["single"]
    img = resample_reproject(frames[:1], ra, dec, SIZE, 6.336, data=data)
    assert np.isfinite(img).all()
    yy, xx = np.mgrid[:NY, :NX]
    tx, ty = cutout_wcs(ra, dec, SIZE, 6.336).all_world2pix(
        *frames[0].wcs.all_pix2world(xx.ravel(), yy.ravel(), 0), 0
    )
    inside = (tx >= -0.5) & (tx < SIZE - 0.5) & (ty >= -0.5) & (ty < SIZE - 0.5)
    native = data(frames[0]).ravel()[inside].sum()
    assert img.sum() == pytest.approx(native, rel=1e-3)
    # without ``data`` the frames are read from disk: the same cutout
    np.testing.assert_array_equal(resample_reproject(frames[:1], ra, dec, SIZE, 6.336), img)


def test_nan_outside_coverage(fake):
    frames, _, data = fake
    f0 = frames[:1]
    ra, dec = _world(frames[0], NX - 1, 290)  # on frame 0's x edge
    img = resample_reproject(f0, ra, dec, SIZE, 6.336, data=data)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cra, cdec = cutout_wcs(ra, dec, SIZE, 6.336).all_pix2world(xx.ravel(), yy.ravel(), 0)
    inside = _inside(frames[0], cra, cdec).reshape(SIZE, SIZE)  # native pixels; a cutout pixel is 16 across
    # a straight edge leaves at least half of a pixel on its centre's side: the centre decides MIN_COVERAGE
    assert np.isfinite(img[inside > 0.5]).all() and (inside > 0.5).sum() > 100
    assert np.isnan(img[inside < -0.5]).all() and ((inside < -0.5) & (inside > -9)).sum() > 10
    off = resample_reproject(f0, ra + 1.0, dec, SIZE, 6.336, data=data)
    assert np.isnan(off).all()
    assert np.isnan(resample_reproject([], ra, dec, SIZE, 6.336)).all()


@pytest.mark.parametrize("combine", ["best", "mean"])
def test_overlapping_frames_are_combined(fake, combine):
    frames, _, _ = fake
    level = {frames[0].path: 1.0, frames[1].path: 3.0}  # a flat sky per frame, nmgy per native pixel
    ra, dec = _world(frames[1], 400, 30)  # on the seam
    img = resample_reproject(
        frames,
        ra,
        dec,
        SIZE,
        6.336,
        data=lambda f: np.full(f.shape, level[f.path], np.float32),
        combine=combine,
    )
    area = (6.336 / 0.396) ** 2
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cra, cdec = cutout_wcs(ra, dec, SIZE, 6.336).all_pix2world(xx.ravel(), yy.ravel(), 0)
    in0, in1 = (_inside(f, cra, cdec).reshape(SIZE, SIZE) for f in frames)
    # a cutout pixel reaches 16 / 2 * (cos 12 + sin 12) = 9.5 native pixels across a frame's edge
    full0, full1, out0, out1 = in0 > 10, in1 > 10, in0 < -10, in1 < -10
    cut1 = full0 & (np.abs(in1) < 9)  # covered by frame 0, cut by frame 1's edge
    for sel, want in ((full0 & out1, 1.0), (full1 & out0, 3.0), (full0 & full1, 2.0)):
        assert sel.sum() > 10
        np.testing.assert_allclose(img[sel], want * area, rtol=1e-4)
    assert cut1.sum() > 5
    if combine == "best":  # the frame covering a pixel wholly decides it
        np.testing.assert_allclose(img[cut1], 1.0 * area, rtol=1e-4)
    else:  # reproject_and_coadd's footprint-weighted mean mixes in the partial frame
        assert (img[cut1] > 1.001 * area).all() and (img[cut1] < 2.0 * area).all()
        assert np.median(img[cut1]) > 1.2 * area


def test_adaptive_conserves_flux(fake):
    frames, src, data = fake
    ra, dec, flux = src["single"]
    img = resample_reproject(frames, ra, dec, SIZE, 3.168, data=data, algorithm="adaptive")
    x, y = cutout_wcs(ra, dec, SIZE, 3.168).all_world2pix([[ra, dec]], 0)[0]
    f, cx, cy = _photometry(img, x, y, 3.168)
    assert f == pytest.approx(flux, rel=0.01)
    assert np.hypot(cx - x, cy - y) < 0.1


def test_unknown_algorithm_is_refused(fake):
    frames, src, data = fake
    with pytest.raises(ValueError, match="algorithm"):
        resample_reproject(frames, *src["single"][:2], SIZE, 6.336, data=data, algorithm="nearest")
