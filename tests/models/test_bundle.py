import json

from survey_mass.models.bundle import load_bundle
from survey_mass.resources import model_dir


def test_shipped_model_loads_and_matches_the_mock_geometry(small_store):
    from survey_mass.store import open_store

    b = load_bundle(model_dir())
    card = b.card
    assert card.bands == ["u", "g", "r", "i", "z"] and card.folds == len(b.heads) == 5
    assert card.training_data.n_labelled > 500
    assert card.metrics.coverage_68_calibrated > 0.63
    b.check_store(open_store(small_store))  # same cutout size, pixel scale and band order as the mock
    report = json.loads((model_dir() / "report.json").read_text())
    assert report["summary"]["mean_fold_mae_cnn"] == card.metrics.mean_fold_mae_cnn
    assert report["model_id"] == card.model_id
