"""Faults: a worker killed mid-run, the whole run interrupted (SIGINT, SIGTERM), a write that fails, and two
runs into one output. None may end in a traceback, leave a partial partition file visible, or lose a row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from survey_mass.testing import assert_one_line_error, catalog_files, cli

#: the small store's southern half: 93 clusters in 3 partitions (1, 40, 52), enough to interrupt between them
FOOTPRINT = "box:150,160,0,6"
KEY_COLUMNS = [
    "id",
    "log10_m500",
    "log10_m500_err",
    "log10_m500_richness",
    "richness",
    "quality",
    "attr_delta_dex",
]


@pytest.fixture(scope="session")
def slow_pipeline(tmp_path_factory) -> Path:
    """Attribution on every row (8 IG steps from one baseline, no refinement below 0.1 dex), so that each
    partition takes seconds: time to interrupt it."""
    from survey_mass.resources import pipeline_dir

    text = (pipeline_dir() / "smoke.toml").read_text()
    import re

    text = re.sub(
        r"ig_steps = \d+",
        "ig_steps = 8\nig_baselines = 1\nig_tolerance_dex = 0.1",
        text.replace('mode = "sample"', 'mode = "all"').replace(
            'spec = "box:150,160,0,12"', f'spec = "{FOOTPRINT}"'
        ),
    )
    assert (
        f'spec = "{FOOTPRINT}"' in text
        and 'mode = "all"' in text
        and "ig_steps = 8" in text
        and "workers = 1" in text
    )
    p = tmp_path_factory.mktemp("pipe") / "slow.toml"
    p.write_text(text)
    return p


def _argv(store, out, pipeline, *extra):
    return ["run", "--pipeline", pipeline, "--store", store, "--out", out, "--no-progress", *extra]


@pytest.fixture(scope="session")
def clean_catalog(small_store, slow_pipeline, tmp_path_factory) -> pd.DataFrame:
    from survey_mass.cli import main

    out = tmp_path_factory.mktemp("clean") / "cat"
    assert main([str(a) for a in _argv(small_store, out, slow_pipeline)]) == 0
    return _read(out)


def _start_run(store, out, pipeline) -> subprocess.Popen:
    """``survey-mass run`` in a real subprocess, so that signals reach it as they would from a shell.

    SIGINT is reset to its default in the child: a test session started in the background by a non-interactive
    shell inherits SIGINT *ignored*, and Python then never turns it into KeyboardInterrupt.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "survey_mass.cli", *map(str, _argv(store, out, pipeline))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _read(catalog: Path) -> pd.DataFrame:
    files = catalog_files(catalog)
    return pq.ParquetDataset(files).read().to_pandas().sort_values("id").reset_index(drop=True)


def _assert_same_catalog(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b) and a.id.is_unique and b.id.is_unique
    assert (a.id.to_numpy() == b.id.to_numpy()).all()
    assert (a.quality.to_numpy() == b.quality.to_numpy()).all()
    for c in KEY_COLUMNS[1:]:
        if c != "quality":
            np.testing.assert_allclose(a[c], b[c], rtol=1e-4, atol=1e-5, equal_nan=True, err_msg=c)


def _no_partial_files(catalog: Path) -> None:
    assert not list(catalog.rglob(".tmp-*")), "a temporary (partial) file is left behind"
    for f in catalog_files(catalog):
        pq.read_metadata(f)  # every visible partition file is complete


