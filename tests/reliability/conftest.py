"""Fixtures for injecting faults: small stores made from real mock cutouts, then damaged on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest

from survey_mass import testing


@pytest.fixture(scope="session")
def source_partition(small_store):
    """The biggest partition of the small mock store: (pixel, images, columns)."""
    return testing.biggest_partition(small_store)


@pytest.fixture
def tiny_store(tmp_path, source_partition) -> Path:
    """16 real mock cutouts in one partition."""
    return testing.make_tiny_store(tmp_path / "tiny.zarr", source_partition, 16)


@pytest.fixture
def model_copy(tmp_path) -> Path:
    return testing.copy_model(tmp_path / "model")
