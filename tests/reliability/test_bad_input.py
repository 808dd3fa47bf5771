"""Bad input: each case gets a one-line message naming the thing and a non-zero exit, or, for a per-row
problem, a quality bit with the run completing. Everything goes through the command line, as a user would."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from survey_mass.quality import Quality
from survey_mass.testing import RUN_FOOTPRINT as FOOTPRINT
from survey_mass.testing import assert_one_line_error, catalog_files, cli, make_store, reseal_model

# --- footprints ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, words",
    [
        ("dr99", ["dr99", "unknown name"]),  # unknown footprint name
        ("box:150,150,0,5", ["empty"]),  # empty footprint
        ("box:0,400,0,10", ["RA_MAX"]),  # RA out of range
        ("box:0,10,-100,10", ["DEC_MIN"]),  # Dec out of range
    ],
    ids=["unknown-name", "empty", "ra-out-of-range", "dec-out-of-range"],
)
def test_bad_footprint(spec, words, capsys, tmp_path):
    code, _, err = cli(["footprint", spec], capsys)
    assert_one_line_error(code, err, *words)
    code, _, err = cli(["run", "--footprint", spec, "--out", tmp_path / "c", "--no-progress"], capsys)
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / "c").exists()


def test_moc_file_that_is_not_a_moc(tmp_path, capsys):
    bad = tmp_path / "region.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(bad)  # valid FITS, but no MOC in it
    code, _, err = cli(["footprint", bad], capsys)
    assert_one_line_error(code, err, str(bad), "not a MOC")
    txt = tmp_path / "notes.fits"
    txt.write_text("not FITS at all")
    code, _, err = cli(["footprint", txt], capsys)
    assert_one_line_error(code, err, str(txt), "not a MOC")


# --- candidate catalogs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "df, words",
    [
        (pd.DataFrame({"ra": [150.5], "z": [0.2]}), ["missing column", "dec"]),
        (pd.DataFrame({"ra": [150.5, np.nan], "dec": [0.5, 0.5], "z": [0.2, 0.2]}), ["row 1", "NaN"]),
        (pd.DataFrame({"ra": [150.5, 361.0], "dec": [0.5, 0.5], "z": [0.2, 0.2]}), ["row 1", "RA outside"]),
        (
            pd.DataFrame({"id": [7, 7], "ra": [150.5, 150.6], "dec": [0.5, 0.5], "z": [0.2, 0.2]}),
            ["row 1", "duplicate id 7"],
        ),
    ],
    ids=["missing-columns", "nan-coordinates", "out-of-range-coordinates", "duplicate-ids"],
)
def test_bad_candidate_catalog(df, words, tmp_path, capsys):
    f = tmp_path / "candidates.csv"
    df.to_csv(f, index=False)
    code, _, err = cli(
        [
            "mock",
            "--footprint",
            "box:150,151,0,1",
            "--candidates",
            f,
            "--out",
            tmp_path / "s.zarr",
            "--no-progress",
        ],
        capsys,
    )
    assert_one_line_error(code, err, str(f), *words)
    assert not (tmp_path / "s.zarr").exists()


# --- SDSS frames ------------------------------------------------------------------------------------------------


def _frames(tmp_path, **kw):
    from survey_mass.testing import write_fake_sdss_frames

    write_fake_sdss_frames(tmp_path / "frames", ra0=180.0, dec0=10.0, n_fields=1, nx=200, ny=200, **kw)
    cands = tmp_path / "cands.csv"
    pd.DataFrame({"id": [1], "ra": [180.0], "dec": [10.0], "z": [0.2]}).to_csv(cands, index=False)
    return tmp_path / "frames", cands


def test_frames_missing_band(tmp_path, capsys):
    frames, cands = _frames(tmp_path, bands=("g", "r", "i", "z"))
    code, _, err = cli(
        ["ingest", "--frames", frames, "--candidates", cands, "--out", tmp_path / "s.zarr"], capsys
    )
    assert_one_line_error(code, err, "band", "u")


def test_frames_wrong_bunit(tmp_path, capsys):
    frames, cands = _frames(tmp_path)
    f = sorted(frames.glob("frame-r-*.fits"))[0]
    with fits.open(f, mode="update") as h:
        h[0].header["BUNIT"] = "DN"
    code, _, err = cli(
        ["ingest", "--frames", frames, "--candidates", cands, "--out", tmp_path / "s.zarr"], capsys
    )
    assert_one_line_error(code, err, f.name, "BUNIT")


def test_frames_without_wcs(tmp_path, capsys):
    frames, cands = _frames(tmp_path)
    f = sorted(frames.glob("frame-g-*.fits"))[0]
    with fits.open(f, mode="update") as h:
        for k in ("CTYPE1", "CTYPE2"):
            del h[0].header[k]
    code, _, err = cli(
        ["ingest", "--frames", frames, "--candidates", cands, "--out", tmp_path / "s.zarr"], capsys
    )
    assert_one_line_error(code, err, f.name, "no WCS")


# --- stores ---------------------------------------------------------------------------------------------------------


def _run(store, out, capsys, *extra):
    return cli(
        [
            "run",
            "--store",
            store,
            "--footprint",
            FOOTPRINT,
            "--out",
            out,
            "--workers",
            "1",
            "--no-progress",
            *extra,
        ],
        capsys,
    )


def _rows(catalog):
    return pq.ParquetDataset(catalog_files(catalog)).read().to_pandas()


def test_truncated_shard_flags_rows_and_completes(tiny_store, tmp_path, capsys):
    shards = [f for f in (tiny_store / "Norder=2").rglob("images/c/**/*") if f.is_file()]
    assert shards
    for f in shards:
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 3])
    code, out, _ = _run(tiny_store, tmp_path / "cat", capsys, "--attribution", "none")
    assert code == 0
    df = _rows(tmp_path / "cat")
    assert len(df) == 16  # every row is there, flagged, with no mass
    assert (df.quality & int(Quality.UNREADABLE)).all() and df.log10_m500.isna().all()


def test_corrupted_shard_flags_rows_and_completes(tiny_store, tmp_path, capsys):
    shards = [f for f in (tiny_store / "Norder=2").rglob("images/c/**/*") if f.is_file()]
    for f in shards:
        data = bytearray(f.read_bytes())
        rng = np.random.default_rng(0)
        idx = rng.integers(0, len(data) - 200, 400)  # scribble over the compressed chunks
        for i in idx:
            data[i] ^= 0xFF
        f.write_bytes(bytes(data))
    code, _, _ = _run(tiny_store, tmp_path / "cat", capsys, "--attribution", "none")
    assert code == 0
    df = _rows(tmp_path / "cat")
    assert len(df) == 16
    bad = (df.quality & int(Quality.UNREADABLE)) != 0
    assert bad.any()
    assert df.log10_m500[bad].isna().all() and df.log10_m500[~bad].notna().all()


def test_missing_partition_group(tiny_store, tmp_path, capsys):
    import shutil

    group = next((tiny_store / "Norder=2").glob("Npix=*"))
    shutil.rmtree(group)
    code, _, err = _run(tiny_store, tmp_path / "cat", capsys)
    assert_one_line_error(code, err, str(tiny_store), group.name, "missing")


def test_wrong_schema_version(tiny_store, tmp_path, capsys):
    zj = tiny_store / "zarr.json"
    doc = json.loads(zj.read_text())
    doc["attributes"]["survey_mass"]["schema_version"] = 99
    zj.write_text(json.dumps(doc))
    code, _, err = _run(tiny_store, tmp_path / "cat", capsys)
    assert_one_line_error(code, err, str(tiny_store), "schema_version 99")


def test_not_a_store(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    code, _, err = _run(tmp_path / "plain", tmp_path / "cat", capsys)
    assert_one_line_error(code, err, str(tmp_path / "plain"), "not a Zarr")


def test_nan_pixels_and_all_zero_band_are_flagged_per_row(source_partition, tmp_path, capsys):
    p, images, cols = source_partition
    n = 12
    imgs = images[:n].copy()
    imgs[0, 2, 10:20, 10:20] = np.nan  # a masked patch: NaN pixels, mass still computed
    imgs[1, 4] = 0.0  # an all-zero z band
    imgs[2, 0] = np.nan  # a band entirely missing: no mass
    store = make_store(tmp_path / "s.zarr", p, imgs, {k: v[:n] for k, v in cols.items()})
    code, _, _ = _run(store, tmp_path / "cat", capsys, "--attribution", "none")
    assert code == 0
    df = _rows(tmp_path / "cat").set_index("id")
    ids = cols["id"][:n]
    assert df.loc[ids[0], "quality"] & int(Quality.NAN_PIXELS) and np.isfinite(df.loc[ids[0], "log10_m500"])
    assert df.loc[ids[1], "quality"] & int(Quality.ZERO_BAND)
    assert df.loc[ids[2], "quality"] & int(Quality.MISSING_BAND) and np.isnan(df.loc[ids[2], "log10_m500"])
    clean = df.loc[ids[3:]]
    assert (
        clean.quality & (int(Quality.NAN_PIXELS) | int(Quality.ZERO_BAND) | int(Quality.MISSING_BAND)) == 0
    ).all()
    assert clean.log10_m500.notna().all()


# --- model directories -----------------------------------------------------------------------------------------


def test_model_with_a_missing_file(tiny_store, model_copy, tmp_path, capsys):
    (model_copy / "heads.safetensors").unlink()
    code, _, err = _run(tiny_store, tmp_path / "cat", capsys, "--model", model_copy)
    assert_one_line_error(code, err, str(model_copy), "heads.safetensors is missing")


def test_model_with_another_band_order(tiny_store, model_copy, tmp_path, capsys):
    card = json.loads((model_copy / "model_card.json").read_text())
    card["bands"] = ["g", "r", "i", "z", "u"]
    (model_copy / "model_card.json").write_text(json.dumps(card))
    reseal_model(model_copy)  # a model saved for another band order (an edited card is refused by its id)
    code, _, err = _run(tiny_store, tmp_path / "cat", capsys, "--model", model_copy)
    assert_one_line_error(code, err, str(model_copy), "band order")


def test_model_with_another_cutout_size(tiny_store, model_copy, tmp_path, capsys):
    card = json.loads((model_copy / "model_card.json").read_text())
    card["input"]["cutout_size"] = 128
    (model_copy / "model_card.json").write_text(json.dumps(card))
    reseal_model(model_copy)
    code, _, err = _run(tiny_store, tmp_path / "cat", capsys, "--model", model_copy)
    assert_one_line_error(code, err, str(model_copy), "128-pixel")


class _Payload:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_weights_are_refused_and_never_run(tiny_store, model_copy, tmp_path, capsys):
    marker = tmp_path / "pwned"
    for name in ("backbone.safetensors", "heads.safetensors"):
        with open(model_copy / name, "wb") as f:
            pickle.dump({"weights": _Payload(marker)}, f)
    code, _, err = _run(tiny_store, tmp_path / "cat", capsys, "--model", model_copy)
    assert_one_line_error(code, err, str(model_copy), "not a safetensors file")
    assert not marker.exists(), "the pickle's code ran"


# --- outputs and other inputs ------------------------------------------------------------------------------


def test_output_that_exists_and_is_not_a_catalog(tiny_store, tmp_path, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    code, _, err = _run(tiny_store, out, capsys, "--overwrite")
    assert_one_line_error(code, err, str(out), "not a survey-mass catalog")
    assert (out / "chapter1.tex").read_text() == "precious"
    f = tmp_path / "file.txt"
    f.write_text("x")
    code, _, err = _run(tiny_store, f, capsys)
    assert_one_line_error(code, err, str(f), "not a directory")


def test_pipeline_file_that_does_not_validate(tmp_path, capsys):
    bad = tmp_path / "p.toml"
    bad.write_text('name = "x"\n[attribution]\nmode = "sometimes"\n')
    code, _, err = cli(["run", "--pipeline", bad, "--out", tmp_path / "c", "--no-progress"], capsys)
    assert_one_line_error(code, err, str(bad))


def test_bad_query_inputs(small_catalog, tmp_path, capsys):
    catalog, _ = small_catalog
    code, _, err = cli(["query", catalog, "--cone", "10", "95", "5"], capsys)
    assert_one_line_error(code, err, "Dec 95")
    code, _, err = cli(["query", catalog, "SELECT missing_column FROM catalog"], capsys)
    assert_one_line_error(code, err, "missing_column")
    code, _, err = cli(["query", tmp_path / "nothing"], capsys)
    assert_one_line_error(code, err, str(tmp_path / "nothing"))


def test_blank_sky_and_redshift_beyond_training_get_their_own_bits_and_no_mass(
    source_partition, tmp_path, capsys
):
    """Garbage in is said: a cutout of sky and field only gets NO_CLUSTER and no mass; a candidate at z = 0.9
    (beyond the shipped model's training redshifts) gets OUTSIDE_Z_RANGE and no mass; real clusters keep theirs."""
    from survey_mass.mock.survey import MockConfig, render_blank

    p, images, cols = source_partition
    n = 10
    imgs = images[:n].copy()
    cols = {k: np.asarray(v[:n]).copy() for k, v in cols.items()}
    cfg = MockConfig(seed=21)
    for k in range(3):  # blank fields at the candidates' own (low) redshifts
        imgs[k] = render_blank(cfg, 9000 + k, 60.0)
        cols["z"][k] = 0.15 + 0.05 * k
    cols["z"][3] = 0.9
    store = make_store(tmp_path / "s.zarr", p, imgs, cols)
    code, _, _ = _run(store, tmp_path / "cat", capsys, "--attribution", "none")
    assert code == 0
    df = _rows(tmp_path / "cat").set_index("id")
    ids = cols["id"]
    blank = df.loc[ids[:3]]
    assert (blank.quality & int(Quality.NO_CLUSTER) != 0).sum() >= 2  # ~93% of blank fields are flagged
    flagged = blank[blank.quality & int(Quality.NO_CLUSTER) != 0]
    assert flagged.log10_m500.isna().all() and flagged.log10_m500_lambda.isna().all()
    far = df.loc[ids[3]]
    assert far.quality & int(Quality.OUTSIDE_Z_RANGE) and np.isnan(far.log10_m500)
    real = df.loc[ids[4:]]
    assert (real.quality & (int(Quality.NO_CLUSTER) | int(Quality.OUTSIDE_Z_RANGE)) == 0).all()
    assert real.log10_m500.notna().all() and real.log10_m500_lambda.notna().all()
