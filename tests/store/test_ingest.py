import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from survey_mass.errors import IngestError
from survey_mass.quality import Quality
from survey_mass.store import open_store
from survey_mass.store.ingest import cutout_wcs, ingest_frames
from survey_mass.testing import assert_store_valid, write_fake_sdss_frames

RA0, DEC0 = 150.0, 2.0
PIX = 6.336  # the shipped model's pixels: a store's geometry is its model's


def _candidates(tmp_path, rows):
    p = tmp_path / "cands.csv"
    pd.DataFrame(rows, columns=["id", "ra", "dec", "z"]).to_csv(p, index=False)
    return p


def test_cutout_recovers_injected_source_positions(tmp_path):
    # a candidate at the frame centre, with two point sources offset from it; one candidate sits on the seam
    # between the two fields, so its cutout is mosaicked from both frames
    seam_dec = DEC0
    sources = [
        (RA0 + 0.004, DEC0 + 0.006, 200.0),
        (RA0 - 0.009, DEC0 - 0.003, 120.0),
        (RA0 + 0.02, seam_dec + 0.0025, 150.0),
    ]
    write_fake_sdss_frames(tmp_path / "frames", ra0=RA0, dec0=DEC0, sources=sources, nx=1400, ny=1100, seed=1)
    cands = _candidates(tmp_path, [(1, RA0, DEC0 + 0.004, 0.2), (2, RA0 + 0.02, seam_dec, 0.3)])
    summary = ingest_frames(tmp_path / "frames", cands, tmp_path / "real.zarr", progress=False)
    assert summary["cutouts"] == 2
    assert_store_valid(tmp_path / "real.zarr")
    st = open_store(tmp_path / "real.zarr")
    for cid, (ra_c, dec_c) in ((1, (RA0, DEC0 + 0.004)), (2, (RA0 + 0.02, seam_dec))):
        img, row = st.read_by_id(cid)
        w = cutout_wcs(ra_c, dec_c, 64, PIX)
        for ra, dec, flux in sources:
            x, y = w.all_world2pix([[ra, dec]], 0)[0]
            if not (4 < x < 59 and 4 < y < 59):
                continue
            for b in range(5):
                ix, iy = int(round(x)), int(round(y))
                stamp = img[b, iy - 3 : iy + 4, ix - 3 : ix + 4]
                yy, xx = np.mgrid[iy - 3 : iy + 4, ix - 3 : ix + 4]
                s = stamp.sum()
                cx, cy = (stamp * xx).sum() / s, (stamp * yy).sum() / s
                assert np.hypot(cx - x, cy - y) < 1.0, (cid, b, cx, cy, x, y)
                assert s == pytest.approx(flux, rel=0.1)  # flux-conserving resampling


def test_edge_candidate_is_flagged_with_nan(tmp_path):
    write_fake_sdss_frames(
        tmp_path / "frames", ra0=RA0, dec0=DEC0, n_fields=1, nx=400, ny=400, rotation_deg=0
    )
    edge_ra = RA0 + 200 * 0.396 / 3600  # the frame's east edge
    cands = _candidates(tmp_path, [(1, RA0, DEC0, 0.2), (2, edge_ra, DEC0, 0.2), (3, RA0 + 5, DEC0, 0.2)])
    s = ingest_frames(tmp_path / "frames", cands, tmp_path / "s.zarr", progress=False)
    assert s["outside"] == 1 and s["cutouts"] == 2
    st = open_store(tmp_path / "s.zarr")
    img, row = st.read_by_id(2)
    assert row["quality"] & Quality.EDGE and row["quality"] & Quality.NAN_PIXELS
    assert np.isnan(img).any() and np.isfinite(img).any()