def _wait_for(cond, timeout=240.0, what="condition"):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# SIGTERM here; SIGINT's exit and message are checked by the refused-second-run test below (#29: suite time)
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM], ids=["SIGTERM"])
def test_interrupted_run_resumes_with_no_duplicate_and_no_lost_row(
    sig, small_store, slow_pipeline, clean_catalog, tmp_path, capsys
):
    out = tmp_path / "cat"
    proc = _start_run(small_store, out, slow_pipeline)
    _wait_for(lambda: catalog_files(out), what="the first partition")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("interrupted; finished partitions are kept, rerun to resume")
    _no_partial_files(out)
    from hats.pixel_math.healpix_shim import radec2pix

    done = len(catalog_files(out))
    partitions = np.unique(radec2pix(2, clean_catalog.ra.to_numpy(), clean_catalog.dec.to_numpy())).size
    assert 1 <= done < partitions == 3  # interrupted between partitions: some, not all, written
    assert not (out / ".lock").exists()
    # the rerun computes only what is missing
    code, stdout, _ = cli(_argv(small_store, out, slow_pipeline), capsys)
    assert code == 0
    import json

    summary = json.loads((out / "run.json").read_text())
    assert summary["partitions_skipped"] == done and summary["partitions_computed"] == partitions - done
    _no_partial_files(out)
    _assert_same_catalog(_read(out), clean_catalog)


@pytest.mark.slow
def test_worker_killed_mid_run_completes_with_the_same_catalog(small_store, clean_catalog, tmp_path):
    from distributed import Client, LocalCluster

    from survey_mass.footprint import parse_footprint
    from survey_mass.inference.cluster import worker_environment
    from survey_mass.inference.run import RunOptions, run_catalog
    from survey_mass.resources import model_dir

    with worker_environment():
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=50)
    client = Client(cluster)
    out = tmp_path / "cat"
    result, error = {}, []

    def go():
        try:
            result.update(
                run_catalog(
                    store_path=str(small_store),
                    model_path=str(model_dir()),
                    catalog=str(out),
                    footprint=parse_footprint(FOOTPRINT),
                    opts=RunOptions(attribution="all", ig_steps=8, ig_baselines=1, ig_tolerance_dex=0.1),
                    scheduler=cluster.scheduler_address,
                    progress=False,
                )
            )
        except BaseException as exc:  # pragma: no cover - reported below
            error.append(exc)

    try:
        pids = client.run(os.getpid)
        t = threading.Thread(target=go)
        t.start()
        # wait until a worker is busy with a partition, then kill that worker's process outright
        busy = {}
        _wait_for(
            lambda: busy.update({w: k for w, k in client.processing().items() if k}) or busy, what="a task"
        )
        victim = next(iter(busy))
        os.kill(pids[victim], signal.SIGKILL)
        t.join(timeout=600)
        assert not t.is_alive() and not error, error
        assert pids[victim] not in client.run(os.getpid).values()  # the killed worker really died
    finally:
        client.close()
        cluster.close()
    assert result["rows"] == clean_catalog.id.size
    _no_partial_files(out)
    _assert_same_catalog(_read(out), clean_catalog)


