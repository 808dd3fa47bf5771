"""Shared fixtures. Tests may read ../shared (CI has it); the installed tool never does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_redmapper() -> pd.DataFrame:
    p = SHARED / "redmapper_dr8_v5.10.parquet"
    if not p.exists():
        pytest.skip("../shared/data is not present")
    return pd.read_parquet(p)


@pytest.fixture(scope="session")
def small_candidates() -> pd.DataFrame:
    """240 real redMaPPer clusters from one small sky region (all richnesses), for quick mocks."""
    from survey_mass.candidates import load_redmapper

    cat = load_redmapper()
    sel = cat[(cat.ra > 150) & (cat.ra < 160) & (cat.dec > 0) & (cat.dec < 12)]
    return sel.reset_index(drop=True)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory, small_candidates) -> Path:
    """A mock store of the small region, built in-process (no Dask)."""
    from survey_mass.footprint import parse_footprint
    from survey_mass.mock.survey import MockConfig, build_mock_store

    out = tmp_path_factory.mktemp("store") / "small.zarr"
    build_mock_store(
        parse_footprint("box:150,160,0,12"),
        out,
        candidates=small_candidates,
        config=MockConfig(seed=7),
        workers=1,
        progress=False,
    )
    return out


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(a), np.asarray(b)).statistic)


@pytest.fixture(scope="session")
def labelled_store(tmp_path_factory) -> Path:
    """~550 real clusters with a lowered X-ray flux limit, so that ~40% carry labels (enough for k folds)."""
    from survey_mass.candidates import load_redmapper
    from survey_mass.footprint import parse_footprint
    from survey_mass.mock.survey import MockConfig, build_mock_store

    out = tmp_path_factory.mktemp("lab") / "labelled.zarr"
    build_mock_store(
        parse_footprint("box:140,165,0,15"),
        out,
        candidates=load_redmapper(),
        config=MockConfig(seed=5, label_flux_limit=4e-13),
        workers=1,
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def smoke_model(tmp_path_factory, labelled_store) -> tuple[Path, dict]:
    """A model trained in well under a minute on the labelled store."""
    from survey_mass.training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("model") / "m"
    cfg = TrainConfig(
        folds=3,
        stage1_images=2800,
        stage1_epochs=4,
        background_cutouts=300,
        seed=1,
    )
    report = train(labelled_store, out, cfg, progress=False)
    return out, report


def run_small(store, out, **kw):
    from survey_mass.footprint import parse_footprint
    from survey_mass.inference.run import RunOptions, run_catalog
    from survey_mass.resources import model_dir

    opts = RunOptions(
        attribution=kw.pop("attribution", "sample"), sample_fraction=kw.pop("sample_fraction", 0.04), seed=3
    )
    return run_catalog(
        store_path=str(store),
        model_path=str(model_dir()),
        catalog=str(out),
        footprint=parse_footprint("box:140,170,-5,20"),
        opts=opts,
        progress=False,
        workers=kw.pop("workers", 1),
        **kw,
    )


@pytest.fixture(scope="session")
def small_catalog(tmp_path_factory, small_store) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cat") / "masses"
    return out, run_small(small_store, out)
