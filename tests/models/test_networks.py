import torch

from survey_mass.models.networks import VARIANTS, BandClassifier, MassRegressor, band_features, normalise


def test_shapes_and_size():
    clf = BandClassifier(**VARIANTS["cpu"])
    n_params = sum(p.numel() for p in clf.parameters())
    assert 50_000 < n_params < 400_000  # sized for CPU inference
    x = torch.randn(3, 1, 64, 64)
    assert clf(x).shape == (3, 5)
    f, log_sigma = band_features(clf.backbone, torch.rand(2, 5, 64, 64))
    assert f.shape == (2, 5 * clf.backbone.out_dim) and log_sigma.shape == (2, 5)
    head = MassRegressor(clf.backbone.out_dim)
    mu, ls = head(torch.randn(4, head.in_dim))
    assert mu.shape == ls.shape == (4,)


def test_normalise_handles_nan_and_scale():
    img = torch.randn(1, 5, 64, 64) * 0.2 + 1.0
    img[0, 2, :10] = float("nan")
    x, log_sigma = normalise(img)
    assert torch.isfinite(x).all()
    assert torch.allclose(log_sigma, torch.log10(torch.tensor(0.2)), atol=0.05)
    # scaling the image by 10 changes only the noise level, not the normalised image
    x2, ls2 = normalise(img * 10)
    assert torch.allclose(x, x2, atol=1e-4) and torch.allclose(ls2 - log_sigma, torch.ones(1, 5), atol=1e-4)


def test_eval_equals_train_mode():
    clf = BandClassifier()
    x = torch.randn(6, 1, 64, 64)
    with torch.no_grad():
        a = clf.train()(x)
        b = clf.eval()(x)
    assert torch.allclose(
        a, b, atol=1e-5
    )  # no batch statistics: a partition of 1 cutout gets the same answer
