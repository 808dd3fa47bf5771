"""Stores and catalogs on object storage (#19): mock, run, query and lsdb through a real S3 API on loopback
(moto's server mode, started here), an interrupted run resumed on S3, a corrupted object, and the lock."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survey_mass import paths
from survey_mass.errors import SurveyMassError
from survey_mass.quality import Quality
from survey_mass.testing import build_small_store, moto_s3, read_catalog, run_small

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

KEY = ["id", "log10_m500", "log10_m500_err", "log10_m500_richness", "quality"]


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as url:
        yield url


@pytest.fixture(scope="module")
def s3_store(s3, small_candidates):
    """The small mock store, built straight into s3://survey-mass/small.zarr."""
    return build_small_store("s3://survey-mass/small.zarr", small_candidates)


def _rows(out) -> pd.DataFrame:
    from survey_mass.storage import as_path

    files = paths.catalog_partition_files(paths.primary_catalog(as_path(out)))
    frames = []
    for f in files:
        with f.open("rb") as fh:
            frames.append(pd.read_parquet(fh))
    return pd.concat(frames).sort_values("id").reset_index(drop=True)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b) and (a["id"].to_numpy() == b["id"].to_numpy()).all()
    for c in KEY[1:]:
        np.testing.assert_allclose(
            a[c].astype(float), b[c].astype(float), rtol=1e-6, equal_nan=True, err_msg=c
        )