def test_failed_write_gives_a_clear_message_and_no_partial_file(tiny_store, tmp_path, capsys, monkeypatch):
    import errno

    import survey_mass.catalog.writer as writer

    real = writer.pq.write_table
    calls = []

    def full_disk(table, where, **kw):
        calls.append(where)
        real(table.slice(0, max(table.num_rows // 2, 1)), where, **kw)  # half a file lands on disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer.pq, "write_table", full_disk)
    out = tmp_path / "cat"
    code, _, err = cli(
        [
            "run",
            "--store",
            tiny_store,
            "--footprint",
            "box:140,170,-5,20",
            "--out",
            out,
            "--workers",
            "1",
            "--attribution",
            "none",
            "--no-progress",
        ],
        capsys,
    )
    assert calls
    assert_one_line_error(code, err, str(out), "could not be written", "No space left on device")
    assert not list(out.rglob("*.parquet*")) and not list(out.rglob(".tmp-*"))
    assert not (out / ".lock").exists()


def test_failed_margin_write_keeps_the_catalog_and_the_rerun_completes(
    small_store, tmp_path, capsys, monkeypatch
):
    """The disk fills while the margin cache is written: one line, no partial file, the primary partitions
    kept; the rerun computes no partition again and completes the collection."""
    import errno

    import survey_mass.catalog.writer as writer
    from survey_mass import paths

    real = writer.pq.write_table

    def full_disk_in_margin(table, where, **kw):
        if paths.margin_name(60) in str(where):
            real(table.slice(0, max(table.num_rows // 2, 1)), where, **kw)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(table, where, **kw)

    out = tmp_path / "cat"
    argv = ["run", "--store", small_store, "--footprint", "box:140,170,-5,20", "--out", out, "--workers", "1"]
    argv += ["--attribution", "none", "--no-progress"]
    monkeypatch.setattr(writer.pq, "write_table", full_disk_in_margin)
    code, _, err = cli(argv, capsys)
    assert_one_line_error(
        code, err, str(paths.margin_catalog(out, 60)), "could not be written", "No space left"
    )
    assert not list(out.rglob(".tmp-*")) and not (out / ".lock").exists()
    assert not paths.collection_properties(out).exists()  # the collection is not announced as complete
    kept = catalog_files(out)
    assert kept and not paths.catalog_partition_files(paths.margin_catalog(out, 60))
    monkeypatch.setattr(writer.pq, "write_table", real)
    code, _, err = cli(argv, capsys)
    assert code == 0, err
    import json

    summary = json.loads(paths.run_summary_file(out).read_text())
    assert summary["partitions_computed"] == 0 and summary["margin_rows"] > 0
    assert paths.collection_properties(out).is_file()


def test_second_run_into_the_same_output_is_refused(small_store, slow_pipeline, tmp_path, capsys):
    out = tmp_path / "cat"
    proc = _start_run(small_store, out, slow_pipeline)
    try:
        config = out / "run_config.json"
        _wait_for(
            lambda: (out / ".lock").exists() and config.exists(), what="the first run's lock and config"
        )
        before = (config.read_bytes(), (out / ".lock").read_text())
        code, _, err = cli(_argv(small_store, out, slow_pipeline), capsys)
        assert_one_line_error(code, err, str(out), "being written by another run", f"pid {proc.pid}")
        # the refused run touched neither the holder's configuration nor its lock
        assert config.read_bytes() == before[0]
        assert (out / ".lock").read_text().split()[:2] == before[1].split()[:2]
        assert before[1].startswith(f"{proc.pid}@")
        assert proc.poll() is None  # and the first run goes on
    finally:
        proc.send_signal(signal.SIGINT)
        _, first_err = proc.communicate(timeout=120)
    # Ctrl-C stops the first run as SIGTERM does: exit 130, one line, no traceback; its finished work is intact
    # and its lock is gone (a rerun resumes it, as the interrupted-run test above shows)
    assert proc.returncode == 130 and "Traceback" not in first_err, first_err
    assert (
        first_err.strip()
        .splitlines()[-1]
        .endswith("interrupted; finished partitions are kept, rerun to resume")
    )
    _no_partial_files(out)
    assert not (out / ".lock").exists()


def test_resume_with_other_settings_is_refused(small_store, slow_pipeline, tmp_path, capsys):
    from survey_mass.testing import run_small

    out = tmp_path / "cat"
    run_small(small_store, out, attribution="none")  # a finished run with no attribution
    code, _, err = cli(_argv(small_store, out, slow_pipeline), capsys)
    assert_one_line_error(code, err, str(out), "other settings")


def test_nothing_is_written_outside_out(small_store, tmp_path, monkeypatch, capsys):
    """Security: a run (Dask workers included) writes only inside --out; the store is only read."""

    def snapshot(root: Path) -> dict:
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}

    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    store_before = snapshot(small_store)
    work_before = snapshot(work)
    out = work / "out" / "cat"
    code, _, err = cli(
        [
            "run",
            "--store",
            small_store,
            "--footprint",
            FOOTPRINT,
            "--out",
            out,
            "--workers",
            "2",
            "--attribution",
            "none",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    assert snapshot(small_store) == store_before
    after = {k: v for k, v in snapshot(work).items() if not k.startswith(str(out) + os.sep)}
    assert after == work_before
    assert not (out / ".dask-scratch").exists() and not (out / ".lock").exists()
