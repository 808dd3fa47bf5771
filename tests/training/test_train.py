import json

import numpy as np
import pytest

from survey_mass.models.bundle import ModelError, load_bundle
from survey_mass.training.train import assign_folds


def test_folds_partition_the_clusters():
    ids = np.arange(1000, 1103)
    f = assign_folds(ids, 5, seed=3)
    assert set(f.tolist()) == set(range(5))
    assert np.bincount(f).max() - np.bincount(f).min() <= 1
    np.testing.assert_array_equal(f, assign_folds(ids, 5, seed=3))  # seeded


def test_smoke_training_learns(smoke_model):
    out, r = smoke_model
    assert r["timing_s"]["total"] < 60
    # stage 1: loss falls and every band is recognised well above chance (0.2)
    assert r["stage1_loss_per_epoch"][-1] < r["stage1_loss_per_epoch"][0]
    assert np.mean(list(r["band_accuracy"].values())) > 0.4
    # stage 2: the training NLL falls in every fold, and the best validation NLL beats the first on average
    for curve in r["stage2_curves"]:
        assert min(t for t, _ in curve) < curve[0][0]
    assert np.mean([min(v for _, v in c) for c in r["stage2_curves"]]) < np.mean(
        [c[0][1] for c in r["stage2_curves"]]
    )
    s = r["summary"]
    assert s["cnn_vs_label"]["mae"] < 0.35 and s["richness_vs_label"]["mae"] < 0.35
    assert 0.55 < r["calibration"]["coverage_68_after"] < 0.8
    for f in (
        "report.json",
        "report.md",
        "pred_vs_label.png",
        "residuals.png",
        "calibration.png",
        "model_card.json",
    ):
        assert (out / f).is_file()


def test_bundle_round_trip_and_card(smoke_model, labelled_store):
    from survey_mass.store import open_store

    out, r = smoke_model
    b = load_bundle(out)
    card = json.loads((out / "model_card.json").read_text())
    assert card["bands"] == ["u", "g", "r", "i", "z"] and card["folds"] == 3 == len(b.heads)
    assert card["input"]["cutout_size"] == 64 and card["model_id"].startswith("survey-mass-cpu-")
    b.check_store(open_store(labelled_store))


def test_mismatched_bundle_is_refused(smoke_model, labelled_store, tmp_path):
    import shutil

    from survey_mass.store import open_store

    out, _ = smoke_model
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    card = json.loads((bad / "model_card.json").read_text())
    card["bands"] = ["g", "r", "i", "z", "u"]
    (bad / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="band order"):
        load_bundle(bad).check_store(open_store(labelled_store))
    card["bands"] = ["u", "g", "r", "i", "z"]
    card["input"]["cutout_size"] = 128
    (bad / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="128-pixel"):
        load_bundle(bad).check_store(open_store(labelled_store))


def test_pickled_weights_never_run(smoke_model, tmp_path):
    import pickle
    import shutil

    out, _ = smoke_model
    bad = tmp_path / "evil"
    shutil.copytree(out, bad)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (bad / "backbone.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelError, match="safetensors"):
        load_bundle(bad)
    assert not marker.exists()


def test_missing_file_is_named(smoke_model, tmp_path):
    import shutil

    out, _ = smoke_model
    bad = tmp_path / "m"
    shutil.copytree(out, bad)
    (bad / "heads.safetensors").unlink()
    with pytest.raises(ModelError, match="heads.safetensors is missing"):
        load_bundle(bad)


def test_interrupted_training_resumes(labelled_store, tmp_path):
    from survey_mass.training.train import TrainConfig, train

    cfg = TrainConfig(
        folds=2,
        stage1_images=600,
        stage1_epochs=2,
        stage2_epochs=10,
        stage2_patience=5,
        background_cutouts=50,
        seed=4,
    )
    out = tmp_path / "m"
    first = train(labelled_store, out, cfg, progress=False)
    # simulate an interruption after stage 1 epoch 1 and fold 0: drop the later checkpoints and the bundle
    (out / "checkpoints" / "fold1.pt").unlink()
    (out / "heads.safetensors").unlink()
    again = train(labelled_store, out, cfg, progress=False)
    assert again["timing_s"]["stage1"] < first["timing_s"]["stage1"]  # stage 1 was not redone
    np.testing.assert_allclose(again["oof"]["cnn"], first["oof"]["cnn"], atol=1e-5)
