"""The real labels shipped with the package (#29 item 1): the MCXC x redMaPPer DR8 cross-match."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from survey_mass.candidates import load_redmapper
from survey_mass.labels import MATCH_ARCMIN, MATCH_DZ, MCXC_COLUMNS, load_mcxc_labels, mcxc_crossmatch

SHARED_MCXC = Path(__file__).resolve().parents[2] / "shared" / "data" / "mcxc.fits"


@pytest.fixture(scope="module")
def mcxc() -> pd.DataFrame:
    from astropy.table import Table

    if not SHARED_MCXC.exists():
        pytest.skip(f"{SHARED_MCXC} is not here")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Table.read(SHARED_MCXC).to_pandas()


def test_the_shipped_crossmatch_is_the_rule_applied_to_cds_file(mcxc):
    shipped = load_mcxc_labels()
    again = mcxc_crossmatch(mcxc, load_redmapper())
    pd.testing.assert_frame_equal(shipped, again)
    assert list(shipped.columns) == list(MCXC_COLUMNS)
    assert len(shipped) == 365 and shipped["id"].is_unique and shipped["mcxc"].is_unique


def test_every_match_obeys_the_rule_and_keeps_mcxcs_masses(mcxc):
    m = load_mcxc_labels()
    rm = load_redmapper().set_index("id").loc[m["id"]]
    assert (m["sep_arcmin"] <= MATCH_ARCMIN).all()
    assert (np.abs(m["z_mcxc"].to_numpy() - rm["z"].to_numpy()) < MATCH_DZ * (1 + rm["z"].to_numpy())).all()
    src = mcxc.assign(name=mcxc["MCXC"].astype(str).str.strip()).set_index("name").loc[m["mcxc"]]
    # MCXC's M500 is in 1e14 Msun with h = 0.7, M500c: the product's definitions, only the unit changes
    np.testing.assert_allclose(m["log10_m500"], np.log10(src["M500"].to_numpy(float)) + 14, atol=1e-12)
    assert m["log10_m500"].between(13.0, 15.6).all()
    assert {"NORAS", "REFLEX", "400SD_SER", "BCS"} <= set(m["sub_cat"])


def test_the_match_is_one_to_one_nearest_first():
    """Two X-ray clusters near one candidate: the nearer keeps it; a redshift outside the cut never matches."""
    mcxc = pd.DataFrame(
        {
            "MCXC": ["A", "B", "C"],
            "RAdeg": [150.005, 150.03, 151.0],
            "DEdeg": [2.0, 2.0, 2.0],
            "z": [0.20, 0.20, 0.40],
            "Cat": ["x"] * 3,
            "Sub-Cat": ["y"] * 3,
            "L500": [1.0] * 3,
            "M500": [2.0] * 3,
        }
    )
    cands = pd.DataFrame({"id": [7, 8], "ra": [150.01, 151.0], "dec": [2.0, 2.0], "z": [0.21, 0.20]})
    m = mcxc_crossmatch(mcxc, cands)
    assert m["mcxc"].tolist() == ["A"] and m["id"].tolist() == [7]  # B, farther from 7, is left unmatched
    assert 8 not in m["id"].tolist()  # C's redshift is 0.2 away


# --- a user's labels and their declared selection (#29 items 1 and 3) -----------------------------------------


def test_mcxc_masses_follow_the_declared_l_m_relation():
    """The ``mcxc`` selection's L-M normalisation gives MCXC's own masses from its own L500 (the label is a
    function of the selection variable): rms 0.025 dex, no offset."""
    from survey_mass import astro
    from survey_mass.labels import LabelSelection

    sel = LabelSelection.parse("mcxc").selection()
    m = load_mcxc_labels()
    z = m["z_mcxc"].to_numpy()
    lx = 10 ** m["log10_l500"].to_numpy() * 1e44  # 1e37 W -> erg/s
    mass = (
        np.log10(sel.m0)
        + (np.log10(lx) - np.log10(sel.l0) - sel.ez_power * np.log10(astro.efunc(z))) / sel.slope
    )
    d = m["log10_m500"].to_numpy() - mass
    assert abs(d.mean()) < 0.005 and d.std() < 0.03
    # and every MCXC survey of the cross-match has its own limit; the RASS ones sit near 1e-12, the serendipitous ones far below
    from survey_mass.labels import MCXC_FLUX_LIMITS

    assert set(m["sub_cat"]) <= set(MCXC_FLUX_LIMITS)
    assert MCXC_FLUX_LIMITS["NORAS"] > 3 * MCXC_FLUX_LIMITS["400SD_SER"]


@pytest.mark.parametrize(
    ("text", "kind", "default"),
    [
        ("none", "none", None),
        ("xray:2e-12", "xray", 2e-12),
        ("xray:A=1e-13,*=3e-12", "xray", 3e-12),
        ("sz:4.5", "sz", 4.5),
    ],
)
def test_declared_selections_parse(text, kind, default):
    from survey_mass.labels import LabelSelection

    s = LabelSelection.parse(text)
    assert s.kind == kind
    if default is not None:
        assert s.default_limit == pytest.approx(default)
        assert s.selection() is not None
    else:
        assert s.selection() is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "xray",
        "xray:",
        "xray:-1",
        "xray:nan",
        "xray:inf",
        "xray:A=1e-12,B",
        "sz:0",
        "sz:abc",
        "lensing",
        "xray:../../etc=1e-12",
        "xray:A;DROP TABLE=1e-12",
        "xray:1e300",
        "xray:1e-30",
        "sz:2",
        "sz:1e300",
        "xray:A=1e-12,A=2e-12",
    ],
)
def test_bad_declared_selections_are_refused_in_one_line(text):
    from survey_mass.errors import CatalogInputError
    from survey_mass.labels import LabelSelection

    with pytest.raises(CatalogInputError, match="label selection") as e:
        LabelSelection.parse(text)
    assert "\n" not in str(e.value)


def test_row_limits_follow_each_labels_survey():
    from survey_mass.labels import LabelSelection

    s = LabelSelection.parse("xray:DEEP=1e-13,*=3e-12")
    np.testing.assert_allclose(s.row_limits(np.array(["DEEP", "other", "*"], object)), [1e-13, 3e-12, 3e-12])
    m_lim = s.selection().m_lim(np.full(2, 0.3), np.array([1e-13, 3e-12]))
    assert m_lim[0] < m_lim[1] - 0.5  # a deeper survey labels lighter clusters


def test_user_labels_are_read_checked_and_matched(tmp_path):
    from survey_mass.errors import CatalogInputError
    from survey_mass.labels import match_labels, read_labels

    cands = pd.DataFrame(
        {"id": [5, 6, 7], "ra": [10.0, 10.5, 200.0], "dec": [1.0, 1.0, -5.0], "z": [0.1, 0.2, 0.3]}
    )
    f = tmp_path / "l.csv"
    pd.DataFrame(
        {"MEM_MATCH_ID": [7, 5, 99], "logm500": [14.5, 14.1, 14.0], "survey": ["A", "B", "C"]}
    ).to_csv(f, index=False)
    lab = read_labels(f)
    ic, il = match_labels(lab, cands["id"], cands["ra"], cands["dec"], cands["z"])
    assert sorted(zip(cands["id"].to_numpy()[ic], lab["log10_m500"].to_numpy()[il], strict=True)) == [
        (5, 14.1),
        (7, 14.5),
    ]
    # by position (1' off), and a redshift that disagrees does not match
    g = tmp_path / "p.csv"
    pd.DataFrame(
        {"ra": [10.0 + 1 / 60, 10.5], "dec": [1.0, 1.0], "z": [0.1, 0.5], "log10_m500": [14.2, 14.3]}
    ).to_csv(g, index=False)
    ic, il = match_labels(read_labels(g), cands["id"], cands["ra"], cands["dec"], cands["z"])
    assert ic.tolist() == [0] and il.tolist() == [0]
    # a bad row is named; a file without masses or positions is refused
    # a missing error is no error given (NaN), as the shipped MCXC table written out has it
    h = tmp_path / "nan_err.csv"
    pd.DataFrame({"id": [1, 2], "log10_m500": [14.0, 14.1], "log10_m500_err": [np.nan, 0.1]}).to_csv(
        h, index=False
    )
    assert np.isnan(read_labels(h)["log10_m500_err"].iloc[0])
    for frame, words in (
        ({"id": [1, 2], "log10_m500": [14.0, 19.0]}, "row 1"),
        ({"id": [1, 2], "log10_m500": [14.0, 14.1], "log10_m500_err": [0.1, -0.1]}, "row 1"),
        ({"id": [1, 2], "log10_m500": [14.0, 14.1], "log10_m500_err": [np.inf, 0.1]}, "row 0"),
        ({"id": [1, 2], "log10_m500": [14.0, 14.1], "log10_m500_err": [0.1, 5.0]}, "row 1"),
        ({"id": [1, 1], "log10_m500": [14.0, 14.1]}, "labelled twice"),
        ({"id": [1]}, "no log10_m500"),
        ({"log10_m500": [14.0]}, "id column or ra and dec"),
    ):
        h = tmp_path / "bad.csv"
        pd.DataFrame(frame).to_csv(h, index=False)
        with pytest.raises(CatalogInputError, match=words) as e:
            read_labels(h)
        assert "bad.csv" in str(e.value) and "\n" not in str(e.value)


def test_the_mcxc_survey_limits_are_the_rule_applied_to_cds_file(mcxc):
    """Each survey's limit is its faintest cluster *outside* the scored cross-match, as shipped."""
    from survey_mass.labels import MCXC_FLUX_LIMITS, mcxc_survey_limits

    again = mcxc_survey_limits(mcxc, set(load_mcxc_labels()["mcxc"]))
    assert set(again) == set(MCXC_FLUX_LIMITS) - {"*"}
    for k, v in again.items():
        assert MCXC_FLUX_LIMITS[k] == pytest.approx(v, rel=0.01), k


@pytest.mark.parametrize("text", ["2", "0.1", "0.8+-0.9", "nan", "inf", "0.8+-x", "-0.8"])
def test_bad_hydrostatic_bias_is_refused_in_one_line(text):
    from survey_mass.errors import CatalogInputError
    from survey_mass.labels import parse_one_minus_b

    with pytest.raises(CatalogInputError, match="one-minus-b") as e:
        parse_one_minus_b(text)
    assert "\n" not in str(e.value)


def test_the_fitted_mcxc_selection_puts_each_deep_survey_no_shallower_than_its_own_clusters():
    from survey_mass.labels import MCXC_DEEP_LIMIT, MCXC_DEEP_SURVEYS, MCXC_FLUX_LIMITS, mcxc_fitted_limits

    lim = mcxc_fitted_limits()
    for k in MCXC_DEEP_SURVEYS & set(lim):
        assert lim[k] <= min(MCXC_DEEP_LIMIT, MCXC_FLUX_LIMITS[k])
    assert lim["160SD"] < 3e-14 and lim["NORAS"] > 1e-12
