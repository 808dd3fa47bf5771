import json

from survey_mass.models.bundle import load_bundle
from survey_mass.resources import model_dir


def test_shipped_model_loads_and_matches_the_mock_geometry(small_store):
    from survey_mass.store import open_store

    b = load_bundle(model_dir())
    card = b.card
    assert card.bands == ["u", "g", "r", "i", "z"] and card.folds == len(b.heads) == 5
    assert card.training_data.n_labelled > 300  # the MCXC-like mock labels 1.5% of the training store
    # five estimators; the headline reads the catalogue richness, the pixels model is the second head set, and
    # the catalogue relations on lambda and on lambda + BCG are fitted on the same five folds
    assert card.richness_input and card.pixels is not None and len(b.pixels.heads) == 5
    assert len(b.relation.folds) == 5 and b.relation.calibration["scale"] > 0
    assert len(b.relation_bcg.folds) == 5 and b.relation_bcg.bcg and b.relation_bcg.calibration["scale"] > 0
    assert all(f[3] < 0 for f in b.relation_bcg.folds)  # a brighter central galaxy, a higher mass
    for name, cov in card.metrics.coverage_68_vs_truth.items():
        assert 0.6 < cov < 0.78, name
    # the simulation-calibrated term came from independent mocks, not the training store
    report = json.loads((model_dir() / "report.json").read_text())
    assert report["calibration_stores"] and report["store"] not in report["calibration_stores"]
    b.check_store(open_store(small_store))  # same cutout size, pixel scale and band order as the mock
    assert report["summary"]["mean_fold_mae"] == card.metrics.mean_fold_mae_vs_label
    assert report["model_id"] == card.model_id
