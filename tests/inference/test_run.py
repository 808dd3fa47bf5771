import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from survey_mass import paths
from survey_mass.errors import SurveyMassError
from survey_mass.quality import Quality
from survey_mass.resources import model_dir
from survey_mass.selection import XraySelection
from survey_mass.store import open_store
from survey_mass.testing import catalog_files, read_catalog, run_small


def _read(cat):
    return read_catalog(cat)


def test_catalog_is_a_valid_hats_collection_and_lsdb_reads_it(small_catalog, small_store):
    import lsdb
    from hats.io.validation import is_valid_catalog, is_valid_collection

    cat, summary = small_catalog
    primary, margin = paths.primary_catalog(cat), paths.margin_catalog(cat, 60)
    assert is_valid_collection(str(cat), strict=True)
    assert is_valid_catalog(str(primary), strict=True) and is_valid_catalog(str(margin), strict=True)
    opened = lsdb.open_catalog(str(cat))
    assert opened.margin is not None and opened.margin.hc_structure.catalog_info.margin_threshold == 60
    df = opened.compute()
    st = open_store(small_store)
    store_ids = sorted(np.concatenate([st.columns(p)["id"] for p in st.partitions]).tolist())
    assert sorted(df["id"].tolist()) == store_ids == sorted(_read(cat)["id"].tolist())  # one row per cutout
    assert summary.rows == len(store_ids) and summary.margin_arcsec == 60
    # the margin: rows of other partitions, each one's copy identical to its primary row
    m = opened.margin.compute()
    assert summary.margin_rows == len(m) > 0 and set(m["id"]) <= set(store_ids)
    props = paths.hats_properties(primary).read_text()
    for key in (
        "hats_col_ra=ra",
        "hats_col_dec=dec",
        "survey_mass_model_card_sha256",
        "survey_mass_footprint",
        "survey_mass_store",
        "survey_mass_version",
    ):
        assert key in props
    # the columns shown first: the headline and the catalogue-lambda mass, never lambda-hat
    default = next(ln for ln in props.splitlines() if ln.startswith("hats_cols_default=")).split("=", 1)[1]
    shown = default.replace(",", " ").split()
    assert (
        shown[:5] == ["id", "name", "ra", "dec", "z"]
        and "log10_m500" in shown
        and "log10_m500_lambda" in shown
    )
    assert not any("richness" in c for c in shown)


