"""Safety (#27), tried as an attacker with a shell account would: the query sandbox holds for every argument,
``--overwrite`` deletes nothing survey-mass did not write, a resume never mixes stores, models or footprints,
the run's Dask cluster takes no stranger's connection, and bad inputs end in one line.

Each test fails on the code before #27 (the defect it names was shown there) and passes after it."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from survey_mass import paths
from survey_mass.errors import CatalogInputError, ModelError, StoreError, SurveyMassError
from survey_mass.testing import (
    assert_one_line_error,
    catalog_files,
    cli,
    make_store,
    run_small,
    tree_snapshot,
)


def _run(store, out, capsys, *extra):
    """``survey-mass run`` of ``store`` on the small sky into ``out``, in this process."""
    return cli(
        ["run", "--store", store, "--footprint", "box:140,170,-5,20", "--out", out, "--no-progress", *extra],
        capsys,
    )


# --- 1. the query sandbox ------------------------------------------------------------------------------------


@pytest.fixture
def victim(small_catalog, tmp_path, monkeypatch):
    """A copy of the small catalog, a secret beside it, and the working directory in a watched folder."""
    cat = tmp_path / "masses"
    shutil.copytree(small_catalog[0], cat)
    secret = tmp_path / "secret.txt"
    secret.write_text("the-secret-42\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return cat, secret, tmp_path


ATTACKS = [
    # a closing parenthesis, then any statement (#27: each of these ran before the fix)
    "1=1) ; COPY (SELECT 1 AS x) TO '{out}/pwned.csv' --",
    "1=1) ; COPY (SELECT 15.9 AS log10_m500) TO '{partition}' (FORMAT parquet) --",
    "1=1) UNION ALL SELECT * FROM read_text('{secret}') --",
    "true) ; ATTACH '{out}/evil.db' AS evil ; CREATE TABLE evil.t AS SELECT 1 --",
    "true) ; INSTALL httpfs ; LOAD httpfs --",
    "true) ; PRAGMA enable_profiling='json' ; PRAGMA profile_output='{out}/p.json' --",
    "true) ; SET enable_external_access = true ; SELECT * FROM read_text('{secret}') --",
    "id IN (SELECT 1 FROM read_text('{secret}'))",
    "content LIKE '%' OR EXISTS (SELECT * FROM read_csv('{secret}'))",
    "true); COPY (SELECT 'import os' AS l) TO '{out}/evil.pth' (HEADER false) --",
]


def _attack(text: str, cat: Path, secret: Path, root: Path) -> str:
    return text.format(out=root, partition=catalog_files(cat)[0], secret=secret)


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("argument", ["--where", "--columns", "sql"])
def test_query_refuses_statements_files_and_extensions_through_every_argument(
    victim, attack, argument, capsys
):
    cat, secret, root = victim
    text = _attack(attack, cat, secret, root)
    before = tree_snapshot(root)
    argv = ["query", cat]
    if argument == "sql":
        argv.append(f"SELECT * FROM catalog WHERE {text}")
    else:
        argv += [argument, text]
    code, out, err = cli(argv, capsys)
    assert_one_line_error(code, err)
    assert "the-secret-42" not in out + err
    assert tree_snapshot(root) == before, "a query wrote or changed a file"


def test_the_sql_argument_reads_nothing_but_the_catalogs_partitions(victim, capsys):
    cat, secret, root = victim
    before = tree_snapshot(root)
    for sql in [
        f"SELECT * FROM read_text('{secret}')",
        f"SELECT * FROM read_text('{cat}/run_config.json')",  # the catalog's sidecars are not its rows
        f"SELECT * FROM read_text('{catalog_files(cat)[0].parent}/../../../../secret.txt')",
        "SELECT * FROM read_text('file:///etc/passwd')",
        "SELECT current_setting('home_directory') AS h FROM (SELECT 1) WHERE false UNION SELECT getenv('HOME')",
        f"COPY catalog TO '{root}/out.csv'",
        "ATTACH ':memory:' AS m",
        "SET lock_configuration = false",
        "SELECT 1; SELECT 2",
    ]:
        code, out, err = cli(["query", cat, sql], capsys)
        assert_one_line_error(code, err)
        assert "the-secret-42" not in out and "root:" not in out
    assert tree_snapshot(root) == before


def test_a_plain_where_and_columns_still_work(victim):
    from survey_mass.catalog.query import query
    from survey_mass.testing import read_catalog

    cat, _, _ = victim
    df = read_catalog(cat)
    res = query(cat, where="quality = 0 AND z < 0.3 -- a comment", columns=["id", "z"])
    assert sorted(res.table.column("id").to_pylist()) == sorted(df.id[(df.quality == 0) & (df.z < 0.3)])
    res = query(cat, where="id IN (SELECT unnest([1, 2])) OR z > 0.4")  # a subquery is an expression too
    assert res.table.num_rows == int(((df.z > 0.4) | df.id.isin([1, 2])).sum())


DUCKDB_WORDS = [
    "SELECT",
    "COPY",
    "ATTACH",
    "DETACH",
    "INSTALL",
    "LOAD",
    "PRAGMA",
    "SET",
    "RESET",
    "CREATE",
    "DROP",
    "INSERT",
    "UPDATE",
    "DELETE",
    "EXPORT",
    "IMPORT",
    "CALL",
    "CHECKPOINT",
    "VACUUM",
    "EXECUTE",
    "PREPARE",
    "USE",
    "SUMMARIZE",
    "DESCRIBE",
    "FROM",
    "WHERE",
    "TO",
    "AS",
    "UNION",
    "ALL",
    "WITH",
    "read_text",
    "read_csv",
    "read_blob",
    "read_parquet",
    "glob",
    "query",
    "query_table",
    "getenv",
    "DATABASE",
    "TABLE",
    "VIEW",
    "MACRO",
    "SECRET",
    "EXTENSION",
    "(",
    ")",
    ";",
    "--",
    "/*",
    "*/",
    "'",
    '"',
    ",",
    "*",
    "=",
    "1",
    "true",
    "catalog",
    "id",
    "'{secret}'",
    "'{out}/x.csv'",
    "'{out}/x.db'",
    "'{partition}'",
    "'/etc/passwd'",
    "(FORMAT parquet)",
    "enable_external_access",
    "lock_configuration",
    "allowed_directories",
    "httpfs",
]


def test_random_sql_fragments_never_read_or_write_outside_the_catalog(victim, tmp_path_factory, monkeypatch):
    """Hypothesis draws fragments of DuckDB's statement keywords, file functions and paths, and feeds them to
    ``query`` as the SQL, as ``--where`` and as ``--columns``: whatever parses, nothing outside the catalog's
    partition files is read and nothing at all is written."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import configuration
    from hypothesis import strategies as st

    from survey_mass.catalog.query import query

    cat, secret, root = victim
    # hypothesis keeps its own files (constants it collects) away from the watched directories
    home = tmp_path_factory.mktemp("hypothesis")
    monkeypatch.setattr(configuration, "__hypothesis_home_directory", home, raising=False)
    configuration.set_hypothesis_home_dir(home)
    before = tree_snapshot(root)
    words = st.sampled_from([_attack(w, cat, secret, root) for w in DUCKDB_WORDS])
    fragment = st.lists(words, min_size=1, max_size=12).map(" ".join)

    @hypothesis.settings(
        max_examples=100,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(fragment=fragment, where=st.one_of(st.none(), fragment), argument=st.integers(0, 2))
    def attack(fragment, where, argument):
        kw = [
            {"sql": fragment, "where": where},
            {"sql": None, "where": fragment},
            {"sql": None, "columns": fragment.split(" "), "where": where},
        ][argument]
        try:
            res = query(cat, kw.pop("sql", None), **kw)
        except SurveyMassError as exc:
            assert "\n" not in str(exc)
            return
        assert "the-secret-42" not in str(res.table.to_pylist())

    attack()
    assert tree_snapshot(root) == before


# --- 2. and 3. --overwrite deletes only what survey-mass wrote ------------------------------------------------------


def test_mock_and_ingest_overwrite_refuse_a_directory_that_is_not_a_store(tmp_path, capsys):
    from survey_mass.testing import write_fake_sdss_frames

    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious")
    code, _, err = cli(
        [
            "mock",
            "--footprint",
            "box:150,150.5,2,2.5",
            "--no-candidates",
            "--out",
            home,
            "--overwrite",
            "--no-progress",
        ],
        capsys,
    )
    assert_one_line_error(code, err, str(home), "only replaces a cutout store survey-mass wrote")
    assert (home / "thesis.tex").read_text() == "precious"
    # ingest --frames X --out X --overwrite would have deleted the frames
    frames = tmp_path / "frames"
    write_fake_sdss_frames(frames, ra0=150.0, dec0=2.0)
    listed = sorted(p.name for p in frames.iterdir())
    pd.DataFrame({"ra": [150.0], "dec": [2.0], "z": [0.2]}).to_csv(tmp_path / "c.csv", index=False)
    code, _, err = cli(
        [
            "ingest",
            "--frames",
            frames,
            "--candidates",
            tmp_path / "c.csv",
            "--out",
            frames,
            "--overwrite",
            "--no-progress",
        ],
        capsys,
    )
    assert_one_line_error(code, err, str(frames), "nothing was deleted")
    assert sorted(p.name for p in frames.iterdir()) == listed


def test_overwrite_refuses_a_store_holding_a_users_files(tiny_store, capsys):
    """A real store with a user's file inside it is not wholly survey-mass's: refused, untouched."""
    from survey_mass.store.cutouts import check_own_store

    check_own_store(tiny_store)  # a store as survey-mass writes it is ours
    (tiny_store / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="holds 'notes.txt'"):
        check_own_store(tiny_store)
    assert (tiny_store / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("theirs", ["masses", ".tmp-photos"])
def test_run_overwrite_leaves_a_users_masses_or_tmp_folder_alone(tiny_store, tmp_path, theirs):
    out = tmp_path / "out"
    (out / theirs).mkdir(parents=True)
    (out / theirs / "data.csv").write_text("a user's own")
    with pytest.raises(SurveyMassError, match="not a survey-mass catalog"):
        run_small(tiny_store, out, attribution="none", overwrite=True)
    assert (out / theirs / "data.csv").read_text() == "a user's own"


def test_run_overwrite_still_replaces_its_own_collection(tiny_store, tmp_path):
    out = tmp_path / "out"
    first = run_small(tiny_store, out, attribution="none")
    again = run_small(tiny_store, out, attribution="none", overwrite=True)
    assert again.partitions_computed == again.partitions and again.rows == first.rows


# --- 4. a resume never mixes stores ---------------------------------------------------------------------------------


def _tiny(path, partition, provenance=None, attrs=None):
    p, images, cols = partition
    return make_store(
        path, p, images[:16].copy(), {k: v[:16] for k, v in cols.items()}, provenance=provenance, attrs=attrs
    )


def test_a_resume_against_a_rebuilt_store_is_refused_naming_what_differs(source_partition, tmp_path):
    store, out = tmp_path / "s.zarr", tmp_path / "out"
    _tiny(store, source_partition, provenance={"seed": 1})
    run_small(store, out, attribution="none")
    shutil.rmtree(store)
    _tiny(store, source_partition, provenance={"seed": 2})  # the same path, another seed
    with pytest.raises(SurveyMassError, match=r"store: .*provenance\.seed: 1 then, 2 now"):
        run_small(store, out, attribution="none")


def test_a_partition_whose_source_changed_is_computed_again(source_partition, tmp_path):
    """The ingest re-cuts a partition when its frames change (its frames digest changes): a resumed run
    recomputes that partition instead of keeping rows made from the old pixels."""
    import zarr

    store, out = tmp_path / "s.zarr", tmp_path / "out"
    _tiny(store, source_partition, attrs={"frames_digest": "aaaa"})
    first = run_small(store, out, attribution="none")
    assert first.partitions_computed == 1
    assert run_small(store, out, attribution="none").partitions_skipped == 1  # nothing changed: resumed
    group = zarr.open_group(str(store / paths.partition_group_path(2, source_partition[0])), mode="r+")
    group.attrs["frames_digest"] = "bbbb"  # what the ingest records when it re-cuts from other frames
    again = run_small(store, out, attribution="none")
    assert again.partitions_computed == 1 and again.partitions_skipped == 0


# --- 5. the model id is verified ---------------------------------------------------------------------------------


def test_a_model_whose_weights_or_calibration_changed_is_refused(model_copy, tiny_store, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from survey_mass.models.bundle import load_bundle

    heads = model_copy / paths.MODEL_HEADS
    original = heads.read_bytes()
    state = load_file(str(heads))
    save_file({k: v * 0 for k, v in state.items()}, str(heads))  # zeroed heads under the shipped id
    with pytest.raises(ModelError, match="do not match its card's model_id"):
        load_bundle(model_copy)
    code, _, err = _run(tiny_store, tmp_path / "o", capsys, "--model", model_copy, "--workers", "1")
    assert_one_line_error(code, err, "model_id")
    heads.write_bytes(original)
    card = json.loads((model_copy / paths.MODEL_CARD).read_text())
    card["calibration"]["scale"] *= 100  # a calibration scale x100 under the shipped id
    (model_copy / paths.MODEL_CARD).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="do not match its card's model_id"):
        load_bundle(model_copy)


def test_a_resume_with_another_model_card_is_refused(model_copy, tiny_store, tmp_path):
    from survey_mass.footprint import parse_footprint
    from survey_mass.inference.run import RunOptions, run_catalog

    def run(**kw):
        return run_catalog(
            store_path=tiny_store,
            model_path=str(model_copy),
            catalog=tmp_path / "o",
            footprint=parse_footprint("box:140,170,-5,20"),
            opts=RunOptions(attribution="none"),
            progress=False,
            workers=1,
            **kw,
        )

    run()
    card = json.loads((model_copy / paths.MODEL_CARD).read_text())
    card["seed"] += 1  # not part of the id, but another card
    (model_copy / paths.MODEL_CARD).write_text(json.dumps(card))
    with pytest.raises(SurveyMassError, match="model card changed"):
        run()


# --- 6. and 7. the run's Dask cluster --------------------------------------------------------------------------------


def test_the_local_cluster_refuses_clients_without_its_credentials():
    import asyncio

    from distributed.comm import connect
    from distributed.security import Security

    from survey_mass.engine import start_cluster

    async def attempt(address, security):
        # a raw connection, as another local user's process would open one (a failing Client object would
        # have to be torn down by the garbage collector, which can deadlock distributed's loop runner)
        args = security.get_connection_args("client") if security is not None else {}
        comm = await connect(address, timeout="2s", **args)
        await comm.close()

    choice = start_cluster(workers=2)
    try:
        address = choice.client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        assert choice.dashboard is None or choice.dashboard.startswith("http://127.0.0.1:")
        for security in (None, Security.temporary()):  # no credentials, or another cluster's
            with pytest.raises(Exception):  # noqa: B017 (TLS refuses in several ways)
                asyncio.run(attempt(address, security))
        assert choice.client.submit(sum, [1, 2]).result() == 3  # the run's own client works
    finally:
        choice.client.close()
        choice.owned.close()


def _options_seen(path):
    return dict(path.storage_options)


def test_two_runs_on_one_scheduler_keep_their_own_storage_options(monkeypatch):
    """Each run's options are registered under a name of its own; a task binds its paths to its run's, and one
    run's teardown leaves the other's in place."""
    import survey_mass.engine as engine
    from survey_mass.engine import share_storage_options, start_cluster, with_storage_options

    choice = start_cluster(workers=1)
    client = choice.client
    try:
        names = {}
        for run, endpoint in (("a", "http://a.invalid"), ("b", "http://b.invalid")):
            monkeypatch.setattr(
                "survey_mass.storage.fsspec_config", lambda e=endpoint: {"s3": {"endpoint_url": e}}
            )
            names[run] = share_storage_options(client)
        assert names["a"] != names["b"]
        for run, endpoint in (("a", "http://a.invalid"), ("b", "http://b.invalid")):
            seen = client.submit(with_storage_options, names[run], _options_seen, "s3://bucket/x", pure=False)
            assert seen.result()["endpoint_url"] == endpoint
        client.unregister_worker_plugin(names["a"])  # run a ends
        seen = client.submit(with_storage_options, names["b"], _options_seen, "s3://bucket/x", pure=False)
        assert seen.result()["endpoint_url"] == "http://b.invalid"
        gone = client.submit(with_storage_options, names["a"], _options_seen, "s3://bucket/x", pure=False)
        with pytest.raises(SurveyMassError, match="no storage options"):
            gone.result()
    finally:
        client.close()
        choice.owned.close()
    assert engine  # the engine module is the one place that shares options


# --- 8. run_config.json is written atomically ----------------------------------------------------------------------


def test_a_disk_full_while_run_config_is_written_leaves_no_empty_file(
    tiny_store, tmp_path, monkeypatch, capsys
):
    import survey_mass.storage as storage

    real = storage.write_bytes

    def full(p, data, *, temp):
        if Path(str(p)).name == paths.RUN_CONFIG:
            Path(temp).write_bytes(b"")
            raise OSError(errno.ENOSPC, "No space left on device", str(temp))
        return real(p, data, temp=temp)

    monkeypatch.setattr(storage, "write_bytes", full)
    out = tmp_path / "out"
    code, _, err = _run(tiny_store, out, capsys, "--workers", "1")
    assert_one_line_error(code, err, "No space left on device")
    monkeypatch.setattr(storage, "write_bytes", real)
    assert not paths.run_config_file(out).exists()
    # the next run starts cleanly
    assert run_small(tiny_store, out, attribution="none").partitions_computed == 1


def test_a_corrupt_run_config_is_one_line(tiny_store, tmp_path, capsys):
    out = tmp_path / "out"
    run_small(tiny_store, out, attribution="none")
    paths.run_config_file(out).write_text("")
    code, _, err = _run(tiny_store, out, capsys, "--workers", "1")
    assert_one_line_error(code, err, paths.RUN_CONFIG)


# --- 9. a lock whose pid came back after a restart -------------------------------------------------------------------


def test_a_stale_lock_with_this_processs_pid_is_taken_over(tmp_path):
    import socket

    from survey_mass.inference.run import RunLock

    lock = RunLock(tmp_path)
    # a container restarted: the dead run had the pid this run now has
    lock.path.write_text(f"{os.getpid()}@{socket.gethostname()} oldnonce 0:1")
    with lock:
        assert lock.path.read_text() == lock.token
    # a live pid whose process started at another time is another process: the lock is stale
    other = RunLock(tmp_path / "b")
    other.path.parent.mkdir()
    other.path.write_text(f"1@{socket.gethostname()} oldnonce other-boot:1")
    with other:
        assert other.path.read_text() == other.token


# --- 10. candidate ids stay exact -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids, words",
    [
        (["1.2", "2"], ["row 0", "1.2", "not an integer"]),
        ([str(2**63), "2"], ["row 0", str(2**63), "int64"]),
        (["1237657070000000001", ""], ["row 1", "not an integer"]),
    ],
)
def test_candidate_ids_that_cannot_stay_exact_are_refused(ids, words, tmp_path):
    from survey_mass.candidates import read_candidates

    f = tmp_path / "c.csv"
    pd.DataFrame({"id": ids, "ra": [150.0, 151.0], "dec": [2.0, 2.0], "z": [0.2, 0.3]}).to_csv(f, index=False)
    with pytest.raises(CatalogInputError) as exc:
        read_candidates(f)
    for w in words:
        assert w in str(exc.value)


def test_19_digit_objids_are_read_exactly_and_floats_that_lost_them_are_refused(tmp_path):
    from survey_mass.candidates import read_candidates

    ids = [1237657070000000001, 1237657070000000003]
    f = tmp_path / "c.csv"
    pd.DataFrame({"objid_cluster": ids, "ra": [150.0, 151.0], "dec": [2.0, 2.0], "z": [0.2, 0.3]}).to_csv(
        f, index=False
    )
    assert read_candidates(f)["id"].tolist() == ids
    p = tmp_path / "c.parquet"
    pd.DataFrame(
        {"id": np.array(ids, float), "ra": [150.0, 151.0], "dec": [2.0, 2.0], "z": [0.2, 0.3]}
    ).to_parquet(p)
    with pytest.raises(CatalogInputError, match="row 0: .*floating-point"):
        read_candidates(p)


# --- 11. one line, never a traceback ----------------------------------------------------------------------------------


def test_a_card_with_a_nan_std_is_one_line(model_copy, tiny_store, tmp_path, capsys):
    card = json.loads((model_copy / paths.MODEL_CARD).read_text())
    card["features"]["std"][0] = float("nan")
    (model_copy / paths.MODEL_CARD).write_text(json.dumps(card))
    code, _, err = _run(tiny_store, tmp_path / "o", capsys, "--model", model_copy, "--workers", "1")
    assert_one_line_error(code, err, paths.MODEL_CARD, "features.std")


@pytest.mark.parametrize(
    "override, words",
    [
        ("sky_noise_scale=Infinity", ["sky_noise_scale", "finite"]),
        ("observing.sky_sigma_mag.u=-0.3", ["sky_sigma_mag.u", "non-negative"]),
        ("members.bright_lstar=[10, 0.2]", ["bright_lstar", "low < high"]),
    ],
)
def test_absurd_mock_settings_are_one_line(override, words, tmp_path, capsys):
    code, _, err = cli(
        [
            "mock",
            "--footprint",
            "box:150,150.5,2,2.5",
            "--out",
            tmp_path / "m.zarr",
            "--set",
            override,
            "--no-progress",
        ],
        capsys,
    )
    assert_one_line_error(code, err, *words)
    assert not (tmp_path / "m.zarr").exists()


def _damage(store: Path, pixel: int, array: str, **change) -> None:
    f = store / paths.partition_group_path(2, pixel) / array / "zarr.json"
    doc = json.loads(f.read_text())
    doc.update(change)
    f.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "array, change, words",
    [
        ("images", {"data_type": "float64"}, ["images are float64"]),
        ("z", {"shape": [15]}, ["column 'z'", "15"]),
        ("id", {"data_type": "float32"}, ["column 'id'", "int64"]),
        ("images", {"shape": [10**9, 5, 64, 64]}, ["claims 1000000000 cutouts"]),
        ("images", None, ["unreadable"]),
    ],
)
def test_store_partitions_that_break_the_contract_are_one_line(
    tiny_store, source_partition, tmp_path, capsys, array, change, words
):
    pixel = source_partition[0]
    if change is None:
        (tiny_store / paths.partition_group_path(2, pixel) / array / "zarr.json").write_text("{not json")
    else:
        _damage(tiny_store, pixel, array, **change)
    code, _, err = _run(tiny_store, tmp_path / "o", capsys, "--workers", "1")
    assert_one_line_error(code, err, f"partition {pixel}", *words)


