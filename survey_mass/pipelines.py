"""Named, declarative run definitions (``pipelines/*.toml``), validated against ``schemas/pipeline.schema.json``.

Examples
--------
>>> p = load_pipeline("smoke")
>>> p["footprint"]["spec"], p["mock"]["seed"]
('box:150,160,0,12', 7)
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from . import schemas
from .errors import PipelineError
from .resources import pipeline_dir


def available() -> list[str]:
    """Names of the shipped pipelines."""
    return sorted(p.stem for p in pipeline_dir().glob("*.toml"))


def load_pipeline(name_or_path: str | Path) -> dict[str, Any]:
    """Read and validate a pipeline by shipped name (``dr12``) or path; PipelineError names the key and reason."""
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        p = pipeline_dir() / f"{name_or_path}.toml"
        if not p.exists():
            raise PipelineError(
                f"pipeline {str(name_or_path)!r}: unknown; shipped pipelines: {', '.join(available())}"
            )
    if not p.is_file():
        raise PipelineError(f"pipeline {str(p)!r}: no such file")
    try:
        doc = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"pipeline {str(p)!r}: not valid TOML ({exc})") from None
    err = schemas.first_error(schemas.PIPELINE, doc)
    if err:
        raise PipelineError(f"pipeline {str(p)!r}: {err}")
    return doc
