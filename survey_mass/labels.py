"""Real mass labels: the MCXC X-ray clusters matched to the redMaPPer DR8 candidates (#29, item 1).

MCXC (Piffaretti et al. 2011, A&A 534, A109) gives, for 1,743 X-ray clusters, M500 from L500 (0.1-2.4 keV)
through the REXCESS L-M relation: a *hydrostatic* mass scale. Its definitions are the product's: M500 with
respect to the critical density, flat LambdaCDM with h = 0.7 and Omega_m = 0.3, masses in Msun with no h
(``survey_mass.mock.physics``); so ``log10_m500`` is log10(M500 / 1e14) + 14 and needs no conversion of
definition or cosmology. What differs is the scale: hydrostatic masses sit below lensing masses by the
hydrostatic bias, which this module does not apply (the shipped column is MCXC's own mass).

:func:`mcxc_crossmatch` is the rule; ``survey_mass/data/mcxc_redmapper.parquet`` is its result on the shipped
redMaPPer table, made by ``tools/build_mcxc_crossmatch.py`` from CDS's ``mcxc.fits``;
:func:`load_mcxc_labels` reads it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: the shipped cross-match (package data)
MCXC_FILE = "mcxc_redmapper.parquet"
#: the match: within this separation, and |z_MCXC - z_lambda| < DZ (1 + z_lambda)
MATCH_ARCMIN = 3.0
MATCH_DZ = 0.05

MCXC_COLUMNS = {
    "id": "redMaPPer DR8 cluster id (the candidates' `id`)",
    "mcxc": "MCXC name (Jhhmm.m+ddmm)",
    "z_mcxc": "MCXC's redshift",
    "sep_arcmin": "separation between the MCXC and redMaPPer positions (arcmin)",
    "log10_m500": "log10 M500c / Msun, MCXC's hydrostatic (REXCESS L-M) mass, h = 0.7",
    "log10_l500": "log10 L500 / (1e37 W), 0.1-2.4 keV",
    "cat": "MCXC's source catalogue (`Cat`: RASS, SERENDIPITOUS, ...)",
    "sub_cat": "MCXC's source sub-catalogue (`Sub-Cat`: NORAS, REFLEX, BCS, 400SD, ...), which sets the flux limit",
}


def mcxc_crossmatch(mcxc: pd.DataFrame, candidates: pd.DataFrame) -> pd.DataFrame:
    """MCXC clusters matched one to one to ``candidates`` (``id``, ``ra``, ``dec``, ``z``): each MCXC cluster to
    the nearest candidate within :data:`MATCH_ARCMIN` whose redshift agrees within :data:`MATCH_DZ` (1 + z);
    where two MCXC clusters take one candidate, the nearer keeps it. ``mcxc`` has CDS's columns ``MCXC``,
    ``RAdeg``, ``DEdeg``, ``z``, ``Cat``, ``Sub-Cat``, ``L500``, ``M500`` (1e14 Msun). Columns:
    :data:`MCXC_COLUMNS`, sorted by ``id``."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord, search_around_sky

    x = SkyCoord(np.asarray(mcxc["RAdeg"], float) * u.deg, np.asarray(mcxc["DEdeg"], float) * u.deg)
    c = SkyCoord(np.asarray(candidates["ra"], float) * u.deg, np.asarray(candidates["dec"], float) * u.deg)
    ix, ic, sep, _ = search_around_sky(x, c, MATCH_ARCMIN * u.arcmin)
    zx = np.asarray(mcxc["z"], float)[ix]
    zc = np.asarray(candidates["z"], float)[ic]
    ok = np.abs(zx - zc) < MATCH_DZ * (1 + zc)
    pairs = pd.DataFrame({"ix": ix[ok], "ic": ic[ok], "sep": sep.arcmin[ok]}).sort_values(["sep", "ix", "ic"])
    pairs = pairs.drop_duplicates("ix").drop_duplicates("ic")  # nearest first: one to one
    m = mcxc.iloc[pairs["ix"].to_numpy()]
    out = pd.DataFrame(
        {
            "id": np.asarray(candidates["id"])[pairs["ic"].to_numpy()].astype(np.int64),
            "mcxc": m["MCXC"].astype(str).str.strip().to_numpy(),
            "z_mcxc": m["z"].to_numpy(float),
            "sep_arcmin": pairs["sep"].to_numpy(float),
            "log10_m500": np.log10(m["M500"].to_numpy(float)) + 14.0,
            "log10_l500": np.log10(m["L500"].to_numpy(float)),
            "cat": m["Cat"].astype(str).str.strip().to_numpy(),
            "sub_cat": m["Sub-Cat"].astype(str).str.strip().to_numpy(),
        }
    )
    return out.sort_values("id").reset_index(drop=True)


def load_mcxc_labels() -> pd.DataFrame:
    """The shipped MCXC x redMaPPer DR8 cross-match (:data:`MCXC_COLUMNS`)."""
    from .resources import data_path

    return pd.read_parquet(data_path(MCXC_FILE))