def test_bz2_frames_as_sdss_serves_them_give_the_plain_frames_store(tmp_path):
    """Real SDSS corrected frames come as .fits.bz2: the same frames compressed give the same store; a directory
    holding both copies of one frame is refused, naming both."""
    import bz2
    import shutil

    write_fake_sdss_frames(tmp_path / "plain", ra0=RA0, dec0=DEC0, n_fields=1, nx=400, ny=400, seed=2)
    packed = tmp_path / "packed"
    packed.mkdir()
    for f in sorted((tmp_path / "plain").glob("frame-*.fits")):
        (packed / f"{f.name}.bz2").write_bytes(bz2.compress(f.read_bytes(), 9))
    cands = _candidates(tmp_path, [(1, RA0, DEC0, 0.2)])
    ingest_frames(tmp_path / "plain", cands, tmp_path / "a.zarr", progress=False)
    ingest_frames(packed, cands, tmp_path / "b.zarr", progress=False)
    a, b = open_store(tmp_path / "a.zarr").read_by_id(1)[0], open_store(tmp_path / "b.zarr").read_by_id(1)[0]
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).mean() > 0.1  # the frame covers the cutout's middle (its pixels are compared)
    one = sorted((tmp_path / "plain").glob("frame-r-*.fits"))[0]
    shutil.copy(one, packed / one.name)
    with pytest.raises(IngestError, match=f"{one.name}.* two copies of one frame"):
        ingest_frames(packed, cands, tmp_path / "c.zarr", progress=False)


def _one_frame(tmp_path, **kw):
    write_fake_sdss_frames(tmp_path / "frames", ra0=RA0, dec0=DEC0, n_fields=1, nx=200, ny=200, **kw)
    return tmp_path / "frames"


def test_missing_band_is_refused(tmp_path):
    d = _one_frame(tmp_path, bands=("g", "r", "i", "z"))
    with pytest.raises(IngestError, match="no frame for band.* u"):
        ingest_frames(d, _candidates(tmp_path, [(1, RA0, DEC0, 0.2)]), tmp_path / "s.zarr", progress=False)


def test_wrong_bunit_is_refused(tmp_path):
    d = _one_frame(tmp_path)
    f = sorted(d.glob("frame-r-*.fits"))[0]
    with fits.open(f, mode="update") as h:
        h[0].header["BUNIT"] = "DN"
    with pytest.raises(IngestError, match=f"{f.name}.*BUNIT"):
        ingest_frames(d, _candidates(tmp_path, [(1, RA0, DEC0, 0.2)]), tmp_path / "s.zarr", progress=False)


def test_frame_without_wcs_is_refused(tmp_path):
    d = _one_frame(tmp_path)
    f = sorted(d.glob("frame-g-*.fits"))[0]
    with fits.open(f, mode="update") as h:
        for k in ("CTYPE1", "CTYPE2"):
            del h[0].header[k]
    with pytest.raises(IngestError, match=f"{f.name}.*no WCS"):
        ingest_frames(d, _candidates(tmp_path, [(1, RA0, DEC0, 0.2)]), tmp_path / "s.zarr", progress=False)


