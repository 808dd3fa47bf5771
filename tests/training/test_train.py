import json

import numpy as np
import pytest

from survey_mass.models.bundle import ModelError, load_bundle
from survey_mass.testing import reseal_model
from survey_mass.training.train import assign_folds


def test_folds_partition_the_clusters():
    ids = np.arange(1000, 1103)
    f = assign_folds(ids, 5, seed=3)
    assert set(f.tolist()) == set(range(5))
    assert np.bincount(f).max() - np.bincount(f).min() <= 1
    np.testing.assert_array_equal(f, assign_folds(ids, 5, seed=3))  # seeded


def test_smoke_training_learns(smoke_model):
    out, r = smoke_model
    assert r.timing_s["total"] < 150  # two head sets, the catalogue relation and lambda-hat
    # stage 1: loss falls and every band is recognised well above chance (0.2)
    assert r.stage1_loss_per_epoch[-1] < r.stage1_loss_per_epoch[0]
    assert np.mean(list(r.band_accuracy.values())) > 0.4
    # stage 2: along each fold's ridge path (strongest first) the training NLL falls, for both head sets
    assert set(r.stage2_curves) == {"pixels", "headline"}
    for curves in r.stage2_curves.values():
        for curve in curves:
            assert curve[-1][0] < curve[0][0]
    # every cluster's out-of-fold mass is scored against the truth, for all five estimators
    s = r.summary
    assert s.n_population == r.n_cutouts
    assert set(s.estimators) == {"headline", "pixels", "lambda", "lambda_bcg", "richness"}
    for name, sc in s.estimators.items():
        assert sc.vs_truth.mae < 0.4 and sc.vs_label.mae < 0.35, name
        assert 0.4 < sc.coverage_68 < 0.95, name
        assert len(sc.coverage_by["catalogue_richness"]) == 3
    # the labels' calibration moves coverage towards 68% (the selected labels are judged as selected)
    for name in ("headline", "pixels", "lambda", "lambda_bcg"):
        c = r.calibration[name]
        assert abs(c.coverage_68_after - 0.6827) <= abs(c.coverage_68_before - 0.6827) + 0.02, name
        assert c.extrapolation_tau == 0 and c.n_calibration_rows == 0  # no independent mock given
    for f in ("report.json", "report.md", "pred_vs_label.png", "coverage.png", "model_card.json"):
        assert (out / f).is_file()


def test_bundle_round_trip_and_card(smoke_model, labelled_store):
    from survey_mass.store import open_store

    out, r = smoke_model
    b = load_bundle(out)
    card = json.loads((out / "model_card.json").read_text())
    assert card["bands"] == ["u", "g", "r", "i", "z"] and card["folds"] == 3 == len(b.heads)
    assert card["input"]["cutout_size"] == 64 and card["model_id"].startswith("survey-mass-cpu-")
    b.check_store(open_store(labelled_store))
    # the candidates carry central galaxies: the lambda + BCG relation exists, with the mock's sign (a brighter
    # central galaxy, a higher mass) in every fold; the headline takes no BCG unless asked (headline_bcg)
    assert not card["bcg_input"] and not b.model.bcg_input and "bcg_abs_mag_i" not in b.model.input_names()
    assert b.relation_bcg is not None and len(b.relation_bcg.folds) == 3
    assert all(len(c) == 6 and c[3] < 0 for c in b.relation_bcg.folds)


def test_mismatched_bundle_is_refused(smoke_model, labelled_store, tmp_path):
    import shutil

    from survey_mass.store import open_store

    out, _ = smoke_model
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    card = json.loads((bad / "model_card.json").read_text())
    card["bands"] = ["g", "r", "i", "z", "u"]
    (bad / "model_card.json").write_text(json.dumps(card))
    reseal_model(bad)  # saved for another band order (an edited card is refused by its id)
    with pytest.raises(ModelError, match="band order"):
        load_bundle(bad).check_store(open_store(labelled_store))
    card["bands"] = ["u", "g", "r", "i", "z"]
    card["input"]["cutout_size"] = 128
    (bad / "model_card.json").write_text(json.dumps(card))
    reseal_model(bad)
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


@pytest.mark.slow
def test_interrupted_training_resumes(labelled_store, tmp_path):
    from survey_mass.training.train import TrainConfig, train

    cfg = TrainConfig(
        folds=2,
        stage1_images=600,
        stage1_epochs=2,
        background_cutouts=50,
        invariance_cutouts=60,
        invariance_weight=0.0,  # the penalty triples stage 2's time; resuming does not depend on it
        stage2_components=24,
        stage2_ridge=(0.05, 0.01),
        seed=4,
    )
    out = tmp_path / "m"
    first = train(labelled_store, out, cfg, progress=False)
    # simulate an interruption after stage 1 epoch 1 and fold 0: drop the later checkpoints and the bundle
    (out / "checkpoints" / "fold1.pt").unlink()
    (out / "heads.safetensors").unlink()
    again = train(labelled_store, out, cfg, progress=False)
    assert again.timing_s["stage1"] < first.timing_s["stage1"]  # stage 1 was not redone
    np.testing.assert_allclose(again.oof["headline_population"], first.oof["headline_population"], atol=1e-5)


