"""Real mass labels: a user's own (``train --labels``, ``validate --real --labels``) and the shipped MCXC X-ray
clusters matched to the redMaPPer DR8 candidates.

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

import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from .errors import CatalogInputError

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


def mcxc_survey_limits(mcxc: pd.DataFrame, scored: set[str]) -> dict[str, float]:
    """Each MCXC sub-catalogue's lowest L500 flux (erg/s/cm^2) among its clusters not named in ``scored``: the
    rule behind :data:`MCXC_FLUX_LIMITS` (CDS's columns ``MCXC``, ``z``, ``Sub-Cat``, ``L500`` in 1e37 W)."""
    from . import astro

    name = mcxc["MCXC"].astype(str).str.strip()
    sub = mcxc["Sub-Cat"].astype(str).str.strip()
    z = mcxc["z"].to_numpy(float)
    flux = mcxc["L500"].to_numpy(float) * 1e44 / (4 * np.pi * astro.luminosity_distance_cm(z) ** 2)
    keep = ~name.isin(scored).to_numpy()
    return {k: float(flux[keep & (sub == k).to_numpy()].min()) for k in sorted(set(sub[keep]))}


def load_mcxc_labels() -> pd.DataFrame:
    """The shipped MCXC x redMaPPer DR8 cross-match (:data:`MCXC_COLUMNS`)."""
    from .resources import data_path

    return pd.read_parquet(data_path(MCXC_FILE))


# --- the selection a set of labels declares --------------------------------------------------------------------

#: The flux limit of each of MCXC's source surveys (``sub_cat``) in MCXC's own flux system: L500 / (4 pi D_L^2),
#: 0.1-2.4 keV, erg/s/cm^2. MCXC's labels are functions of that flux, so that is the system the selection acts
#: in. Each limit is the lowest such flux among that survey's MCXC clusters that are *not* in the shipped
#: cross-match (the 1,378 clusters no score here uses; ``tools/build_mcxc_crossmatch.py --limits`` recomputes
#: them from CDS's file): no scored row sets its own limit. The surveys' nominal limits (Piffaretti et al. 2011,
#: Table 1, and the survey papers) sit higher (:data:`MCXC_NOMINAL_FLUX_LIMITS`) because MCXC keeps clusters
#: below them: NORAS is not flux-complete and reaches 7.5e-13, a quarter of its nominal 3e-12; with the nominal
#: limits the selection-aware masses come out 0.13 dex above MCXC's labels.
MCXC_FLUX_LIMITS: dict[str, float] = {
    "160SD": 2.53e-14,
    "400SD_NONSER": 2.07e-13,
    "400SD_SER": 1.65e-13,
    "BCS": 2.21e-12,
    "CIZAI": 3.83e-12,
    "CIZAII": 1.93e-12,
    "EMSS_1994": 1.55e-13,
    "EMSS_2004": 1.11e-13,
    "MACS_BRIGHT": 1.24e-12,
    "MACS_DIST": 5.75e-13,
    "MACS_MJFV": 3.17e-13,
    "NEP": 4.14e-14,
    "NORAS": 7.50e-13,
    "REFLEX": 2.27e-12,
    "SGP": 1.10e-12,
    "SHARC_BRIGHT": 1.94e-13,
    "SHARC_SOUTH": 5.18e-14,
    "WARPS": 6.25e-14,
    "WARPSII": 7.62e-14,
    "eBCS": 2.26e-12,
    #: any other survey, and a cluster no survey labelled: RASS all-sky, where its surveys are near complete
    "*": 3.0e-12,
}
#: the nominal limits, approximately (0.5-2 keV limits x 1.6 for a ~5 keV cluster), for comparison
MCXC_NOMINAL_FLUX_LIMITS: dict[str, float] = {
    "NORAS": 3.0e-12, "REFLEX": 3.0e-12, "BCS": 4.4e-12, "eBCS": 2.8e-12, "SGP": 3.0e-12, "CIZAII": 3.0e-12,
    "MACS_BRIGHT": 2.0e-12, "MACS_DIST": 1.0e-12, "MACS_MJFV": 1.0e-12, "160SD": 5.0e-14, "400SD_SER": 2.2e-13,
    "400SD_NONSER": 2.2e-13, "EMSS_1994": 2.0e-13, "EMSS_2004": 2.0e-13, "WARPSII": 1.0e-13,
    "SHARC_BRIGHT": 2.6e-13, "SHARC_SOUTH": 6.0e-14, "*": 3.0e-12,
}  # fmt: skip

#: the L500-M500 normalisation (erg/s at M500 = 3e14 Msun, E(z)^(7/3), slope 1.64 as :mod:`survey_mass.astro`)
#: that MCXC's masses follow: fitted to MCXC's own (L500, M500) pairs of the shipped cross-match (rms 0.025 dex);
#: REXCESS's Malmquist-corrected relation (Pratt et al. 2009), which MCXC used, is 0.080 dex lower in mass at
#: fixed L than the product's :data:`~survey_mass.astro.LX_L0`
MCXC_L0 = 1.867e44

#: MCXC's selection as the mock's label fit finds it (:mod:`survey_mass.mock.label_fit`, fitted to the 365 real
#: labels' count per survey kind, the label-level fit's lambda slope and BCG coefficient, its cross-validated MAE
#: and their mean offset from E[M | lambda, z]): the RASS surveys' limits in the north and south, soft by
#: ``MCXC_DETECTION_ERROR_LN`` (the scatter between the flux a survey detected by and MCXC's L500 flux), and the
#: deep serendipitous fields'; the labels' own flux scatter; and the hydrostatic 1 - b the labels ask. The mock's
#: label physics (:class:`survey_mass.mock.physics.Labels`) is this, and ``validate --real`` judges with it.
MCXC_RASS_NORTH_LIMIT = 2.2e-12
MCXC_RASS_SOUTH_LIMIT = 2.53e-12
MCXC_DEEP_LIMIT = 1.65e-13
MCXC_DEEP_SKY_FRACTION = 0.012
MCXC_DETECTION_ERROR_LN = 0.4
MCXC_FLUX_ERROR_LN = 0.33
MCXC_ONE_MINUS_B_FIT = 0.60
#: its error: 0.03 statistical (the fit over bootstrap resamples of the real labels, benchmarks/label_fit.py) and
#: 0.055 from the lensing anchor the mock's mass scale rests on (Simet et al. 2017's 0.04 dex), in quadrature
MCXC_ONE_MINUS_B_SD = 0.06
#: MCXC's sub-catalogues of deep serendipitous (pointed ROSAT) fields, and of the RASS south
MCXC_DEEP_SURVEYS = frozenset(
    {"160SD", "400SD_SER", "400SD_NONSER", "EMSS_1994", "EMSS_2004", "WARPS", "WARPSII", "SHARC_BRIGHT",
     "SHARC_SOUTH", "NEP"}
)  # fmt: skip
MCXC_SOUTH_SURVEYS = frozenset({"REFLEX", "SGP", "SHARC_SOUTH"})


def mcxc_fitted_limits() -> dict[str, float]:
    """Per MCXC sub-catalogue, the limit of the fitted selection: deep, RASS south or RASS north."""
    out = {}
    for k in MCXC_FLUX_LIMITS:
        if k in MCXC_DEEP_SURVEYS:  # the mock's one deep survey, or deeper where MCXC's own clusters reach
            out[k] = min(MCXC_DEEP_LIMIT, MCXC_FLUX_LIMITS[k])
        elif k in MCXC_SOUTH_SURVEYS:
            out[k] = MCXC_RASS_SOUTH_LIMIT
        else:
            out[k] = MCXC_RASS_NORTH_LIMIT
    return out


#: hydrostatic masses sit below lensing (true) masses: M_HSE = (1 - b) M. 0.80 +- 0.10 spans the lensing
#: calibrations of X-ray masses (Weighing the Giants 0.69 +- 0.07, von der Linden et al. 2014; CCCP 0.76 +- 0.08,
#: Hoekstra et al. 2015; CLASH 0.78 +- 0.09, Penna-Lima et al. 2017; LoCuSS 0.95 +- 0.04, Smith et al. 2016)
#: and is Planck 2015 XXIV's baseline.
HYDROSTATIC_ONE_MINUS_B = 0.80
HYDROSTATIC_ONE_MINUS_B_SD = 0.10

MassScale = Literal["true", "hydrostatic"]


def scale_offset_dex(
    scale: MassScale, one_minus_b: tuple[float, float] = (HYDROSTATIC_ONE_MINUS_B, HYDROSTATIC_ONE_MINUS_B_SD)
) -> tuple[float, float]:
    """(offset, its sd) in dex from the product's mass scale (true: lensing-calibrated) to ``scale``; hydrostatic
    masses are ``one_minus_b`` = (1 - b, its sd) times the true ones."""
    if scale == "hydrostatic":
        v, sd = one_minus_b
        return float(np.log10(v)), float(sd / v / np.log(10))
    return 0.0, 0.0


def parse_one_minus_b(text: str) -> tuple[float, float]:
    """``0.8`` or ``0.8+-0.1``: (1 - b, its sd); one line naming the fault otherwise."""
    v, _, sd = text.replace("±", "+-").partition("+-")
    try:
        out = float(v), float(sd) if sd else 0.0
    except ValueError:
        raise CatalogInputError(f"--one-minus-b {text!r}: use VALUE or VALUE+-SD, e.g. 0.8+-0.1") from None
    if not (np.isfinite(out).all() and 0.3 <= out[0] <= 1.2 and 0 <= out[1] <= 0.5):
        raise CatalogInputError(f"--one-minus-b {text!r}: 1 - b must be in [0.3, 1.2] and its sd in [0, 0.5]")
    return out


class LabelSelection(BaseModel):
    """How a set of labels was selected, as its user declares it.

    ``none``: the labels are not selected by their own mass proxy (the fit is plain). ``xray``: an X-ray flux
    limit per label survey (``flux_limits_cgs``: survey name -> limit, ``*`` for any other survey and for the
    clusters no survey labelled); the label masses are taken as made from the same L_X (as MCXC's are).
    ``sz``: an SZ signal-to-noise limit (SPT-like scaling, :class:`~survey_mass.selection.SZSelection`).

    On the command line (:meth:`parse`): ``none``, ``mcxc`` (MCXC's surveys as the mock's label fit finds them:
    :func:`mcxc_fitted_limits`, soft), ``mcxc-hard`` (each survey a hard limit at its faintest cluster outside
    the cross-match, :data:`MCXC_FLUX_LIMITS`), ``xray:3e-12``, ``xray:NORAS=3e-12,400SD_SER=2.2e-13,*=3e-12`` or ``sz:4.5``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["none", "xray", "sz"] = "none"
    flux_limits_cgs: dict[str, float] = Field(default_factory=dict)
    snr_limit: float | None = Field(None, gt=0)
    #: xray: the normalisation of the L-M relation the label masses were made with (None: the product's)
    l0: float | None = Field(None, gt=0)
    #: xray: the labels' flux scatter (ln) beyond L_X's own, and the detection flux's scatter about the label's
    #: (0: a hard limit on the label)
    flux_error_ln: float = Field(0.1, ge=0)
    detection_error_ln: float = Field(0.0, ge=0)

    @classmethod
    def parse(cls, text: str) -> LabelSelection:
        """A declared selection from its command-line form; one line naming the fault otherwise."""
        t = text.strip()
        kind, _, rest = t.partition(":")
        try:
            if t == "none":
                return cls()
            if t == "mcxc":
                return cls(
                    kind="xray",
                    flux_limits_cgs=mcxc_fitted_limits(),
                    l0=MCXC_L0,
                    flux_error_ln=MCXC_FLUX_ERROR_LN,
                    detection_error_ln=MCXC_DETECTION_ERROR_LN,
                )
            if t == "mcxc-hard":
                return cls(kind="xray", flux_limits_cgs=MCXC_FLUX_LIMITS, l0=MCXC_L0)
            if kind == "sz":
                snr = float(rest)
                if not 3.0 <= snr <= 100.0:
                    raise ValueError(f"signal-to-noise limit {rest.strip()!r} must be in [3, 100]")
                return cls(kind="sz", snr_limit=snr)
            if kind == "xray" and rest:
                if "=" not in rest:
                    return cls(kind="xray", flux_limits_cgs={"*": _flux_limit(rest)})
                limits = {}
                for item in rest.split(","):
                    name, _, value = item.partition("=")
                    name = name.strip()
                    if not re.fullmatch(r"[A-Za-z0-9_.+*-]+", name):
                        raise ValueError(f"survey name {name!r}")
                    if name in limits:
                        raise ValueError(f"survey {name!r} is given twice")
                    limits[name] = _flux_limit(value)
                return cls(kind="xray", flux_limits_cgs=limits)
        except ValueError as exc:
            raise CatalogInputError(f"label selection {text!r}: {str(exc).splitlines()[0]}") from None
        raise CatalogInputError(
            f"label selection {text!r}: use none, mcxc, xray:LIMIT, xray:SURVEY=LIMIT,...,*=LIMIT or sz:SNR"
        )

    @property
    def default_limit(self) -> float:
        """The limit of a survey not listed, and of clusters no survey labelled (the shallowest listed)."""
        if self.kind == "sz":
            return float(self.snr_limit)
        lim = self.flux_limits_cgs
        return float(lim.get("*", max(lim.values())))

    def selection(self, label_offset_dex: float = 0.0):
        """The selection model for the likelihoods (None for ``none``); ``label_offset_dex`` is the labels' scale
        minus the true one (log10(1 - b) for hydrostatic labels), so that its limits are on the true scale. A
        limit is never harder than :data:`MIN_DETECTION_ERROR_LN` (a survey's detection flux is never exactly
        the label's: MCXC's L500 is recomputed)."""
        from .selection import SZSelection, XraySelection

        if self.kind == "xray":
            extra = {"l0": self.l0} if self.l0 else {}
            return XraySelection(
                flux_limit_cgs=self.default_limit,
                labels_from_lx=True,
                flux_error_ln=self.flux_error_ln,
                detection_error_ln=max(self.detection_error_ln, MIN_DETECTION_ERROR_LN),
                label_offset_dex=label_offset_dex,
                **extra,
            )
        if self.kind == "sz":
            return SZSelection(snr_limit=float(self.snr_limit), label_offset_dex=label_offset_dex)
        return None

    def row_limits(self, survey: np.ndarray) -> np.ndarray:
        """Each row's limit: its label survey's, else :attr:`default_limit` (NaN for ``none``)."""
        survey = np.asarray(survey, dtype=object)
        if self.kind == "none":
            return np.full(survey.size, np.nan)
        if self.kind == "sz":
            return np.full(survey.size, self.default_limit)
        d = self.default_limit
        return np.array([self.flux_limits_cgs.get(str(s), d) for s in survey], dtype=float)


#: the softest a declared X-ray limit is (ln of flux; 0.03 dex in mass)
MIN_DETECTION_ERROR_LN = 0.1


def _flux_limit(text: str) -> float:
    v = float(text)
    if not (np.isfinite(v) and 1e-16 <= v <= 1e-9):
        raise ValueError(f"flux limit {text.strip()!r} must be in [1e-16, 1e-9] erg/s/cm^2 (0.1-2.4 keV)")
    return v


# --- a user's labels --------------------------------------------------------------------------------------------

#: a user's label file: column -> accepted names (case-insensitive)
LABEL_ALIASES = {
    "id": ("id", "mem_match_id"),
    "ra": ("ra", "raj2000", "radeg", "ra_deg"),
    "dec": ("dec", "dej2000", "dedeg", "dec_deg"),
    "z": ("z", "redshift"),
    "log10_m500": ("log10_m500", "log10_m500_label", "logm500"),
    "log10_m500_err": ("log10_m500_err", "log10_m500_label_err", "logm500_err"),
    "survey": ("survey", "sub_cat", "label_survey"),
}


def read_labels(path: str | Path) -> pd.DataFrame:
    """A user's labels (FITS/CSV/Parquet): ``id`` or ``ra``/``dec``, ``log10_m500`` (log10 M500c / Msun, h = 0.7),
    optionally ``log10_m500_err`` (dex), ``z`` and ``survey`` (the label survey, for per-survey limits).

    Columns as :data:`LABEL_ALIASES`; a bad value is refused in one line naming the file and the row."""
    from .candidates import _read_table, exact_ids

    name = str(path)
    raw = _read_table(Path(path), "labels")
    lower = {str(c).lower(): c for c in raw.columns}
    out = pd.DataFrame(index=range(len(raw)))
    for col, names in LABEL_ALIASES.items():
        hit = next((lower[n] for n in names if n in lower), None)
        if hit is not None:
            out[col] = raw[hit].to_numpy()
    if "log10_m500" not in out:
        raise CatalogInputError(f"labels {name!r}: no log10_m500 column")
    if "id" not in out and not {"ra", "dec"} <= set(out):
        raise CatalogInputError(f"labels {name!r}: needs an id column or ra and dec")
    if "id" in out:
        out["id"] = exact_ids(out["id"].to_numpy(), name)
    for col in ("ra", "dec", "z", "log10_m500", "log10_m500_err"):
        if col in out:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    bad = ~np.isfinite(out["log10_m500"]) | (out["log10_m500"] < 12) | (out["log10_m500"] > 16.5)
    if "log10_m500_err" in out:  # NaN: no error given for that row; otherwise finite, in [0, 2] dex
        e = out["log10_m500_err"]
        bad |= e.notna() & ~((e >= 0) & (e <= 2))
    if {"ra", "dec"} <= set(out):
        bad |= ~np.isfinite(out["ra"]) | (np.abs(out["dec"]) > 90) | ~np.isfinite(out["dec"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        shown = {k: float(out[k].iloc[i]) for k in out.columns if k not in ("survey", "id")}
        raise CatalogInputError(
            f"labels {name!r}: row {i}: needs log10_m500 in [12, 16.5], an error in [0, 2] dex (or none) and a "
            "position on the sky "
            f"(got {shown})"
        )
    if "log10_m500_err" not in out:
        out["log10_m500_err"] = np.nan
    out["survey"] = out["survey"].astype(str).str.strip() if "survey" in out else ""
    if "id" in out and out["id"].duplicated().any():
        dup = int(out["id"][out["id"].duplicated()].iloc[0])
        raise CatalogInputError(f"labels {name!r}: id {dup} is labelled twice")
    return out


def match_labels(labels: pd.DataFrame, ids, ra, dec, z) -> tuple[np.ndarray, np.ndarray]:
    """(row in the candidates, row in ``labels``) of each matched label, one to one: by ``id`` where the labels
    have one, else the nearest candidate within :data:`MATCH_ARCMIN` (and |dz| < MATCH_DZ (1 + z) where the labels
    give z)."""
    if "id" in labels:
        pos = pd.Index(np.asarray(ids)).get_indexer(labels["id"].to_numpy())
        ok = pos >= 0
        return pos[ok], np.flatnonzero(ok)
    import astropy.units as u
    from astropy.coordinates import SkyCoord, search_around_sky

    lab = SkyCoord(labels["ra"].to_numpy(float) * u.deg, labels["dec"].to_numpy(float) * u.deg)
    cand = SkyCoord(np.asarray(ra, float) * u.deg, np.asarray(dec, float) * u.deg)
    il, ic, sep, _ = search_around_sky(lab, cand, MATCH_ARCMIN * u.arcmin)
    ok = np.ones(il.size, bool)
    if "z" in labels:
        zl, zc = labels["z"].to_numpy(float)[il], np.asarray(z, float)[ic]
        ok = ~np.isfinite(zl) | (np.abs(zl - zc) < MATCH_DZ * (1 + zc))
    pairs = pd.DataFrame({"il": il[ok], "ic": ic[ok], "sep": sep.arcmin[ok]}).sort_values(["sep", "il", "ic"])
    pairs = pairs.drop_duplicates("il").drop_duplicates("ic")
    return pairs["ic"].to_numpy(), pairs["il"].to_numpy()


def mcxc_label_table() -> pd.DataFrame:
    """The shipped MCXC cross-match as a label table (:func:`read_labels`'s columns; its survey is ``sub_cat``)."""
    m = load_mcxc_labels()
    return pd.DataFrame(
        {
            "id": m["id"].to_numpy(np.int64),
            "z": m["z_mcxc"].to_numpy(float),
            "log10_m500": m["log10_m500"].to_numpy(float),
            "log10_m500_err": np.nan,
            "survey": m["sub_cat"].astype(str).to_numpy(),
        }
    )
