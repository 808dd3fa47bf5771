"""The mock survey: candidates + physics + rendering -> a cutout store, one HEALPix partition at a time.

Each partition is generated from (seed, order, pixel) alone, so any partition can be rebuilt by itself and
partitions build in parallel on Dask workers, each writing its own partition atomically. A rerun skips the
partitions already in the store.

Cutouts are 64 x 64 pixels of 6.336" (SDSS's 0.396" pixels binned 16 x 16): 6.8' across, which holds a
cluster out to 0.4-1.2 Mpc from its centre between z = 0.1 and 0.5. (The first models used 3.168" pixels,
3.4' across; the wider field holds more of each cluster's members and is what lets the CNN beat richness.)
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from .. import astro
from ..photometry import BANDS, mag_to_nmgy
from . import halos, physics, populations, render
from .physics import DEFAULT_PHYSICS, MockPhysics, apply_overrides

SURVEY_NAME = "SDSS DR12 (mock)"


class MockConfig(BaseModel):
    """Parameters of a mock survey; all of them go into the store's provenance.

    ``physics`` is every number of the mock's physics (:class:`~survey_mass.mock.physics.MockPhysics`); it
    travels with the config to every worker. ``overrides`` records the ``NAME=VALUE`` strings that made it (see
    :meth:`with_overrides`).

    Examples
    --------
    >>> cfg = MockConfig.with_overrides(["sky_noise_scale=2"], seed=3)
    >>> cfg.physics.sky_noise_scale, cfg.provenance()["overrides"]
    (2.0, ['sky_noise_scale=2'])
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 2022
    cutout_size: int = 64
    pixel_scale_arcsec: float = 6.336
    order: int = 2
    #: clusters per deg^2 when drawing from the mass function; None = what the mass function predicts
    density: float | None = None
    candidates: str = "redmapper_dr8_v5.10"
    #: one X-ray flux limit (erg/s/cm^2) everywhere for the labelled subset; None = the MCXC-like mix of
    #: ``physics.labels.surveys`` (3.3% of the real candidates labelled)
    label_flux_limit: float | None = None
    physics: MockPhysics = DEFAULT_PHYSICS
    #: the ``NAME=VALUE`` overrides ``physics`` was made with, as given
    overrides: tuple[str, ...] = ()

    @classmethod
    def with_overrides(cls, overrides: list[str] | tuple[str, ...] | None, **fields) -> MockConfig:
        """A config whose physics is ``fields["physics"]`` (default physics) with ``NAME=VALUE`` overrides."""
        base = fields.pop("physics", DEFAULT_PHYSICS)
        base = base if isinstance(base, MockPhysics) else MockPhysics.model_validate(base)
        overrides = tuple(overrides or ())
        return cls(physics=apply_overrides(base, overrides), overrides=overrides, **fields)

    def provenance(self) -> dict:
        """The config as JSON, physics included (what the store records and compares on resume)."""
        return self.model_dump(mode="json")


# --- clusters of one partition -------------------------------------------------------------------------------


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(
        [int(k) & 0xFFFFFFFF for k in key] + [int(k) >> 32 & 0xFFFFFFFF for k in key]
    )


def _halo_columns(out: pd.DataFrame, h, z: np.ndarray, cfg: MockConfig, rng) -> pd.DataFrame:
    """Write the drawn haloes, their X-ray survey's flux limit and the labels into the cluster table."""
    ph = cfg.physics
    out["richness"] = h.richness
    out["log10_m500_true"] = h.log10_m500
    out["log10_m500_oracle"] = h.oracle
    out["eps_lambda"] = h.eps_lambda
    out["bcg_i_model"] = h.bcg_mag_i
    limit, completeness = halos.label_coverage(out["ra"].to_numpy(float), out["dec"].to_numpy(float), ph)
    if cfg.label_flux_limit is not None:
        limit = np.full(len(out), float(cfg.label_flux_limit))
    out["label_flux_limit"] = limit
    complete = None if np.all(completeness == 1) else completeness  # the same draws as before when complete
    _, label = halos.draw_labels(h.log10_m500, z, h.eps_lx, limit, rng, ph, complete)
    if "log10_m500_label" in out and out["log10_m500_label"].notna().any():
        out["log10_m500_label"] = out["log10_m500_label"].astype(float)
    else:
        out["log10_m500_label"] = label
    return out


