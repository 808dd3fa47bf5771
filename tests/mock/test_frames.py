"""Mock SDSS frames (``survey-mass mock --frames``): the direct store's scenes at native pixels.

Small frames (512 x 400 pixels, the same design) and small cutouts (16 x 6.336") keep the tests fast: two
clusters, one at the centre of a field, touch a handful of fields.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from survey_mass import paths
from survey_mass.photometry import BANDS, mag_to_nmgy

#: small frames of the SDSS design (stripes 12 x 472 pixels wide)
LAYOUT_KW = {"nx": 512, "ny": 400, "overlap_rows": 64, "overlap_cols": 40}
SEED = 11
SIZE = 16  # store pixels per cutout side (the shipped model's 64 makes each cutout touch ~20 of these fields)
BIN = 16  # native 0.396" pixels per 6.336" store pixel, each way


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A direct store and the frames of the same two clusters, same seed."""
    from survey_mass.candidates import load_redmapper
    from survey_mass.footprint import parse_footprint
    from survey_mass.mock.frames import FrameLayout, build_mock_frames, touched_fields
    from survey_mass.mock.survey import MockConfig, build_mock_store

    layout = FrameLayout(**LAYOUT_KW)
    first = touched_fields([150.3], [2.3], layout, size=SIZE)[0][0]
    cat = load_redmapper()
    cands = cat[(cat.richness > 40) & (cat.z > 0.15) & (cat.z < 0.3)].iloc[:2].copy()
    # cluster 0 at a field's centre; cluster 1 far enough that the two cutouts share no field
    cands["ra"] = [first.ra, first.ra + 0.6]
    cands["dec"] = [first.dec, first.dec + 0.4]
    fp = parse_footprint(f"box:{first.ra - 1:.3f},{first.ra + 1:.3f},{first.dec - 1:.3f},{first.dec + 1:.3f}")
    cfg = MockConfig(seed=SEED, cutout_size=SIZE)
    root = tmp_path_factory.mktemp("frames")
    store = root / "direct.zarr"
    build_mock_store(fp, store, candidates=cands, config=cfg, workers=1, progress=False)
    frames = root / "frames"
    summary = build_mock_frames(fp, frames, candidates=cands, config=cfg, layout=layout, progress=False)
    return {"store": store, "frames": frames, "summary": summary, "cands": cands, "layout": layout, "fp": fp}


def _store_rows(store) -> pd.DataFrame:
    from survey_mass.store import open_store

    st = open_store(store)
    return pd.concat([pd.DataFrame(st.columns(p)) for p in st.partitions], ignore_index=True)


def _frame_files(d):
    return sorted(p for p in d.iterdir() if p.name.startswith("frame-"))


def test_frames_are_named_and_headed_as_sdss_and_readable_by_ingest(built):
    from astropy.io import fits

    from survey_mass.store.ingest import read_frame_header

    files = _frame_files(built["frames"])
    assert files and len(files) == built["summary"]["frames"] == 5 * built["summary"]["fields"]
    lay = built["layout"]
    for p in files:
        m = re.fullmatch(r"frame-([ugriz])-(\d{6})-([1-6])-(\d{4})\.fits\.bz2", p.name)
        assert m, p.name
        fr = read_frame_header(p)
        assert fr.band == m.group(1) and fr.shape == (lay.ny, lay.nx)
        h = fits.getheader(p)
        assert (h["RUN"], h["CAMCOL"], h["FIELD"]) == (int(m.group(2)), int(m.group(3)), int(m.group(4)))
        assert h["BUNIT"] == "nanomaggy" and h["FILTER"] == m.group(1) and h["NMGY"] > 0
        assert h["CTYPE1"] == "RA---TAN" and "CD1_2" in h and h["EXPTIME"] > 53
        assert h["SKY"] > 0 and h["SKYSIG"] > 0 and h["STRIP"] in ("N", "S")
        # rows run along the scan: the pixel scale is SDSS's, the frame not north-up in general
        assert abs(np.sqrt(abs(np.linalg.det(fr.wcs.pixel_scale_matrix))) * 3600 - 0.396) < 1e-6
    assert not list(built["frames"].glob(f"{paths.TEMP_PREFIX}*"))