@pytest.mark.skipif(os.geteuid() == 0 and not Path("/proc/self").exists(), reason="needs /proc")
def test_a_read_only_output_is_one_line(tiny_store, tmp_path, capsys, monkeypatch):
    import survey_mass.storage as storage

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "o"))

    monkeypatch.setattr(storage.tempfile, "mkstemp", read_only)  # the lock is the run's first write
    code, _, err = _run(tiny_store, tmp_path / "o", capsys, "--workers", "1")
    assert_one_line_error(code, err, "Read-only file system", str(tmp_path / "o"))


def test_query_output_a_format_cannot_hold_is_one_line(victim, capsys):
    cat, _, root = victim
    code, _, err = cli(
        ["query", cat, "SELECT [1, 2] AS pair FROM catalog LIMIT 1", "--format", "csv"], capsys
    )
    assert_one_line_error(code, err, "'pair'", "csv cannot hold")
    code, _, err = cli(
        ["query", cat, "SELECT 'ab'::BLOB AS b FROM catalog LIMIT 1", "--format", "json"], capsys
    )
    assert_one_line_error(code, err, "'b'", "json cannot hold")
    code, out, _ = cli(
        ["query", cat, "SELECT DATE '2026-12-07' AS d FROM catalog LIMIT 1", "--format", "json"], capsys
    )
    assert code == 0 and json.loads(out) == [{"d": "2026-12-07"}]