def clusters_from_candidates(cand: pd.DataFrame, cfg: MockConfig, pixel: int) -> pd.DataFrame:
    """Give each real candidate a true mass drawn from p(M | lambda, BCG, z), its deviations and, for a few, a
    label (:mod:`survey_mass.mock.halos`). Candidates without a richness get a mass from n(M | z) and a drawn
    lambda."""
    rng = _rng(cfg.seed, cfg.order, pixel, 11)
    ph = cfg.physics
    out = cand.reset_index(drop=True).copy()
    z = out["z"].to_numpy(float)
    n = len(out)
    lam = out["richness"].to_numpy(float) if "richness" in out else np.full(n, np.nan)
    real_i = out["bcg_mag_i"].to_numpy(float) if "bcg_mag_i" in out else np.full(n, np.nan)
    real_i = np.where((real_i > 10) & (real_i < 25), real_i, np.nan)
    known = np.isfinite(lam)
    h = halos.haloes_from_candidates(np.where(known, lam, 30.0), z, real_i, rng, ph)
    if (~known).any():
        hz = halos.haloes_given_mass(_mass_given_z(z[~known], rng, ph), z[~known], rng, ph)
        for f in ("log10_m500", "richness", "eps_lambda", "eps_bcg", "eps_lx", "bcg_mag_i", "oracle"):
            getattr(h, f)[~known] = getattr(hz, f)
    return _halo_columns(out, h, z, cfg, rng)


def _mass_given_z(z: np.ndarray, rng, ph: MockPhysics) -> np.ndarray:
    """Masses for candidates with a redshift only: from n(M, z) weighted by P(lambda >= floor | M)."""
    w, zs, ms = physics.mf_weights(ph)
    logm = np.empty(z.size)
    for i, zi in enumerate(z):
        row = w[np.clip(np.searchsorted(zs, zi), 0, zs.size - 1)]
        cdf = np.cumsum(row) / row.sum()
        logm[i] = ms[np.searchsorted(cdf, rng.random())]
    return logm


def clusters_from_mass_function(
    cells_o10: np.ndarray, area_deg2: float, cfg: MockConfig, pixel: int
) -> pd.DataFrame:
    """Clusters drawn from the halo mass function inside the part of a partition covered by the footprint."""
    import healpy as hp

    rng = _rng(cfg.seed, cfg.order, pixel, 13)
    ph = cfg.physics
    density = cfg.density if cfg.density is not None else physics.expected_density_per_deg2(ph)
    n = rng.poisson(density * area_deg2)
    h, z = halos.haloes_from_mass_function(n, rng, ph)
    cells = rng.choice(cells_o10, size=n) if n else np.zeros(0, dtype=np.int64)
    sub = cells.astype(np.int64) * 4**8 + rng.integers(0, 4**8, n)
    ra, dec = hp.pix2ang(2**18, sub, nest=True, lonlat=True)
    ids = pixel * 1_000_000 + np.arange(n)
    df = pd.DataFrame({"id": ids, "name": [f"MOCK{i}" for i in ids], "ra": ra, "dec": dec, "z": z})
    return _halo_columns(df, h, z, cfg, rng)


# --- pixels ---------------------------------------------------------------------------------------------------


def field_conditions(cfg: MockConfig, key: int) -> halos.Conditions:
    """The observing conditions of the field of cutout ``key`` (its own random stream, so switching the
    variation off leaves every other draw of the scene alone)."""
    return halos.draw_conditions(_rng(cfg.seed, int(key), 23), cfg.physics)


#: the parts of a cluster's scene that :func:`render_cluster` can leave out
SCENE_COMPONENTS = frozenset({"central", "members"})


def _components(without: frozenset[str] | tuple[str, ...] | str) -> frozenset[str]:
    """``without`` as a set of :data:`SCENE_COMPONENTS` (a bare string is one component)."""
    given = (without,) if isinstance(without, str) else tuple(without)
    for w in given:
        if w not in SCENE_COMPONENTS:
            raise ValueError(
                f"render_cluster: unknown scene component {w!r} in without; use {sorted(SCENE_COMPONENTS)}"
            )
    return frozenset(given)


