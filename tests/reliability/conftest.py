"""Fixtures for injecting faults: small stores made from real mock cutouts, then damaged on purpose."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest


def cli(argv, capsys):
    """Run the command line in-process; return (exit code, stdout, stderr). Any exception a user could see as
    a traceback propagates and fails the test."""
    from survey_mass.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code != 0, "a bad input must exit non-zero"
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert "Traceback" not in err
    for w in words:
        assert str(w) in lines[0], (w, lines[0])


@pytest.fixture(scope="session")
def source_partition(small_store):
    """The biggest partition of the small mock store: (pixel, images, columns)."""
    from survey_mass.store import open_store

    st = open_store(small_store)
    p = max(st.partitions, key=st.n_cutouts)
    return p, st.images(p), st.columns(p)


def make_store(path: Path, pixel: int, images: np.ndarray, columns: dict, *, manifest: bool = True) -> Path:
    """A one-partition store with the mock's geometry (the shipped model's)."""
    from survey_mass.mock.survey import MockConfig
    from survey_mass.store import create_store, write_partition
    from survey_mass.store.cutouts import write_manifest

    create_store(
        path,
        cutout_size=images.shape[-1],
        pixel_scale_arcsec=MockConfig().pixel_scale_arcsec,
        healpix_order=2,
        survey="SDSS DR12 (mock)",
        kind="mock",
        provenance={"test": "reliability"},
    )
    write_partition(path, pixel, images, columns)
    if manifest:
        write_manifest(path)
    return path


@pytest.fixture
def tiny_store(tmp_path, source_partition) -> Path:
    """16 real mock cutouts in one partition."""
    p, images, cols = source_partition
    n = 16
    return make_store(tmp_path / "tiny.zarr", p, images[:n].copy(), {k: v[:n] for k, v in cols.items()})


@pytest.fixture
def model_copy(tmp_path) -> Path:
    from survey_mass.resources import model_dir

    out = tmp_path / "model"
    shutil.copytree(model_dir(), out, ignore=shutil.ignore_patterns("*.png", "report.*"))
    return out


FOOTPRINT = "box:140,170,-5,20"
