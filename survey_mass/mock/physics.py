"""The physics of the mock survey: cosmology, halo masses, richness, BCGs, members, field and labels.

Everything here is a documented, literature-anchored approximation. The numbers that set the mock are the
fields of :class:`MockPhysics` (one default each), which a :class:`~survey_mass.mock.survey.MockConfig` carries
to every worker and every store records in its provenance; ``survey-mass mock --set NAME=VALUE`` overrides
them (:func:`apply_overrides`). Distances and E(z) come from :mod:`survey_mass.astro`.

Cosmology
    Flat LambdaCDM with H0 = 70 km/s/Mpc, Om0 = 0.3, Ob0 = 0.048, sigma8 = 0.75, ns = 0.96 (astropy for
    distances, colossus for the halo mass function and concentrations). Masses are M500c in Msun (no h).

Masses, the halo's shared deviations, central galaxies and labels
    :mod:`survey_mass.mock.halos` (the exact posterior p(M, eps | lambda, BCG, z) of a candidate, the MCXC-like
    labels from L_X, the observing conditions of each field). The mass-richness relation's defaults are fitted
    to the real redMaPPer abundance and the Simet et al. 2017 lensing masses (:mod:`survey_mass.mock.abundance`);
    with them the mock's sigma8 is 0.75 (see :class:`Cosmology`).

Things the catalogue does not give are drawn given the mass: the members' NFW scale radius (Duffy et al. 2008
c(M)), the number of faint (0.05-0.2 L*) members, a Poisson draw from the halo's occupation, which shares its
richness deviation (Kravtsov et al. 2004; :class:`HaloScatter`), and every member's luminosity and position.
So a network that reads the whole image can add to the catalogue's richness through physics (the central
galaxy, the members' light and distribution); no pixel encodes the mass in any other way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .. import astro
from ..errors import SurveyMassError
from ..labels import (
    MCXC_DEEP_LIMIT,
    MCXC_DEEP_SKY_FRACTION,
    MCXC_DETECTION_ERROR_LN,
    MCXC_FLUX_ERROR_LN,
    MCXC_L0,
    MCXC_ONE_MINUS_B_FIT,
    MCXC_RASS_NORTH_LIMIT,
    MCXC_RASS_SOUTH_LIMIT,
)
from ..photometry import DEPTH_95, PSF_FWHM

# --- the parameters -------------------------------------------------------------------------------------------


class _Params(BaseModel):
    # NaN and infinity are no physics (sky_noise_scale=Infinity would write all-NaN cutouts marked OK)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ranges_increase(self):
        """Every (low, high) pair of numbers is a range: low < high."""
        for name in type(self).model_fields:
            v = getattr(self, name)
            if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
                if not v[0] < v[1]:
                    raise ValueError(f"{name} must be a range (low, high) with low < high, got {list(v)}")
        return self


class PerBand(_Params):
    """One number per SDSS band; ``per_band["r"]`` reads a band."""

    u: float
    g: float
    r: float
    i: float
    z: float

    def __getitem__(self, band: str) -> float:
        return getattr(self, band)

    def check(self, name: str, *, positive: bool = False, non_negative: bool = False) -> None:
        """Raise ValueError naming ``name.band`` for a value that breaks the bound."""
        for b in ("u", "g", "r", "i", "z"):
            v = getattr(self, b)
            if (positive and not v > 0) or (non_negative and not v >= 0):
                raise ValueError(f"{name}.{b} must be {'positive' if positive else 'non-negative'}, got {v}")


class Cosmology(_Params):
    """Flat LambdaCDM (astropy for distances, colossus for the mass function and concentrations)."""

    H0: float = Field(astro.H0, gt=0)
    Om0: float = Field(astro.OM0, gt=0, lt=1)
    Ob0: float = Field(astro.OB0, ge=0, lt=1)
    #: 0.75, not Planck's 0.81: with 0.81 the real redMaPPer abundance and the Simet et al. 2017 lensing masses
    #: can only be met with sigma_ln_lambda|M = 0.51, twice Rozo & Rykoff 2014's 0.25; at 0.75 (within the
    #: S8 ~ 0.75-0.79 of cluster-abundance and weak-lensing analyses, e.g. Costanzi et al. 2019, KiDS, DES) the
    #: joint fit gives 0.26 (:mod:`survey_mass.mock.abundance`)
    sigma8: float = Field(0.75, gt=0)
    ns: float = Field(0.96, gt=0)

    @property
    def h(self) -> float:
        return self.H0 / 100.0


class RichnessRelation(_Params):
    """P(lambda | M): ln lambda ~ N(ln 40 + ln 10 (log10 M200m - pivot) / slope, sigma_int^2 + 1/<lambda>).

    M200m in h^-1 Msun. The defaults are fitted jointly to the real redMaPPer abundance and the Simet et al.
    2017 lensing masses (:mod:`survey_mass.mock.abundance`; ``python -m survey_mass.mock.abundance``).
    """

    #: log10 M200m [h^-1 Msun] of haloes whose mean ln lambda is ln 40
    pivot_log10_M200m_hinv: float = 14.491
    slope: float = Field(1.111, gt=0)
    sigma_ln_lambda_intrinsic: float = Field(0.26, ge=0)
    #: add the Poisson variance 1/<lambda> to the intrinsic scatter in ln lambda
    poisson: bool = True


class BCGPhysics(_Params):
    """The central galaxy at fixed halo mass: m_i = m_ref(z) + dmag_dlog10M (log10 M500 - m_40(z)) - sigma eps_B.

    m_ref(z) is the real redMaPPer central galaxies' mean i magnitude at lambda = 40 (:data:`BCG_FIT`) and m_40(z)
    the mean log mass of lambda = 40 clusters (:func:`survey_mass.mock.halos.bcg_mean_mag`); sigma makes their
    spread at fixed richness the real 0.47 mag (:func:`~survey_mass.mock.halos.bcg_sigma_mag`), with a floor.
    The slope -0.6 mag/dex (L_BCG ∝ M^0.24, Lin & Mohr 2004's M^0.26), with ``HaloScatter.rho_bcg_lambda`` =
    -0.15, gives the real MCXC labels' BCG coefficient at fixed lambda and z (-0.063 +- 0.022 dex/mag;
    :mod:`survey_mass.mock.label_fit`). The earlier -0.88 mag/dex and -0.3 made the central galaxy say twice
    what the real one says about mass (-0.14 dex/mag on the mock's MCXC-like labels)
    """

    dmag_dlog10M: float = -0.6
    #: floor of the scatter of the BCG magnitude at fixed mass (mag)
    min_scatter_mag: float = Field(0.05, gt=0)
    #: r_e = re_kpc (L / L_ref)^re_slope, L_ref = astro.BCG_LUMINOSITY_LSTAR L*
    re_kpc: float = Field(12.0, gt=0)
    re_slope: float = 0.7


class HaloScatter(_Params):
    """How a halo's deviations at fixed mass are shared (the correlation matrix of eps_lambda, eps_B, eps_L).

    eps_lambda is the halo's intrinsic richness excess (sigma_int eps_lambda in ln lambda); bright and faint
    members share it (``faint_members_share``: the faint satellites' mean count is multiplied by
    exp(sigma_int eps_lambda), as one halo occupation sets both). eps_B is the central galaxy's luminosity excess
    and eps_L the X-ray luminosity's (ln L_X = <ln L_X | M> + sigma_ln_l eps_L).

    * rho_bcg_lambda = -0.15: at fixed mass, haloes that formed early have brighter centrals and fewer
      satellites (magnitude gap; Bradshaw et al. 2020, Farahi et al. 2020 find anti-correlations of -0.2 to
      -0.5 between central and satellite *stellar mass*; lambda counts satellites above 0.2 L*, which dilutes
      it). Set with the BCG slope by the real MCXC labels' BCG coefficient.
    * rho_lx_lambda = -0.3 and rho_lx_bcg = -0.2: hot gas and stars anti-correlate at fixed halo mass
      (Farahi et al. 2019: r = -0.52 between gas mass and stellar mass), diluted here because lambda counts
      only satellites and L_X is not gas mass.
    """

    faint_members_share: bool = True
    rho_bcg_lambda: float = Field(-0.15, ge=-0.95, le=0.95)
    rho_lx_lambda: float = Field(-0.3, ge=-0.95, le=0.95)
    rho_lx_bcg: float = Field(-0.2, ge=-0.95, le=0.95)

    def correlation(self) -> np.ndarray:
        """The 3 x 3 correlation matrix of (eps_lambda, eps_B, eps_L)."""
        a, b, c = self.rho_bcg_lambda, self.rho_lx_lambda, self.rho_lx_bcg
        return np.array([[1.0, a, b], [a, 1.0, c], [b, c, 1.0]])


class Concentration(_Params):
    """Duffy et al. 2008 (full sample, NFW): c200c = a (M200c / pivot)^b (1 + z)^c, M200c = 10^dex M500c."""

    a: float = Field(5.71, gt=0)
    b: float = -0.084
    c: float = -0.47
    pivot_hinv: float = Field(2e12, gt=0)
    m200c_over_m500c_dex: float = 0.13


class Members(_Params):
    """Red-sequence members: Schechter luminosities, de Vaucouleurs sizes, real red colours."""

    #: members counted by lambda (in L*)
    bright_lstar: tuple[float, float] = (0.2, 10.0)
    #: fainter members, a Poisson draw from the halo's mean occupation (in L*)
    faint_lstar: tuple[float, float] = (0.05, 0.2)
    schechter_alpha: float = -1.0
    #: r_e = re_kpc_at_lstar (L / L*)^0.5
    re_kpc_at_lstar: float = Field(3.0, gt=0)
    #: scatter added to each real red galaxy's colours (mag)
    colour_scatter_mag: float = Field(0.04, ge=0)


class FieldGalaxies(_Params):
    """dN/dm = counts_at_r20 10^(count_slope (r - 20)) deg^-2 mag^-1 (Yasuda et al. 2001), real colours."""

    r_range: tuple[float, float] = (14.0, 23.5)
    counts_at_r20: float = Field(1000.0, ge=0)
    count_slope: float = 0.45
    #: log10 r_e["] = log10_re_at_r20 + log10_re_slope (r - 20) +- log10_re_scatter
    log10_re_at_r20: float = 0.3
    log10_re_slope: float = -0.12
    log10_re_scatter: float = Field(0.15, ge=0)


class Stars(_Params):
    """Stars on the stellar locus: density / sin(max(|b|, min_abs_b_deg)), dN/dm ∝ 10^(count_slope r)."""

    r_range: tuple[float, float] = (14.0, 23.5)
    per_deg2: float = Field(2000.0, ge=0)
    count_slope: float = 0.12
    min_abs_b_deg: float = 20.0


class LabelSurvey(_Params):
    """One X-ray survey of the labels' mix: its flux limit over a declination band, or over a fraction of it.

    ``sky_fraction`` < 1 picks that fraction of order-6 HEALPix cells (0.84 deg^2 each) by a hash of the cell:
    the pointed serendipitous surveys' scattered deep fields.
    """

    name: str
    flux_limit_cgs: float = Field(gt=0)
    dec_range: tuple[float, float] = (-90.0, 90.0)
    sky_fraction: float = Field(1.0, gt=0, le=1)
    #: the fraction of clusters above its limit that the survey catalogued (NORAS is not flux-complete)
    completeness: float = Field(1.0, gt=0, le=1)


#: MCXC's mix (Piffaretti et al. 2011): RASS surveys in the north (NORAS/BCS) and the south (REFLEX), and deep
#: serendipitous ROSAT fields (400SD, 160SD, EMSS, WARPS, SHARC). Fluxes in the 0.1-2.4 keV band, erg/s/cm^2, in
#: the labels' own flux system (L500 / 4 pi D_L^2). Fitted to the real MCXC labels of redMaPPer clusters with
#: the rest of the label physics (:mod:`survey_mass.mock.label_fit`): the RASS limits come out near their nominal
#: 3e-12 (2.2e-12 north, 2.53e-12 south; soft: ``Labels.detection_error_ln``), and the deep fields cover 1.2%
#: of the sky at 400SD's 1.65e-13 (their 115 real labels).
MCXC_LIKE_SURVEYS = (
    LabelSurvey(
        name="RASS-north (NORAS/BCS-like)", flux_limit_cgs=MCXC_RASS_NORTH_LIMIT, dec_range=(2.5, 90.0)
    ),
    LabelSurvey(
        name="RASS-south (REFLEX-like)", flux_limit_cgs=MCXC_RASS_SOUTH_LIMIT, dec_range=(-90.0, 2.5)
    ),
    LabelSurvey(
        name="serendipitous (400SD/160SD/EMSS-like)",
        flux_limit_cgs=MCXC_DEEP_LIMIT,
        sky_fraction=MCXC_DEEP_SKY_FRACTION,
    ),
)


class Labels(_Params):
    """X-ray flux-limited labels like MCXC's: L500 = l0 E(z)^ez_power (M500 / m0)^slope erg/s, and the label
    mass is the mass that the mean relation gives for the *observed* L_X (as MCXC's M500 come from L500).

    ln L_X scatters by ``sigma_ln_l`` around the relation (its deviation shares the halo's scatter:
    :class:`HaloScatter`), and the flux is measured with ``flux_error_ln`` more. A cluster is labelled when its
    observed flux passes the limit of the survey covering its position (``surveys``; the deepest one wins).
    So the label error *is* the selection variable: labels near a flux limit scatter high (Malmquist bias).

    The defaults are fitted to the 365 real MCXC labels of redMaPPer clusters (:mod:`survey_mass.mock.label_fit`:
    their count by survey, the label-level fit's lambda slope and BCG coefficient, its cross-validated MAE and
    the labels' mean offset from E[M | lambda, z]): ``l0`` is MCXC's own L-M normalisation
    (:data:`survey_mass.labels.MCXC_L0`); 1 - b = 0.60 is what the real labels ask once their selection is
    modelled (0.61 +- 0.03 stat +- 0.055 from the lensing anchor; the lensing calibrations of X-ray masses give
    0.69-0.95): an effective MCXC-to-mock mass ratio.
    """

    surveys: tuple[LabelSurvey, ...] = MCXC_LIKE_SURVEYS
    flux_error_ln: float = Field(MCXC_FLUX_ERROR_LN, ge=0)
    #: labels on the hydrostatic scale, as MCXC's: L_X follows the L-M relation in M_HSE = (1 - b) M, and the
    #: label is the M_HSE that the relation gives for the observed L_X (1: labels on the true scale)
    hydrostatic_one_minus_b: float = Field(MCXC_ONE_MINUS_B_FIT, gt=0, le=1.5)
    #: the scatter (ln) between the flux a survey detects a cluster by and the label's L500 flux (MCXC recomputes
    #: L500 in R500 from the surveys' fluxes): a soft flux limit; 0: the label's flux is the detection's
    detection_error_ln: float = Field(MCXC_DETECTION_ERROR_LN, ge=0)
    l0: float = Field(MCXC_L0, gt=0)
    m0: float = Field(astro.LX_M0, gt=0)
    slope: float = astro.LX_SLOPE
    ez_power: float = astro.LX_EZ_POWER
    sigma_ln_l: float = Field(astro.LX_SIGMA_LN_L, ge=0)

    @property
    def label_scatter_dex(self) -> float:
        """Width (dex) of the label mass around the true mass: L_X scatter and flux error over the slope."""
        return float(np.hypot(self.sigma_ln_l, self.flux_error_ln) / np.log(10) / self.slope)


class ObservingConditions(_Params):
    """Sky brightness (depth) and seeing per field and band, drawn per cutout, correlated across bands.

    SDSS: the r-band PSF FWHM has a median near 1.3-1.4" and 68% of fields within about 1.1-1.7" (Abazajian et
    al. 2009; Ross et al. 2011), the bands of one field share most of it (all five are observed within 6 min);
    the sky brightness varies by ~0.2-0.4 mag with the moon, most in u and g. Here ln FWHM_b = ln(nominal_b) +
    seeing_sigma_ln (r_s xi + sqrt(1 - r_s^2) xi_b) and the sky (mag) Delta_b = sky_sigma_mag_b (r_k zeta +
    sqrt(1 - r_k^2) zeta_b); the pixel noise scales with sqrt(sky flux), 10^(-0.2 Delta_b). The nominal values
    (``render.psf_fwhm_arcsec``, ``render.depth_95``) are the medians. ``vary = false`` gives every cutout the
    nominal conditions.
    """

    vary: bool = True
    seeing_sigma_ln: float = Field(0.15, ge=0)
    seeing_band_correlation: float = Field(0.9, ge=0, le=1)
    sky_sigma_mag: PerBand = PerBand(u=0.35, g=0.3, r=0.25, i=0.2, z=0.2)
    sky_band_correlation: float = Field(0.7, ge=0, le=1)

    @model_validator(mode="after")
    def _scatter_non_negative(self):
        self.sky_sigma_mag.check("sky_sigma_mag", non_negative=True)
        return self


class RenderPhysics(_Params):
    """The PSF (double Gaussian: a core of the band's FWHM and a wider wing), depth and gains."""

    psf_fwhm_arcsec: PerBand = PerBand(**PSF_FWHM)
    psf_wing_fraction: float = Field(0.1, ge=0, lt=1)
    psf_wing_scale: float = Field(2.0, gt=0)
    #: 95%-completeness point-source magnitudes: the sky noise gives S/N = 5 there (at the nominal seeing)
    depth_95: PerBand = PerBand(**DEPTH_95)
    #: approximate nanomaggies per photo-electron for a 53.9 s SDSS exposure (nmgy/DN over gain ~4.7 e/DN)
    nmgy_per_electron: PerBand = PerBand(u=0.0021, g=0.0008, r=0.0010, i=0.0014, z=0.0070)

    @model_validator(mode="after")
    def _positive(self):
        self.psf_fwhm_arcsec.check("psf_fwhm_arcsec", positive=True)
        self.nmgy_per_electron.check("nmgy_per_electron", positive=True)
        return self


class MockPhysics(_Params):
    """Every number that sets the mock survey, with its default; one instance travels in :class:`MockConfig`.

    Override any of them with :func:`apply_overrides` (``survey-mass mock --set NAME=VALUE``).
    """

    cosmology: Cosmology = Cosmology()
    richness_relation: RichnessRelation = RichnessRelation()
    bcg: BCGPhysics = BCGPhysics()
    concentration: Concentration = Concentration()
    members: Members = Members()
    field: FieldGalaxies = FieldGalaxies()
    stars: Stars = Stars()
    labels: Labels = Labels()
    halo_scatter: HaloScatter = HaloScatter()
    observing: ObservingConditions = ObservingConditions()
    render: RenderPhysics = RenderPhysics()
    #: clusters drawn from the mass function have at least this richness
    richness_floor: float = Field(20.0, gt=0)
    #: ranges of the mass-function draws where there are no candidates
    redshift_range_no_candidates: tuple[float, float] = (0.05, 0.6)
    mass_range_no_candidates_log10: tuple[float, float] = (12.95, 15.5)
    #: multiplies every band's sky noise sigma (the same standard-normal draws, scaled); up to 1000x, 7.5 mag
    #: shallower, beyond which a cutout is noise alone
    sky_noise_scale: float = Field(1.0, gt=0, le=1000)
    #: multiplies every band's PSF FWHM when rendering (the sky noise per pixel is that of the nominal seeing);
    #: up to 20x, a 27" PSF, beyond which a cluster is a smudge across the cutout
    seeing_scale: float = Field(1.0, gt=0, le=20)

    def provenance(self) -> dict:
        """The parameters as JSON (what a store records)."""
        return self.model_dump(mode="json")


DEFAULT_PHYSICS = MockPhysics()


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_overrides(physics: MockPhysics, overrides: list[str] | tuple[str, ...] | None) -> MockPhysics:
    """A copy of ``physics`` with ``NAME=VALUE`` overrides; dotted names reach nested parameters.

    Values are parsed as JSON where possible (numbers, booleans, lists), else taken as strings. An unknown name
    or an invalid value raises :class:`SurveyMassError` naming the parameter.

    Examples
    --------
    >>> p = apply_overrides(MockPhysics(), ["sky_noise_scale=1.2589", "richness_relation.slope=1.3"])
    >>> p.sky_noise_scale, p.richness_relation.slope
    (1.2589, 1.3)
    """
    data = physics.model_dump()
    for item in overrides or ():
        name, sep, raw = str(item).partition("=")
        name = name.strip()
        if not sep or not name:
            raise SurveyMassError(f"mock physics override {item!r}: expected NAME=VALUE")
        node: Any = data
        model: Any = type(physics)
        parts = name.split(".")
        for k, part in enumerate(parts):
            fields = model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else {}
            if part not in fields or not isinstance(node, dict):
                raise SurveyMassError(
                    f"mock physics: unknown parameter {name!r}"
                    + (f" (known at this level: {', '.join(fields)})" if fields else "")
                )
            if k == len(parts) - 1:
                node[part] = _parse_value(raw.strip())
            else:
                node = node[part]
                model = fields[part].annotation
        try:
            physics = type(physics).model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            raise SurveyMassError(
                f"mock physics: invalid value {raw.strip()!r} for {name!r}: {err['msg']}"
            ) from None
        data = physics.model_dump()
    return physics


# --- tables -----------------------------------------------------------------------------------------------------

LITTLE_H = astro.LITTLE_H

LOGM_GRID = np.round(np.arange(12.9, 15.6001, 0.01), 4)
Z_GRID = np.round(np.arange(0.02, 0.70001, 0.01), 4)


def astropy_cosmology(cosmology: Cosmology = DEFAULT_PHYSICS.cosmology):
    """The astropy flat LambdaCDM used for distances (:func:`survey_mass.astro.flat_lambda_cdm`)."""
    return astro.flat_lambda_cdm(cosmology.H0, cosmology.Om0, cosmology.Ob0)


def _colossus(cosmology: Cosmology):
    """Make ``cosmology`` colossus's current one (colossus keeps one global cosmology)."""
    from colossus.cosmology import cosmology as ccosmo

    params = {"flat": True, **cosmology.model_dump()}
    name = "survey_mass" if cosmology == DEFAULT_PHYSICS.cosmology else f"survey_mass_{abs(hash(cosmology))}"
    return ccosmo.setCosmology(name, params=params, persistence="")


@dataclass(frozen=True)
class _Grids:
    dn_dlog10m: np.ndarray  # (nz, nm) comoving number density per dex, Mpc^-3
    dv_dz_deg2: np.ndarray  # (nz,) comoving volume per unit z per deg^2, Mpc^3
    dlog_200m: np.ndarray  # (nz, nm) log10(M200m / M500c)
    ez: np.ndarray  # (nz,)
    dl_cm: np.ndarray  # (nz,)


def grids(cosmology: Cosmology = DEFAULT_PHYSICS.cosmology) -> _Grids:
    """Tabulate the mass function and the distance measures once per process and cosmology (about 3 s)."""
    return _grids(cosmology)


@lru_cache(maxsize=4)
def _grids(cosmology: Cosmology) -> _Grids:
    import warnings

    import astropy.units as u
    from colossus.halo import mass_adv
    from colossus.lss import mass_function

    _colossus(cosmology)
    cosmo = astropy_cosmology(cosmology)
    little_h = cosmology.h
    m_h = 10**LOGM_GRID * little_h
    dn = np.empty((Z_GRID.size, LOGM_GRID.size))
    for i, z in enumerate(Z_GRID):
        dndlnm = mass_function.massFunction(m_h, z, mdef="500c", model="tinker08", q_out="dndlnM")
        dn[i] = dndlnm * little_h**3 * np.log(10.0)  # (h/Mpc)^3 -> Mpc^-3, per ln -> per dex
    # M500c -> M200m ratio on a coarse grid, interpolated (it is smooth).
    zc = Z_GRID[::4]
    mc = m_h[::10]
    ratio = np.empty((zc.size, mc.size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, z in enumerate(zc):
            m200m, _, _ = mass_adv.changeMassDefinitionCModel(mc, z, "500c", "200m", c_model="diemer19")
            ratio[i] = np.log10(m200m / mc)
    from scipy.interpolate import RegularGridInterpolator

    interp = RegularGridInterpolator((zc, np.log10(mc)), ratio, bounds_error=False, fill_value=None)
    zz, mm = np.meshgrid(Z_GRID, np.log10(m_h), indexing="ij")
    dlog = interp(np.stack([zz.ravel(), mm.ravel()], axis=1)).reshape(zz.shape)
    dv = cosmo.differential_comoving_volume(Z_GRID).to(u.Mpc**3 / u.deg**2).value
    return _Grids(
        dn_dlog10m=dn,
        dv_dz_deg2=dv,
        dlog_200m=dlog,
        ez=astro.efunc(Z_GRID, cosmo),
        dl_cm=astro.luminosity_distance_cm(Z_GRID, cosmo),
    )


def _zi(z: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((np.asarray(z) - Z_GRID[0]) / 0.01).astype(int), 0, Z_GRID.size - 1)


def interp_z(table: np.ndarray, z) -> np.ndarray:
    """Linear interpolation of a per-redshift table (clamped to Z_GRID)."""
    return np.interp(np.asarray(z, dtype=float), Z_GRID, table)


@lru_cache(maxsize=4)
def _distances(cosmology: Cosmology) -> tuple[np.ndarray, np.ndarray]:
    """(kpc per arcsec, distance modulus) on Z_GRID from astropy alone (fast; no mass function needed)."""
    cosmo = astropy_cosmology(cosmology)
    return astro.kpc_per_arcsec(Z_GRID, cosmo), astro.distance_modulus(Z_GRID, cosmo)


def kpc_per_arcsec(z, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    """Proper kpc per arcsec, tabulated on Z_GRID (the mock's z range) and interpolated."""
    return interp_z(_distances(ph.cosmology)[0], z)


def distance_modulus(z, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    """Distance modulus, tabulated on Z_GRID (the mock's z range) and interpolated."""
    return interp_z(_distances(ph.cosmology)[1], z)


# --- richness -------------------------------------------------------------------------------------------


def log10_m200m_h(log10_m500, z, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    """log10 M200m [h^-1 Msun] of an M500c [Msun] halo at z (Diemer & Joyce 2019 concentrations, tabulated)."""
    g = grids(ph.cosmology)
    zi = _zi(z)
    mi = np.clip(np.rint((np.asarray(log10_m500) - LOGM_GRID[0]) / 0.01).astype(int), 0, LOGM_GRID.size - 1)
    return np.asarray(log10_m500) + g.dlog_200m[zi, mi] + np.log10(ph.cosmology.h)


def mean_ln_lambda(log10_m500: np.ndarray, z: np.ndarray, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    """<ln lambda | M500c, z> (:class:`RichnessRelation`; masses converted to M200m in h^-1 Msun)."""
    rr = ph.richness_relation
    m200m_h = log10_m200m_h(log10_m500, z, ph)
    return np.log(40.0) + (m200m_h - rr.pivot_log10_M200m_hinv) / rr.slope * np.log(10.0)


def sigma_ln_lambda(mean_ln: np.ndarray, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    return _sigma_ln_lambda(mean_ln, ph.richness_relation)


def _sigma_ln_lambda(mean_ln: np.ndarray, rr: RichnessRelation) -> np.ndarray:
    s_int = rr.sigma_ln_lambda_intrinsic
    return np.sqrt(s_int**2 + (np.exp(-np.asarray(mean_ln)) if rr.poisson else 0.0))


def r_lambda_arcsec(richness, z, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    """redMaPPer radius R_lambda = 1.0 (lambda/100)^0.2 h^-1 Mpc, in arcsec at redshift z."""
    return astro.r_lambda_kpc(richness, ph.cosmology.h) / kpc_per_arcsec(z, ph)


# --- BCG ------------------------------------------------------------------------------------------------

#: (a0, a1, a2, b, rms) of :func:`bcg_reference_mag` (defined in :mod:`survey_mass.astro`).
BCG_FIT = astro.BCG_FIT


def bcg_reference_mag(z, richness, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    """:func:`survey_mass.astro.bcg_reference_mag` with the mock's tabulated distance modulus."""
    return astro.bcg_reference_mag(z, richness, distmod=distance_modulus(np.asarray(z, dtype=float), ph))


def fit_bcg_reference(z: np.ndarray, richness: np.ndarray, imag: np.ndarray) -> tuple[float, ...]:
    """Least-squares fit of the real BCG i magnitudes, returning ``BCG_FIT``-style coefficients."""
    ok = np.isfinite(imag) & (imag > 10) & (imag < 25)
    z, lam, y = z[ok], richness[ok], imag[ok] - distance_modulus(z[ok])
    a = np.stack([np.ones_like(z), z - 0.3, (z - 0.3) ** 2, np.log(lam / 30.0)], axis=1)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    rms = float(np.std(y - a @ coef))
    return (*[round(float(c), 3) for c in coef], round(rms, 3))


# --- mass posterior ---------------------------------------------------------------------------------------


def _log_posterior_raw(
    richness: np.ndarray, z: np.ndarray, g: _Grids, rr: RichnessRelation, little_h: float
) -> np.ndarray:
    zi = _zi(z)
    logm = np.broadcast_to(LOGM_GRID[None, :], (z.size, LOGM_GRID.size))
    mi = np.broadcast_to(np.arange(LOGM_GRID.size)[None, :], logm.shape)
    m200m_h = logm + g.dlog_200m[zi[:, None], mi] + np.log10(little_h)
    mu = np.log(40.0) + (m200m_h - rr.pivot_log10_M200m_hinv) / rr.slope * np.log(10.0)
    sig = _sigma_ln_lambda(mu, rr)
    lnl = np.log(richness)[:, None]
    return np.log(g.dn_dlog10m[zi] + 1e-300) - 0.5 * ((lnl - mu) / sig) ** 2 - np.log(sig)


def sample_clusters_from_mass_function(
    n: int, rng: np.random.Generator, ph: MockPhysics = DEFAULT_PHYSICS
) -> tuple[np.ndarray, np.ndarray]:
    """Draw (log10 M500c, z) from n(M, z) dV/dz, over the ranges in ``ph``, weighted by P(lambda >= floor)."""
    w, zs, ms = mf_weights(ph)
    flat = np.cumsum(w.ravel())
    flat /= flat[-1]
    k = np.searchsorted(flat, rng.random(n))
    iz, im = np.unravel_index(k, w.shape)
    return ms[im] + (rng.random(n) - 0.5) * 0.01, zs[iz] + (rng.random(n) - 0.5) * 0.01


def mf_weights(ph: MockPhysics = DEFAULT_PHYSICS):
    """(weights (nz, nm), z, log10 M) of the mass-function draws over the no-candidate ranges."""
    return _mf_weights_cached(ph)


@lru_cache(maxsize=8)
def _mf_weights_cached(ph: MockPhysics):
    from scipy.stats import norm

    g = grids(ph.cosmology)
    zlo, zhi = ph.redshift_range_no_candidates
    mlo, mhi = ph.mass_range_no_candidates_log10
    zsel = (Z_GRID >= zlo) & (Z_GRID <= zhi)
    msel = (LOGM_GRID >= mlo) & (LOGM_GRID <= mhi)
    zs, ms = Z_GRID[zsel], LOGM_GRID[msel]
    zz, mm = np.meshgrid(zs, ms, indexing="ij")
    mu = mean_ln_lambda(mm, zz, ph)
    p_sel = norm.sf((np.log(ph.richness_floor) - mu) / sigma_ln_lambda(mu, ph))
    w = g.dn_dlog10m[np.ix_(zsel, msel)] * g.dv_dz_deg2[zsel][:, None] * 0.01 * 0.01 * p_sel
    return w, zs, ms


_mf_weights = mf_weights  # the old private name


def expected_density_per_deg2(ph: MockPhysics = DEFAULT_PHYSICS) -> float:
    """Clusters with lambda >= floor per deg^2 that the mass function predicts over the no-candidate ranges."""
    return float(mf_weights(ph)[0].sum())


# --- members --------------------------------------------------------------------------------------------


def concentration_200c(log10_m500, z, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    """Duffy et al. 2008 (full sample, NFW): c200c = 5.71 (M200c / 2e12 h^-1 Msun)^-0.084 (1+z)^-0.47."""
    c = ph.concentration
    m200c_h = 10 ** (np.asarray(log10_m500) + c.m200c_over_m500c_dex) * ph.cosmology.h  # M200c/M500c ~ 1.35
    return c.a * (m200c_h / c.pivot_hinv) ** c.b * (1 + np.asarray(z)) ** c.c


def r200c_kpc(log10_m500, z, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    """R200c in proper kpc, from M200c ~ 1.35 M500c and rho_crit(z)."""
    import astropy.units as u

    rho = astropy_cosmology(ph.cosmology).critical_density(np.asarray(z)).to(u.Msun / u.kpc**3).value
    m200 = 10 ** (np.asarray(log10_m500) + ph.concentration.m200c_over_m500c_dex)
    return (3 * m200 / (4 * np.pi * 200 * rho)) ** (1.0 / 3.0)


def sample_projected_nfw(n: int, rs: float, rmax: float, rng: np.random.Generator) -> np.ndarray:
    """Radii of n points from a projected NFW profile with scale radius rs, truncated at rmax (same units)."""
    x = np.geomspace(1e-3, max(rmax / rs, 2e-3), 400)
    # projected NFW surface density (Bartelmann 1996), integrated as 2 pi x Sigma(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(
            x < 1,
            1 - 2 / np.sqrt(1 - x**2) * np.arctanh(np.sqrt(np.clip((1 - x) / (1 + x), 0, None))),
            1 - 2 / np.sqrt(x**2 - 1) * np.arctan(np.sqrt(np.clip((x - 1) / (1 + x), 0, None))),
        )
        sigma = np.where(np.abs(x - 1) < 1e-6, 1 / 3.0, f / (x**2 - 1))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (sigma[1:] * x[1:] + sigma[:-1] * x[:-1]) * np.diff(x))])
    cdf /= cdf[-1]
    return np.interp(rng.random(n), cdf, x) * rs


def schechter_draw(n: int, mstar: float, lmin_frac: float, lmax_frac: float, rng, alpha: float = -1.0):
    """Magnitudes of n galaxies from a Schechter function (alpha) between lmin_frac and lmax_frac of L*."""
    lum = np.geomspace(lmin_frac, lmax_frac, 512)
    pdf = lum ** (alpha + 1) * np.exp(-lum)  # per d ln L
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(np.log(lum)))])
    cdf /= cdf[-1]
    lnl = np.interp(rng.random(n), cdf, np.log(lum))
    return mstar - 2.5 * lnl / np.log(10)


def schechter_fraction(l_lo: float, l_hi: float, alpha: float = -1.0) -> float:
    lum = np.geomspace(l_lo, l_hi, 512)
    pdf = lum ** (alpha + 1) * np.exp(-lum)
    return float(np.trapezoid(pdf, np.log(lum)))


def mstar_i(z, ph: MockPhysics = DEFAULT_PHYSICS) -> np.ndarray:
    """:func:`survey_mass.astro.mstar_i` with the mock's tabulated distance modulus."""
    return astro.mstar_i(z, distmod=distance_modulus(np.asarray(z, dtype=float), ph))


if __name__ == "__main__":  # refit BCG_FIT from the shipped redMaPPer catalogue
    from ..candidates import load_redmapper

    cat = load_redmapper()
    print(fit_bcg_reference(cat["z"].to_numpy(), cat["richness"].to_numpy(), cat["bcg_mag_i"].to_numpy()))
