"""The committed schemas/*.json that are generated from the pydantic contracts equal what the models give."""

import json

import pytest

from survey_mass import schemas


@pytest.mark.parametrize("name", sorted(schemas.GENERATED))
def test_committed_schema_is_generated_from_its_model(name):
    committed = (schemas.schema_dir() / name).read_text()
    assert committed == schemas.render(name), f"{name} is stale: run python -m survey_mass.schemas --write"


def test_generator_writes_and_checks(tmp_path):
    assert schemas.main(["--check"]) == 0
    assert sorted(schemas.stale(tmp_path)) == sorted(schemas.GENERATED)  # nothing there yet
    schemas.write(tmp_path)
    assert schemas.stale(tmp_path) == []
    (tmp_path / schemas.PIPELINE).write_text("{}")
    assert schemas.main(["--check", "--dir", str(tmp_path)]) == 1


def test_generated_schemas_validate_what_the_models_accept():
    from survey_mass.pipelines import load_pipeline

    doc = load_pipeline("dr12").model_dump(mode="json")
    assert schemas.first_error(schemas.PIPELINE, doc) is None
    assert "store.kind" in schemas.first_error(schemas.PIPELINE, {**doc, "store": {"kind": "mock"}}).replace(
        "store: Additional properties are not allowed ('kind'", "store.kind"
    )
    assert json.loads(schemas.render(schemas.RUN_SUMMARY))["additionalProperties"] is False
