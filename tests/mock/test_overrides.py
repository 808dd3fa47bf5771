"""The mock's physics as one typed model: overrides (``--set``), their effect on the pixels, provenance."""

from __future__ import annotations

import numpy as np
import pytest

from survey_mass.cli import main
from survey_mass.errors import SurveyMassError
from survey_mass.mock import render
from survey_mass.mock.physics import DEFAULT_PHYSICS, MockPhysics, apply_overrides
from survey_mass.mock.survey import MockConfig, PartitionJob, build_partition
from survey_mass.photometry import BANDS
from survey_mass.selection import XraySelection, selection_for_store
from survey_mass.store import open_store

BOX = "box:150,152,0,2"  # 7 real redMaPPer clusters, one partition


def _robust_std(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def _box_job() -> PartitionJob:
    from survey_mass.candidates import load_redmapper

    cat = load_redmapper()
    inside = cat[(cat["ra"] > 150) & (cat["ra"] < 152) & (cat["dec"] > 0) & (cat["dec"] < 2)]
    return PartitionJob(106, inside.iloc[:2])


def test_overrides_nested_typed_and_validated():
    p = apply_overrides(
        DEFAULT_PHYSICS,
        [
            "sky_noise_scale=1.2589",
            "richness_relation.slope=1.3",
            "render.psf_fwhm_arcsec.r=1.2",
            "richness_relation.poisson=false",
            "redshift_range_no_candidates=[0.1, 0.5]",
        ],
    )
    assert p.sky_noise_scale == 1.2589 and p.richness_relation.slope == 1.3
    assert p.render.psf_fwhm_arcsec["r"] == 1.2 and p.render.psf_fwhm_arcsec["g"] == 1.48
    assert p.richness_relation.poisson is False
    assert p.redshift_range_no_candidates == (0.1, 0.5)
    assert DEFAULT_PHYSICS.sky_noise_scale == 1.0  # the original is untouched (frozen)
    assert apply_overrides(DEFAULT_PHYSICS, []) == DEFAULT_PHYSICS == MockPhysics()
    for bad, named in [
        ("nope=1", "'nope'"),
        ("richness_relation.nope=1", "'richness_relation.nope'"),
        ("sky_noise_scale=abc", "'sky_noise_scale'"),
        ("seeing_scale=0", "'seeing_scale'"),
        ("richness_floor.x=1", "'richness_floor.x'"),
        ("sky_noise_scale", "NAME=VALUE"),
    ]:
        with pytest.raises(SurveyMassError, match=named):
            apply_overrides(DEFAULT_PHYSICS, [bad])
    with pytest.raises(Exception):  # noqa: B017 - frozen: no assignment
        DEFAULT_PHYSICS.sky_noise_scale = 2.0


def test_sky_noise_scale_scales_the_same_draws():
    """sky_noise_scale changes the sigma, not the random sequence: the noise of an empty image scales exactly."""
    ph = apply_overrides(DEFAULT_PHYSICS, ["sky_noise_scale=1.26"])
    a = render.add_noise(np.zeros((5, 32, 32), np.float32), 6.336, np.random.default_rng(1))
    b = render.add_noise(np.zeros((5, 32, 32), np.float32), 6.336, np.random.default_rng(1), ph)
    np.testing.assert_allclose(b, 1.26 * a, rtol=1e-5)
    for band in BANDS:
        assert render.sky_sigma_nmgy(band, 6.336, ph) == pytest.approx(
            1.26 * render.sky_sigma_nmgy(band, 6.336)
        )


def test_sky_noise_scale_doubles_the_sky_noise_of_a_cutout():
    """Same scene, same seed: the robust scatter of the sky around the cluster doubles (native 0.396" pixels,
    where the sky is not confusion-limited)."""
    job = _box_job()
    base = MockConfig(seed=7, pixel_scale_arcsec=0.396)
    a, cols_a = build_partition(base, job)
    b, cols_b = build_partition(
        MockConfig.with_overrides(["sky_noise_scale=2"], seed=7, pixel_scale_arcsec=0.396), job
    )
    np.testing.assert_array_equal(cols_a["log10_m500_true"], cols_b["log10_m500_true"])  # same scene
    yy, xx = np.mgrid[0:64, 0:64]
    sky = np.hypot(xx - 31.5, yy - 31.5) > 20
    ratios = np.array(
        [[_robust_std(b[k, i][sky]) / _robust_std(a[k, i][sky]) for i in range(5)] for k in range(2)]
    )
    assert np.all(np.abs(ratios - 2) < 0.1), ratios
    assert abs(ratios.mean() - 2) < 0.04, ratios


def test_seeing_scale_widens_a_star_and_conserves_its_flux():
    ph = apply_overrides(DEFAULT_PHYSICS, ["seeing_scale=1.5"])
    pix = 0.198  # fine pixels resolve the PSF
    args = (
        np.array([31.3]),
        np.array([31.6]),
        np.ones((1, 5)),
        np.zeros(1),
        np.zeros(1, int),
        BANDS,
        64,
        pix,
    )
    sharp = render.render_bands(*args).astype(np.float64)
    wide = render.render_bands(*args, ph).astype(np.float64)
    yy, xx = np.mgrid[0:64, 0:64]
    for b in range(5):
        np.testing.assert_allclose([sharp[b].sum(), wide[b].sum()], 1.0, atol=2e-3)
        widths = [
            np.sqrt((im[b] * ((xx - 31.3) ** 2 + (yy - 31.6) ** 2)).sum() / im[b].sum())
            for im in (sharp, wide)
        ]
        assert widths[1] / widths[0] == pytest.approx(1.5, rel=0.02)
        assert wide[b].max() < 0.5 * sharp[b].max()


def test_seeing_scale_lowers_the_bcg_peak_of_a_mock_cutout():
    """Same scene at 0.792" pixels: the BCG's central light spreads out and its flux is kept."""
    job = _box_job()
    base = MockConfig(seed=7, pixel_scale_arcsec=0.792)
    a, _ = build_partition(base, job)
    b, _ = build_partition(
        MockConfig.with_overrides(["seeing_scale=1.5"], seed=7, pixel_scale_arcsec=0.792), job
    )
    for k in range(2):
        core_a, core_b = a[k, 3, 30:34, 30:34].sum(), b[k, 3, 30:34, 30:34].sum()
        assert core_b < 0.93 * core_a
        box_a, box_b = a[k, 3, 20:44, 20:44].sum(), b[k, 3, 20:44, 20:44].sum()
        assert box_b == pytest.approx(box_a, rel=0.03)


def test_unknown_parameter_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x.zarr"
    code = main(["mock", "--footprint", BOX, "--out", str(out), "--no-progress", "--set", "no_such_thing=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "no_such_thing" in err and "Traceback" not in err
    assert not out.exists()
    code = main(["mock", "--footprint", BOX, "--out", str(out), "--no-progress", "--set", "seeing_scale=big"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "seeing_scale" in err


def test_overrides_reach_the_store_and_its_provenance(tmp_path, capsys):
    def build(name: str, *sets: str) -> tuple[int, object]:
        argv = ["mock", "--footprint", BOX, "--out", str(tmp_path / name), "--workers", "1", "--no-progress"]
        for s in sets:
            argv += ["--set", s]
        return main(argv), tmp_path / name

    code, plain = build("plain.zarr")
    assert code == 0
    code, one = build("one.zarr", "sky_noise_scale=1")
    assert code == 0
    code, two = build(
        "two.zarr", "sky_noise_scale=2", "richness_relation.slope=1.111", "labels.sigma_ln_l=0.5"
    )
    assert code == 0
    sp, s1, s2 = open_store(plain), open_store(one), open_store(two)
    # no overrides == overrides that set the defaults: the same arrays
    assert sp.partitions == s1.partitions == s2.partitions
    for p in sp.partitions:
        np.testing.assert_array_equal(sp.images(p), s1.images(p))
        np.testing.assert_array_equal(sp.columns(p)["log10_m500_true"], s2.columns(p)["log10_m500_true"])
        assert not np.array_equal(sp.images(p), s2.images(p))
    prov = s2.attrs["provenance"]
    assert prov["overrides"] == [
        "sky_noise_scale=2",
        "richness_relation.slope=1.111",
        "labels.sigma_ln_l=0.5",
    ]
    assert prov["physics"]["sky_noise_scale"] == 2.0 and prov["physics"]["seeing_scale"] == 1.0
    assert sp.attrs["provenance"]["overrides"] == []
    assert sp.attrs["provenance"]["physics"] == MockPhysics().provenance()
    assert MockPhysics.model_validate(prov["physics"]).sky_noise_scale == 2.0  # the provenance round-trips
    # the labels' selection model follows the store's recorded label physics
    # (labels derived from L_X: the selection variable is the label; the shallowest survey's limit is the default)
    lab = MockPhysics().labels
    mcxc = {
        "flux_limit_cgs": max(s.flux_limit_cgs for s in lab.surveys),
        "labels_from_lx": True,
        "flux_error_ln": lab.flux_error_ln,
        "detection_error_ln": lab.detection_error_ln,
        "label_offset_dex": float(np.log10(lab.hydrostatic_one_minus_b)),
        "l0": lab.l0,
    }
    assert selection_for_store(s2) == XraySelection(**mcxc, sigma_ln_l=0.5)
    assert selection_for_store(sp) == XraySelection(**mcxc)
    capsys.readouterr()
    # resuming a store with other physics is refused (one line, exit 2); with the same physics it resumes
    code, _ = build("two.zarr")
    assert code == 2 and "provenance" in capsys.readouterr().err
    code, _ = build("two.zarr", "sky_noise_scale=2", "richness_relation.slope=1.111", "labels.sigma_ln_l=0.5")
    assert code == 0 and "0 built, 1 already there" in capsys.readouterr().out
