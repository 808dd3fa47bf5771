"""The contracts between stages.

Most ``schemas/*.json`` files are GENERATED from the pydantic models that are the contracts
(:data:`GENERATED`); regenerate them with ``python -m survey_mass.schemas --write`` and check them with
``python -m survey_mass.schemas --check`` (``tests/test_schemas.py`` does). ``catalog.schema.json`` (the Arrow
column list of a mass catalog) is written by hand and read here.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import Any

from .resources import schema_dir

STORE_ATTRIBUTES = "store_attributes.schema.json"
CATALOG = "catalog.schema.json"
PIPELINE = "pipeline.schema.json"
RUN_SUMMARY = "run_summary.schema.json"
RUN_CONFIG = "run_config.schema.json"
MODEL_CARD = "model_card.schema.json"
TRAINING_REPORT = "training_report.schema.json"

#: schema file -> (module, pydantic model) it is generated from
GENERATED: dict[str, tuple[str, str]] = {
    PIPELINE: ("survey_mass.pipelines", "Pipeline"),
    STORE_ATTRIBUTES: ("survey_mass.store.cutouts", "StoreAttributes"),
    RUN_SUMMARY: ("survey_mass.inference.run", "RunSummary"),
    RUN_CONFIG: ("survey_mass.inference.run", "RunConfig"),
    MODEL_CARD: ("survey_mass.models.bundle", "ModelCard"),
    TRAINING_REPORT: ("survey_mass.training.report", "TrainingReport"),
    "validation_report.schema.json": ("survey_mass.validate", "ValidationReport"),
    "real_validation_report.schema.json": ("survey_mass.validate_real", "RealValidationReport"),
}


@cache
def load(name: str) -> dict[str, Any]:
    """The JSON document of a schema file."""
    return json.loads((schema_dir() / name).read_text())


def first_error(name: str, document: Any) -> str | None:
    """A one-line description of the first way ``document`` breaks schema ``name``, or None if it validates."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load(name))
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    e = errors[0]
    where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
    return f"{where}: {e.message}"


def generate(name: str) -> dict[str, Any]:
    """The JSON Schema of a generated schema file, from its model."""
    module, model = GENERATED[name]
    schema = getattr(import_module(module), model).model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def render(name: str) -> str:
    """The text of a generated schema file."""
    return json.dumps(generate(name), indent=2, ensure_ascii=False) + "\n"


def stale(directory: str | Path | None = None) -> list[str]:
    """Generated schema files in ``directory`` (default: the shipped ones) that differ from their models."""
    d = Path(directory) if directory is not None else schema_dir()
    return [n for n in GENERATED if not (d / n).is_file() or (d / n).read_text() != render(n)]


def write(directory: str | Path | None = None) -> list[Path]:
    """Write every generated schema file into ``directory`` (default: the shipped folder)."""
    d = Path(directory) if directory is not None else schema_dir()
    out = []
    for n in GENERATED:
        (d / n).write_text(render(n))
        out.append(d / n)
    load.cache_clear()
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m survey_mass.schemas", description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true", help="regenerate schemas/*.json from the models")
    g.add_argument("--check", action="store_true", help="exit 1 if a committed file differs from its model")
    p.add_argument("--dir", help="schema folder (default: the shipped one)")
    args = p.parse_args(argv)
    if args.write:
        for f in write(args.dir):
            print(f)
        return 0
    bad = stale(args.dir)
    for n in bad:
        print(f"{n}: differs from its model; run python -m survey_mass.schemas --write")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