def test_more_workers_than_cores_is_one_line(tiny_store, tmp_path, capsys):
    n = (os.cpu_count() or 1) + 1
    code, _, err = _run(tiny_store, tmp_path / "o", capsys, "--workers", n)
    assert_one_line_error(code, err, f"--workers {n}", "core")


# --- 12. the footprint by content -------------------------------------------------------------------------------------


def test_a_resume_with_another_moc_of_the_same_name_is_refused(tiny_store, tmp_path):
    from mocpy import MOC

    from survey_mass.footprint import parse_footprint
    from survey_mass.inference.run import RunOptions, run_catalog
    from survey_mass.resources import model_dir

    moc_file = tmp_path / "region.fits"

    def run():
        return run_catalog(
            store_path=tiny_store,
            model_path=str(model_dir()),
            catalog=tmp_path / "o",
            footprint=parse_footprint(str(moc_file)),
            opts=RunOptions(attribution="none"),
            progress=False,
            workers=1,
        )

    MOC.from_string("2/100-111").save(moc_file, format="fits", overwrite=True)
    run()
    MOC.from_string("2/100-115").save(moc_file, format="fits", overwrite=True)
    with pytest.raises(SurveyMassError, match="footprint_digest"):
        run()


# --- what the review of #27 found, each shown first ---------------------------------------------------------------