def test_masses_errors_and_passthrough(small_catalog, small_store):
    cat, _ = small_catalog
    df = _read(cat)
    clean = (df["quality"] & ~int(Quality.OUT_OF_DISTRIBUTION)) == 0
    assert clean.all()
    # quality == 0 is the filter a user tries first: it keeps the rows with no problem, attributed or not
    assert (df["quality"] == 0).mean() >= 0.9
    # every row's mass splits exactly into the reference and its contributions (dex)
    contrib = df[[f"contrib_{g}" for g in (*"ugriz", "sky", "redshift", "richness")]].sum(axis=1)
    np.testing.assert_allclose(df["log10_m500_reference"] + contrib, df["log10_m500"], atol=1e-4)
    assert df["contrib_richness"].abs().max() > 0.05 and df["contrib_i"].abs().max() > 0.01
    assert df.loc[clean, "log10_m500"].notna().all() and df["log10_m500"].between(13, 16).all()
    parts = np.sqrt(
        df["log10_m500_err_aleatoric"] ** 2
        + df["log10_m500_err_fold"] ** 2
        + df["log10_m500_err_extrapolation"] ** 2
    )
    np.testing.assert_allclose(df["log10_m500_err"], parts, rtol=1e-5)
    # the extrapolation part: at most tau (times the error's factor at that mass, fitted on independent mocks),
    # largest for clusters far below the labels' flux limit
    card = json.loads((model_dir() / "model_card.json").read_text())
    tau, kmax = card["calibration"]["tau"], max(card["calibration"]["mass_factors"])
    extra = df["log10_m500_err_extrapolation"].to_numpy()
    assert (
        tau > 0 and np.all(extra >= 0) and np.all(extra <= kmax * tau + 1e-6) and np.median(extra) > 0.5 * tau
    )
    sel = XraySelection.from_dict(card["calibration"]["selection"])
    mu = df["log10_m500"].to_numpy()
    above = mu - sel.m_lim(
        df["z"].to_numpy(), df["label_flux_limit"].to_numpy()
    )  # each position's X-ray limit
    k = np.interp(mu, card["calibration"]["mass_nodes"], card["calibration"]["mass_factors"])
    assert np.corrcoef(np.argsort(np.argsort(above)), np.argsort(np.argsort(extra / k)))[0, 1] < -0.9
    st = open_store(small_store)
    truth = pd.concat(
        [
            pd.DataFrame({"id": st.columns(p)["id"], "t": st.columns(p)["log10_m500_true"]})
            for p in st.partitions
        ]
    ).sort_values("id")
    np.testing.assert_array_equal(df["log10_m500_true"].to_numpy(), truth["t"].to_numpy())
    # clusters the X-ray survey detected also get the mass given that detection: higher, and no wider
    det = df["log10_m500_label"].notna()
    # (the MCXC-like mock labels 1.4% of clusters: one or two of this small store's)
    assert det.sum() >= 1 and df.loc[~det, "log10_m500_given_detection"].isna().all()
    g, h = df.loc[det, "log10_m500_given_detection"], df.loc[det, "log10_m500"]
    assert g.notna().all() and (g >= h - 1e-9).all()
    assert (df.loc[det, "log10_m500_given_detection_err"] <= df.loc[det, "log10_m500_err"] + 1e-9).all()
    assert df["model_id"].nunique() == 1 and df["model_id"].iloc[0].startswith("survey-mass-cpu-")


def test_shipped_model_holds_against_the_catalogues_lambda_on_pixels_it_never_saw(small_catalog):
    """The small store is a fresh mock (seed 7, not the training seed): new pixels and new true masses. The
    shipped headline must not lose to the catalogue-lambda mass against the truth there (240 clusters: a 5%
    allowance for their noise), with honest 68% intervals."""
    df = _read(small_catalog[0])
    ok = df["log10_m500"].notna() & df["log10_m500_lambda"].notna()
    assert ok.sum() > 200
    d = df.loc[ok, "log10_m500"] - df.loc[ok, "log10_m500_true"]
    cnn = d.abs().mean()
    lam = (df.loc[ok, "log10_m500_lambda"] - df.loc[ok, "log10_m500_true"]).abs().mean()
    assert cnn < 1.05 * lam and cnn < 0.23
    coverage = (d.abs() <= df.loc[ok, "log10_m500_err"]).mean()
    assert 0.6 < coverage < 0.8


def test_schema_follows_the_contract(small_catalog):
    import pyarrow.parquet as pq

    from survey_mass import schemas

    cat, _ = small_catalog
    contract = schemas.load(schemas.CATALOG)["columns"]
    f = catalog_files(cat)[0]
    schema = pq.read_schema(f)
    assert schema.names == [c["name"] for c in contract]
    types = {
        "int64": "int64",
        "int32": "int32",
        "float32": "float",
        "float64": "double",
        "string": "string",
        "bool": "bool",
    }
    for c in contract:
        field = schema.field(c["name"])
        assert str(field.type) == types[c["type"]]
        assert field.metadata[b"unit"].decode() == c["unit"]
        assert field.metadata[b"description"].decode() == c["description"]