def render_cluster(
    c: dict, cfg: MockConfig, gal_b_deg: float, *, without: frozenset[str] | tuple[str, ...] = ()
) -> tuple[np.ndarray, halos.Conditions]:
    """Noisy (5, H, W) cutout of one cluster, from its row (z, richness, log10_m500_true, BCG mags...), and the
    field's observing conditions.

    ``without`` leaves components of the scene out ("central": the BCG; "members": the member galaxies), for
    counterfactual renders of the same scene (:func:`scene_variants`). Every random draw is still made, in the
    same order, and the omitted sources are only dropped from the list drawn, so the other sources and the noise
    draws are those of the full scene; with ``without`` empty the cutout is bit-identical to the full render.
    The noise differs only where light was removed: the source photon noise follows the light that is there
    (its sigma is smaller where a removed source was bright), as it would in a real image of that scene.

    Raises
    ------
    ValueError
        For a component of ``without`` other than "central" and "members".
    """
    omit = _components(without)
    lists, rng = _scene_sources(c, cfg, gal_b_deg, omit)
    cond = field_conditions(cfg, int(c["id"]))
    return _draw(cfg, rng, lists, cond), cond


@dataclass(frozen=True)
class Scene:
    """The sources of one cluster's scene, as :func:`render_cluster` draws them, and its field's conditions.

    Positions are pixel coordinates of the cluster's cutout (``cfg.cutout_size`` pixels of
    ``cfg.pixel_scale_arcsec``, 0 at the centre of the first pixel, the cluster at the cutout's centre); ``mags``
    is (n, 5) ugriz, ``re_arcsec`` the half-light radii (0 for stars), ``sersic_n`` 0 (star), 1 or 4. ``field``
    marks the field galaxies and stars (drawn over the cutout and a 4-pixel margin); the others are the
    cluster's own (its central galaxy and members).
    """

    x: np.ndarray
    y: np.ndarray
    mags: np.ndarray
    re_arcsec: np.ndarray
    sersic_n: np.ndarray
    field: np.ndarray
    conditions: halos.Conditions


def cluster_scene(c: dict, cfg: MockConfig, gal_b_deg: float) -> Scene:
    """The full scene of :func:`render_cluster` (the same draws, so the same sources) before it is drawn: what
    a renderer at another pixel scale (:mod:`survey_mass.mock.frames`) draws to show the same sky."""
    (xs, ys, mags, res, ns), _ = _scene_sources(c, cfg, gal_b_deg, frozenset())
    # _field_sources appended the field galaxies, then the stars, last
    n_field = len(xs[-1]) + len(xs[-2])
    x = np.concatenate([np.asarray(a, float) for a in xs])
    field = np.zeros(x.size, bool)
    field[x.size - n_field :] = True
    return Scene(
        x=x,
        y=np.concatenate([np.asarray(a, float) for a in ys]),
        mags=np.concatenate([np.asarray(a, float).reshape(-1, 5) for a in mags]),
        re_arcsec=np.concatenate([np.asarray(a, float) for a in res]),
        sersic_n=np.concatenate([np.asarray(a, int) for a in ns]),
        field=field,
        conditions=field_conditions(cfg, int(c["id"])),
    )


def cluster_noise(c: dict, cfg: MockConfig, gal_b_deg: float) -> np.ndarray:
    """The (5, H, W) noise (sky and source photons) of :func:`render_cluster`'s cutout: the same draws, so that
    the mock frames (:mod:`survey_mass.mock.frames`) can carry the direct store's own noise realisation."""
    lists, rng = _scene_sources(c, cfg, gal_b_deg, frozenset())
    cond = field_conditions(cfg, int(c["id"]))
    clean = _render_clean(cfg, lists, cond)
    noisy = render.add_noise(
        clean.copy(), cfg.pixel_scale_arcsec, rng, cfg.physics, sky_factor=cond.sky_factor
    )
    return noisy - clean


