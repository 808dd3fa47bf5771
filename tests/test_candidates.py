import numpy as np
import pandas as pd
import pytest

from survey_mass.candidates import load_redmapper, read_candidates
from survey_mass.errors import CatalogInputError


def test_shipped_redmapper_is_the_real_catalog(shared_redmapper):
    cat = load_redmapper()
    assert len(cat) == len(shared_redmapper) == 26350
    assert cat["name"].str.startswith("RMJ").all()
    np.testing.assert_allclose(cat["richness"], shared_redmapper["lambda"])
    np.testing.assert_allclose(cat["z"], shared_redmapper["z_lambda"])


def _write(tmp_path, df, fmt):
    p = tmp_path / f"c.{fmt}"
    if fmt == "csv":
        df.to_csv(p, index=False)
    elif fmt == "parquet":
        df.to_parquet(p)
    else:
        from astropy.table import Table

        Table.from_pandas(df).write(p)
    return p


@pytest.mark.parametrize("fmt", ["csv", "parquet", "fits"])
def test_reads_formats_and_aliases(tmp_path, fmt):
    df = pd.DataFrame({"RA": [10.0, 20.0], "DEC": [1.0, 2.0], "z_lambda": [0.2, 0.3], "lambda": [30.0, 40.0]})
    cat = read_candidates(_write(tmp_path, df, fmt))
    assert cat["z"].tolist() == [0.2, 0.3] and cat["richness"].tolist() == [30.0, 40.0]


@pytest.mark.parametrize(
    "df, words",
    [
        (pd.DataFrame({"ra": [1.0], "z": [0.2]}), "missing column"),
        (pd.DataFrame({"ra": [1.0, np.nan], "dec": [0.0, 0.0], "z": [0.2, 0.2]}), "row 1: RA/Dec is NaN"),
        (pd.DataFrame({"ra": [1.0, 400.0], "dec": [0.0, 0.0], "z": [0.2, 0.2]}), "row 1: RA outside"),
        (pd.DataFrame({"ra": [1.0], "dec": [95.0], "z": [0.2]}), "row 0: Dec outside"),
        (
            pd.DataFrame({"ra": [1.0, 2.0], "dec": [0.0, 0.0], "z": [0.2, 0.2], "id": [5, 5]}),
            "row 1: duplicate id 5",
        ),
        (pd.DataFrame({"ra": [1.0], "dec": [0.0], "z": [-0.1]}), "redshift"),
    ],
)
def test_bad_catalogs_name_the_row(tmp_path, df, words):
    p = _write(tmp_path, df, "csv")
    with pytest.raises(CatalogInputError, match=words) as e:
        read_candidates(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_header_only_file_says_no_rows(tmp_path):
    p = tmp_path / "header_only.csv"
    p.write_text("ra,dec,z,richness\n")
    with pytest.raises(CatalogInputError, match="no rows") as e:
        read_candidates(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("bad", [-5.0, 0.0, np.inf, -np.inf])
def test_richness_must_be_finite_and_positive(tmp_path, fmt, bad):
    df = pd.DataFrame(
        {"ra": [1.0, 2.0, 3.0], "dec": [0.0, 0.0, 0.0], "z": [0.2] * 3, "richness": [30.0, 40.0, bad]}
    )
    p = _write(tmp_path, df, fmt)
    with pytest.raises(CatalogInputError, match=r"row 2: richness .* not a finite positive number") as e:
        read_candidates(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_richness_text_is_refused_but_empty_means_unknown(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("ra,dec,z,richness\n1,0,0.2,\n2,0,0.3,25\n")
    cat = read_candidates(p)
    assert np.isnan(cat["richness"].iloc[0]) and cat["richness"].iloc[1] == 25.0
    p.write_text("ra,dec,z,richness\n1,0,0.2,\n2,0,0.3,lots\n")
    with pytest.raises(CatalogInputError, match="row 1: richness 'lots'"):
        read_candidates(p)


@pytest.mark.parametrize(
    "text, words",
    [
        ("ra,dec,z,richness\n", ["no rows"]),
        ("ra,dec,z,richness\n150.5,1.0,0.2,30\n151.0,1.0,0.3,-12\n", ["row 1", "richness"]),
    ],
)
def test_cli_mock_refuses_bad_candidates_in_one_line(tmp_path, capsys, text, words):
    from survey_mass.testing import assert_one_line_error, cli

    p = tmp_path / "bad.csv"
    p.write_text(text)
    out = tmp_path / "X.zarr"
    code, _, err = cli(
        ["mock", "--footprint", "box:150,152,0,2", "--candidates", p, "--out", out, "--no-progress"], capsys
    )
    assert_one_line_error(code, err, str(p), *words)
    assert not out.exists()
