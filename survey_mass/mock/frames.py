"""Mock SDSS corrected frames of a mock survey's clusters: the direct store's scenes at native 0.396" pixels.

``survey-mass mock --frames DIR`` writes, beside the direct store (``--out``) of the same clusters and seed, the
frames that SDSS would have taken of them, so that ``survey-mass ingest`` can be checked against the mock's own
cutouts (a closure test of the real-data path).

Layout (:class:`FrameLayout`)
    SDSS's: stripes are great circles through the survey poles (RA, Dec) = (95, 0) and (275, 0), stripe n at
    inclination (n - 10) x 2.5 deg to the equator (survey longitude eta = inclination - 32.5 deg; node at RA 95
    deg; stripe 10 is the equator). Inclinations -90 .. 87.5 deg give every great circle through the poles once,
    so every point of the sky lies within half a stripe of one of them (the far half of a circle keeps its
    number: SDSS's southern stripe 82 is stripe 10 here). A stripe is scanned by two strips (N, S) of six camera
    columns each; its twelve columns sit side by side across it, 2.5 deg / 12 apart (154 columns shared by
    neighbours), N taking the even ones. Along a column the scan is cut into fields of 2048 columns x 1489
    rows, one field every 1361 rows (128 rows shared, as in SDSS), rows along the scan, field numbers from 11
    at the node. Each strip of a stripe is one run (``run = 1000 + 2 (n - n_first) + strip``). A field's WCS
    is TAN at its centre with a CD matrix (columns across the scan, rows along it, as SDSS's); its pixels
    agree with those of the next field's shared rows to about 0.03 pixel.
Which fields
    Only those whose area overlaps some candidate's cutout (64 x 6.336" = 6.8', north-up, as the ingest cuts
    it): every frame the ingest needs, no other (:func:`touched_fields`).
Scenes
    Each cluster's scene is :func:`~survey_mass.mock.survey.cluster_scene`, the very sources (same draws, same
    seed) that :func:`~survey_mass.mock.survey.render_cluster` draws into the direct store, placed on the sky
    through the ingest's cutout WCS (TAN, north up, east left, the cluster at its centre) and drawn at native
    pixels by :func:`~survey_mass.mock.render.render_bands_windowed` (the same profiles, PSF and exact pixel
    integrals) with the scene's own seeing. A frame holds every scene that reaches it. A scene's field
    galaxies and stars (drawn over its cutout) are kept only where its cluster is the nearest of those whose
    cutouts cover them, so the field's density stays that of one scene where cutouts overlap; central galaxies
    and members are all kept.
Sky and noise
    In nanomaggies, sky-subtracted, as corrected frames. Inside each cutout's area (the nearest cluster's
    where cutouts overlap) the sky noise per native pixel is the direct store's sigma for that cutout
    (``obs_sky_sigma_{band}``) x 0.396 / 6.336, so that summing 16 x 16 native pixels gives the direct store's
    sigma; elsewhere it is the field's own, drawn like a cutout's (:func:`survey_mass.mock.halos.draw_conditions`)
    for each field, whose conditions also hold in the 128 rows it shares with the previous field. Source photon
    noise follows the light, as in the direct store. The noise is drawn per field of the scan, so the rows two
    fields of a run share hold the same pixels, as in SDSS; different runs are independent exposures. Values are
    whole counts times ``NMGY`` (a power of two near SDSS's nanomaggies per count, so bz2 packs a frame
    into ~2 MB), and the Gaussian noise is drawn narrower by the rounding's q^2 / 12.

Every frame is written to a temporary name and renamed; a rerun renders only the fields with a band missing.
``DIR/candidates.parquet`` holds the clusters (what ``survey-mass ingest --candidates`` reads, with their true
masses and labels) and ``DIR/mock_frames.json`` the config, checked on resume.
"""

from __future__ import annotations

import bz2
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from ..photometry import BANDS, SDSS_FRAME_SHAPE, SDSS_PIXEL_SCALE, mag_to_nmgy
from . import render

#: SDSS survey coordinates: every stripe's node (RA, deg)
NODE_DEG = 95.0
#: the equatorial stripe (inclination 0; survey longitude eta = -32.5 deg)
STRIPE_0 = 10
#: camera columns across a stripe: six per strip, two strips
CAMCOLS = 6
#: SDSS numbers the fields of a run from 11
FIRST_FIELD = 11
RUN_BASE = 1000
#: nanomaggies per count of the mock frames: powers of two near SDSS's (~0.010, 0.0038, 0.0047, 0.0066, 0.033)
NMGY_PER_COUNT = {"u": 2.0**-7, "g": 2.0**-8, "r": 2.0**-8, "i": 2.0**-7, "z": 2.0**-5}
#: SDSS's drift-scan exposure time (s): 2048 rows at the sidereal rate
EXPTIME_S = 53.907456
#: the camera row of each band in the SDSS camera (CCDLOC = 10 camrow + camcol)
CAMROW = {"r": 1, "i": 2, "u": 3, "z": 4, "g": 5}
#: a scene reaches this many cutout pixels beyond its 4-pixel margin (the wide wings of big galaxies)
SCENE_PAD = 32