def test_query_out_never_writes_into_the_catalog_however_it_is_named(victim, capsys):
    """A ``file://`` catalog, the primary catalog's own path (whose collection holds ``run_config.json`` and the
    margin), and a hard link to a partition file: none lets ``--out`` change a catalog file."""
    cat, _, root = victim
    before = tree_snapshot(cat)
    part = catalog_files(cat)[0]
    for catalog, out in [
        (f"file://{cat}", part),
        (cat / "masses", cat / "run_config.json"),
        (cat / "masses", cat / "masses_60arcs" / "x.parquet"),
    ]:
        code, _, err = cli(["query", catalog, "SELECT 1 AS x", "--format", "parquet", "--out", out], capsys)
        assert_one_line_error(code, err, "inside the catalog")
    link = root / "link.parquet"
    os.link(part, link)
    code, _, _ = cli(["query", cat, "SELECT 1 AS x", "--format", "parquet", "--out", link], capsys)
    assert code == 0 and pd.read_parquet(link)["x"].tolist() == [1]  # the link now names a new file
    assert tree_snapshot(cat) == before  # the partition it named is untouched


def test_a_query_output_that_fails_keeps_the_file_it_would_replace(victim, capsys):
    cat, _, root = victim
    keep = root / "keep.parquet"
    keep.write_bytes(b"precious")
    for sql, fmt in [
        ("SELECT INTERVAL 1 DAY AS i", "parquet"),
        ("SELECT union_value(k := 1) AS u", "table"),
        ("SELECT INTERVAL 1 DAY AS i", "csv"),
    ]:
        code, _, err = cli(["query", cat, sql, "--format", fmt, "--out", keep], capsys)
        assert_one_line_error(code, err, f"--format {fmt}")
    assert keep.read_bytes() == b"precious"