def _scene_sources(c: dict, cfg: MockConfig, gal_b_deg: float, omit: frozenset[str]) -> tuple[tuple, object]:
    """The source lists (xs, ys, mags, res, ns) of a cluster's scene, and its random stream after the draws (the
    noise draws come next)."""
    rng = _rng(cfg.seed, int(c["id"]), 17)
    ph = cfg.physics
    size, pix = cfg.cutout_size, cfg.pixel_scale_arcsec
    centre = (size - 1) / 2.0
    z, lam, logm = float(c["z"]), float(c["richness"]), float(c["log10_m500_true"])
    kpa = float(physics.kpc_per_arcsec(z, ph))
    mstar = float(physics.mstar_i(z, ph))
    xs, ys, mags, res, ns = [], [], [], [], []

    # BCG: real ugriz when the candidate has them, else red-sequence colours at the modelled i magnitude
    i_bcg = float(c["bcg_i_model"])
    col = populations.red_sequence_colours(z, 1, rng, ph)[0]
    bcg = i_bcg + col - col[3]
    real = np.array([c.get(f"bcg_mag_{b}", np.nan) for b in BANDS], dtype=float)
    good = np.isfinite(real) & (real > 10) & (real < 30)
    if good[3]:
        bcg = np.where(good, real, bcg)
    l_bcg = 10 ** (-0.4 * (i_bcg - mstar))
    re_bcg = ph.bcg.re_kpc * (l_bcg / astro.BCG_LUMINOSITY_LSTAR) ** ph.bcg.re_slope
    if "central" not in omit:
        xs.append([centre]), ys.append([centre]), mags.append(bcg[None, :])
        res.append([re_bcg / kpa]), ns.append([4])

    # members: lambda above 0.2 L* inside R_lambda, and fainter ones that follow the halo's mean richness
    mem = ph.members
    r_lam = float(physics.r_lambda_arcsec(lam, z, ph))
    rs = float(physics.r200c_kpc(logm, z, ph) / physics.concentration_200c(logm, z, ph)) / kpa
    lam_m = float(np.exp(physics.mean_ln_lambda(np.array([logm]), np.array([z]), ph)[0]))
    n_bright = rng.poisson(lam)
    ratio = physics.schechter_fraction(*mem.faint_lstar, mem.schechter_alpha) / physics.schechter_fraction(
        *mem.bright_lstar, mem.schechter_alpha
    )
    # faint satellites are a Poisson draw from the halo's occupation (Kravtsov et al. 2004), which shares the
    # halo's richness deviation eps_lambda at fixed mass (HaloScatter.faint_members_share) but not the
    # catalogue lambda's Poisson and measurement noise
    eps = float(c.get("eps_lambda", 0.0)) if ph.halo_scatter.faint_members_share else 0.0
    n_faint = rng.poisson(lam_m * ratio * np.exp(ph.richness_relation.sigma_ln_lambda_intrinsic * eps))
    nm = n_bright + n_faint
    if nm:
        r = physics.sample_projected_nfw(nm, rs, r_lam, rng)
        th = rng.uniform(0, 2 * np.pi, nm)
        x = centre + r * np.cos(th) / pix
        y = centre + r * np.sin(th) / pix
        imag = np.concatenate(
            [
                physics.schechter_draw(n_bright, mstar, *mem.bright_lstar, rng, mem.schechter_alpha),
                physics.schechter_draw(n_faint, mstar, *mem.faint_lstar, rng, mem.schechter_alpha),
            ]
        )
        vis = (x > -4) & (x < size + 3) & (y > -4) & (y < size + 3)
        cols = populations.red_sequence_colours(z, int(vis.sum()), rng, ph)
        m = imag[vis, None] + cols - cols[:, [3]]
        lum = 10 ** (-0.4 * (imag[vis] - mstar))
        if "members" not in omit:  # drawn all the same, so the draws after them stay the full scene's
            xs.append(x[vis]), ys.append(y[vis]), mags.append(m)
            res.append(mem.re_kpc_at_lstar * np.sqrt(lum) / kpa), ns.append(np.full(int(vis.sum()), 4))

    _field_sources(cfg, rng, gal_b_deg, (xs, ys, mags, res, ns))
    return (xs, ys, mags, res, ns), rng


def _field_sources(cfg: MockConfig, rng, gal_b_deg: float, lists) -> None:
    """Append field galaxies and stars over the cutout plus a 4-pixel margin to (xs, ys, mags, res, ns)."""
    xs, ys, mags, res, ns = lists
    ph, size = cfg.physics, cfg.cutout_size
    side_deg = (size + 8) * cfg.pixel_scale_arcsec / 3600.0
    nf = rng.poisson(populations.field_count_per_deg2(ph) * side_deg**2)
    fm, fre, fn = populations.field_galaxies(nf, rng, ph)
    xs.append(rng.uniform(-4, size + 3, nf)), ys.append(rng.uniform(-4, size + 3, nf))
    mags.append(fm), res.append(fre), ns.append(fn)
    ns_star = rng.poisson(populations.star_count_per_deg2(gal_b_deg, ph) * side_deg**2)
    xs.append(rng.uniform(-4, size + 3, ns_star)), ys.append(rng.uniform(-4, size + 3, ns_star))
    (
        mags.append(populations.stars(ns_star, rng, ph)),
        res.append(np.zeros(ns_star)),
        ns.append(np.zeros(ns_star, int)),
    )