@dataclass(frozen=True)
class FrameLayout:
    """The geometry of the frames: SDSS's by default. Smaller frames (tests) keep the same design; the stripe
    width is then 12 columns of ``nx - overlap_cols`` pixels."""

    nx: int = SDSS_FRAME_SHAPE[0]
    ny: int = SDSS_FRAME_SHAPE[1]
    overlap_rows: int = 128
    overlap_cols: int = 154
    pixel_scale: float = SDSS_PIXEL_SCALE

    def __post_init__(self):
        if not (0 <= self.overlap_rows < self.ny and 0 <= self.overlap_cols < self.nx):
            raise ValueError(f"FrameLayout: overlaps must be smaller than the frame ({self})")
        if self.fields_per_column(0) + FIRST_FIELD > 9999:
            raise ValueError(f"FrameLayout: fields too small, more than 9999 fields in a scan ({self})")

    @property
    def pixel_deg(self) -> float:
        return self.pixel_scale / 3600.0

    @property
    def column_spacing_deg(self) -> float:
        return (self.nx - self.overlap_cols) * self.pixel_deg

    @property
    def stripe_width_deg(self) -> float:
        return 2 * CAMCOLS * self.column_spacing_deg

    @property
    def stripes(self) -> np.ndarray:
        """Stripe numbers n: their inclinations (:meth:`inclination`) cover [-90, 90) deg."""
        half = int(np.ceil(90.0 / self.stripe_width_deg))
        return np.arange(STRIPE_0 - half, STRIPE_0 + half)

    def inclination(self, stripe) -> np.ndarray:
        """Inclination (deg) of stripe n's great circle to the equator: (n - 10) x the stripe width."""
        return (np.asarray(stripe) - STRIPE_0) * self.stripe_width_deg

    def column_nu_deg(self, k) -> np.ndarray:
        """Offset across the stripe of column k = 0..11 (its centre)."""
        return (np.asarray(k) - (2 * CAMCOLS - 1) / 2.0) * self.column_spacing_deg

    def row_step_deg(self, nu_deg) -> np.ndarray:
        """Scan longitude mu per row along a column at offset nu (a small circle: rows are 0.396" of arc)."""
        return self.pixel_deg / np.cos(np.radians(nu_deg))

    def fields_per_column(self, nu_deg: float) -> int:
        return int(np.ceil(360.0 / ((self.ny - self.overlap_rows) * float(self.row_step_deg(nu_deg)))))


DEFAULT_LAYOUT = FrameLayout()


# --- the sphere -----------------------------------------------------------------------------------------------