def test_two_locks_of_one_process_are_two_runs(tmp_path):
    from survey_mass.inference.run import RunLock

    with RunLock(tmp_path) as first:
        with pytest.raises(SurveyMassError, match="being written by another run"):
            RunLock(tmp_path).__enter__()
        assert first.path.read_text() == first.token


def test_a_lock_from_another_pid_namespace_is_judged_by_its_heartbeat(tmp_path):
    import socket
    import time

    from survey_mass.inference.run import LOCK_STALE_S, RunLock

    lock = RunLock(tmp_path)
    # another container on this host (its own pid 1, its own namespace), its lock touched just now: alive
    lock.path.write_text(f"1@{socket.gethostname()} nonce boot:5 pid:[4026531999]")
    with pytest.raises(SurveyMassError, match="another PID namespace"):
        lock.__enter__()
    # the same lock, untouched for longer than a live run leaves it: that container is gone
    old = time.time() - LOCK_STALE_S - 5
    os.utime(lock.path, (old, old))
    with lock:
        assert lock.path.read_text() == lock.token


def test_mock_frames_refuse_a_directory_of_someone_elses_files(tmp_path, capsys):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "candidates.parquet").write_bytes(b"their own catalogue")
    (theirs / ".tmp-notes.txt").write_text("notes")
    before = tree_snapshot(theirs)
    code, _, err = cli(
        [
            "mock",
            "--footprint",
            "box:147.25,147.5,2.25,2.5",
            "--out",
            tmp_path / "m.zarr",
            "--frames",
            theirs,
            "--no-progress",
        ],
        capsys,
    )
    assert_one_line_error(code, err, str(theirs), "mock_frames.json")
    assert tree_snapshot(theirs) == before and not (tmp_path / "m.zarr").exists()  # refused before any work


