import numpy as np
import torch

from survey_mass.models.mass_model import MassModel, measure_sky, normalise, normalise_array, prepare_images
from survey_mass.models.networks import VARIANTS, BandClassifier, MassRegressor


def test_shapes_and_size():
    clf = BandClassifier(**VARIANTS["cpu"])
    n_params = sum(p.numel() for p in clf.parameters())
    assert 50_000 < n_params < 400_000  # sized for CPU inference
    x = torch.randn(3, 1, 64, 64)
    assert clf(x).shape == (3, 5)
    model = MassModel(clf.backbone)
    raw = model.raw_inputs_of(np.random.default_rng(0).random((2, 5, 64, 64)).astype(np.float32), np.ones(2))
    # band features, z, five sky sigmas, central photometry in three apertures per band
    assert raw.shape == (2, len(model.input_names())) == (2, 5 * clf.backbone.out_dim + 1 + 5 + 15)
    with_lambda = MassModel(clf.backbone, richness_input=True)
    assert (
        with_lambda.input_names()[-1] == "ln_richness" and len(with_lambda.input_names()) == raw.shape[1] + 1
    )
    head = MassRegressor(raw.shape[1], model.z_raw_index)
    mu, ls = head(torch.randn(4, head.in_dim))
    assert mu.shape == ls.shape == (4,)


def test_normalise_handles_nan_and_scale():
    rng = np.random.default_rng(1)
    img = (rng.standard_normal((1, 5, 64, 64)) * 0.2 + 1.0).astype(np.float32)
    img[0, 2, :10] = np.nan
    x, log_sigma, sigma = prepare_images(img)
    assert torch.isfinite(x).all()
    assert np.allclose(sigma, 0.2, rtol=0.05)
    # scaling the image by 10 changes only the noise level, not the normalised image
    x2, ls2, _ = prepare_images(img * 10)
    assert torch.allclose(x, x2, atol=1e-3) and torch.allclose(ls2 - log_sigma, torch.ones(1, 5), atol=1e-3)


def test_numpy_normalisation_equals_the_differentiable_one():
    """prepare_images normalises in numpy (fast on a CPU); attribution differentiates the torch version."""
    rng = np.random.default_rng(4)
    img = (rng.standard_normal((3, 5, 64, 64)) * 0.3 + rng.gamma(0.3, 2.0, (3, 5, 64, 64))).astype(np.float32)
    img[1, 3, 5:9] = np.nan
    level, sigma = measure_sky(img)
    sigma[2, 4] = np.nan
    a = normalise_array(img, level, sigma)
    b = normalise(torch.from_numpy(img), torch.from_numpy(level), torch.from_numpy(sigma)).numpy()
    assert a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6)


def test_sky_sigma_comes_from_sky_pixels_not_sources():
    """Rich source content inflates the whole-cutout MAD; the sky measurement clips the sources away."""
    rng = np.random.default_rng(2)
    img = rng.standard_normal((1, 1, 64, 64)).astype(np.float32) * 0.1
    yy, xx = np.mgrid[:64, :64]
    for cx, cy in rng.uniform(4, 60, (25, 2)):  # a rich cluster's members and the field
        img[0, 0] += (1.0 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 1.5**2))).astype(np.float32)
    mad = 1.4826 * np.median(np.abs(img - np.median(img)))
    level, sigma = measure_sky(img)
    assert mad > 0.125  # the sources inflate the whole-cutout MAD by 25%
    assert abs(sigma[0, 0] / 0.1 - 1) < 0.15 and sigma[0, 0] < mad - 0.01
    x = normalise(torch.from_numpy(img), torch.from_numpy(level), torch.from_numpy(sigma))
    assert torch.isfinite(x).all()


def test_eval_equals_train_mode():
    clf = BandClassifier()
    x = torch.randn(6, 1, 64, 64)
    with torch.no_grad():
        a = clf.train()(x)
        b = clf.eval()(x)
    assert torch.allclose(
        a, b, atol=1e-5
    )  # no batch statistics: a partition of 1 cutout gets the same answer
