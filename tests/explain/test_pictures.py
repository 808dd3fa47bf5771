"""The pictures people look at: they exist, have the expected size, and are not blank."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from survey_mass.cli import main


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


def test_explain_recomputes_attribution_and_draws_it(small_catalog, tmp_path, capsys):
    catalog, _ = small_catalog
    df = pq.ParquetDataset(sorted((catalog / "dataset").rglob("Npix=*.parquet"))).read().to_pandas()
    row = df[np.isfinite(df.ig_delta)].iloc[0]  # a row the run attributed, to compare with
    png = tmp_path / "one.png"
    assert main(["explain", str(catalog), "--id", str(int(row.id)), "--png", str(png), "--steps", "768"]) == 0
    out = capsys.readouterr().out
    assert f"cluster {int(row.id)}" in out and str(png) in out
    _assert_picture(png, 1200, 600)
    from survey_mass.explain.cluster import explain_cluster

    r = explain_cluster(catalog, int(row.id), tmp_path / "again.png", steps=768)  # the run's default
    fr = [r[f"attr_frac_{b}"] for b in "ugriz"]
    assert abs(sum(fr) - 1) < 1e-6
    # the same computation as the run's: the summaries agree with the catalog row
    assert np.allclose(fr, [row[f"attr_frac_{b}"] for b in "ugriz"], atol=1e-3)
    assert r["attr_radius_arcmin"] == pytest.approx(row.attr_radius_arcmin, rel=1e-3)


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
    df = pq.ParquetDataset(sorted((catalog / "dataset").rglob("Npix=*.parquet"))).read().to_pandas()
    ok = np.isfinite(df.log10_m500) & np.isfinite(df.log10_m500_true)
    d = (df.log10_m500 - df.log10_m500_true)[ok]
    cnn = rep["reference"]["log10_m500_true"]["cnn"]
    assert cnn["n"] == ok.sum()
    assert cnn["mae"] == pytest.approx(np.abs(d).mean())
    assert cnn["coverage_68"] == pytest.approx(np.mean(np.abs(d) <= df.log10_m500_err[ok]))
    md = (out / "report.md").read_text()
    assert "![sky](sky.png)" in md and "| log10_m500_true | cnn |" in md


def test_report_refuses_to_write_inside_the_catalog(small_catalog, capsys):
    catalog, _ = small_catalog
    before = sorted(p.name for p in catalog.iterdir())
    assert main(["report", str(catalog), "--out", str(catalog / "pics")]) == 2
    assert "inside the catalog" in capsys.readouterr().err
    assert sorted(p.name for p in catalog.iterdir()) == before