def _cutout_samples(ra, dec, n=33):
    """Sky positions filling a cluster's cutout, edges included (the ingest's cutout WCS)."""
    from survey_mass.store.ingest import cutout_wcs

    w = cutout_wcs(ra, dec, SIZE, 6.336)
    t = np.linspace(-0.5, SIZE - 0.5, n)
    xx, yy = np.meshgrid(t, t)
    return w.all_pix2world(xx.ravel(), yy.ravel(), 0)


def test_only_the_fields_the_cutouts_touch_are_rendered(built):
    from astropy.io import fits
    from astropy.wcs import WCS

    from survey_mass.mock.frames import FIRST_FIELD, Field

    lay = built["layout"]
    samples = [_cutout_samples(r, d) for r, d in zip(built["cands"].ra, built["cands"].dec, strict=True)]

    def touches(wcs):
        for ra, dec in samples:
            x, y = wcs.all_world2pix(ra, dec, 0)
            if ((x > -0.5) & (x < lay.nx - 0.5) & (y > -0.5) & (y < lay.ny - 0.5)).any():
                return True
        return False

    rendered = {
        (h["RUN"], h["CAMCOL"], h["FIELD"]): h for h in map(fits.getheader, built["frames"].glob("frame-r-*"))
    }
    assert all(touches(WCS(h)) for h in rendered.values())
    # the next and previous fields of every rendered one, when not rendered, do not touch any cutout
    for h in rendered.values():
        k = 2 * (h["CAMCOL"] - 1) + "NS".index(h["STRIP"])
        for step in (-1, 1):
            f = Field.make(lay, h["STRIPE"], k, h["FIELD"] + step - FIRST_FIELD)
            if (f.run, f.camcol, f.field) not in rendered:
                assert not touches(WCS(f.header("r")))
    # two clusters far apart: each cutout touches its own few fields
    assert 2 <= len(rendered) <= 12


