"""Where the files that ship with the package live.

The contracts (``schemas/``) and named pipelines (``pipelines/``) sit at the top of the repository and the build
copies them into the wheel as ``survey_mass/_schemas`` and ``survey_mass/_pipelines``. Real catalogs and the
``dr12`` MOC live in ``survey_mass/data``. This module finds each of them in a wheel and in a source checkout
alike, and nothing else in the package hard-codes those locations.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent
_REPO = _PKG.parent


def _first_existing(*candidates: Path) -> Path:
    for c in candidates:
        if c.exists():
            return c
    return candidates[0]


def data_path(name: str) -> Path:
    """Path of a file in the package data folder (real catalogs, the dr12 MOC)."""
    return _PKG / "data" / name


def schema_dir() -> Path:
    """Folder holding the JSON contracts between stages."""
    return _first_existing(_PKG / "_schemas", _REPO / "schemas")


def pipeline_dir() -> Path:
    """Folder holding the named pipeline definitions (``dr12.toml``, ``smoke.toml``, ...)."""
    return _first_existing(_PKG / "_pipelines", _REPO / "pipelines")


def benchmarks_module():
    """The ``benchmarks/throughput.py`` module (shipped as ``survey_mass/_benchmarks``), imported by path."""
    import importlib.util

    path = _first_existing(_PKG / "_benchmarks", _REPO / "benchmarks") / "throughput.py"
    spec = importlib.util.spec_from_file_location("survey_mass_benchmarks_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_dir() -> Path:
    """Folder holding the shipped model bundle (weights and model card)."""
    return _PKG / "data" / "model"