def _draw(cfg: MockConfig, rng, lists, cond: halos.Conditions) -> np.ndarray:
    """Render the listed sources through the field's PSF and add its sky and photon noise."""
    img = _render_clean(cfg, lists, cond)
    return render.add_noise(img, cfg.pixel_scale_arcsec, rng, cfg.physics, sky_factor=cond.sky_factor)


def _render_clean(cfg: MockConfig, lists, cond: halos.Conditions) -> np.ndarray:
    """The listed sources through the field's PSF, without noise."""
    xs, ys, mags, res, ns = lists
    ph = cfg.physics
    x = np.concatenate([np.asarray(a, float) for a in xs] or [np.zeros(0)])
    y = np.concatenate([np.asarray(a, float) for a in ys] or [np.zeros(0)])
    m = np.concatenate([np.asarray(a, float).reshape(-1, 5) for a in mags] or [np.zeros((0, 5))])
    re_ = np.concatenate([np.asarray(a, float) for a in res] or [np.zeros(0)])
    n_ = np.concatenate([np.asarray(a, int) for a in ns] or [np.zeros(0, int)])
    flux = mag_to_nmgy(np.clip(m, 5, 35))
    return render.render_bands(
        x, y, flux, re_, n_, BANDS, cfg.cutout_size, cfg.pixel_scale_arcsec, ph, psf_fwhm=cond.psf_fwhm
    )


def render_blank(cfg: MockConfig, key: int, gal_b_deg: float = 60.0, *, field: bool = True) -> np.ndarray:
    """A (5, H, W) cutout with no cluster: sky noise at the survey's depth and, with ``field``, the field
    galaxies and stars any line of sight holds. What a false candidate's cutout shows."""
    rng = _rng(cfg.seed, int(key), 19)
    lists = ([], [], [], [], [])
    if field:
        _field_sources(cfg, rng, gal_b_deg, lists)
    return _draw(cfg, rng, lists, field_conditions(cfg, key))


def _galactic_latitude(ra, dec) -> np.ndarray:
    from astropy.coordinates import SkyCoord

    return SkyCoord(ra=np.asarray(ra), dec=np.asarray(dec), unit="deg").galactic.b.deg


def make_partition(cfg: MockConfig, pixel: int, clusters: pd.DataFrame) -> tuple[np.ndarray, dict]:
    """Images and columns of one partition from its cluster table. Pure: same inputs, same arrays."""
    n = len(clusters)
    images = np.empty((n, 5, cfg.cutout_size, cfg.cutout_size), dtype=np.float32)
    b = _galactic_latitude(clusters["ra"], clusters["dec"]) if n else np.zeros(0)
    rows = clusters.to_dict("records")
    psf = np.empty((n, 5), np.float32)
    sky = np.empty((n, 5), np.float32)
    nominal = np.array([render.sky_sigma_nmgy(bd, cfg.pixel_scale_arcsec, cfg.physics) for bd in BANDS])
    for k, row in enumerate(rows):
        images[k], cond = render_cluster(row, cfg, float(b[k]))
        psf[k] = cond.psf_fwhm
        sky[k] = nominal / cfg.physics.sky_noise_scale * cond.sky_factor
    columns = {
        "id": clusters["id"].to_numpy(np.int64),
        "name": clusters["name"].astype(str).to_numpy(),
        "ra": clusters["ra"].to_numpy(np.float64),
        "dec": clusters["dec"].to_numpy(np.float64),
        "z": clusters["z"].to_numpy(np.float32),
        "quality": np.zeros(n, np.int32),
        "richness": clusters["richness"].to_numpy(np.float32),
        # the candidate catalogue's own central galaxy, as a user would have it (NaN where it gives none)
        "bcg_mag_i": (
            clusters["bcg_mag_i"].to_numpy(np.float32)
            if "bcg_mag_i" in clusters
            else np.full(n, np.nan, np.float32)
        ),
        "log10_m500_label": clusters["log10_m500_label"].to_numpy(np.float32),
        "log10_m500_true": clusters["log10_m500_true"].to_numpy(np.float32),
        "log10_m500_oracle": clusters["log10_m500_oracle"].to_numpy(np.float32),
        "label_flux_limit": clusters["label_flux_limit"].to_numpy(np.float64),
        **{f"obs_sky_sigma_{bd}": sky[:, j] for j, bd in enumerate(BANDS)},
        **{f"obs_psf_fwhm_{bd}": psf[:, j] for j, bd in enumerate(BANDS)},
    }
    return images, columns


# --- the whole survey -------------------------------------------------------------------------------------------