def test_candidates_parquet_holds_every_cluster_of_the_direct_store(built):
    from survey_mass.candidates import read_candidates

    cands = read_candidates(built["frames"] / paths.FRAMES_CANDIDATES)
    direct = _store_rows(built["store"])
    assert sorted(cands["id"]) == sorted(direct["id"])
    raw = pd.read_parquet(built["frames"] / paths.FRAMES_CANDIDATES).set_index("id").loc[direct["id"]]
    np.testing.assert_allclose(raw["log10_m500_true"], direct["log10_m500_true"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(raw["richness"], direct["richness"], rtol=1e-6)
    np.testing.assert_allclose(raw["z"], direct["z"], rtol=1e-6)


def _centre_field(built):
    """The field holding cluster 0 at its centre, and its noisy r/i frames' data."""
    from survey_mass.mock.frames import touched_fields

    c = built["cands"].iloc[0]
    fields, _, _ = touched_fields([c.ra], [c.dec], built["layout"], size=SIZE)
    f = min(fields, key=lambda g: np.hypot(g.ra - c.ra, g.dec - c.dec))
    return f, c


def test_the_central_galaxy_lands_where_the_wcs_says(built):
    from astropy.io import fits

    from survey_mass.store.ingest import read_frame_header

    f, c = _centre_field(built)
    p = built["frames"] / f.file_name("i")
    wcs = read_frame_header(p).wcs
    x, y = wcs.all_world2pix([[c.ra, c.dec]], 0)[0]
    img = fits.getdata(p).astype(float)
    xi, yi = int(round(x)), int(round(y))
    win = img[yi - 8 : yi + 9, xi - 8 : xi + 9]
    py, px = np.unravel_index(np.argmax(win), win.shape)
    assert abs(px - 8 + xi - x) <= 1.0 and abs(py - 8 + yi - y) <= 1.0


def _noise_free(built, f):
    """The field's noise-free render and the direct renderer's noise-free cutout of cluster 0 (one scene)."""
    from survey_mass.mock import render
    from survey_mass.mock.frames import _plan_clusters, render_field
    from survey_mass.mock.survey import MockConfig, cluster_scene

    cfg = MockConfig(seed=SEED, cutout_size=SIZE)
    clusters, cfg = _plan_clusters(built["fp"], cfg, built["cands"])
    img, info = render_field(f, clusters, cfg, noise=False)
    row = clusters.set_index("id").loc[int(built["cands"].iloc[0]["id"])]
    sc = cluster_scene({**row.to_dict(), "id": int(row.name)}, cfg, float(row["gal_b"]))
    direct = render.render_bands(
        sc.x, sc.y, mag_to_nmgy(np.clip(sc.mags, 5, 35)), sc.re_arcsec, sc.sersic_n, BANDS, SIZE, 6.336,
        cfg.physics, psf_fwhm=sc.conditions.psf_fwhm,
    )  # fmt: skip
    return img, direct, sc, cfg, clusters


def _cutout_coords(f, c, shape):
    """Each frame pixel's position in cluster c's cutout pixels (the ingest's cutout WCS)."""
    from astropy.wcs import WCS

    from survey_mass.store.ingest import cutout_wcs

    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    ra, dec = WCS(f.header("r")).all_pix2world(xx.ravel(), yy.ravel(), 0)
    u, v = cutout_wcs(c.ra, c.dec, SIZE, 6.336).all_world2pix(ra, dec, 0)
    return u.reshape(shape), v.reshape(shape)


def test_frame_flux_matches_the_direct_cutout_and_the_stored_scene(built):
    f, c = _centre_field(built)
    img, direct, sc, cfg, _ = _noise_free(built, f)
    u, v = _cutout_coords(f, c, img.shape[1:])
    # the central 8 x 8 store pixels (128 x 128 native pixels): the same light
    mid = (SIZE - 1) / 2
    sq = (np.abs(u - mid) < 4) & (np.abs(v - mid) < 4)
    frame_flux = img[:, sq].sum(axis=1)
    lo = SIZE // 2 - 4
    direct_flux = direct[:, lo : lo + 8, lo : lo + 8].sum(axis=(1, 2))
    np.testing.assert_allclose(frame_flux, direct_flux, rtol=0.03)
    # and the direct store's cutout is that scene plus noise
    from survey_mass.store import open_store

    st = open_store(built["store"])
    for p in st.partitions:
        ids = list(st.columns(p)["id"])
        if int(c["id"]) in ids:
            stored = st.images(p)[ids.index(int(c["id"]))]
    cols = st.columns(p)
    sigma = np.array([cols[f"obs_sky_sigma_{band}"][ids.index(int(c["id"]))] for band in BANDS])
    gain = np.array([cfg.physics.render.nmgy_per_electron[band] for band in BANDS])
    z = (stored - direct) / np.sqrt(
        sigma[:, None, None] ** 2 + np.clip(direct, 0, None) * gain[:, None, None]
    )
    assert abs(z.std() - 1) < 0.08 and np.abs(z).max() < 6


def test_sky_noise_binned_16x16_is_the_direct_stores(built):
    from astropy.io import fits

    f, c = _centre_field(built)
    img, _, _, cfg, _ = _noise_free(built, f)
    row = _store_rows(built["store"]).set_index("id").loc[int(c["id"])]
    u, v = _cutout_coords(f, c, img.shape[1:])
    # 16 x 16 native-pixel blocks of the frame lying inside cluster 0's cutout
    ny, nx = (n // BIN * BIN for n in img.shape[1:])

    def binned(a):
        return a[:ny, :nx].reshape(ny // BIN, BIN, nx // BIN, BIN).sum(axis=(1, 3))

    inside = binned(((u > -0.5) & (u < SIZE - 0.5) & (v > -0.5) & (v < SIZE - 0.5)).astype(int)) == BIN * BIN
    ratios = []
    for b, band in enumerate(BANDS):
        noise = fits.getdata(built["frames"] / f.file_name(band)).astype(np.float64) - img[b]
        sigma = row[f"obs_sky_sigma_{band}"]
        # the sky's sigma, and the photon noise of the sources' light as in the direct store
        expected = np.sqrt(
            sigma**2 + np.clip(binned(img[b]), 0, None) * cfg.physics.render.nmgy_per_electron[band]
        )
        assert inside.sum() > 150
        ratios.append(binned(noise)[inside] / expected[inside])
        assert abs(ratios[-1].std() - 1) < 0.2, band
        # per native pixel: sigma x 0.396 / 6.336, the rounding to counts included
        pix = noise[(img[b] < 0.02 * sigma) & (u > -0.5) & (u < SIZE - 0.5) & (v > -0.5) & (v < SIZE - 0.5)]
        assert abs(pix.std() / (sigma / BIN) - 1) < 0.03, band
    assert abs(np.concatenate(ratios).std() - 1) < 0.06


def test_fields_of_a_run_share_their_overlapping_rows(built):
    from astropy.io import fits

    lay = built["layout"]
    names = {p.name for p in built["frames"].glob("frame-r-*")}
    pairs = 0
    for name in sorted(names):
        run, camcol, field = (int(v) for v in re.findall(r"\d+", name)[:3])
        nxt = paths.frame_file_name("r", run, camcol, field + 1)
        if nxt in names:
            a = fits.getdata(built["frames"] / name)[lay.ny - lay.overlap_rows :]
            b = fits.getdata(built["frames"] / nxt)[: lay.overlap_rows]
            assert np.mean(a == b) > 0.95  # the same pixels, noise included (sources move by ~0.03 pixel)
            pairs += 1
    assert pairs


def test_a_rerun_renders_nothing_and_removes_temporaries(built):
    from survey_mass.errors import SurveyMassError
    from survey_mass.mock.frames import build_mock_frames
    from survey_mass.mock.survey import MockConfig

    tmp = paths.frame_temp_file(built["frames"] / "frame-r-001000-1-0011.fits.bz2")  # a killed write's
    tmp.write_bytes(b"half")
    kw = {"candidates": built["cands"], "layout": built["layout"], "progress": False}
    again = build_mock_frames(
        built["fp"], built["frames"], config=MockConfig(seed=SEED, cutout_size=SIZE), **kw
    )
    assert again["fields_rendered"] == 0 and again["fields_skipped"] == built["summary"]["fields"]
    assert not tmp.exists()
    with pytest.raises(SurveyMassError, match="seed"):
        build_mock_frames(
            built["fp"], built["frames"], config=MockConfig(seed=SEED + 1, cutout_size=SIZE), **kw
        )


def test_cli_renders_the_frames_of_the_store_it_builds(tmp_path, capsys, monkeypatch):
    from survey_mass.mock import frames
    from survey_mass.testing import cli

    seen = {}

    def fake(fp, out, **kw):
        seen.update(kw, out=out, footprint=fp.name)
        return {
            "frames_dir": str(out), "frames": 10, "fields": 2, "clusters": 1, "fields_rendered": 2,
            "fields_skipped": 0, "wall_s": 1.0, "frames_per_s": 10.0, "mb_per_frame": 1.7,
            "candidates": f"{out}/{paths.FRAMES_CANDIDATES}",
        }  # fmt: skip

    monkeypatch.setattr(frames, "build_mock_frames", fake)
    cands = tmp_path / "c.csv"
    pd.DataFrame({"id": [7], "ra": [150.5], "dec": [2.5], "z": [0.2], "richness": [40.0]}).to_csv(
        cands, index=False
    )
    argv = [
        "mock",
        "--footprint",
        "box:150,151,2,3",
        "--out",
        tmp_path / "s.zarr",
        "--frames",
        tmp_path / "f",
    ]
    code, out, _ = cli([*argv, "--candidates", cands, "--seed", 3, "--workers", 1, "--no-progress"], capsys)
    assert code == 0 and "mock frames" in out and "10 frames of 2 fields" in out
    assert (
        seen["config"].seed == 3
        and list(seen["candidates"]["id"]) == [7]
        and seen["out"] == str(tmp_path / "f")
    )
