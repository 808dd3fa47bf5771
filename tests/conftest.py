"""Shared fixtures. Tests may read ../shared (CI has it); the installed tool never does."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from survey_mass import testing

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_redmapper() -> pd.DataFrame:
    cat = testing.read_shared_redmapper(SHARED)
    if cat is None:
        pytest.skip("../shared/data is not present")
    return cat


@pytest.fixture(scope="session")
def small_candidates() -> pd.DataFrame:
    """240 real redMaPPer clusters from one small sky region (all richnesses), for quick mocks."""
    return testing.small_candidates()


@pytest.fixture(scope="session")
def small_store(tmp_path_factory, small_candidates) -> Path:
    """A mock store of the small region, built in-process (no Dask)."""
    return testing.build_small_store(tmp_path_factory.mktemp("store") / "small.zarr", small_candidates)


@pytest.fixture(scope="session")
def labelled_store(tmp_path_factory) -> Path:
    """~550 real clusters with a lowered X-ray flux limit, so that ~40% carry labels (enough for k folds)."""
    return testing.build_labelled_store(tmp_path_factory.mktemp("lab") / "labelled.zarr")


@pytest.fixture(scope="session")
def smoke_model(tmp_path_factory, labelled_store) -> tuple[Path, dict]:
    """A model trained in well under a minute on the labelled store."""
    return testing.train_smoke_model(labelled_store, tmp_path_factory.mktemp("model") / "m")


@pytest.fixture(scope="session")
def small_catalog(tmp_path_factory, small_store) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cat") / "masses"
    return out, testing.run_small(small_store, out)
