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