def test_attribution_sample_is_marked_and_complete(small_catalog):
    cat, summary = small_catalog
    df = _read(cat)
    done = df["attributed"]
    assert done.dtype == bool and 0 < done.sum() == summary.attributed < len(df)
    assert df.loc[~done, "attr_delta_dex"].isna().all() and df.loc[done, "attr_delta_dex"].notna().all()
    assert df.loc[~done, "ig_steps"].isna().all()
    # completeness in dex: |sum of the map - (F(x) - F(baseline))| <= 0.01 dex for >= 99% of attributed rows
    assert (df.loc[done, "ig_completeness_dex"] <= 0.01).mean() >= 0.99
    # the bands, and the regions, each sum to the change the map explains
    bands = df.loc[done, [f"attr_{b}_dex" for b in "ugriz"]].sum(axis=1)
    regions = df.loc[done, [f"attr_{r}_dex" for r in ("central", "members", "inside", "outside")]].sum(axis=1)
    np.testing.assert_allclose(bands, df.loc[done, "attr_delta_dex"], atol=0.011)
    np.testing.assert_allclose(regions, bands, atol=1e-4)
    shares = df.loc[done, [f"attr_{r}_abs_share" for r in ("central", "members", "inside", "outside")]]
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-4)
    # blank sky at the cutout's depth is less massive than a cluster: the maps explain a positive change
    assert (df.loc[done, "attr_delta_dex"] > 0).mean() > 0.9


def test_interrupted_run_resumes_to_the_same_catalog(small_catalog, small_store, tmp_path):
    cat, _ = small_catalog
    copy = tmp_path / "masses"
    shutil.copytree(cat, copy)
    files = catalog_files(copy)
    files[0].unlink()  # a partition that never finished
    (files[1].parent / f".tmp-{files[1].name}-dead").write_bytes(b"half a file")  # a killed writer's leftover
    margin = paths.margin_catalog(copy, 60)
    margin_files = paths.catalog_partition_files(margin)
    margin_files[0].unlink()  # the margin was being written
    (margin_files[0].parent / f".tmp-{margin_files[0].name}-dead").write_bytes(b"half")
    for f in (paths.hats_properties(paths.primary_catalog(copy)), paths.collection_properties(copy)):
        f.unlink()
    s = run_small(small_store, copy)
    assert s.partitions_computed == 1 and s.partitions_skipped == len(files) - 1
    assert not list(copy.rglob(".tmp-*"))
    pd.testing.assert_frame_equal(_read(copy), _read(cat))
    for a, b in zip(
        paths.catalog_partition_files(margin),
        paths.catalog_partition_files(paths.margin_catalog(cat, 60)),
        strict=True,
    ):
        assert a.relative_to(copy) == b.relative_to(cat)
        assert pq.read_table(a).equals(pq.read_table(b))


def test_a_rerun_with_another_margin_keeps_the_masses_and_replaces_the_margin(
    small_catalog, small_store, tmp_path
):
    import lsdb

    cat, _ = small_catalog
    copy = tmp_path / "masses"
    shutil.copytree(cat, copy)
    s = run_small(small_store, copy, margin_arcsec=600)
    assert s.partitions_computed == 0 and s.margin_arcsec == 600
    assert [p.name for p in paths.margin_catalogs(copy)] == ["masses_600arcs"]
    opened = lsdb.open_catalog(str(copy))
    assert opened.margin.hc_structure.catalog_info.margin_threshold == 600
    # a wider margin holds more of the neighbours' rows
    assert s.margin_rows == len(opened.margin.compute()) > small_catalog[1].margin_rows
    pd.testing.assert_frame_equal(_read(copy), _read(cat))
    s = run_small(small_store, copy, margin_arcsec=0)
    assert (
        s.margin_rows == 0 and not paths.margin_catalogs(copy) and lsdb.open_catalog(str(copy)).margin is None
    )