def _unit(ra, dec) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _radec(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    ra = np.degrees(np.arctan2(v[..., 1], v[..., 0])) % 360.0
    return ra, np.degrees(np.arcsin(np.clip(v[..., 2], -1, 1)))


def _tangent_basis(ra0, dec0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, east, north) unit vectors of the tangent plane at (ra0, dec0)."""
    a, d = np.radians(ra0), np.radians(dec0)
    centre = _unit(ra0, dec0)
    east = np.stack([-np.sin(a), np.cos(a), np.zeros_like(np.asarray(a, float))], axis=-1)
    north = np.stack([-np.sin(d) * np.cos(a), -np.sin(d) * np.sin(a), np.cos(d)], axis=-1)
    return centre, east, north


def _to_plane(v: np.ndarray, basis) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic (TAN) projection of unit vectors: (xi east, eta north) in degrees."""
    c, e, n = basis
    w = np.sum(v * c, axis=-1)
    return np.degrees(np.sum(v * e, axis=-1) / w), np.degrees(np.sum(v * n, axis=-1) / w)


def _from_plane(xi, eta, basis) -> np.ndarray:
    c, e, n = basis
    xi, eta = np.radians(xi)[..., None], np.radians(eta)[..., None]
    v = c + xi * e + eta * n
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _survey_to_eq(mu, nu, incl) -> np.ndarray:
    """Unit vectors of great-circle coordinates (mu, nu) of a stripe of inclination ``incl`` (deg)."""
    m, n, i = np.radians(np.asarray(mu) - NODE_DEG), np.radians(nu), np.radians(incl)
    x1, y1, z1 = np.cos(n) * np.cos(m), np.cos(n) * np.sin(m), np.sin(n)
    return _rotate_from_stripe(np.stack(np.broadcast_arrays(x1, y1, z1), axis=-1), i)


def _rotate_from_stripe(v: np.ndarray, i) -> np.ndarray:
    x, y, z = (
        v[..., 0],
        v[..., 1] * np.cos(i) - v[..., 2] * np.sin(i),
        v[..., 1] * np.sin(i) + v[..., 2] * np.cos(i),
    )
    a = np.radians(NODE_DEG)
    return np.stack([x * np.cos(a) - y * np.sin(a), x * np.sin(a) + y * np.cos(a), z], axis=-1)


def survey_mu_nu(v: np.ndarray, incl) -> tuple[np.ndarray, np.ndarray]:
    """Great-circle coordinates (mu, nu) in degrees of unit vectors ``v`` for stripes of inclination ``incl``."""
    a, i = np.radians(NODE_DEG), np.radians(incl)
    x = v[..., 0] * np.cos(a) + v[..., 1] * np.sin(a)
    y = -v[..., 0] * np.sin(a) + v[..., 1] * np.cos(a)
    z = v[..., 2]
    y1 = y * np.cos(i) + z * np.sin(i)
    z1 = -y * np.sin(i) + z * np.cos(i)
    mu = (NODE_DEG + np.degrees(np.arctan2(y1, x))) % 360.0
    return mu, np.degrees(np.arcsin(np.clip(z1, -1, 1)))


# --- fields ---------------------------------------------------------------------------------------------------


def _geometry(layout: FrameLayout, stripe, k, index):
    """Centre (ra, dec) and CD matrix (..., 2, 2; degrees per pixel) of fields: stripe n, column k, field index
    (field - FIRST_FIELD), vectorised."""
    stripe, k, index = np.broadcast_arrays(np.asarray(stripe), np.asarray(k), np.asarray(index))
    incl = layout.inclination(stripe)
    nu = layout.column_nu_deg(k)
    step = layout.row_step_deg(nu)
    mu = NODE_DEG + (index * (layout.ny - layout.overlap_rows) + (layout.ny - 1) / 2.0) * step
    centre = _survey_to_eq(mu, nu, incl)
    ra, dec = _radec(centre)
    m, n, i = np.radians(mu - NODE_DEG), np.radians(nu), np.radians(incl)
    zeros = np.zeros_like(m)
    e_mu = _rotate_from_stripe(np.stack([-np.sin(m), np.cos(m), zeros], axis=-1), i)
    e_nu = _rotate_from_stripe(
        np.stack([-np.sin(n) * np.cos(m), -np.sin(n) * np.sin(m), np.cos(n) + zeros], -1), i
    )
    _, east, north = _tangent_basis(ra, dec)
    s = layout.pixel_deg
    cd = np.empty(ra.shape + (2, 2))
    cd[..., 0, 0] = s * np.sum(e_nu * east, -1)  # columns run across the scan (nu) ...
    cd[..., 1, 0] = s * np.sum(e_nu * north, -1)
    cd[..., 0, 1] = s * np.sum(e_mu * east, -1)  # ... rows along it (mu)
    cd[..., 1, 1] = s * np.sum(e_mu * north, -1)
    return ra, dec, cd


@dataclass(frozen=True)
class Field:
    """One SDSS field of the layout: where it is, its WCS, and its number."""

    stripe: int
    strip: str  # "N" or "S"
    camcol: int
    field: int
    layout: FrameLayout
    ra: float
    dec: float
    cd: tuple[tuple[float, float], tuple[float, float]]

    @classmethod
    def make(cls, layout: FrameLayout, stripe: int, k: int, index: int) -> Field:
        ra, dec, cd = _geometry(layout, stripe, k, index)
        return cls(
            stripe=int(stripe),
            strip="NS"[int(k) % 2],
            camcol=int(k) // 2 + 1,
            field=int(index) + FIRST_FIELD,
            layout=layout,
            ra=float(ra),
            dec=float(dec),
            cd=tuple(tuple(float(v) for v in row) for row in cd),
        )

    @property
    def run(self) -> int:
        return RUN_BASE + 2 * (self.stripe - int(self.layout.stripes[0])) + "NS".index(self.strip)

    @property
    def key(self) -> int:
        """A unique integer per field: run x 1e5 + camcol x 1e4 + field."""
        return self.run * 100_000 + self.camcol * 10_000 + self.field

    @property
    def inclination(self) -> float:
        return float(self.layout.inclination(self.stripe))

    def file_name(self, band: str, *, compressed: bool = True) -> str:
        return paths.frame_file_name(band, self.run, self.camcol, self.field, compressed=compressed)

    @property
    def crpix(self) -> tuple[float, float]:
        """FITS (1-based) reference pixel: the frame's centre."""
        return (self.layout.nx + 1) / 2.0, (self.layout.ny + 1) / 2.0

    def world_to_pixel(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based (x, y) pixel coordinates of unit vectors, through the frame's TAN WCS."""
        xi, eta = _to_plane(v, _tangent_basis(self.ra, self.dec))
        inv = np.linalg.inv(np.array(self.cd))
        c1, c2 = self.crpix
        return inv[0, 0] * xi + inv[0, 1] * eta + c1 - 1, inv[1, 0] * xi + inv[1, 1] * eta + c2 - 1

    def header(self, band: str, **extra):
        """The SDSS header of this field's frame in ``band`` (:func:`frame_header`), with ``extra`` keywords."""
        ids = {"RUN": self.run, "CAMCOL": self.camcol, "FIELD": self.field, "FRAME": self.field}
        scan = {"STRIPE": self.stripe, "STRIP": self.strip, "INCL": self.inclination}
        lay = self.layout
        return frame_header(
            self.ra,
            self.dec,
            np.array(self.cd),
            band,
            nx=lay.nx,
            ny=lay.ny,
            crpix=self.crpix,
            **ids,
            **scan,
            **extra,
        )


def frame_header(
    ra0: float,
    dec0: float,
    cd: np.ndarray,
    band: str,
    *,
    nx: int,
    ny: int,
    crpix: tuple[float, float] | None = None,
    **keywords,
):
    """A FITS header following SDSS corrected-frame conventions: ``FILTER``, ``BUNIT = 'nanomaggy'``, ``NMGY``,
    ``EXPTIME``, the camera's ``CAMROW``/``CCDLOC`` and a TAN WCS with a CD matrix (degrees per pixel) whose
    reference pixel is ``crpix`` (1-based; default the frame's centre). ``keywords`` are added as given (RUN,
    CAMCOL, FIELD, SKY...; a (value, comment) tuple sets a comment)."""
    from astropy.io import fits

    c1, c2 = crpix if crpix is not None else ((nx + 1) / 2.0, (ny + 1) / 2.0)
    h = fits.Header()
    h["ORIGIN"] = ("survey-mass", "mock SDSS corrected frame")
    h["TELESCOP"] = "2.5m"
    h["FLAVOR"] = "science"
    h["SYS_SCN"], h["EQNX_SCN"], h["NODE"] = "mean", 2000.0, NODE_DEG
    h["FILTER"] = (band, "filter used")
    h["CAMROW"] = (CAMROW[band], "row in the imaging camera")
    h["EXPTIME"] = (EXPTIME_S, "exposure time (s)")
    h["BUNIT"] = ("nanomaggy", "1 nanomaggy = 3.631e-6 Jy")
    nmgy = NMGY_PER_COUNT[band]
    h["NMGY"] = (nmgy, "calibration factor [nanomaggies/count]")
    h["NMGYIVAR"] = (1.0 / (0.01 * nmgy) ** 2, "calibration factor inverse variance")
    h["SOFTBIAS"] = (1000, "software bias added to the raw counts")
    h["RERUN"] = "301"
    h["RADESYS"], h["EQUINOX"] = "ICRS", 2000.0
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["CRPIX1"], h["CRPIX2"] = c1, c2
    h["CRVAL1"], h["CRVAL2"] = float(ra0), float(dec0)
    # SDSS frames are not north-up: rows run along the scan; the CD matrix carries the rotation
    h["CD1_1"], h["CD1_2"] = float(cd[0, 0]), float(cd[0, 1])
    h["CD2_1"], h["CD2_2"] = float(cd[1, 0]), float(cd[1, 1])
    for key, val in keywords.items():
        h[key] = val
    if "CAMCOL" in h:
        h["CCDLOC"] = (10 * CAMROW[band] + int(h["CAMCOL"]), "10 camrow + camcol")
    return h


# --- which fields ---------------------------------------------------------------------------------------------


def _cutout_corners(v: np.ndarray, size: int, pixel_scale: float) -> np.ndarray:
    """(n, 4, 3) unit vectors of the corners of north-up cutouts centred on ``v`` (the ingest's cutout WCS)."""
    half = size / 2.0 * pixel_scale / 3600.0
    ra, dec = _radec(v)
    basis = _tangent_basis(ra[:, None], dec[:, None])
    sx = np.array([-1.0, 1.0, 1.0, -1.0])[None, :] * half
    sy = np.array([-1.0, -1.0, 1.0, 1.0])[None, :] * half
    return _from_plane(np.broadcast_to(sx, (len(v), 4)), np.broadcast_to(sy, (len(v), 4)), basis)


def _quads_overlap_frame(px: np.ndarray, py: np.ndarray, nx: int, ny: int) -> np.ndarray:
    """Separating-axis test of convex quadrilaterals (n, 4 corners, in order) against the frame's area."""
    lo_x, hi_x, lo_y, hi_y = -0.5, nx - 0.5, -0.5, ny - 0.5
    hit = (px.max(1) >= lo_x) & (px.min(1) <= hi_x) & (py.max(1) >= lo_y) & (py.min(1) <= hi_y)
    rect_x = np.array([lo_x, hi_x, hi_x, lo_x])
    rect_y = np.array([lo_y, lo_y, hi_y, hi_y])
    for e in (0, 1):  # the quadrilateral's two edge directions (and their opposites)
        ex, ey = px[:, e + 1] - px[:, e], py[:, e + 1] - py[:, e]
        nxv, nyv = -ey, ex
        q = px * nxv[:, None] + py * nyv[:, None]
        r = rect_x[None, :] * nxv[:, None] + rect_y[None, :] * nyv[:, None]
        hit &= (q.max(1) >= r.min(1)) & (q.min(1) <= r.max(1))
    return hit


def touched_fields(
    ra, dec, layout: FrameLayout = DEFAULT_LAYOUT, *, size: int = 64, pixel_scale: float = 6.336
) -> tuple[list[Field], np.ndarray, np.ndarray]:
    """The fields whose area overlaps the north-up cutout (``size`` pixels of ``pixel_scale``) of a position.

    Returns (fields, position index, field index): the distinct fields in (run, camcol, field) order, and one
    pair per position and field it touches.
    """
    v = _unit(np.asarray(ra, float), np.asarray(dec, float)).reshape(-1, 3)
    stripes = layout.stripes
    incl = layout.inclination(stripes)
    reach = size / 2.0 * pixel_scale / 3600.0 * np.sqrt(2) * 1.01 + layout.pixel_deg
    half_col = layout.nx / 2.0 * layout.pixel_deg * 1.01
    nu_edge = float(layout.column_nu_deg(2 * CAMCOLS - 1)) + half_col
    pos, stripe, col, index = [], [], [], []
    for s, inc in zip(stripes, incl, strict=True):
        mu, nu = survey_mu_nu(v, inc)
        near = np.flatnonzero(np.abs(nu) <= nu_edge + reach)
        for k in range(2 * CAMCOLS):
            nk = float(layout.column_nu_deg(k))
            sel = near[np.abs(nu[near] - nk) <= half_col + reach]
            if not sel.size:
                continue
            dmu = float(layout.row_step_deg(nk))
            step = layout.ny - layout.overlap_rows
            n_fields = layout.fields_per_column(nk)
            rows_reach = reach / layout.pixel_deg * 1.01 + 1
            for turn in (0.0, 360.0):  # the last fields of a scan run past the node again
                r = ((mu[sel] - NODE_DEG) % 360.0 + turn) / dmu
                first = np.floor((r - rows_reach - layout.ny) / step).astype(int) + 1
                last = np.floor((r + rows_reach) / step).astype(int)
                for off in range(int((last - first).max(initial=-1)) + 1):
                    j = first + off
                    ok = (j <= last) & (j >= 0) & (j < n_fields)
                    pos.append(sel[ok]), index.append(j[ok])
                    stripe.append(np.full(int(ok.sum()), s)), col.append(np.full(int(ok.sum()), k))
    if not pos:
        return [], np.zeros(0, int), np.zeros(0, int)
    pos, stripe, col, index = (np.concatenate(a).astype(np.int64) for a in (pos, stripe, col, index))
    # the exact test: the cutout's corners in the field's pixels against the field's area
    fra, fdec, cd = _geometry(layout, stripe, col, index)
    corners = _cutout_corners(v, size, pixel_scale)[pos]
    xi, eta = _to_plane(corners, _tangent_basis(fra[:, None], fdec[:, None]))
    inv = np.linalg.inv(cd)
    px = inv[:, 0, 0, None] * xi + inv[:, 0, 1, None] * eta + (layout.nx - 1) / 2.0
    py = inv[:, 1, 0, None] * xi + inv[:, 1, 1, None] * eta + (layout.ny - 1) / 2.0
    hit = _quads_overlap_frame(px, py, layout.nx, layout.ny)
    pos, stripe, col, index = pos[hit], stripe[hit], col[hit], index[hit]
    # distinct fields, and drop repeats of a pair (a position near the node seen on both turns)
    code = (stripe - stripes[0]) * (2 * CAMCOLS * 10_000) + col * 10_000 + index
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    pairs = np.unique(np.stack([pos, inverse.ravel()], axis=1), axis=0)
    fields = [Field.make(layout, int(stripe[f]), int(col[f]), int(index[f])) for f in first]
    order = sorted(range(len(fields)), key=lambda i: (fields[i].run, fields[i].camcol, fields[i].field))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return [fields[i] for i in order], pairs[:, 0], rank[pairs[:, 1]]


# --- rendering one field ----------------------------------------------------------------------------------------


def _conditions_sky_sigma(cond, cfg, native: float) -> np.ndarray:
    """Sky sigma per native pixel (nanomaggies), per band, of a field with conditions ``cond``: the direct
    store's ``obs_sky_sigma`` times native / store pixel scale (summing (store / native)^2 pixels gives it)."""
    ph = cfg.physics
    nominal = np.array([render.sky_sigma_nmgy(b, cfg.pixel_scale_arcsec, ph) for b in BANDS])
    return (nominal / ph.sky_noise_scale * cond.sky_factor).astype(np.float32) * (
        native / cfg.pixel_scale_arcsec
    )


def _field_conditions(cfg, f: Field, field_number: int):
    """The conditions of one field of a scan (its own stream of the seed)."""
    from . import halos
    from .survey import _rng

    return halos.draw_conditions(_rng(cfg.seed, f.run, f.camcol, field_number, 31), cfg.physics)


def _noise_rows(cfg, f: Field, field_number: int, band: int, rows: int, nx: int) -> np.ndarray:
    """The first ``rows`` rows of the standard-normal noise of one field of a scan (so two fields' shared rows
    hold the same draws)."""
    from .survey import _rng

    rng = _rng(cfg.seed, f.run, f.camcol, field_number, band, 37)
    return rng.standard_normal((rows, nx), dtype=np.float32)


@dataclass
class _Placed:
    """A scene placed in a field: its centre (pixels) and the map from field pixels to its cutout's pixels."""

    xc: float
    yc: float
    to_cutout: np.ndarray  # (2, 2)


def _place(f: Field, ra: float, dec: float, size: int, pixel_scale: float) -> _Placed:
    """Where a cutout centred on (ra, dec) lies in a field: centre and the local linear map (exact to ~1e-6)."""
    basis = _tangent_basis(ra, dec)
    d = 8.0 * pixel_scale / 3600.0
    pts = _from_plane(np.array([0.0, -d, 0.0]), np.array([0.0, 0.0, d]), basis)  # +u is west (east left)
    x, y = f.world_to_pixel(pts)
    jac = np.array([[x[1] - x[0], x[2] - x[0]], [y[1] - y[0], y[2] - y[0]]]) / 8.0  # field px per cutout px
    return _Placed(float(x[0]), float(y[0]), np.linalg.inv(jac))


def _scene_to_field(f: Field, ra: float, dec: float, scene, cfg) -> tuple[np.ndarray, np.ndarray]:
    """Field pixel coordinates of a scene's sources (cutout pixels -> sky through the ingest's cutout WCS)."""
    centre = (cfg.cutout_size - 1) / 2.0
    p = cfg.pixel_scale_arcsec / 3600.0
    v = _from_plane(-(scene.x - centre) * p, (scene.y - centre) * p, _tangent_basis(ra, dec))
    return f.world_to_pixel(v)


def render_field(f: Field, clusters: pd.DataFrame, cfg, *, noise: bool = True) -> tuple[np.ndarray, dict]:
    """The five bands (5, ny, nx) of one field, in nanomaggies, and what its header records.

    ``clusters`` are the rows (with ``gal_b``, their galactic latitude as the direct build computed it) of every
    cluster whose scene may reach the field. ``noise=False`` gives the noise-free sky (no rounding to counts).
    """
    from .survey import cluster_scene

    lay = f.layout
    ny, nx = lay.ny, lay.nx
    size, pix = cfg.cutout_size, cfg.pixel_scale_arcsec
    rows = clusters.to_dict("records")
    placed = [_place(f, float(c["ra"]), float(c["dec"]), size, pix) for c in rows]
    centre = (size - 1) / 2.0
    half, margin = size / 2.0, size / 2.0 + 3.5  # the cutout's edge; its field sources' (-4 .. size + 3)

    def cutout_offsets(k: int, x, y):
        m = placed[k].to_cutout
        dx, dy = x - placed[k].xc, y - placed[k].yc
        return m[0, 0] * dx + m[0, 1] * dy, m[1, 0] * dx + m[1, 1] * dy

    xs, ys, mags, res, ns, fwhm = [], [], [], [], [], []
    scenes = []
    for k, c in enumerate(rows):
        sc = cluster_scene(c, cfg, float(c["gal_b"]))
        scenes.append(sc)
        x, y = _scene_to_field(f, float(c["ra"]), float(c["dec"]), sc, cfg)
        keep = ~sc.field
        # a field source stays where its cluster is the nearest of those whose cutouts (with margin) cover it
        fi = np.flatnonzero(sc.field)
        best = np.full(fi.size, np.inf)
        owner = np.full(fi.size, -1)
        for j in range(len(rows)):
            du, dv = cutout_offsets(j, x[fi], y[fi])
            d2 = np.where((np.abs(du) <= margin) & (np.abs(dv) <= margin), du * du + dv * dv, np.inf)
            if j == k:
                d2 = np.minimum(d2, (sc.x[fi] - centre) ** 2 + (sc.y[fi] - centre) ** 2)
            better = d2 < best
            best[better], owner[better] = d2[better], j
        keep[fi[owner == k]] = True
        xs.append(x[keep]), ys.append(y[keep]), mags.append(sc.mags[keep])
        res.append(sc.re_arcsec[keep]), ns.append(sc.sersic_n[keep])
        fwhm.append(np.broadcast_to(sc.conditions.psf_fwhm[None, :], (int(keep.sum()), len(BANDS))))
    flux = mag_to_nmgy(np.clip(np.concatenate(mags) if mags else np.zeros((0, 5)), 5, 35))
    img = render.render_bands_windowed(
        np.concatenate(xs) if xs else np.zeros(0),
        np.concatenate(ys) if ys else np.zeros(0),
        flux,
        np.concatenate(res) if res else np.zeros(0),
        np.concatenate(ns) if ns else np.zeros(0, int),
        BANDS,
        (ny, nx),
        lay.pixel_scale,
        cfg.physics,
        psf_fwhm=np.concatenate(fwhm) if fwhm else np.zeros((0, 5)),
    )

    # the sky: each cutout's own inside it (the nearest cluster's where cutouts overlap), else the field's
    own = _field_conditions(cfg, f, f.field)
    nxt = _field_conditions(cfg, f, f.field + 1)
    split = ny - lay.overlap_rows  # the rows shared with the next field are its
    owner_map = np.full((ny, nx), -1, np.int32)
    best = np.full((ny, nx), np.inf, np.float32)
    for k, pl in enumerate(placed):
        jac = np.linalg.inv(pl.to_cutout)
        corners = jac @ np.array([[-half, half, half, -half], [-half, -half, half, half]])
        x0 = max(int(np.floor(pl.xc + corners[0].min())), 0)
        x1 = min(int(np.ceil(pl.xc + corners[0].max())), nx - 1)
        y0 = max(int(np.floor(pl.yc + corners[1].min())), 0)
        y1 = min(int(np.ceil(pl.yc + corners[1].max())), ny - 1)
        if x0 > x1 or y0 > y1:
            continue
        yy, xx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float32)
        du, dv = cutout_offsets(k, xx, yy)
        d2 = np.where((np.abs(du) <= half) & (np.abs(dv) <= half), du * du + dv * dv, np.inf)
        win = best[y0 : y1 + 1, x0 : x1 + 1]
        better = d2 < win
        win[better] = d2[better]
        owner_map[y0 : y1 + 1, x0 : x1 + 1][better] = k
    native = lay.pixel_scale
    sky_own, sky_next = _conditions_sky_sigma(own, cfg, native), _conditions_sky_sigma(nxt, cfg, native)
    sky_scene = np.array([_conditions_sky_sigma(sc.conditions, cfg, native) for sc in scenes], np.float32)
    gain = np.array([cfg.physics.render.nmgy_per_electron[b] for b in BANDS])
    info = {
        "sky_sigma": sky_own,
        # the sky level whose photon noise is that sigma (what a corrected frame has had subtracted)
        "sky": sky_own.astype(float) ** 2 / gain / native**2,
        "psf_fwhm": own.psf_fwhm,
        "scenes": len(rows),
        "cutout_pixels": int((owner_map >= 0).sum()),
    }
    if not noise:
        return img, info
    embedded = _embedded_noise(f, rows, placed, owner_map, sky_scene, cfg, cutout_offsets)
    background = np.empty((ny, 1), np.float32)
    for b, band in enumerate(BANDS):
        background[:split, 0], background[split:, 0] = sky_own[b], sky_next[b]
        sigma = np.where(
            owner_map >= 0, sky_scene[np.maximum(owner_map, 0), b] if len(scenes) else 0, background
        )
        q = NMGY_PER_COUNT[band]
        var = sigma.astype(np.float32) ** 2 - np.float32(q * q / 12.0)  # the rounding to counts adds q^2/12
        var += np.clip(img[b], 0, None) * np.float32(cfg.physics.render.nmgy_per_electron[band])
        draws = np.concatenate(
            [
                _noise_rows(cfg, f, f.field, b, split, nx),
                _noise_rows(cfg, f, f.field + 1, b, lay.overlap_rows, nx),
            ]
        )
        field_noise = np.sqrt(np.clip(var, 0, None)) * draws
        if embedded is not None:
            coarse, blocks = embedded
            inside = blocks >= 0
            ids = blocks[inside]
            z = draws[inside].astype(np.float64)
            mean = np.bincount(ids, weights=z) / np.maximum(np.bincount(ids), 1)
            field_noise[inside] = coarse[b][inside] + sigma[inside] * (z - mean[ids]).astype(np.float32)
        img[b] += field_noise
        img[b] = np.rint(img[b] / np.float32(q)) * np.float32(q)
    return img, info


def _embedded_noise(f: Field, rows, placed, owner_map, sky_scene, cfg, cutout_offsets):
    """Inside each cutout, the direct store's own noise (:func:`~survey_mass.mock.survey.cluster_noise`): each
    native pixel carries its store pixel's noise over the native pixels per store pixel, and the caller adds a
    fine noise of the native sky sigma that sums to zero over each store pixel. Binning the frame as the ingest
    does then gives the direct cutout's noise realisation, so that the closure of the real-data path compares
    like with like. Returns the (5, ny, nx) coarse part and the (ny, nx) store-pixel ids (-1 outside every
    cutout), or None when the field holds no cutout."""
    from .survey import cluster_noise

    if not rows:
        return None
    lay = f.layout
    ny, nx = lay.ny, lay.nx
    size = cfg.cutout_size
    centre = (size - 1) / 2.0
    per_block = np.float32((cfg.pixel_scale_arcsec / lay.pixel_scale) ** 2)
    coarse = np.zeros((len(BANDS), ny, nx), np.float32)
    blocks = np.full((ny, nx), -1, np.int64)
    for k, c in enumerate(rows):
        yy, xx = np.nonzero(owner_map == k)
        if not yy.size:
            continue
        du, dv = cutout_offsets(k, xx.astype(np.float64), yy.astype(np.float64))
        ix, iy = np.rint(centre + du).astype(int), np.rint(centre + dv).astype(int)
        ok = (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size)
        yy, xx, ix, iy = yy[ok], xx[ok], ix[ok], iy[ok]
        noise = cluster_noise(c, cfg, float(c["gal_b"]))
        coarse[:, yy, xx] = noise[:, iy, ix] / per_block
        blocks[yy, xx] = (k * size + iy) * size + ix
    return coarse, blocks


def _fits_bytes(f: Field, band: str, image: np.ndarray, info: dict) -> bytes:
    from astropy.io import fits

    b = BANDS.index(band)
    hdr = f.header(
        band,
        SKY=(round(float(info["sky"][b]), 6), "mock: field sky subtracted [nmgy/arcsec^2]"),
        SKYSIG=(round(float(info["sky_sigma"][b]), 6), "mock: field sky noise per pixel [nmgy]"),
        PSF_FWHM=(round(float(info["psf_fwhm"][b]), 4), "mock: field seeing FWHM [arcsec]"),
    )
    hdr["COMMENT"] = "Mock frame (survey-mass): inside each candidate's cutout the sky noise and seeing are"
    hdr["COMMENT"] = "that cutout's in the direct mock store; SKY, SKYSIG and PSF_FWHM are the field's own."
    calib = np.full(f.layout.nx, NMGY_PER_COUNT[band], np.float32)
    hdul = fits.HDUList([fits.PrimaryHDU(image.astype(np.float32), header=hdr), fits.ImageHDU(calib)])
    buf = io.BytesIO()
    hdul.writeto(buf)
    return buf.getvalue()


def _write_field(
    cfg, f: Field, clusters: pd.DataFrame, out: str, compressed: bool = True, overwrite: bool = False
) -> dict:
    """Render one field and write its five frames, each atomically (what every worker runs)."""
    t0 = time.perf_counter()
    images, info = render_field(f, clusters, cfg)
    nbytes = 0
    for b, band in enumerate(BANDS):
        final = Path(out) / f.file_name(band, compressed=compressed)
        tmp = paths.frame_temp_file(final)
        data = _fits_bytes(f, band, images[b], info)
        tmp.write_bytes(bz2.compress(data, 9) if compressed else data)
        if overwrite:  # a rebuild with the other setting leaves no stale copy of this frame for the ingest
            (Path(out) / f.file_name(band, compressed=not compressed)).unlink(missing_ok=True)
        os.replace(tmp, final)
        nbytes += final.stat().st_size
    return {"field": f.key, "bytes": nbytes, "scenes": info["scenes"], "seconds": time.perf_counter() - t0}


# --- the footprint ---------------------------------------------------------------------------------------------


def _plan_clusters(footprint, cfg, candidates) -> tuple[pd.DataFrame, object]:
    """Every cluster of the direct build (same plan, same tables), with the galactic latitude it rendered with."""
    from .survey import _galactic_latitude, partition_clusters, plan

    jobs = plan(footprint, cfg, candidates)
    used = bool(jobs) and jobs[0].candidates is not None
    cfg = cfg.model_copy(update={"candidates": cfg.candidates if used else "mass-function"})
    tables = []
    for j in jobs:
        t = partition_clusters(cfg, j)
        if len(t):
            t = t.copy()
            t["gal_b"] = _galactic_latitude(t["ra"], t["dec"])
            t["partition"] = j.pixel
            tables.append(t)
    clusters = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return clusters, cfg


#: columns of ``candidates.parquet`` (those the direct store holds, and the BCG magnitudes when given)
CANDIDATE_COLUMNS = (
    "id",
    "name",
    "ra",
    "dec",
    "z",
    "richness",
    "log10_m500_label",
    "log10_m500_true",
    "log10_m500_oracle",
    "label_flux_limit",
)


def _write_candidates(clusters: pd.DataFrame, out: Path) -> None:
    cols = [c for c in CANDIDATE_COLUMNS if c in clusters] + [
        f"bcg_mag_{b}" for b in BANDS if f"bcg_mag_{b}" in clusters
    ]
    final = out / paths.FRAMES_CANDIDATES
    tmp = paths.frame_temp_file(final)
    clusters[cols].to_parquet(tmp, index=False)
    os.replace(tmp, final)


def check_frames_directory(out: str | Path) -> None:
    """Refuse, in one line, a frames directory that holds files and no ``mock_frames.json``: someone else's
    files, which a build would overwrite or mix its frames into. An absent or empty directory, or one a build
    made, is fine."""
    from ..errors import SurveyMassError

    out = Path(out)
    if not out.is_dir():
        return
    marker = out / paths.FRAMES_PROVENANCE
    if marker.exists():
        try:
            doc = json.loads(marker.read_text())
        except (OSError, ValueError):
            doc = None
        if not (isinstance(doc, dict) and {"config", "layout", "footprint"} <= set(doc)):
            raise SurveyMassError(
                f"mock frames {str(out)!r}: {paths.FRAMES_PROVENANCE} is not one survey-mass wrote; choose another "
                "directory"
            )
        return
    temporaries = set(paths.frame_temporaries(out))
    held = sorted(e.name for e in out.iterdir() if e not in temporaries)
    if held:
        raise SurveyMassError(
            f"mock frames {str(out)!r}: holds {held[:3]} and no {paths.FRAMES_PROVENANCE}; survey-mass writes mock "
            "frames only into an empty directory or one it made: choose another directory"
        )


def _check_provenance(out: Path, record: dict, overwrite: bool) -> None:
    from ..errors import SurveyMassError

    def flat(d: dict, prefix: str = "") -> dict:
        out: dict = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    p = out / paths.FRAMES_PROVENANCE
    check_frames_directory(out)
    record = json.loads(json.dumps(record))  # as it reads back (tuples become lists)
    if p.exists() and not overwrite:
        old = json.loads(p.read_text())
        if old != record:
            a, b = flat(old), flat(record)
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise SurveyMassError(
                f"mock frames {str(out)!r}: made with another {', '.join(diff)}; use another directory or "
                "--overwrite"
            )
    tmp = paths.frame_temp_file(p)
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, p)


