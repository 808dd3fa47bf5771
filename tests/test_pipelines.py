import pytest

from survey_mass.errors import PipelineError
from survey_mass.footprint import parse_footprint
from survey_mass.pipelines import available, load_pipeline


def test_shipped_pipelines_validate_and_name_real_footprints():
    assert {"dr12", "smoke", "train_shipped"} <= set(available())
    for name in available():
        p = load_pipeline(name)
        assert parse_footprint(p.footprint.spec).area_deg2 > 0


@pytest.mark.parametrize(
    "text, words",
    [
        ('name = "x"', "footprint: Field required"),
        (
            'name = "x"\n[footprint]\nspec = "dr12"\n[store]\n[model]\n[inference]\nbatch_size = 0\n'
            "[attribution]\n[cluster]\n",
            "inference.batch_size",
        ),
        (
            'name = "x"\n[footprint]\nspec = "dr12"\n[store]\nkind = "mock"\n',
            "store.kind: Extra inputs are not permitted",
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


def test_every_key_has_one_default_and_flags_override():
    from survey_mass.pipelines import Pipeline, pipeline_with_flags

    p = Pipeline.model_validate({"name": "x", "footprint": {"spec": "dr12"}})
    assert p.attribution.mode == "auto" and p.cluster.workers == 2 and p.store.path == ""
    q = pipeline_with_flags(p, workers=4, store="s.zarr", device=None, attribution="none")
    assert (q.cluster.workers, q.store.path, q.inference.device, q.attribution.mode) == (
        4,
        "s.zarr",
        "auto",
        "none",
    )
    assert p.cluster.workers == 2  # the original is unchanged
    with pytest.raises(PipelineError, match="cluster.workers"):
        pipeline_with_flags(p, workers=0)


def test_mock_and_training_sections_reach_their_configs():
    from survey_mass.api import mock_config
    from survey_mass.mock.survey import MockConfig

    p = load_pipeline("smoke").updated(mock={"set": ["sky_noise_scale=2"], "cutout_size": 32})
    cfg = mock_config(p, order=3)
    assert (cfg.seed, cfg.cutout_size, cfg.order, cfg.physics.sky_noise_scale) == (7, 32, 3, 2.0)
    assert cfg.candidates == MockConfig().candidates and p.mock.uses_embedded_candidates
    t = load_pipeline("train_shipped").training
    cfg = t.train_config(folds=3, seed=None)
    assert (cfg.folds, cfg.seed, cfg.stage1_images, cfg.stage1_epochs, cfg.variant) == (
        3,
        2022,
        60000,
        3,
        "cpu",
    )


def test_a_bad_physics_override_names_the_pipeline_file(tmp_path):
    from survey_mass.api import mock_config

    f = tmp_path / "p.toml"
    f.write_text('name = "x"\n[footprint]\nspec = "dr12"\n[mock]\nset = ["nope=1"]\n')
    with pytest.raises(PipelineError, match=f"{f}.*mock.set.*nope"):
        mock_config(load_pipeline(f), order=2)
