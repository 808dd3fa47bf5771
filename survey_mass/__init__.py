"""survey-mass: galaxy-cluster masses with honest uncertainties and explanations, for every cluster in a survey.

The public API is re-exported here and imported lazily, so that ``import survey_mass`` (and the command line's
``--help``) stay fast.

Examples
--------
>>> import survey_mass
>>> survey_mass.parse_footprint("dr12").order
2
"""

from __future__ import annotations

from importlib import import_module

from ._version import __version__

_EXPORTS = {
    "parse_footprint": "survey_mass.footprint",
    "Footprint": "survey_mass.footprint",
    "open_store": "survey_mass.store",
    "CutoutStore": "survey_mass.store",
    "build_mock_store": "survey_mass.mock.survey",
    "MockConfig": "survey_mass.mock.survey",
    "ingest_frames": "survey_mass.store.ingest",
    "train": "survey_mass.training.train",
    "TrainConfig": "survey_mass.training.train",
    "load_bundle": "survey_mass.models.bundle",
    "predict_partition": "survey_mass.inference.predict",
    "run_catalog": "survey_mass.inference.run",
    "RunOptions": "survey_mass.inference.run",
    "load_pipeline": "survey_mass.pipelines",
    "Pipeline": "survey_mass.pipelines",
    "pipeline_with_flags": "survey_mass.pipelines",
    "run_pipeline": "survey_mass.api",
    "RunSummary": "survey_mass.inference.run",
    "StoreAttributes": "survey_mass.store",
    "Quality": "survey_mass.quality",
    "SurveyMassError": "survey_mass.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'survey_mass' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
