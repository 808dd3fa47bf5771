from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from survey_mass.catalog.query import Cone, partition_files, query
from survey_mass.catalog.writer import CatalogError
from survey_mass.cli import main
from survey_mass.testing import catalog_files


def _all_rows(catalog):
    files = catalog_files(catalog)
    return pq.ParquetDataset(files).read().to_pandas(), files


def test_full_scan_counts_every_row_once(small_catalog):
    catalog, summary = small_catalog
    df, files = _all_rows(catalog)
    res = query(catalog, "SELECT count(*) AS n, count(DISTINCT id) AS u FROM catalog")
    assert res.table.column("n")[0].as_py() == len(df) == summary.rows
    assert res.table.column("u")[0].as_py() == len(df)
    assert len(res.files) == len(files) == res.n_partitions


@pytest.mark.parametrize("radius_arcmin", [20.0, 150.0])
def test_cone_search_matches_brute_force_and_opens_fewer_files(small_catalog, radius_arcmin):
    catalog, _ = small_catalog
    df, files = _all_rows(catalog)
    assert len(files) > 1
    # centre on a cluster near a partition corner so that the large cone spans more than one partition
    centre = df.iloc[len(df) // 3]
    cone = Cone(ra=float(centre.ra), dec=float(centre.dec), radius_arcmin=radius_arcmin)
    res = query(catalog, cone=cone, columns=["id", "ra", "dec"])
    sep = SkyCoord(df.ra.values * u.deg, df.dec.values * u.deg).separation(
        SkyCoord(cone.ra * u.deg, cone.dec * u.deg)
    )
    brute = set(df.id[sep.arcmin <= radius_arcmin])
    got = res.table.column("id").to_pylist()
    assert len(got) == len(set(got))
    assert set(got) == brute
    assert len(brute) >= 1
    assert len(res.files) < len(files)
    opened, total = partition_files(catalog, cone=cone)
    assert opened == res.files and total == len(files)


def test_cone_outside_catalog_is_empty_not_an_error(small_catalog):
    catalog, _ = small_catalog
    res = query(catalog, cone=Cone(ra=10.0, dec=-80.0, radius_arcmin=30.0))
    assert res.table.num_rows == 0 and res.files == []
    assert "log10_m500" in res.table.column_names


def test_where_and_columns(small_catalog):
    catalog, _ = small_catalog
    df, _ = _all_rows(catalog)
    res = query(catalog, where="z < 0.2", columns=["id", "z"])
    assert res.table.column_names == ["id", "z"]
    assert sorted(res.table.column("id").to_pylist()) == sorted(df.id[df.z < 0.2])


@pytest.mark.parametrize(
    "sql, message",
    [
        ("COPY catalog TO 'x.csv'", "only a single SELECT"),
        ("SELECT 1; SELECT 2", "exactly one SQL statement"),
        ("DROP VIEW catalog", "only a single SELECT"),
        ("SELECT * FROM read_csv('/etc/passwd')", "disabled by configuration"),
        ("SELECT nope FROM catalog", "nope"),
    ],
)
def test_unsafe_or_bad_sql_is_refused_in_one_line(small_catalog, sql, message):
    catalog, _ = small_catalog
    with pytest.raises(CatalogError, match=message) as exc:
        query(catalog, sql)
    assert "\n" not in str(exc.value)


def test_cli_query_formats(small_catalog, tmp_path, capsys):
    catalog, summary = small_catalog
    sql = "SELECT id, log10_m500 FROM catalog ORDER BY log10_m500 DESC LIMIT 5"
    assert main(["query", str(catalog), sql, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 5
    masses = [r["log10_m500"] for r in rows]
    assert masses == sorted(masses, reverse=True)
    out = tmp_path / "all.parquet"
    assert main(["query", str(catalog), "--format", "parquet", "--out", str(out)]) == 0
    assert pq.read_table(out).num_rows == summary.rows
    assert main(["query", str(catalog), "--where", "z < 0.15", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].replace('"', "").startswith("id,name,ra,dec,z,") and len(lines) >= 2
    assert "Norder" not in lines[0]


def test_query_never_writes_into_the_catalog(small_catalog, capsys):
    catalog, _ = small_catalog
    before = {p: p.stat().st_mtime_ns for p in catalog.rglob("*")}
    code = main(["query", str(catalog), "--format", "csv", "--out", str(catalog / "masses" / "x.csv")])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "inside the catalog" in err
    assert {p: p.stat().st_mtime_ns for p in catalog.rglob("*")} == before


def test_not_a_catalog(tmp_path, capsys):
    assert main(["query", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a HATS catalog" in err and str(tmp_path) in err
    with pytest.raises(CatalogError, match="Dec"):
        Cone(ra=10.0, dec=95.0, radius_arcmin=1.0)
    assert np.isfinite(Cone(ra=359.9, dec=-90.0, radius_arcmin=1.0).radius_arcmin)


def test_a_plain_query_does_not_import_hats(small_catalog):
    """Without a cone the partition list comes from partition_info.csv: hats (2.5 s to import) is not loaded, and
    the rows and partitions are those hats lists."""
    import subprocess
    import sys

    from survey_mass.catalog.query import open_catalog

    catalog, _ = small_catalog
    code = (
        "import sys; sys.modules['hats'] = None\n"  # any import of hats would now fail
        "from survey_mass.catalog.query import query\n"
        f"r = query({str(catalog)!r}, 'SELECT count(*) AS n FROM catalog')\n"
        "print(r.table.column('n')[0].as_py(), len(r.files))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    df, _ = _all_rows(catalog)
    assert int(out[0]) == len(df)
    assert int(out[1]) == len(open_catalog(catalog)[0].get_healpix_pixels())
