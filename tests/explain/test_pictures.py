"""The pictures people look at: they exist, have the expected size, and are not blank."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from survey_mass.cli import main
from survey_mass.testing import catalog_files


def _assert_picture(path, min_w=600, min_h=300):
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert w >= min_w and h >= min_h, (path, img.shape)
    rgb = img[..., :3].reshape(-1, 3)
    # not blank: many distinct colours and real contrast
    assert rgb.std() > 0.05
    assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 200
    return img


def test_explain_recomputes_attribution_draws_and_tests_it(small_catalog, tmp_path, capsys):
    catalog, _ = small_catalog
    df = pq.ParquetDataset(catalog_files(catalog)).read().to_pandas()
    row = df[df.attributed].iloc[0]  # a row the run attributed, to compare with
    png = tmp_path / "one.png"
    args = ["explain", str(catalog), "--id", str(int(row.id)), "--png", str(png), "--json"]
    assert main(args) == 0
    out = capsys.readouterr().out
    r = json.loads(out)  # one JSON object and nothing else
    _assert_picture(png, 1200, 600)
    # the row's exact contributions, and the same map as the run's (same baselines, steps and seed)
    assert r["log10_m500_reference"] + sum(r["contributions"].values()) == pytest.approx(
        row.log10_m500, abs=1e-4
    )
    assert r["attr_delta_dex"] == pytest.approx(row.attr_delta_dex, abs=1e-4)
    assert r["ig_completeness_dex"] <= 0.01
    for b in "ugriz":
        assert r["bands_dex"][b] == pytest.approx(row[f"attr_{b}_dex"], abs=1e-4)
    for reg in ("central", "members", "inside", "outside"):
        assert r["regions_abs_share"][reg] == pytest.approx(row[f"attr_{reg}_abs_share"], abs=1e-4)
    # the map's order removes mass faster than random orders do
    assert r["aopc"] > r["aopc_random"]
    # a low-redshift cluster, whose R_lambda covers the whole cutout, draws too
    low = df[df.log10_m500.notna()].sort_values("z").iloc[0]
    assert main(["explain", str(catalog), "--id", str(int(low.id)), "--png", str(tmp_path / "low.png")]) == 0
    assert "R_lambda covers" not in capsys.readouterr().err
    _assert_picture(tmp_path / "low.png", 1200, 600)
    assert main(["explain", str(catalog), "--id", str(int(row.id))]) == 2  # neither --png nor --json
    assert "give --png" in capsys.readouterr().err
    assert main(["explain", str(catalog), "--id", str(int(row.id)), "--json", "--baselines", "3"]) == 2
    assert "antithetic" in capsys.readouterr().err


def test_explain_unknown_id_is_one_line(small_catalog, tmp_path, capsys):
    catalog, _ = small_catalog
    assert main(["explain", str(catalog), "--id", "999999999", "--png", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no row with id 999999999" in err
    assert not (tmp_path / "x.png").exists()


def test_report_pictures_and_numbers(small_catalog, tmp_path, capsys):
    catalog, summary = small_catalog
    out = tmp_path / "rep"
    assert main(["report", str(catalog), "--out", str(out)]) == 0
    assert "vs log10_m500_true" in capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())
    assert rep["rows"] == summary.rows
    for name in ("sky", "mass_redshift", "errors", "reference"):
        _assert_picture(out / f"{name}.png")
    df = pq.ParquetDataset(catalog_files(catalog)).read().to_pandas()
    ok = np.isfinite(df.log10_m500) & np.isfinite(df.log10_m500_true)
    d = (df.log10_m500 - df.log10_m500_true)[ok]
    cnn = rep["reference"]["log10_m500_true"]["headline"]
    assert cnn["n"] == ok.sum()
    assert cnn["mae"] == pytest.approx(np.abs(d).mean())
    assert cnn["coverage_68"] == pytest.approx(np.mean(np.abs(d) <= df.log10_m500_err[ok]))
    md = (out / "report.md").read_text()
    assert "![sky](sky.png)" in md and "| log10_m500_true | headline |" in md
    # the headline is compared with the catalogue's lambda, not with lambda-hat
    lam = rep["reference"]["log10_m500_true"]["lambda"]
    dl = (df.log10_m500_lambda - df.log10_m500_true)[
        np.isfinite(df.log10_m500_lambda) & np.isfinite(df.log10_m500_true)
    ]
    assert (
        lam["mae"] == pytest.approx(np.abs(dl).mean())
        and "richness" not in rep["reference"]["log10_m500_true"]
    )


def test_report_refuses_to_write_inside_the_catalog(small_catalog, capsys):
    catalog, _ = small_catalog
    before = sorted(p.name for p in catalog.iterdir())
    assert main(["report", str(catalog), "--out", str(catalog / "pics")]) == 2
    assert "inside the catalog" in capsys.readouterr().err
    assert sorted(p.name for p in catalog.iterdir()) == before