def test_the_model_id_covers_every_field_that_changes_the_masses(model_copy):
    from survey_mass.models.bundle import load_bundle

    card = json.loads((model_copy / paths.MODEL_CARD).read_text())
    for key, value in [("folds", 1), ("richness_input", not card["richness_input"])]:
        changed = dict(card, **{key: value})
        (model_copy / paths.MODEL_CARD).write_text(json.dumps(changed))
        with pytest.raises(ModelError, match="model_id"):
            load_bundle(model_copy)


def test_the_ingest_digest_covers_the_candidates_rows():
    from survey_mass.store.ingest import frames_digest

    rows = pd.DataFrame({"id": [1, 2], "ra": [150.0, 150.1], "dec": [2.0, 2.0], "z": [0.2, 0.3]})
    fixed = rows.assign(z=[0.2, 0.31])  # a corrected redshift at the same id
    assert frames_digest([], rows) == frames_digest([], rows.iloc[::-1])  # row order is not content
    assert frames_digest([], rows) != frames_digest([], fixed)


def test_overwrite_through_a_symlinked_store_is_refused(tiny_store, tmp_path):
    from survey_mass.store import create_store

    link = tmp_path / "link.zarr"
    link.symlink_to(tiny_store)
    with pytest.raises(StoreError, match="symbolic link"):
        create_store(
            link,
            cutout_size=64,
            pixel_scale_arcsec=6.336,
            healpix_order=2,
            survey="x",
            kind="mock",
            provenance={"seed": 9},
            overwrite=True,
        )
    assert (tiny_store / paths.STORE_ROOT_FILE).is_file()