@dataclass
class PartitionJob:
    pixel: int
    candidates: pd.DataFrame | None = None
    cells_o10: np.ndarray | None = None
    area_deg2: float = 0.0


def partition_clusters(cfg: MockConfig, job: PartitionJob) -> pd.DataFrame:
    if job.candidates is not None:
        return clusters_from_candidates(job.candidates, cfg, job.pixel)
    return clusters_from_mass_function(job.cells_o10, job.area_deg2, cfg, job.pixel)


def build_partition(cfg: MockConfig, job: PartitionJob) -> tuple[np.ndarray, dict]:
    """Rebuild one partition alone (what every worker runs)."""
    return make_partition(cfg, job.pixel, partition_clusters(cfg, job))


def _build_and_write(cfg: MockConfig, job: PartitionJob, out: str) -> tuple[int, int]:
    from ..store import write_partition

    images, columns = build_partition(cfg, job)
    write_partition(out, job.pixel, images, columns)
    return job.pixel, images.shape[0]


def plan(footprint, cfg: MockConfig, candidates: pd.DataFrame | None) -> list[PartitionJob]:
    """Partition jobs: the candidates inside the footprint, grouped by partition; or mass-function draws."""
    from mocpy import MOC

    from ..footprint import partition_of

    if candidates is not None and cfg.density is None:
        inside = candidates[footprint.contains(candidates["ra"].to_numpy(), candidates["dec"].to_numpy())]
        if not len(inside):
            from ..errors import CatalogInputError

            raise CatalogInputError(
                f"mock: none of the {len(candidates)} candidates ({cfg.candidates}) lies inside footprint "
                f"{footprint.name!r}; give another footprint, or --no-candidates to draw clusters from the mass function"
            )
        part = partition_of(inside["ra"].to_numpy(), inside["dec"].to_numpy(), cfg.order)
        return [PartitionJob(int(p), inside[part == p]) for p in np.unique(part)]
    jobs = []
    for p in footprint.partitions:
        cell = MOC.from_healpix_cells(np.array([p], np.uint64), np.array([cfg.order], np.uint8), cfg.order)
        sub = footprint.moc.intersection(cell)
        area = float(sub.sky_fraction * 4 * np.pi * (180 / np.pi) ** 2)
        if area <= 0:
            continue
        with warnings.catch_warnings():  # mocpy warns when the MOC is already finer than order 10
            warnings.simplefilter("ignore", UserWarning)
            cells = np.asarray(
                sub.refine_to_order(10).flatten() if hasattr(sub, "refine_to_order") else sub.flatten()
            )
        jobs.append(PartitionJob(int(p), None, cells.astype(np.int64), area))
    return jobs


def _size_bytes(out) -> int:
    """Bytes in a store (a local directory, or the objects under a URL)."""
    from ..storage import as_path

    p = as_path(out)
    if isinstance(p, Path):
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return int(p.fs.du(p.path, total=True))


def _remove_stale_temporaries(out: Path, order: int) -> None:
    """Delete half-written partitions a killed build left behind (they are never read)."""
    from ..store.cutouts import remove_temporaries

    remove_temporaries(out, order)


def build_mock_store(
    footprint,
    out: str | Path,
    *,
    candidates: pd.DataFrame | None = None,
    config: MockConfig | None = None,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    client=None,
    codec: str = "zstd",
) -> dict:
    """Render a mock survey of ``footprint`` into the cutout store ``out``; resumes an interrupted build.
    ``codec``: the images' (zstd, or none for the ``--device-prep`` path: :class:`~survey_mass.store.cutouts.StoreAttributes`).

    Returns a summary: clusters, partitions built and skipped, wall time, cutouts/s and store size.
    """
    from ..engine import Task, fan_out
    from ..storage import as_path
    from ..store import create_store, open_store

    cfg = config or MockConfig()
    t0 = time.perf_counter()
    jobs = plan(footprint, cfg, candidates)
    used_candidates = bool(jobs) and jobs[0].candidates is not None
    cfg = cfg.model_copy(update={"candidates": cfg.candidates if used_candidates else "mass-function"})
    create_store(
        out,
        cutout_size=cfg.cutout_size,
        pixel_scale_arcsec=cfg.pixel_scale_arcsec,
        healpix_order=cfg.order,
        survey=SURVEY_NAME,
        kind="mock",
        provenance=cfg.provenance(),
        footprint=footprint.name,
        overwrite=overwrite,
        codec=codec,
    )
    done = set(open_store(out).partitions)
    # warm the tables here so a single-process build reports honest timing
    physics.grids(cfg.physics.cosmology)
    built = fan_out(
        # biggest partitions first keeps the workers busy to the end
        [
            Task(
                j.pixel,
                len(j.candidates) if j.candidates is not None else j.area_deg2,
                (cfg, j, as_path(out)),
            )
            for j in jobs
        ],
        _build_and_write,
        is_done=done.__contains__,
        workers=workers,
        client=client,
        device="cpu",
        progress=progress,
        desc="mock partitions",
        retries=2,
        cleanup=lambda: _remove_stale_temporaries(out, cfg.order),
        key_prefix="mock-partition",
    )
    todo = built.computed
    n_new = sum(n for _, n in built)
    from ..store.cutouts import write_manifest

    write_manifest(out)
    wall = time.perf_counter() - t0
    store = open_store(out)
    size = _size_bytes(out)
    return {
        "store": str(out),
        "clusters": store.n_total,
        "partitions": len(store.partitions),
        "partitions_built": len(todo),
        "partitions_skipped": len(jobs) - len(todo),
        "cutouts_rendered": n_new,
        "wall_s": round(wall, 1),
        "cutouts_per_s": round(n_new / wall, 1) if wall > 0 else None,
        "store_bytes": size,
        "candidates": cfg.candidates,
    }