def test_overwrite_never_deletes_what_is_not_a_survey_mass_catalog(small_store, tmp_path):
    """A HATS catalog of someone else's (dataset/, hats.properties, partition_info.csv and notes) is refused even
    with overwrite, and left as it was."""
    other = tmp_path / "gaia"
    (other / "dataset").mkdir(parents=True)
    (other / "hats.properties").write_text("obs_collection=gaia\n")
    (other / "partition_info.csv").write_text("Norder,Npix\n")
    (other / "my_notes.txt").write_text("three years of work")
    with pytest.raises(SurveyMassError, match="only replaces survey-mass catalogs"):
        run_small(small_store, other, attribution="none", overwrite=True)
    assert sorted(p.name for p in other.iterdir()) == [
        "dataset",
        "hats.properties",
        "my_notes.txt",
        "partition_info.csv",
    ]


def test_overwrite_cannot_take_an_output_from_a_live_run(small_catalog, small_store, tmp_path, live_pid):
    cat, _ = small_catalog
    copy = tmp_path / "masses"
    shutil.copytree(cat, copy)
    (copy / ".lock").write_text(f"{live_pid}@{__import__('socket').gethostname()} live")
    with pytest.raises(SurveyMassError, match="being written by another run"):
        run_small(small_store, copy, attribution="none", overwrite=True)
    assert len(catalog_files(copy)) == len(catalog_files(cat)) and (copy / ".lock").read_text().endswith(
        " live"
    )


@pytest.fixture
def live_pid():
    """The pid of a live process other than this one (a run holding a lock)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_stale_lock_is_taken_over_once(tmp_path):
    """Two runs find the same dead run's lock: the one that looks second gives back the lock the first took."""
    from survey_mass.inference.run import RunLock

    a, b = RunLock(tmp_path), RunLock(tmp_path)
    stale = f"999999999@{__import__('socket').gethostname()} dead"
    a.path.write_text(stale)
    seen_by_b = b._read()
    with a:  # a takes the dead run's lock over
        b._take_over(seen_by_b)  # b acts on what it read before a took over
        assert a.path.read_text() == a.token  # a still holds it
    assert not a.path.exists()


def test_a_lock_that_is_no_longer_ours_is_left_alone(tmp_path):
    from survey_mass.inference.run import RunLock

    lock = RunLock(tmp_path)
    with lock:
        lock.path.write_text("123@elsewhere another run's")  # e.g. an operator cleared ours and a run took it
    assert lock.path.read_text() == "123@elsewhere another run's"


def test_leftovers_and_an_old_catalog_with_overwrite(small_store, tmp_path):
    """A killed run's temporaries at the top (a lock set aside, a probe) do not make the output foreign and are
    removed; an older survey-mass catalog (flat, with survey-mass provenance) is replaced with --overwrite."""
    out = tmp_path / "old"
    (out / "dataset").mkdir(parents=True)
    (out / "hats.properties").write_text("obs_collection=x\nsurvey_mass_model_id=m\n")
    (out / "partition_info.csv").write_text("Norder,Npix\n")
    (out / "run.json").write_text("{}")
    (out / ".tmp-.lock-4242").write_text("4242@h dead")
    with pytest.raises(SurveyMassError, match="before outputs became HATS collections"):
        run_small(small_store, out, attribution="none", margin_arcsec=0)
    s = run_small(small_store, out, attribution="none", margin_arcsec=0, overwrite=True)
    assert s.rows > 0 and sorted(p.name for p in out.iterdir()) == [
        "collection.properties",
        "masses",
        "run.json",
        "run_config.json",
    ]


def test_the_storage_plugin_changes_nothing_global_on_a_worker():
    """The plugin keeps the run's options under its own name; the worker's fsspec configuration is untouched,
    and teardown forgets only that run's options."""
    import fsspec.config

    from survey_mass import storage
    from survey_mass.engine import fsspec_config_plugin

    before = {k: dict(v) for k, v in fsspec.config.conf.items()}
    plugin = fsspec_config_plugin(
        {"s3": {"endpoint_url": "http://example.invalid"}}, name="survey-mass-fsspec-t"
    )
    try:
        plugin.setup(None)
        assert {k: dict(v) for k, v in fsspec.config.conf.items()} == before
        (bound,) = storage.bind_run_options(("s3://bucket/key",), plugin.name)
        assert bound.storage_options["endpoint_url"] == "http://example.invalid"
    finally:
        plugin.teardown(None)
    assert plugin.name not in storage._RUN_OPTIONS