def _survey(tmp_path, n_fields=3):
    """Fake frames of n_fields fields and 6 candidates spread over them (in 2+ partitions at order 8)."""
    write_fake_sdss_frames(
        tmp_path / "frames", ra0=RA0, dec0=DEC0, n_fields=n_fields, nx=1100, ny=900, rotation_deg=0, seed=3
    )
    rows = [(k + 1, RA0 + 0.02 * (k % 2), DEC0 + 0.035 * (k // 2 - 1), 0.2) for k in range(6)]
    return tmp_path / "frames", _candidates(tmp_path, rows)


def test_frame_index_is_built_once_and_refreshed_for_new_frames(tmp_path):
    from survey_mass.paths import frame_index_file

    frames, cands = _survey(tmp_path)
    a = ingest_frames(frames, cands, tmp_path / "a.zarr", progress=False)
    assert a["frames_indexed"] == 15 and a["frame_index_reused"] == 0
    assert frame_index_file(tmp_path / "a.zarr").is_file()
    b = ingest_frames(frames, cands, tmp_path / "a.zarr", progress=False)
    assert (
        b["frames_indexed"] == 0
        and b["frame_index_reused"] == 15
        and b["partitions_skipped"] == a["partitions"]
    )
    extra = write_fake_sdss_frames(tmp_path / "more", ra0=RA0, dec0=DEC0 + 0.5, n_fields=1, nx=200, ny=200)
    for p in extra:
        p.rename(frames / p.name.replace("-0100.", "-0900."))
    c = ingest_frames(frames, cands, tmp_path / "a.zarr", progress=False)
    assert c["frames_indexed"] == 5 and c["frame_index_reused"] == 15
    assert c["partitions_skipped"] == a["partitions"]  # the new field touches no candidate: nothing to recut
    # a frame under the candidates replaced: the partitions built from it are cut again, with its pixels
    f = sorted(frames.glob("frame-r-*-0101.fits"))[0]
    with fits.open(f, mode="update") as h:
        h[0].data = h[0].data + np.float32(1.0)
    d = ingest_frames(frames, cands, tmp_path / "a.zarr", progress=False)
    assert d["frames_indexed"] == 1 and d["partitions_skipped"] == 0
    st = open_store(tmp_path / "a.zarr")
    img, _ = st.read_by_id(5)  # at the centre of field 0101
    assert np.nanmedian(img[2]) > 100  # +1 nmgy per native pixel is +256 per store pixel


def test_an_interrupted_ingest_resumes_to_the_uninterrupted_store(tmp_path, monkeypatch):
    import survey_mass.store.ingest as ingest

    frames, cands = _survey(tmp_path)
    ref = ingest_frames(frames, cands, tmp_path / "ref.zarr", order=8, progress=False)
    real, calls = ingest._ingest_partition, []

    def dies_on_the_second(*args):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt  # a killed run, mid-plan
        return real(*args)

    monkeypatch.setattr(ingest, "_ingest_partition", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        ingest_frames(frames, cands, tmp_path / "s.zarr", order=8, progress=False)
    monkeypatch.setattr(ingest, "_ingest_partition", real)
    again = ingest_frames(frames, cands, tmp_path / "s.zarr", order=8, progress=False)
    assert ref["partitions"] >= 2 and again["partitions_skipped"] == 1 and again["cutouts"] == ref["cutouts"]
    assert not list((tmp_path / "s.zarr").rglob(".tmp-*"))
    a, b = open_store(tmp_path / "ref.zarr"), open_store(tmp_path / "s.zarr")
    assert a.partitions == b.partitions
    for p in a.partitions:
        np.testing.assert_array_equal(a.images(p), b.images(p))
        np.testing.assert_array_equal(a.columns(p)["id"], b.columns(p)["id"])


def test_a_geometry_other_than_the_models_is_refused_naming_both(tmp_path):
    frames, cands = _survey(tmp_path, n_fields=1)
    with pytest.raises(IngestError, match=r"pixel scale 3\.168.*6\.336"):
        ingest_frames(frames, cands, tmp_path / "s.zarr", pixel_scale=3.168, progress=False)
    with pytest.raises(IngestError, match=r"cutout size 32 px.*64 px"):
        ingest_frames(frames, cands, tmp_path / "s.zarr", cutout_size=32, progress=False)


def test_the_affine_map_from_frame_to_cutout_pixels_is_the_wcs_map():
    """The fast path maps frame pixels to cutout pixels as the two WCSs do, to 1e-3 pixel, on a rotated frame."""
    from astropy.wcs import WCS

    from survey_mass.store.ingest import frame_to_cutout
    from survey_mass.testing import sdss_frame_header

    frame = WCS(sdss_frame_header(RA0, DEC0, "r", nx=2048, ny=1489, rotation_deg=30.0))
    target = cutout_wcs(RA0 + 0.05, DEC0 - 0.03, 64, PIX)
    rng = np.random.default_rng(0)
    box = (300, 1400, 100, 1300)
    x, y = rng.uniform(300, 1400, 5000), rng.uniform(100, 1300, 5000)
    fast = np.stack(frame_to_cutout(frame, target, x, y, box))
    exact = np.stack(target.all_world2pix(*frame.all_pix2world(x, y, 0), 0))
    assert np.abs(fast - exact).max() < 1e-3