def test_mock_run_query_and_lsdb_round_trip_through_s3(s3, s3_store, small_store, small_catalog, capsys):
    import lsdb
    from hats.io.validation import is_valid_catalog, is_valid_collection

    from survey_mass.cli import main
    from survey_mass.storage import as_path
    from survey_mass.store import open_store

    # the store on S3 holds what the local build holds, object for object
    remote, local = open_store(s3_store), open_store(small_store)
    assert remote.partitions == local.partitions and remote.n_total == local.n_total
    p = local.partitions[0]
    np.testing.assert_array_equal(remote.images(p, 0, 4), local.images(p, 0, 4))
    # the run reads the store and writes the collection on S3: the same masses as the local run
    summary = run_small(s3_store, "s3://survey-mass/masses", attribution="none")
    assert (
        summary.store == "s3://survey-mass/small.zarr" and summary.margin_rows == small_catalog[1].margin_rows
    )
    _same(_rows("s3://survey-mass/masses"), read_catalog(small_catalog[0]))
    out = as_path("s3://survey-mass/masses")
    assert is_valid_collection(out, strict=True)
    assert is_valid_catalog(paths.primary_catalog(out), strict=True)
    assert is_valid_catalog(paths.margin_catalog(out, 60), strict=True)
    opened = lsdb.open_catalog(out)
    assert opened.margin is not None and len(opened.compute()) == summary.rows
    # query from the command line, counting each row once
    code = main(
        [
            "query",
            "s3://survey-mass/masses",
            "SELECT count(*) AS n, count(DISTINCT id) AS k FROM catalog",
            "--format",
            "csv",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"{summary.rows},{summary.rows}"
    code = main(
        ["query", "s3://survey-mass/masses", "--cone", "155", "6", "60", "--columns", "id", "--format", "csv"]
    )
    assert code == 0 and len(capsys.readouterr().out.strip().splitlines()) > 1


def test_an_interrupted_run_on_s3_resumes_to_the_same_catalog(s3, s3_store, small_catalog, monkeypatch):
    import survey_mass.catalog.writer as writer
    from survey_mass.storage import as_path

    real = writer.write_parquet_atomic
    calls = []

    def interrupted(final, table, *, what):
        calls.append(final)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is stopped while the second partition is on its way
        return real(final, table, what=what)

    monkeypatch.setattr(writer, "write_parquet_atomic", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_small(s3_store, "s3://survey-mass/resumed", attribution="none")
    monkeypatch.setattr(writer, "write_parquet_atomic", real)
    out = as_path("s3://survey-mass/resumed")
    assert len(paths.catalog_partition_files(paths.primary_catalog(out))) == 1  # only whole objects are there
    assert not paths.run_lock_file(out).exists() and not paths.collection_properties(out).exists()
    s = run_small(s3_store, "s3://survey-mass/resumed", attribution="none")
    assert s.partitions_skipped == 1 and s.partitions_computed == s.partitions - 1
    _same(_rows(out), read_catalog(small_catalog[0]))
    assert paths.collection_properties(out).exists()


def test_an_interrupted_mock_build_on_s3_leaves_no_partition_that_counts(s3, small_candidates, monkeypatch):
    """A partition whose arrays were being written when the build stopped is not listed; the rerun writes it."""
    import survey_mass.store.cutouts as cutouts
    from survey_mass.store import open_store

    real = cutouts._write_arrays
    calls = []

    def stopped(g, n, size, images, columns, codec=None):
        calls.append(n)
        if len(calls) == 2:
            g.create_array("images", shape=(n, 5, size, size), dtype="float32")  # part of the objects land
            raise KeyboardInterrupt
        return real(g, n, size, images, columns, codec)

    monkeypatch.setattr(cutouts, "_write_arrays", stopped)
    with pytest.raises(KeyboardInterrupt):
        build_small_store("s3://survey-mass/stopped.zarr", small_candidates)
    monkeypatch.setattr(cutouts, "_write_arrays", real)
    assert len(open_store("s3://survey-mass/stopped.zarr").partitions) == 1
    build_small_store("s3://survey-mass/stopped.zarr", small_candidates)
    st = open_store("s3://survey-mass/stopped.zarr")
    assert len(st.partitions) == 3 and st.n_total == len(small_candidates)


def test_a_corrupted_object_on_s3_flags_its_rows_and_spares_the_rest(s3, s3_store, small_catalog):
    """Bytes scribbled over one image shard object: its rows get bit 32 and no mass; every other row is as
    in the clean run."""
    from survey_mass.storage import as_path
    from survey_mass.store import open_store

    store = as_path("s3://survey-mass/corrupt.zarr")
    store.fs.copy(as_path(s3_store).path, store.path, recursive=True)
    st = open_store(store)
    p = st.partitions[0]
    shard = next(
        f
        for f in (store / paths.partition_group_path(st.order, p) / "images").rglob("*")
        if f.name != "zarr.json" and f.is_file()
    )
    data = bytearray(shard.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 64] = b"\xff" * 64
    shard.write_bytes(bytes(data))
    s = run_small(store, "s3://survey-mass/corrupt_masses", attribution="none")
    got, clean = _rows("s3://survey-mass/corrupt_masses"), read_catalog(small_catalog[0])
    bad = (got["quality"] & int(Quality.UNREADABLE)) != 0
    ids = set(st.columns(p)["id"].tolist())
    assert (
        0 < bad.sum() <= len(ids)
        and set(got.loc[bad, "id"]) <= ids
        and got.loc[bad, "log10_m500"].isna().all()
    )
    assert s.rows == len(clean)
    _same(got[~bad].reset_index(drop=True), clean[~bad.to_numpy()].reset_index(drop=True))


def test_a_second_run_into_the_same_s3_output_is_refused(s3, s3_store):
    from survey_mass.storage import as_path

    out = as_path("s3://survey-mass/locked")
    paths.run_lock_file(out).write_text("4242@another-host")  # a run on another machine holds it
    with pytest.raises(SurveyMassError, match="another run .*pid 4242 on another-host"):
        run_small(s3_store, out, attribution="none")
    assert paths.run_lock_file(out).read_text() == "4242@another-host"  # its lock is left alone


def test_ingest_reads_candidates_from_s3_and_writes_the_store_there(s3, tmp_path):
    """SDSS frames on local disk, the candidates and the store on S3: the store equals the local ingest's, and
    the frame index beside it is reused by a rerun."""
    from survey_mass.paths import frame_index_file
    from survey_mass.storage import as_path
    from survey_mass.store import open_store
    from survey_mass.store.ingest import ingest_frames
    from survey_mass.testing import write_fake_sdss_frames

    write_fake_sdss_frames(tmp_path / "frames", ra0=150.0, dec0=2.0, n_fields=2, nx=900, ny=800, seed=3)
    rows = pd.DataFrame({"id": [1, 2, 3], "ra": [150.0, 150.01, 149.99], "dec": [2.0, 2.02, 1.98], "z": 0.2})
    rows.to_csv(tmp_path / "c.csv", index=False)
    as_path("s3://survey-mass/c.csv").write_bytes((tmp_path / "c.csv").read_bytes())
    local = ingest_frames(tmp_path / "frames", tmp_path / "c.csv", tmp_path / "i.zarr", progress=False)
    remote = ingest_frames(
        tmp_path / "frames", "s3://survey-mass/c.csv", "s3://survey-mass/i.zarr", progress=False
    )
    assert remote["cutouts"] == local["cutouts"] == 3
    a, b = open_store(tmp_path / "i.zarr"), open_store("s3://survey-mass/i.zarr")
    assert a.partitions == b.partitions
    for p in a.partitions:
        np.testing.assert_array_equal(a.images(p), b.images(p))
    assert frame_index_file(as_path("s3://survey-mass/i.zarr")).is_file()
    again = ingest_frames(
        tmp_path / "frames", "s3://survey-mass/c.csv", "s3://survey-mass/i.zarr", progress=False
    )
    assert (
        again["frame_index_reused"] == remote["frames"]
        and again["partitions_skipped"] == remote["partitions"]
    )


def test_dask_workers_get_the_drivers_storage_options(s3, s3_store, small_catalog, monkeypatch):
    """Two worker processes whose environment knows nothing of the S3 endpoint: the engine hands them the
    driver's fsspec configuration, and they read the store and write the catalog on S3."""
    for k in ("FSSPEC_S3_ENDPOINT_URL", "FSSPEC_S3_KEY", "FSSPEC_S3_SECRET"):
        monkeypatch.delenv(k)
    s = run_small(s3_store, "s3://survey-mass/two_workers", attribution="none", workers=2)
    assert s.cluster.startswith("LocalCluster") and s.partitions_computed == s.partitions
    _same(_rows("s3://survey-mass/two_workers"), read_catalog(small_catalog[0]))


def test_the_lock_is_taken_by_exactly_one_of_many_and_other_stores_are_refused(s3, s3_store):
    from concurrent.futures import ThreadPoolExecutor

    from survey_mass.errors import StorageError
    from survey_mass.storage import create_exclusive

    for attempt in range(3):
        lock = f"s3://survey-mass/race{attempt}/.lock"
        with ThreadPoolExecutor(8) as pool:
            won = list(pool.map(lambda k, lock=lock: create_exclusive(lock, b"%d" % k), range(8)))
        assert sum(won) == 1
    # a filesystem with no create-if-absent cannot hold the run lock: refused before anything is written
    with pytest.raises(StorageError, match="only if it is absent"):
        run_small(s3_store, "memory://masses", attribution="none")


def test_a_upath_with_its_own_storage_options_needs_no_fsspec_configuration(
    s3, s3_store, small_catalog, monkeypatch
):
    """Through the Python API, UPaths that carry the endpoint and keys are enough: nothing in fsspec's
    configuration or the environment names the endpoint."""
    import fsspec.config
    from upath import UPath

    options = dict(fsspec.config.conf["s3"])
    monkeypatch.setattr(fsspec.config, "conf", {})
    for k in ("FSSPEC_S3_ENDPOINT_URL", "FSSPEC_S3_KEY", "FSSPEC_S3_SECRET"):
        monkeypatch.delenv(k)
    store = UPath("s3://survey-mass/small.zarr", use_listings_cache=False, **options)
    out = UPath("s3://survey-mass/upath_masses", use_listings_cache=False, **options)
    s = run_small(store, out, attribution="none")
    assert s.partitions_computed == s.partitions
    _same(_rows(out), read_catalog(small_catalog[0]))


def test_an_unreachable_endpoint_is_one_line(monkeypatch, capsys):
    import fsspec.config

    from survey_mass.testing import assert_one_line_error, cli

    monkeypatch.setitem(
        fsspec.config.conf,
        "s3",
        {
            "endpoint_url": "http://127.0.0.1:9",
            "key": "k",
            "secret": "s",
            "config_kwargs": {"retries": {"max_attempts": 1}},
        },
    )
    code, _, err = cli(["query", "s3://nowhere/masses", "SELECT 1"], capsys)
    assert_one_line_error(code, err, "object storage", "127.0.0.1:9")


def test_lock_edge_cases_on_s3(s3, monkeypatch):
    """A 409 from a concurrent conditional PUT counts as taken, a throttled PUT is an error (not "taken"), and an
    endpoint that ignores If-None-Match is refused by the probe."""
    import botocore.exceptions as be
    from s3fs.errors import translate_boto_error

    from survey_mass.errors import StorageError
    from survey_mass.storage import as_path, check_exclusive_create, create_exclusive

    fs = as_path("s3://survey-mass/edge").fs

    def failing(code, status):
        def pipe_file(path, data, **kw):
            err = be.ClientError(
                {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                "PutObject",
            )
            raise translate_boto_error(err) from err

        return pipe_file

    monkeypatch.setattr(fs, "pipe_file", failing("ConditionalRequestConflict", 409))
    assert create_exclusive("s3://survey-mass/edge/.lock", b"x") is False
    monkeypatch.setattr(fs, "pipe_file", failing("SlowDown", 503))
    with pytest.raises(OSError):
        create_exclusive("s3://survey-mass/edge/.lock", b"x")
    monkeypatch.undo()
    real = fs.pipe_file

    def ignores_the_condition(path, data, mode="overwrite", **kw):
        return real(path, data, **kw)

    monkeypatch.setattr(fs, "pipe_file", ignores_the_condition)
    with pytest.raises(StorageError, match="does not honour conditional writes"):
        check_exclusive_create(paths.lock_probe_file("s3://survey-mass/edge"))
    monkeypatch.undo()
    assert not [p for p in fs.find("survey-mass/edge") if "probe" in p]  # the probe is not left behind


def test_storage_failure_names_only_storage_errors():
    import botocore.exceptions as be

    from survey_mass.storage import storage_failure

    unreachable = be.EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    assert "127.0.0.1:9" in storage_failure(unreachable)
    try:
        try:
            raise unreachable
        except be.EndpointConnectionError as exc:
            raise OSError("wrapped") from exc
    except OSError as wrapped:
        assert storage_failure(wrapped) is not None
    try:
        try:
            raise unreachable
        except be.EndpointConnectionError:
            raise KeyError("a bug met while handling it")  # noqa: B904
    except KeyError as bug:
        assert storage_failure(bug) is None  # a bug keeps its traceback


def test_file_urls_are_local_paths(small_store, small_catalog, tmp_path, capsys):
    from survey_mass.cli import main

    out = tmp_path / "masses"
    s = run_small(f"file://{small_store}", f"file://{out}", attribution="none")
    assert s.store == str(small_store.resolve())
    _same(read_catalog(out), read_catalog(small_catalog[0]))
    assert main(["query", f"file://{out}", "SELECT count(*) AS n FROM catalog", "--format", "csv"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(s.rows)
