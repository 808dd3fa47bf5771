"""One partition's prediction (survey_mass.inference.predict) with a model that takes the central galaxy."""

import numpy as np
import pytest

from survey_mass.inference.predict import predict_partition
from survey_mass.models.bundle import load_bundle
from survey_mass.models.catalogue import central_galaxy_feature
from survey_mass.store import open_store


@pytest.fixture(scope="module")
def partition(smoke_model, labelled_store):
    st = open_store(labelled_store)
    p = max(st.partitions, key=lambda q: len(st.columns(q)["id"]))
    return load_bundle(smoke_model[0]), st.images(p), dict(st.columns(p))


def test_lambda_bcg_is_the_relation_on_the_rows_central_galaxy(partition):
    bundle, images, cols = partition
    out = predict_partition(bundle, images, cols, richness=False)
    got = out["log10_m500_lambda_bcg"]
    ok = np.isfinite(got)
    assert ok.mean() > 0.8  # every row with a mass and a central galaxy
    z, lam = np.asarray(cols["z"], float), np.asarray(cols["richness"], float)
    want = bundle.relation_bcg.predict(lam, z, bcg=central_galaxy_feature(cols["bcg_mag_i"], z))["log10_m500"]
    np.testing.assert_allclose(got[ok], want[ok], atol=1e-9)
    # and it differs from the lambda mass by the central galaxy's term, which is not zero
    assert np.nanstd(got - out["log10_m500_lambda"]) > 0.01
    assert np.all(np.isfinite(out["log10_m500_lambda_bcg_err"][ok]))


def test_a_headline_with_the_central_galaxy_is_one_function_in_every_path(partition):
    """``TrainConfig.headline_bcg`` (off by default) gives the headline the catalogue's BCG as an input: the
    catalogue path (pixel inputs extended), the path attribution differentiates (``forward``) and the
    contributions must agree, and a missing BCG must mean its expectation given lambda and z in each."""
    import torch

    from survey_mass.models.mass_model import MassModel, Standardisation
    from survey_mass.models.networks import MassRegressor

    bundle, images, cols = partition
    assert not bundle.model.bcg_input  # the smoke model is trained with the default
    pix = bundle.pixels
    model = MassModel(pix.backbone, richness_input=True, bcg_input=True)
    n_raw = len(model.input_names())
    assert model.input_names()[-2:] == ["ln_richness", "bcg_abs_mag_i"]
    model.set_standardisation(Standardisation(np.arange(n_raw), np.zeros(n_raw), np.full(n_raw, 10.0)))
    model.bcg_fill = torch.tensor([0.3, -0.8, 1.5], dtype=torch.float64)
    head = MassRegressor(n_raw, model.z_index)
    w = torch.from_numpy(np.random.default_rng(2).normal(0, 0.05, n_raw + 1)).float()
    head.set_from_components(w, 14.2, np.log(0.2))
    model.heads = torch.nn.ModuleList([head])
    z, lam = np.asarray(cols["z"], float)[:6], np.asarray(cols["richness"], float)[:6]
    bcg = np.asarray(cols["bcg_mag_i"], float)[:6].copy()
    bcg[0] = np.nan  # no central galaxy for this one
    from survey_mass.models.mass_model import prepare_images

    x, log_sigma, _ = prepare_images(images[:6])
    raw = model.extend_raw(pix.raw_inputs_prepared(x, log_sigma, z), lam, bcg)
    feat = model.bcg_feature(lam, z, bcg)
    fill = 0.3 - 0.8 * np.log(lam / 40.0) + 1.5 * (z - 0.3)
    assert feat[0] == pytest.approx(fill[0]) and np.allclose(feat[1:], central_galaxy_feature(bcg[1:], z[1:]))
    np.testing.assert_allclose(raw[:, -1], feat, atol=1e-5)
    with torch.no_grad():
        zz, lt = torch.from_numpy(z).float(), torch.from_numpy(lam).float()
        direct = model.forward(x, zz, log_sigma, lt, torch.from_numpy(feat).float()).numpy()
        imputed = model.forward(x, zz, log_sigma, lt).numpy()  # no BCG given: the expectation everywhere
    from_raw = model.predict_raw(raw, z)["log10_m500"]
    np.testing.assert_allclose(direct, from_raw, atol=1e-4)
    assert imputed[0] == pytest.approx(direct[0], abs=1e-4) and not np.allclose(
        imputed[1:], direct[1:], atol=1e-4
    )
    parts = model.contributions_raw(raw)
    np.testing.assert_allclose(sum(parts.values()), from_raw, atol=1e-4)
    assert np.abs(parts["bcg"]).max() > 0


def test_a_store_without_central_galaxies_is_named_before_the_run(partition, capsys):
    from types import SimpleNamespace

    from survey_mass.inference.run import _warn_without_central_galaxies

    bundle, _, cols = partition
    old = SimpleNamespace(
        path="old.zarr", partitions=[7], has_column=lambda p, name: name in cols and name != "bcg_mag_i"
    )
    _warn_without_central_galaxies(old, bundle)
    err = capsys.readouterr().err
    assert "old.zarr" in err and "log10_m500_lambda_bcg will be null" in err and err.count("\n") == 1
    new = SimpleNamespace(path="new.zarr", partitions=[7], has_column=lambda p, name: name in cols)
    _warn_without_central_galaxies(new, bundle)
    assert capsys.readouterr().err == ""


def test_has_column_reads_nothing_and_sees_the_central_galaxies(labelled_store):
    st = open_store(labelled_store)
    p = st.partitions[0]
    assert st.has_column(p, "bcg_mag_i") and st.has_column(p, "z") and not st.has_column(p, "no_such_column")