# --- counterfactual scenes ----------------------------------------------------------------------------------------

#: the scenes :func:`scene_variants` renders, and the components of the cluster each leaves out
SCENE_VARIANTS: dict[str, frozenset[str]] = {
    "full": frozenset(),
    "no_central": frozenset({"central"}),
    "no_members": frozenset({"members"}),
    "field": frozenset({"central", "members"}),
}
#: how far a re-rendered scene may stray from its stored cutout, relative to |pixel| + sky sigma
RERENDER_RTOL = 1e-5


def _store_config(st) -> MockConfig:
    """The :class:`MockConfig` a mock store was built with, from its provenance."""
    from pydantic import ValidationError

    from ..errors import StoreError

    where = f"store {str(st.path)!r}"
    if st.meta.kind != "mock":
        raise StoreError(
            f"{where}: not a mock store (kind {st.meta.kind!r}); only mock scenes can be re-rendered"
        )
    try:
        return MockConfig.model_validate(st.meta.provenance)
    except ValidationError as exc:
        e = exc.errors()[0]
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        raise StoreError(
            f"{where}: its provenance is not a MockConfig ({key}: {e['msg']}); not built by build_mock_store"
        ) from None


def _rebuild_clusters(
    st, cfg: MockConfig, pixel: int, cols: dict, candidates: pd.DataFrame | None
) -> pd.DataFrame:
    """The cluster table partition ``pixel`` of a mock store was rendered from, rebuilt as
    :func:`build_mock_store` made it, and checked against the store's columns."""
    from ..errors import StoreError

    where = f"store {str(st.path)!r}"
    if cfg.candidates == "mass-function":
        from ..errors import FootprintError
        from ..footprint import parse_footprint

        try:
            fp = parse_footprint(st.meta.footprint, order=cfg.order)
        except FootprintError as exc:
            raise StoreError(f"{where}: cannot rebuild its footprint ({exc})") from None
        job = next((j for j in plan(fp, cfg, None) if j.pixel == pixel), None)
        if job is None:
            raise StoreError(f"{where}: partition {pixel} is not in footprint {fp.name!r}")
    else:
        if candidates is None:
            if cfg.candidates != MockConfig.model_fields["candidates"].default:
                raise StoreError(
                    f"{where}: built from candidates {cfg.candidates!r}; pass that table as candidates="
                )
            from ..candidates import load_redmapper

            candidates = load_redmapper()
        if "id" not in candidates:
            raise StoreError(f"{where}: the candidates given have no id column")
        # plan() kept the candidates of a partition in catalogue order, and so did the store
        by_id = candidates.reset_index(drop=True)
        pos = pd.Series(np.arange(len(by_id)), index=by_id["id"].to_numpy(np.int64))
        missing = [int(i) for i in cols["id"] if int(i) not in pos.index]
        if missing:
            raise StoreError(
                f"{where}: partition {pixel}: candidate id {missing[0]} is not in the candidates"
            )
        job = PartitionJob(pixel, by_id.iloc[pos.loc[cols["id"].astype(np.int64)].to_numpy()])
    clusters = partition_clusters(cfg, job)
    same = len(clusters) == len(cols["id"]) and all(
        np.array_equal(clusters[k].to_numpy(cols[k].dtype), cols[k], equal_nan=cols[k].dtype.kind == "f")
        for k in ("id", "richness", "log10_m500_true")
        if k in cols
    )
    if not same:
        raise StoreError(
            f"{where}: partition {pixel}: the rebuilt clusters differ from the stored ones "
            "(other candidates, or another survey-mass version)"
        )
    return clusters


