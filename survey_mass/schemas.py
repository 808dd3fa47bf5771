"""The contracts between stages, read from ``schemas/*.json``: one place for each contract."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from .resources import schema_dir

STORE_ATTRIBUTES = "store_attributes.schema.json"
CATALOG = "catalog.schema.json"
PIPELINE = "pipeline.schema.json"


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
