"""A user's own real labels, as Lin et al. trained (#29 item 1): SDSS-like frames -> ``ingest`` ->
``train --labels`` -> ``run``, all through the command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from survey_mass.testing import cli, read_catalog


@pytest.fixture(scope="module")
def user_frames(tmp_path_factory):
    """30 real redMaPPer clusters (the fewest a training takes) on a 6 x 5 grid 1.2' apart (their cutouts
    overlap; a few fields hold them all), as plain .fits frames without field galaxies or
    stars (what is tested is the labels' path, not the scenes), ingested with their candidate list."""
    from survey_mass.candidates import load_redmapper
    from survey_mass.footprint import parse_footprint
    from survey_mass.mock.frames import build_mock_frames
    from survey_mass.mock.physics import MockPhysics, apply_overrides
    from survey_mass.mock.survey import MockConfig
    from survey_mass.paths import FRAMES_CANDIDATES
    from survey_mass.store.ingest import ingest_frames

    cat = load_redmapper()
    c = cat[(cat.richness > 20) & (cat.z > 0.08) & (cat.z < 0.3)].sample(30, random_state=4).copy()
    g = np.arange(30)
    c["ra"] = 180.3 + 0.02 * (g % 6)
    c["dec"] = 20.3 + 0.02 * (g // 6)
    root = tmp_path_factory.mktemp("user_labels")
    frames = root / "frames"
    fp = parse_footprint("box:180,181,20,21")
    physics = apply_overrides(MockPhysics(), ["field.counts_at_r20=0", "stars.per_deg2=0"])
    cfg = MockConfig(seed=9, physics=physics)
    build_mock_frames(fp, frames, candidates=c, config=cfg, workers=1, progress=False, compressed=False)
    ingest_frames(frames, frames / FRAMES_CANDIDATES, root / "frames.zarr", progress=False)
    return root, c


@pytest.mark.slow
def test_frames_ingest_train_with_user_labels_and_run(user_frames, capsys):
    from survey_mass.store import open_store
    from survey_mass.training.train import read_table

    root, c = user_frames
    table = read_table(open_store(root / "frames.zarr"))
    assert table.id.size == 30
    # the user's labels: positions (no ids), an error column, two that match no cluster, and a mass scale 0.5 dex
    # above the mock's truth (as another mass definition would be): the masses trained on them must follow them
    from survey_mass.paths import FRAMES_CANDIDATES

    rng = np.random.default_rng(2)
    # the frames' candidate list keeps the mock's truth (an ingested store, like a real one, has none)
    cands = pd.read_parquet(root / "frames" / FRAMES_CANDIDATES).set_index("id")
    truth = cands["log10_m500_true"].reindex(table.id.astype(np.int64)).to_numpy(float)
    assert np.isfinite(truth).all() and not np.isfinite(table.truth).any()
    # ... declared hydrostatic with 1 - b = 0.5, so they arrive log10(0.5) below that scale
    user = truth + 0.5 + np.log10(0.5) + 0.05 * rng.standard_normal(30)
    labels = pd.DataFrame(
        {
            "RA": np.r_[table.ra + 0.5 / 3600, 10.0, 11.0],
            "DEC": np.r_[table.dec, -5.0, -6.0],
            "log10_m500": np.r_[user, 14.0, 14.2],
            "log10_m500_err": 0.05,
        }
    )
    labels.to_csv(root / "labels.csv", index=False)
    (root / "tiny.toml").write_text(
        'name = "tiny"\n[footprint]\nspec = "box:180,181,20,21"\n'
        "[training]\nfolds = 2\nseed = 3\nstage1_images = 400\nstage1_epochs = 1\nstage2_components = 8\n"
        "invariance_cutouts = 20\ninvariance_weight = 0.0\nbackground_cutouts = 30\n"
    )
    code, out, err = cli(
        [
            "train",
            "--store",
            root / "frames.zarr",
            "--out",
            root / "model",
            "--labels",
            root / "labels.csv",
            "--label-selection",
            "none",
            "--label-scale",
            "hydrostatic",
            "--one-minus-b",
            "0.5",
            "--pipeline",
            root / "tiny.toml",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    report = json.loads((root / "model" / "report.json").read_text())
    assert report["n_labelled"] == 30  # the user's labels replaced the store's (the mock's own X-ray subset)
    np.testing.assert_allclose(sorted(report["oof"]["label"]), sorted(user - np.log10(0.5)), atol=1e-6)
    assert report["config"]["labels"] == str(root / "labels.csv") and report["label_selection"] is None
    code, out, err = cli(
        [
            "run",
            "--store",
            root / "frames.zarr",
            "--model",
            root / "model",
            "--out",
            root / "masses",
            "--footprint",
            "box:180,181.3,20,21.3",
            "--attribution",
            "none",
            "--workers",
            "1",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    got = read_catalog(root / "masses", ["id", "log10_m500", "log10_m500_err"]).set_index("id")
    assert len(got) == 30 and np.isfinite(got["log10_m500"]).all()
    t = pd.Series(truth, index=table.id.astype(np.int64)).reindex(got.index)
    # on the user's scale (truth + 0.5), not the mock's: the store's own labels were not used
    assert abs((got["log10_m500"] - t).mean() - 0.5) < 0.15
    # a second training with other labels is refused in the same directory (its checkpoints are another's)
    labels.assign(log10_m500=labels["log10_m500"] + 0.05).to_csv(root / "labels2.csv", index=False)
    code, _, err = cli(
        [
            "train",
            "--store",
            root / "frames.zarr",
            "--out",
            root / "model",
            "--labels",
            root / "labels2.csv",
            "--pipeline",
            root / "tiny.toml",
            "--no-progress",
        ],
        capsys,
    )
    assert code != 0 and "different training" in err and "\n" not in err.strip()


def test_train_refuses_labels_that_match_too_few_clusters_or_a_bad_selection(user_frames, capsys):
    root, _ = user_frames
    pd.DataFrame({"id": [1, 2, 3], "log10_m500": [14.0, 14.1, 14.2]}).to_csv(root / "few.csv", index=False)
    code, _, err = cli(
        [
            "train",
            "--store",
            root / "frames.zarr",
            "--out",
            root / "m2",
            "--labels",
            root / "few.csv",
            "--no-progress",
        ],
        capsys,
    )
    assert code != 0 and "few.csv" in err and "labelled cutouts" in err
    code, _, err = cli(
        [
            "train",
            "--store",
            root / "frames.zarr",
            "--out",
            root / "m3",
            "--labels",
            root / "few.csv",
            "--label-selection",
            "xray:-3",
            "--no-progress",
        ],
        capsys,
    )
    assert code != 0 and "label selection" in err and "\n" not in err.strip()
    code, _, err = cli(
        [
            "train",
            "--store",
            root / "frames.zarr",
            "--out",
            root / "m4",
            "--label-selection",
            "mcxc",
            "--no-progress",
        ],
        capsys,
    )
    assert code != 0 and "--labels" in err