@pytest.mark.parametrize(
    "values",
    [
        np.array([16777217], np.float32),
        np.array(["1_000"], object),
        np.array(["1e3"], object),
        np.array(["1.000"], object),
    ],
)
def test_ids_a_float32_or_loose_text_would_change_are_refused(values):
    from survey_mass.candidates import exact_ids

    with pytest.raises(CatalogInputError, match="row 0"):
        exact_ids(values, "c.csv")


# --- what the second review found --------------------------------------------------------------------------------


def test_query_out_is_refused_through_other_local_schemes_and_linked_datasets(victim, capsys):
    cat, _, root = victim
    part = catalog_files(cat)[0]
    before = tree_snapshot(cat)
    code, _, err = cli(["query", f"local://{cat}", "--format", "parquet", "--out", part], capsys)
    assert_one_line_error(code, err, "inside the catalog")
    code, _, err = cli(["query", f"simplecache::file://{cat}", "--format", "parquet", "--out", part], capsys)
    assert_one_line_error(code, err, "chained fsspec URLs")
    # the dataset directory is a link to where the partitions really are
    real = root / "realds"
    (cat / "masses" / "dataset").rename(real)
    (cat / "masses" / "dataset").symlink_to(real)
    target = real / part.relative_to(cat / "masses" / "dataset")
    code, _, err = cli(["query", cat, "--format", "parquet", "--out", target], capsys)
    assert_one_line_error(code, err, "inside the catalog")
    (cat / "masses" / "dataset").unlink()
    real.rename(cat / "masses" / "dataset")
    assert tree_snapshot(cat) == before


def test_a_users_file_that_looks_like_a_temporary_is_not_ours(tmp_path, capsys):
    from survey_mass.mock.frames import check_frames_directory

    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / ".tmp-backup-20240101").write_text("my notes")  # 8 hex digits, but not a name survey-mass makes
    with pytest.raises(SurveyMassError, match="no mock_frames.json"):
        check_frames_directory(frames)
    (frames / "mock_frames.json").write_text("{}")  # a planted marker is not a build's record
    with pytest.raises(SurveyMassError, match="not one survey-mass wrote"):
        check_frames_directory(frames)
    assert (frames / ".tmp-backup-20240101").read_text() == "my notes"
    assert paths.frame_temporaries(frames) == []


def test_a_run_that_lost_its_lock_does_not_finalize(tmp_path):
    from survey_mass.inference.run import RunLock

    with RunLock(tmp_path) as lock:
        lock.check_held()  # still ours
        lock.path.write_text("4242@elsewhere another run's")  # it stalled; another run took the output over
        with pytest.raises(SurveyMassError, match="lost its lock"):
            lock.check_held()
    assert lock.path.read_text() == "4242@elsewhere another run's"
