import pytest

from survey_mass.errors import PipelineError
from survey_mass.footprint import parse_footprint
from survey_mass.pipelines import available, load_pipeline


def test_shipped_pipelines_validate_and_name_real_footprints():
    assert {"dr12", "smoke", "train_shipped"} <= set(available())
    for name in available():
        p = load_pipeline(name)
        assert parse_footprint(p["footprint"]["spec"]).area_deg2 > 0


@pytest.mark.parametrize(
    "text, words",
    [
        ('name = "x"', "required property"),
        (
            'name = "x"\n[footprint]\nspec = "dr12"\n[store]\nkind = "mock"\n[model]\n[inference]\nbatch_size = 0\n'
            "[attribution]\n[cluster]\n",
            "inference.batch_size",
        ),
        (
            'name = "x"\n[footprint]\nspec = "dr12"\n[store]\nkind = "tape"\n[model]\n[inference]\n[attribution]\n'
            "[cluster]\n",
            "store.kind",
        ),
        ("name = = 1", "not valid TOML"),
    ],
)
def test_bad_pipeline_names_key_and_reason(tmp_path, text, words):
    p = tmp_path / "mine.toml"
    p.write_text(text)
    with pytest.raises(PipelineError, match=words) as e:
        load_pipeline(p)
    assert str(p) in str(e.value)