def scene_variants(
    store_path: str | Path,
    ids,
    variants: tuple[str, ...] = ("full", "no_central", "no_members"),
    *,
    candidates: pd.DataFrame | None = None,
) -> dict[str, np.ndarray]:
    """Counterfactual renders of mock clusters' scenes: variant -> float32 (len(ids), 5, H, W), rows in ``ids``'
    order.

    "full" is the stored cutout itself; "no_central" the same scene without its BCG; "no_members" without its
    member galaxies. Field sources, member positions and the noise draws are the full scene's (see
    :func:`render_cluster`), so a difference between variants is the removed light (plus the source photon
    noise that went with it): what attribution maps can be checked against. Away from the removed light the
    variants equal the stored cutout to float32 rounding (~1e-7 relative; not bit for bit, since the rendering's
    matrix products round differently with other sources, or another thread count than the build's).

    Each partition holding a requested id has its cluster table rebuilt from the store's recorded
    :class:`MockConfig` (and its footprint, or the candidates: the shipped redMaPPer catalogue, else
    ``candidates``, the table the store was built from), and only the requested clusters are rendered. Each
    requested scene is also re-rendered in full and checked against its stored cutout (to
    :data:`RERENDER_RTOL` of |pixel| + sky sigma), so a scene that cannot be rebuilt raises instead of giving
    counterfactuals of another scene.

    Raises
    ------
    ValueError
        For a variant other than those of :data:`SCENE_VARIANTS`.
    survey_mass.errors.StoreError
        One line naming the store: not a mock store, an id it does not hold, or scenes it cannot rebuild.
    """
    from ..errors import StoreError
    from ..store import open_store

    variants = (variants,) if isinstance(variants, str) else tuple(variants)
    for v in variants:
        if v not in SCENE_VARIANTS:
            raise ValueError(f"scene_variants: unknown variant {v!r}; use {list(SCENE_VARIANTS)}")
    st = open_store(store_path)
    cfg = _store_config(st)
    want = [int(i) for i in np.atleast_1d(np.asarray(ids, dtype=np.int64))]
    where: dict[int, tuple[int, int]] = {}
    for p in st.partitions:
        if where.keys() >= set(want):
            break
        for row, i in enumerate(st.columns(p)["id"].tolist()):
            where.setdefault(int(i), (p, row))
    missing = [i for i in want if i not in where]
    if missing:
        raise StoreError(f"store {str(st.path)!r}: no cutout with id {missing[0]}")

    size = cfg.cutout_size
    out = {v: np.empty((len(want), 5, size, size), np.float32) for v in variants}
    nominal_sky = np.array([render.sky_sigma_nmgy(bd, cfg.pixel_scale_arcsec, cfg.physics) for bd in BANDS])
    for p in sorted({where[i][0] for i in want}):
        cols = st.columns(p)
        clusters = _rebuild_clusters(st, cfg, p, cols, candidates)
        # the latitudes of the whole partition at once, as make_partition computed them
        b = _galactic_latitude(clusters["ra"], clusters["dec"])
        records = clusters.to_dict("records")
        for k, i in enumerate(want):
            if where[i][0] != p:
                continue
            row = where[i][1]
            stored = st.images(p, row, row + 1)[0]
            full, cond = render_cluster(records[row], cfg, float(b[row]))
            # the same scene re-rendered agrees to float32 rounding (torch's matrix products round differently
            # with another thread count: ~1e-7 relative); another scene's noise differs by ~1 sky sigma
            sky = nominal_sky[:, None, None] / cfg.physics.sky_noise_scale * cond.sky_factor[:, None, None]
            if not (np.abs(full - stored) <= RERENDER_RTOL * (np.abs(stored) + sky)).all():
                raise StoreError(
                    f"store {str(st.path)!r}: id {i}: the re-rendered scene differs from the stored cutout "
                    "(another survey-mass version?)"
                )
            for v in variants:
                omit = SCENE_VARIANTS[v]
                out[v][k] = (
                    stored if not omit else render_cluster(records[row], cfg, float(b[row]), without=omit)[0]
                )
    return out