def test_linear_head_learns_the_population_from_labels_and_non_detections():
    """The stage-2 head, fitted on a few selected labels plus every other cluster as a non-detection,
    predicts the *population's* masses: unbiased, near the intrinsic scatter, with an honest sigma."""
    import torch

    from survey_mass.selection import XraySelection
    from survey_mass.training.train import TrainConfig, train_head

    rng = np.random.default_rng(7)
    n, fdim = 8000, 4
    x = rng.standard_normal((n, 5 * fdim + 6)).astype(np.float32)
    zi = 5 * fdim
    z = np.clip(0.3 + 0.1 * x[:, zi], 0.05, 0.6)
    m = 14.1 + 0.25 * x[:, 0] - 0.15 * x[:, 7] + 0.1 * x[:, zi] + 0.2 * rng.standard_normal(n)
    sel = XraySelection(flux_limit_cgs=2e-12)
    from scipy.special import ndtr

    chosen = rng.random(n) < ndtr((m - sel.m_lim(z)) / sel.s)
    assert 100 < chosen.sum() < 0.2 * n
    y = np.where(chosen, m + sel.label_noise_dex * rng.standard_normal(n), np.nan)
    cfg = TrainConfig(stage2_components=20, stage2_ridge=(0.01, 0.001, 0.0001), heteroscedastic=False)
    head, info = train_head(x, y, sel.m_lim(z), cfg, 0, selection=sel, z_index=zi)
    with torch.no_grad():
        mu, log_s = head(torch.from_numpy(x))
    mu, sigma = mu.numpy().astype(float), float(np.exp(log_s[0]))
    floor = 0.2 * np.sqrt(2 / np.pi)
    assert abs(np.mean(mu - m)) < 0.05
    assert np.mean(np.abs(mu - m)) < 1.15 * floor
    assert 0.6 < np.mean(np.abs(mu - m) < sigma) < 0.76
    assert info["ridge"] in cfg.stage2_ridge and info["n_labelled"] == chosen.sum()
    # the head's parameter uncertainty (Laplace): positive, small next to the scatter, larger far from the data
    with torch.no_grad():
        epi = head.epistemic_var(torch.from_numpy(x)).numpy()
        far = head.epistemic_var(torch.from_numpy(4 * x[:100])).numpy()
    assert (epi > 0).all() and np.median(np.sqrt(epi)) < 0.5 * sigma
    assert np.median(far) > 4 * np.median(epi[:100])


def test_invariance_penalty_makes_the_head_ignore_nuisance_directions():
    """Feature 1 carries mass information but also moves with the observing conditions (a nuisance); with the
    penalty the head stops responding to that movement, without it the head follows it."""
    import torch

    from survey_mass.training.train import TrainConfig, train_head

    rng = np.random.default_rng(3)
    n = 4000
    x = rng.standard_normal((n, 8)).astype(np.float32)
    zi = 7
    m = 14.0 + 0.2 * x[:, 0] + 0.2 * x[:, 1] + 0.1 * rng.standard_normal(n)
    y = m + 0.05 * rng.standard_normal(n)  # every row labelled, no selection
    delta = np.zeros((500, 8), np.float32)
    delta[:, 1] = 0.5 + 0.1 * rng.standard_normal(500)  # worse conditions push feature 1 up
    delta[:, 2] = 0.5 * delta[:, 1]  # ... and feature 2 with it, which carries no mass
    shifts = {}
    for gamma in (0.0, 1000.0):
        cfg = TrainConfig(stage2_components=7, stage2_ridge=(1e-4,), invariance_weight=gamma)
        head, info = train_head(x, y, None, cfg, 0, z_index=zi, nuisance=delta)
        with torch.no_grad():
            a = head(torch.from_numpy(x[:500]))[0]
            b = head(torch.from_numpy(x[:500] + delta))[0]
        shifts[gamma] = float((b - a).mean())
    assert shifts[0.0] > 0.08  # the plain fit follows the conditions
    assert abs(shifts[1000.0]) < 0.1 * shifts[0.0]


def test_heteroscedastic_head_learns_sigma_that_grows_with_mass():
    """Scatter that grows with mass: the head's sigma slope in mu is positive and the error covers 68% of the
    low-mass and of the high-mass half."""
    import torch

    from survey_mass.training.train import TrainConfig, train_head

    rng = np.random.default_rng(11)
    n = 6000
    x = rng.standard_normal((n, 6)).astype(np.float32)
    zi = 5
    mean = 14.2 + 0.3 * x[:, 0]
    m = mean + 0.12 * np.exp(1.2 * (mean - 14.2)) * rng.standard_normal(n)  # log sigma linear in the mass
    cfg = TrainConfig(stage2_components=5, stage2_ridge=(1e-4,), invariance_weight=0.0)
    head, info = train_head(x, m, None, cfg, 0, z_index=zi)
    assert 0.9 < info["log_sigma"][1] < 1.5  # the slope of log sigma in mu (1.2)
    with torch.no_grad():
        mu, log_s = head(torch.from_numpy(x))
    mu, sigma = mu.numpy().astype(float), np.exp(log_s.numpy().astype(float))
    for half in (mean < 14.2, mean > 14.2):
        assert 0.58 < np.mean(np.abs(mu - m)[half] < sigma[half]) < 0.8
