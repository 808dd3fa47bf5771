"""The batched torch detection (survey_mass.models.detection) against sep (survey_mass.models.richness.detect)."""

import numpy as np
import pytest
import torch

from survey_mass import testing
from survey_mass.mock.render import add_noise, render_band
from survey_mass.models.detection import Sources, detect_batch, richness_batch, richness_from_sources
from survey_mass.models.richness import RichnessBaseline, detect
from survey_mass.photometry import BANDS, mag_to_nmgy

PIX = RichnessBaseline().pixel_scale


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    """24 mock cluster cutouts (the first clusters of the small region, seed 7) and their redshifts."""
    from survey_mass.store import open_store

    st = open_store(testing.same_scenes(tmp_path_factory.mktemp("det") / "s.zarr", n=24))
    images = np.concatenate([st.images(p) for p in st.partitions])
    z = np.concatenate([st.columns(p)["z"] for p in st.partitions]).astype(float)
    return images, z


@pytest.fixture(scope="module")
def baseline() -> RichnessBaseline:
    """The shipped model's richness baseline (background, colours, folds)."""
    from survey_mass.models.bundle import load_bundle
    from survey_mass.resources import model_dir

    return load_bundle(model_dir()).baseline


def _isolated_sources(seed: int, n: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A cutout of n bright point sources 8 pixels apart (no blends), and their true x, y."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(-2, 2) * 8.0 + 4, np.arange(-2, 2) * 8.0 + 4)
    x = 31.5 + gx.ravel()[:n] + rng.uniform(-0.5, 0.5, n)
    y = 31.5 + gy.ravel()[:n] + rng.uniform(-0.5, 0.5, n)
    imag = rng.uniform(17.0, 18.5, n)
    mags = np.stack([imag + 1.6, imag + 0.6, imag + 0.2, imag, imag - 0.2], axis=1)
    img = np.stack(
        [
            render_band(x, y, mag_to_nmgy(mags[:, b]), np.zeros(n), np.zeros(n, int), band, 64, PIX)
            for b, band in enumerate(BANDS)
        ]
    )
    return add_noise(img, PIX, rng).astype(np.float32), x, y


def test_isolated_sources_sit_where_sep_puts_them():
    images, truths = [], []
    for seed in range(3):
        img, x, y = _isolated_sources(seed)
        images.append(img)
        truths.append((x, y))
    src = detect_batch(np.stack(images))
    for k, img in enumerate(images):
        ref, got = detect(img), src.row(k)
        assert got["x"].size == ref["x"].size >= 16
        for xs, ys, mi in zip(ref["x"], ref["y"], ref["mag_i"], strict=True):
            d = np.hypot(got["x"] - xs, got["y"] - ys)
            j = int(np.argmin(d))
            assert d[j] < 0.5
            assert got["mag_i"][j] == pytest.approx(mi, abs=1e-6)  # sep.sum_circle's sub-pixel weights
        x, y = truths[k]  # and near the truth (sources are 0.2 pixels wide)
        assert all(np.min(np.hypot(got["x"] - a, got["y"] - b)) < 0.5 for a, b in zip(x, y, strict=True))


def test_source_lists_are_seps(clusters):
    """Crowded cluster cores: deblending and cleaning as sep's, position for position (to 1e-4 pixel)."""
    images, _ = clusters
    src = detect_batch(images)
    n_sep = found = n_torch = 0
    for k, img in enumerate(images):
        ref, got = detect(img), src.row(k)
        n_sep, n_torch = n_sep + ref["x"].size, n_torch + got["x"].size
        d = np.hypot(got["x"][None, :] - ref["x"][:, None], got["y"][None, :] - ref["y"][:, None])
        found += int((d.min(axis=1) < 1e-4).sum()) if d.size else 0
    assert n_sep > 24 * 20
    assert found >= 0.99 * n_sep and found >= 0.99 * n_torch


def test_lambda_hat_ranks_as_sep(clusters, baseline):
    images, z = clusters
    lam_sep = np.array([baseline.richness(detect(im), float(zz)) for im, zz in zip(images, z, strict=True)])
    sig_sep = np.array(
        [baseline.cluster_significance(detect(im), float(zz)) for im, zz in zip(images, z, strict=True)]
    )
    out = richness_batch(baseline, images, z)
    assert testing.spearman(out["richness"], lam_sep) > 0.95
    assert np.median(out["richness"] / lam_sep) == pytest.approx(1.0, abs=0.05)
    assert np.array_equal(np.isnan(out["cluster_significance"]), np.isnan(sig_sep))
    ok = np.isfinite(sig_sep)
    assert testing.spearman(out["cluster_significance"][ok], sig_sep[ok]) > 0.95


def test_vectorised_maths_equal_the_per_row_methods(clusters, baseline):
    """On sep's own sources, richness_from_sources gives RichnessBaseline's numbers (z on both sides of 0.35 and
    of NO_CLUSTER_Z_MAX)."""
    images, _ = clusters
    z = np.linspace(0.08, 0.6, len(images))
    rows = [detect(im) for im in images]
    k = max(r["x"].size for r in rows)
    pad = {f: np.full((len(rows), k), np.nan) for f in ("x", "y", "mag_g", "mag_r", "mag_i")}
    pad["valid"] = np.zeros((len(rows), k), bool)
    for i, r in enumerate(rows):
        for f in ("x", "y", "mag_g", "mag_r", "mag_i"):
            pad[f][i, : r[f].size] = r[f]
        pad["valid"][i, : r["x"].size] = True
    out = richness_from_sources(baseline, pad, z)
    lam = [baseline.richness(r, float(zz)) for r, zz in zip(rows, z, strict=True)]
    sig = [baseline.cluster_significance(r, float(zz)) for r, zz in zip(rows, z, strict=True)]
    np.testing.assert_array_equal(out["richness"], lam)
    np.testing.assert_allclose(out["cluster_significance"], sig, rtol=1e-12, atol=1e-12)


def test_blank_gives_the_floor(baseline):
    from survey_mass.mock.survey import MockConfig, render_blank

    empty = np.zeros((1, 5, 64, 64), np.float32)
    sky = render_blank(MockConfig(), 40000, 60.0, field=False)[None]
    src = detect_batch(empty)
    assert isinstance(src, Sources) and src.valid.shape == (1, 0)
    for img in (empty, sky):
        lam = richness_batch(baseline, img, [0.25])["richness"]
        assert lam[0] == 1.0 == baseline.richness(detect(img[0]), 0.25)


def test_batch_size_changes_nothing(clusters, baseline):
    images, z = clusters
    a, b = detect_batch(images, batch_size=len(images)), detect_batch(images, batch_size=5)
    k = int(a.valid.sum(1).max())
    for f in ("x", "y", "mag_g", "mag_r", "mag_i", "valid"):
        u, v = getattr(a, f)[:, :k], getattr(b, f)[:, :k]
        assert (
            torch.equal(u, v)
            if f == "valid"
            else torch.equal(torch.nan_to_num(u, 99.0), torch.nan_to_num(v, 99.0))
        )
    r1 = richness_batch(baseline, images, z, batch_size=len(images))
    r2 = richness_batch(baseline, images, z, batch_size=7)
    for key in r1:
        np.testing.assert_array_equal(r1[key], r2[key])


def test_rows_without_redshift_give_nan(clusters, baseline):
    images, z = clusters
    z = z[:6].copy()
    z[[1, 4]] = np.nan
    z[5] = 0.55  # beyond NO_CLUSTER_Z_MAX: lambda-hat, but no significance
    out = richness_batch(baseline, images[:6], z)
    assert np.isnan(out["richness"][[1, 4]]).all() and np.isnan(out["cluster_significance"][[1, 4]]).all()
    assert np.isfinite(out["richness"][[0, 2, 3, 5]]).all()
    assert np.isnan(out["cluster_significance"][5])
    full = richness_batch(baseline, images[:6][[0, 2, 3]], z[[0, 2, 3]])
    np.testing.assert_array_equal(out["richness"][[0, 2, 3]], full["richness"])
