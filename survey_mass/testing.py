"""Public test helpers: seeded fake-data generators and assertions about stores (and, later, catalogs).

Use them in your own pipeline tests::

    from survey_mass.testing import write_fake_sdss_frames, assert_store_valid
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .photometry import BANDS, SDSS_PIXEL_SCALE


def sdss_frame_header(ra0: float, dec0: float, band: str, *, nx: int, ny: int, rotation_deg: float = 0.0):
    """A FITS header following SDSS corrected-frame conventions: TAN WCS with a CD matrix, BUNIT nanomaggy."""
    from astropy.io import fits

    s = SDSS_PIXEL_SCALE / 3600.0
    t = np.radians(rotation_deg)
    h = fits.Header()
    h["FILTER"] = band
    h["BUNIT"] = "nanomaggy"
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = ra0, dec0
    h["CRPIX1"], h["CRPIX2"] = (nx + 1) / 2.0, (ny + 1) / 2.0
    # SDSS frames are not north-up: rows run along the scan; the CD matrix carries the rotation
    h["CD1_1"], h["CD1_2"] = -s * np.cos(t), s * np.sin(t)
    h["CD2_1"], h["CD2_2"] = s * np.sin(t), s * np.cos(t)
    h["RADESYS"], h["EQUINOX"] = "ICRS", 2000.0
    h["EXPTIME"] = 53.907456
    return h


def write_fake_sdss_frames(
    directory: str | Path,
    *,
    ra0: float = 150.0,
    dec0: float = 2.0,
    sources: list[tuple[float, float, float]] | None = None,
    nx: int = 600,
    ny: int = 500,
    n_fields: int = 2,
    overlap: int = 64,
    rotation_deg: float = 12.0,
    sky_sigma: float = 0.02,
    bands: tuple[str, ...] = BANDS,
    seed: int = 0,
) -> list[Path]:
    """Write small SDSS-like corrected frames (``frame-{band}-{run}-{camcol}-{field}.fits``) with point sources.

    Fields are stacked along Dec with ``overlap`` shared rows (as SDSS fields are). ``sources`` are
    (ra, dec, flux in nanomaggies) drawn with a 1.4" Gaussian PSF. Returns the paths written.
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = sources or []
    sigma_pix = 1.4 / 2.3548 / SDSS_PIXEL_SCALE
    written = []
    step_deg = (ny - overlap) * SDSS_PIXEL_SCALE / 3600.0
    for f in range(n_fields):
        dec_c = dec0 + (f - (n_fields - 1) / 2) * step_deg
        for band in bands:
            h = sdss_frame_header(ra0, dec_c, band, nx=nx, ny=ny, rotation_deg=rotation_deg)
            w = WCS(h)
            img = rng.normal(0, sky_sigma, (ny, nx)).astype(np.float32)
            yy, xx = np.mgrid[0:ny, 0:nx]
            for ra, dec, flux in sources:
                x, y = w.all_world2pix([[ra, dec]], 0)[0]
                if -20 < x < nx + 20 and -20 < y < ny + 20:
                    img += (
                        flux
                        / (2 * np.pi * sigma_pix**2)
                        * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sigma_pix**2)
                    ).astype(np.float32)
            p = directory / f"frame-{band}-001000-3-{100 + f:04d}.fits"
            fits.PrimaryHDU(img, header=h).writeto(p, overwrite=True)
            written.append(p)
    return written


def assert_store_valid(path: str | Path) -> None:
    """Assert a store follows the contract: attributes, every partition's arrays, unique ids, finite coordinates."""
    from .store import open_store

    st = open_store(path)
    seen: set[int] = set()
    for p in st.partitions:
        n = st.check_partition(p)
        cols = st.columns(p)
        ids = cols["id"].tolist()
        assert len(ids) == n, f"partition {p}: {len(ids)} ids for {n} images"
        assert not (seen & set(ids)), f"partition {p}: ids repeated across partitions"
        seen |= set(ids)
        assert np.isfinite(cols["ra"]).all() and np.isfinite(cols["dec"]).all(), (
            f"partition {p}: bad coordinates"
        )
        from .footprint import partition_of

        assert (partition_of(cols["ra"], cols["dec"], st.order) == p).all(), (
            f"partition {p}: rows outside the pixel"
        )