def build_mock_frames(
    footprint,
    out: str | Path,
    *,
    candidates: pd.DataFrame | None = None,
    config=None,
    layout: FrameLayout = DEFAULT_LAYOUT,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    client=None,
    compressed: bool = True,
) -> dict:
    """Render the SDSS frames of the clusters :func:`~survey_mass.mock.survey.build_mock_store` puts in a store
    of ``footprint`` (same candidates, same config), into the directory ``out``; resumes an interrupted build.

    Writes ``frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2`` for every field some cluster's cutout touches
    and ``candidates.parquet``; with ``compressed=False`` the frames are plain ``.fits`` (bz2 is most of a
    frame's cost, which a quick closure test need not pay). Returns a summary: fields and frames, rendered and skipped, wall time, frames/s
    and MB per frame.
    """
    from ..engine import Task, fan_out
    from . import physics
    from .survey import MockConfig

    cfg = config or MockConfig()
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    physics.grids(cfg.physics.cosmology)
    clusters, cfg = _plan_clusters(footprint, cfg, candidates)
    record = {
        "config": cfg.provenance(),
        "layout": {
            k: getattr(layout, k) for k in ("nx", "ny", "overlap_rows", "overlap_cols", "pixel_scale")
        },
        "footprint": footprint.name,
    }
    if not compressed:  # (absent for bz2, so that directories built before it was an option still resume)
        record["compressed"] = False
    _check_provenance(out, record, overwrite)
    _write_candidates(clusters, out)
    if not len(clusters):
        fields, pos, which = [], np.zeros(0, int), np.zeros(0, int)
    else:
        fields, pos, which = touched_fields(
            clusters["ra"], clusters["dec"], layout, size=cfg.cutout_size, pixel_scale=cfg.pixel_scale_arcsec
        )
    # the scenes each field holds: every cluster within reach of its area (the scene's margin and wings)
    tasks = []
    if fields:
        from scipy.spatial import cKDTree

        v = _unit(clusters["ra"].to_numpy(float), clusters["dec"].to_numpy(float))
        scene_reach = (cfg.cutout_size / 2.0 + 4 + SCENE_PAD) * cfg.pixel_scale_arcsec / layout.pixel_scale
        scene_reach *= np.sqrt(2)
        radius = np.radians((np.hypot(layout.nx, layout.ny) / 2 + scene_reach) * layout.pixel_deg)
        tree = cKDTree(v)
        centres = _unit(np.array([f.ra for f in fields]), np.array([f.dec for f in fields]))
        for f, near in zip(fields, tree.query_ball_point(centres, 2 * np.sin(radius / 2)), strict=True):
            # the clusters near the field (on the sphere), then those whose scene reaches its pixels
            near = np.sort(np.asarray(near, dtype=np.int64))
            x, y = f.world_to_pixel(v[near])
            inside = (x > -scene_reach) & (x < layout.nx - 1 + scene_reach)
            inside &= (y > -scene_reach) & (y < layout.ny - 1 + scene_reach)
            sub = clusters.iloc[near[inside]].reset_index(drop=True)
            tasks.append(Task(f.key, float(len(sub)), (cfg, f, sub, str(out), compressed, overwrite)))

    by_key = {f.key: f for f in fields}

    def done(key: int) -> bool:
        return not overwrite and all(
            (out / by_key[key].file_name(b, compressed=compressed)).exists() for b in BANDS
        )

    res = fan_out(
        tasks,
        _write_field,
        is_done=done,
        workers=workers,
        client=client,
        device="cpu",
        progress=progress,
        desc="mock frames",
        unit="field",
        retries=2,
        cleanup=lambda: _remove_temporaries(out),
        key_prefix="mock-frame",
    )
    wall = time.perf_counter() - t0
    n_frames = len(res) * len(BANDS)
    written = sum(r["bytes"] for r in res)
    render_s = sum(r["seconds"] for r in res)
    return {
        "frames_dir": str(out),
        "clusters": len(clusters),
        "fields": len(fields),
        "frames": len(fields) * len(BANDS),
        "fields_rendered": len(res),
        "fields_skipped": len(res.skipped),
        "cutout_field_pairs": len(pos),
        "wall_s": round(wall, 1),
        "frames_per_s": round(n_frames / wall, 2) if n_frames and wall > 0 else None,
        "seconds_per_field": round(render_s / len(res), 2) if len(res) else None,
        "mb_per_frame": round(written / n_frames / 1e6, 2) if n_frames else None,
        "candidates": str(out / paths.FRAMES_CANDIDATES),
    }


def _remove_temporaries(out: Path) -> None:
    for p in paths.frame_temporaries(out):
        p.unlink(missing_ok=True)