def test_a_second_concurrent_run_is_refused(small_store, tmp_path, live_pid):
    out = tmp_path / "masses"
    out.mkdir()
    (out / ".lock").write_text(str(live_pid))  # a live run holds it
    with pytest.raises(SurveyMassError, match="being written by another run"):
        run_small(small_store, out, attribution="none")
    (out / ".lock").write_text("999999999")  # a dead run's stale lock is taken over
    assert run_small(small_store, out, attribution="none").rows > 0


def test_output_that_is_not_a_catalog_is_refused(small_store, tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    with pytest.raises(SurveyMassError, match="not a survey-mass catalog"):
        run_small(small_store, out, attribution="none")
    assert (out / "chapter1.tex").read_text() == "precious"


@pytest.mark.slow
def test_the_device_plan_on_a_cpu_gives_the_plain_runs_catalog(small_store, tmp_path):
    """Issue 17's task split: read and CPU work, device, write as three tasks per partition, the device stage
    only on the worker tagged "GPU", the others on a "CPU" worker; every column as the plain in-process run's,
    on 48 cutouts of the small store, a seeded 5% of them attributed. (Dask workers without the split are held
    to the in-process catalogue by the worker-killed test in tests/reliability/test_faults.py and the S3 test
    in tests/test_object_storage.py.)"""
    from survey_mass.testing import biggest_partition, make_tiny_store

    store = make_tiny_store(tmp_path / "part.zarr", biggest_partition(small_store), 48)
    plain = run_small(store, tmp_path / "plain", sample_fraction=0.05)
    s = run_small(store, tmp_path / "split", workers=2, split=True, sample_fraction=0.05)
    assert s.cluster == "LocalCluster (1 GPU-tagged worker + 1 CPU workers, 1 thread each)"
    assert s.attributed == plain.attributed > 0 and s.rows == plain.rows == 48
    a, b = _read(tmp_path / "plain"), _read(tmp_path / "split")
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for c in a.columns:
        if pd.api.types.is_numeric_dtype(a[c]) and not pd.api.types.is_bool_dtype(a[c]):
            np.testing.assert_allclose(a[c], b[c], rtol=1e-4, atol=1e-5, err_msg=c)
        else:
            assert (a[c] == b[c]).all(), c


def test_stages_are_split_only_where_workers_offer_their_resources():
    from survey_mass.engine import Stage, split_on

    stages = (Stage(len, "CPU"), Stage(len, "GPU"), Stage(len, "CPU"))
    assert split_on(stages, {"CPU", "GPU"})
    assert not split_on(stages, {"GPU"}) and not split_on(stages, set())  # never wait for a missing resource
    assert not split_on((Stage(len, "GPU"),), {"GPU"}) and not split_on((Stage(len), Stage(len)), {"GPU"})


def test_the_baselines_detection_gives_the_same_outputs_in_either_half(small_store):
    """On the CPU the lambda-hat detection runs in the CPU half (prepare_partition), on a device in the device half
    (predict_prepared): the outputs are the same either way."""
    from survey_mass.inference.predict import predict_prepared, prepare_partition
    from survey_mass.models.bundle import load_bundle
    from survey_mass.testing import biggest_partition

    _, images, cols = biggest_partition(small_store)
    cols = {k: v[:40] for k, v in cols.items()}
    bundle = load_bundle(model_dir())
    a = predict_prepared(bundle, prepare_partition(bundle, images[:40], cols, detect=True))
    b = predict_prepared(bundle, prepare_partition(bundle, images[:40], cols, detect=False))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert np.isfinite(a["richness"]).sum() > 30 and np.isfinite(a["log10_m500"]).sum() > 30
