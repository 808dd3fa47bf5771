"""Cutout resampling through ``reproject`` (issue #18), measured against :func:`.ingest.resample` by
``benchmarks/reproject_comparison.py``.

Each frame is cropped to the native pixels under the cutout and reprojected onto the north-up TAN grid of
:func:`.ingest.cutout_wcs`, flux-conservingly: ``exact`` (spherical polygon overlaps, the frame first scaled to
nanomaggies per *cutout* pixel, since it averages surface brightness) or ``adaptive`` (DeForest's anti-aliased
kernel, ``conserve_flux=True``, which applies that area ratio itself). Overlapping frames are combined as in
:func:`.ingest.resample`, each cutout pixel from the frame covering most of it (``combine='best'``), or by
``reproject_and_coadd``'s footprint-weighted mean (``'mean'``). Pixels covered less than
:data:`.ingest.MIN_COVERAGE` are NaN.

The ingest does not use it: at the store's 6.336" pixels ``exact`` is 40-70 times slower than the ingest's
binning (7-10 s against 0.15-0.26 s per five-band cutout) for flux errors of 0.25% against 1.4% at most,
``adaptive`` smooths sources (121% shape residual against the pixel-integrated PSF the mock draws) and the
coadd mean overstates sources on a field boundary by up to 32% (benchmarks/results/reproject_comparison.md).
``reproject`` is therefore a test dependency only; this module is kept, and tested, as the measured alternative.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from .ingest import MIN_COVERAGE, Frame, cutout_wcs, read_frame_data

Algorithm = Literal["exact", "adaptive"]
Combine = Literal["best", "mean"]


def _native_area(frame: Frame) -> float:
    """A frame pixel's area in arcsec^2."""
    return float(abs(np.linalg.det(frame.wcs.pixel_scale_matrix))) * 3600.0**2


def _crop(frame: Frame, ra: float, dec: float, size: int, pixel_scale: float, margin: int = 2):
    """(y-slice, x-slice) of the frame's pixels under the cutout (its edges, sampled, plus ``margin``), or None."""
    t = np.linspace(-0.5, size - 0.5, 9)
    edge = np.concatenate([np.stack([t, np.full_like(t, e)], 1) for e in (-0.5, size - 0.5)])
    edge = np.concatenate([edge, edge[:, ::-1]])
    world = cutout_wcs(ra, dec, size, pixel_scale).all_pix2world(edge, 0)
    x, y = frame.wcs.all_world2pix(world, 0).T
    ny, nx = frame.shape
    x0, x1 = max(int(np.floor(x.min())) - margin, 0), min(int(np.ceil(x.max())) + margin + 1, nx)
    y0, y1 = max(int(np.floor(y.min())) - margin, 0), min(int(np.ceil(y.max())) + margin + 1, ny)
    return (slice(y0, y1), slice(x0, x1)) if x0 < x1 and y0 < y1 else None


def resample_reproject(
    frames: list[Frame],
    ra: float,
    dec: float,
    size: int,
    pixel_scale: float,
    *,
    data: Callable[[Frame], np.ndarray] | None = None,
    algorithm: Algorithm = "exact",
    combine: Combine = "best",
) -> np.ndarray:
    """One band's cutout (size, size), float32 nanomaggies per cutout pixel, NaN where no frame covers enough.

    ``frames`` are one band's frames (:class:`.ingest.Frame`); ``data(frame)`` gives a frame's pixels (default:
    read with astropy, decompressing ``.bz2``). Where frames overlap, ``combine='best'`` keeps in each cutout pixel
    the frame covering most of it (averaging those that cover it equally, e.g. fully) and needs that frame to
    cover half of it; ``'mean'`` is ``reproject_and_coadd``'s footprint-weighted mean, which overstates a source
    in a pixel cut by a frame edge (the partial frame's mean surface brightness there holds the whole source),
    and needs the frames' footprints to sum to half a pixel.
    """
    from reproject import reproject_adaptive, reproject_exact
    from reproject.mosaicking import reproject_and_coadd

    if algorithm not in ("exact", "adaptive") or combine not in ("best", "mean"):
        raise ValueError(f"algorithm {algorithm!r}, combine {combine!r}: expected exact/adaptive, best/mean")
    read = data or (lambda f: read_frame_data(f.path))
    inputs = []
    for f in frames:
        box = _crop(f, ra, dec, size, pixel_scale)
        if box is None:
            continue
        # exact averages surface brightness: give it nanomaggies per cutout pixel; adaptive's conserve_flux
        # applies the Jacobian (that same area ratio) itself
        scale = pixel_scale**2 / _native_area(f) if algorithm == "exact" else 1.0
        inputs.append((np.asarray(read(f))[box].astype(np.float64) * scale, f.wcs[box]))
    if not inputs:
        return np.full((size, size), np.nan, np.float32)
    if algorithm == "exact":
        fn, kw = reproject_exact, {}
    else:
        fn = reproject_adaptive
        kw = dict(
            conserve_flux=True, boundary_mode="ignore_threshold", boundary_ignore_threshold=MIN_COVERAGE
        )
    target = cutout_wcs(ra, dec, size, pixel_scale)
    if combine == "mean":
        img, footprint = reproject_and_coadd(
            inputs,
            target,
            shape_out=(size, size),
            reproject_function=fn,
            combine_function="mean",
            blank_pixel_value=np.nan,
            **kw,
        )
    else:
        each = [fn(i, target, shape_out=(size, size), **kw) for i in inputs]
        cover = np.stack([np.where(np.isfinite(a), fp, 0.0) for a, fp in each])
        footprint = cover.max(axis=0)
        weight = np.where(cover >= footprint - 1e-3, cover, 0.0)  # the frame(s) covering most of each pixel
        with np.errstate(invalid="ignore", divide="ignore"):
            img = (np.stack([np.nan_to_num(a) for a, _ in each]) * weight).sum(0) / weight.sum(0)
    img[~(footprint >= MIN_COVERAGE)] = np.nan
    return img.astype(np.float32)
