"""The richness baseline: our stand-in for redMaPPer masses, measured on the same cutouts as the CNN.

1. **Detect.** sep (Source Extractor as a library) finds sources in the i band: 1.5 sigma, 4 pixels. Aperture
   photometry (radius 1.5 pixels) follows in g, r and i. :func:`detect` calls sep one cutout at a time; training
   and inference use :mod:`.detection`, the same detection batched in torch (on a GPU too), which gives sep's
   lambda-hat in 99.96% of cutouts at half sep's time on a CPU (benchmarks/results/detection_validation.md).
2. **Select the red sequence at the cluster's redshift.** The colour is g-r below z = 0.35 and r-i above.
   - The window is +-0.15 mag around the median colour of the real red SDSS galaxies at that z.
   - The magnitude cut is i < m*_i(z) + 1.75 (0.2 L*), with m*_i(z) tied to real redMaPPer central galaxies.
3. **Count inside R = min(R_lambda, 30 pixels) and subtract the background.** The background is the density of
   sources passing the same cuts in cutouts of clusters at other redshifts (|dz| > 0.15), whose members have
   other colours. It is measured on the training store (:class:`RichnessBaseline`.fit).
4. **Calibrate on the same folds as the CNN.** log10 M = a + b log10(lambda_hat) + c z with scatter sigma, fitted
   on each training fold with the survey's likelihood when the labels' selection is known (labelled clusters
   as selected, the others as non-detections; :mod:`survey_mass.selection`), least squares otherwise.

**Is there a cluster at all?** :meth:`RichnessBaseline.cluster_significance` and :func:`no_cluster` tell a cutout
with a red-sequence overdensity at the candidate's redshift from one that holds only sky and field galaxies
(a false candidate); see :data:`NO_CLUSTER_THRESHOLD` for the measured rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..photometry import SDSS_PIXEL_SCALE, nmgy_to_mag

DETECT_SIGMA = 1.5
MIN_AREA = 4
APERTURE_PIX = 1.5
COLOUR_HALF_WIDTH = 0.15
Z_SWITCH = 0.35
Z_GRID = np.round(np.arange(0.05, 0.66, 0.05), 3)


def detect(images: np.ndarray, *, segmentation: bool = False) -> dict[str, np.ndarray]:
    """Sources in one (5, H, W) cutout: pixel x, y and aperture magnitudes in g, r, i (and, with
    ``segmentation``, sep's (H, W) segmentation map under ``"segmentation"``: pixel -> source number + 1, 0 sky)."""
    import sep

    img = np.ascontiguousarray(np.nan_to_num(images, nan=0.0), dtype=np.float64)
    det = img[3]
    med = float(np.median(det))
    sig = float(1.4826 * np.median(np.abs(det - med))) or 1.0
    seg = np.zeros(det.shape, np.int32)
    try:
        found = sep.extract(
            det - med,
            DETECT_SIGMA,
            err=sig,
            minarea=MIN_AREA,
            deblend_cont=0.005,
            segmentation_map=segmentation,
        )
        objs, seg = found if segmentation else (found, seg)
    except Exception:  # sep raises on pathological images (e.g. all zero); no sources then
        objs = np.zeros(0, dtype=[("x", float), ("y", float)])
    out = {"x": np.asarray(objs["x"], float), "y": np.asarray(objs["y"], float)}
    if segmentation:
        out["segmentation"] = np.asarray(seg, np.int32)
    for b, name in ((1, "g"), (2, "r"), (3, "i")):
        band = img[b] - np.median(img[b])
        if len(objs):
            flux, _, _ = sep.sum_circle(band, out["x"], out["y"], APERTURE_PIX)
        else:
            flux = np.zeros(0)
        out[f"mag_{name}"] = nmgy_to_mag(flux)
    return out


def red_sequence_table() -> tuple[np.ndarray, np.ndarray]:
    """Median g-r and r-i of real red SDSS galaxies on :data:`Z_GRID` (the baseline's colour model)."""
    from ..galaxies import real_galaxies

    rg = real_galaxies()
    # colours are stored as m_band - m_r
    gr = rg.colours[:, 1]
    ri = -rg.colours[:, 3]
    cgr, cri = [], []
    for z in Z_GRID:
        for dz in (0.02, 0.04, 0.08, 0.2):
            sel = rg.red & (np.abs(rg.z - z) < dz)
            if sel.sum() >= 8:
                break
        cgr.append(float(np.median(gr[sel])) if sel.any() else np.nan)
        cri.append(float(np.median(ri[sel])) if sel.any() else np.nan)
    out = []
    for arr in (np.array(cgr), np.array(cri)):
        for k in range(1, arr.size):  # beyond the real sample's reach, keep the last measured colour
            if not np.isfinite(arr[k]):
                arr[k] = arr[k - 1]
        out.append(arr)
    return out[0], out[1]


def _select(src: dict[str, np.ndarray], z: float, colour_gr: np.ndarray, colour_ri: np.ndarray) -> np.ndarray:
    from ..astro import mstar_i

    if z < Z_SWITCH:
        c = src["mag_g"] - src["mag_r"]
        centre = np.interp(z, Z_GRID, colour_gr)
    else:
        c = src["mag_r"] - src["mag_i"]
        centre = np.interp(z, Z_GRID, colour_ri)
    bright = src["mag_i"] < float(mstar_i(z)) + 1.75
    with np.errstate(invalid="ignore"):
        return np.isfinite(c) & (np.abs(c - centre) < COLOUR_HALF_WIDTH) & bright


def aperture_pix(richness_proxy: float, z: float, pixel_scale: float, size: int) -> float:
    from ..astro import r_lambda_arcsec

    return float(min(r_lambda_arcsec(richness_proxy, z) / pixel_scale, size / 2 - 2))


# --- the no-cluster detector ------------------------------------------------------------------------------------
#
# A matched filter on the red sequence at the candidate's redshift. Each source brighter than the baseline's cut
# (i < m*_i(z) + 1.75) gets a colour weight c in [0, 1]: a Gaussian in r-i around the red sequence, and in g-r a
# Gaussian on the blue side only (redder than the sequence counts fully, as does a source with no flux in g but
# flux in r: g has dropped out). Its position gets a Gaussian radial weight g
# around the cutout's centre. The score S = sum c g is compared with what a field of the same depth gives: with
# field densities rho1 = E[sum c] and rho2 = E[sum c^2] per pixel^2 (Poisson positions),
# E[S] = rho1 sum_pix g and Var[S] = rho2 sum_pix g^2, and the significance is (S - E[S]) / sqrt(Var[S]).
#
# Why not the baseline's hard count against its own background: measured on the mock (400 blank renders, 1,040
# clusters of lambda >= 20), counting +-0.15 mag inside R against RichnessBaseline.background flags 83-96% of
# blanks at 2% of clusters lost below z = 0.3 but only 5-57% at z = 0.3-0.55. That background, measured on
# cluster cutouts at other redshifts, is also 1.3-2.3 times the blank field's count at z = 0.2-0.55 (1.05 at 0.1),
# so it cannot stand for "the field" here; the detector has its own field model (:data:`FIELD_RHO1`).

#: sigma of the Gaussian radial weight (arcsec; 14 pixels of the mock's 6.336" pixels)
DETECT_RADIUS_ARCSEC = 88.7
#: Gaussian colour weights: g-r on the blue side of the red sequence, and r-i on both sides (mag)
DETECT_SIGMA_GR_BLUE = 0.3
DETECT_SIGMA_RI = 0.2
#: the detector's magnitude cut, i < m*_i(z) + DETECT_DM (the baseline's 0.2 L*)
DETECT_DM = 1.75


def red_sequence_weights(
    src: dict[str, np.ndarray], z: float, colour_gr: np.ndarray, colour_ri: np.ndarray
) -> np.ndarray:
    """Each source's colour weight in [0, 1] for the red sequence at ``z`` (0 below the magnitude cut)."""
    from ..astro import mstar_i

    with np.errstate(invalid="ignore"):
        dgr = src["mag_g"] - src["mag_r"] - np.interp(z, Z_GRID, colour_gr)
        dri = src["mag_r"] - src["mag_i"] - np.interp(z, Z_GRID, colour_ri)
        # no flux in g but a measured r: redder than any window (g dropped out), so no blue penalty
        dgr = np.where(np.isnan(src["mag_g"]) & np.isfinite(src["mag_r"]), 0.0, dgr)
        w = np.exp(-0.5 * (np.minimum(dgr, 0.0) / DETECT_SIGMA_GR_BLUE) ** 2)
        w = w * np.exp(-0.5 * (dri / DETECT_SIGMA_RI) ** 2)
        bright = src["mag_i"] < float(mstar_i(z)) + DETECT_DM
    return np.where(np.isfinite(w) & bright, w, 0.0)


def _radial_weight(r_pix: np.ndarray, pixel_scale: float) -> np.ndarray:
    return np.exp(-0.5 * (np.asarray(r_pix, float) * pixel_scale / DETECT_RADIUS_ARCSEC) ** 2)


def fit_field(
    blank_sources: list[dict[str, np.ndarray]],
    colour_gr: np.ndarray,
    colour_ri: np.ndarray,
    size: int,
) -> tuple[list[float], list[float]]:
    """The field model of :meth:`RichnessBaseline.cluster_significance`: (rho1, rho2) on :data:`Z_GRID`, the mean
    sum of colour weights and of their squares per pixel^2, over the detections of cutouts with no cluster."""
    area = float(size**2)
    rho1, rho2 = [], []
    for z in Z_GRID:
        w = [red_sequence_weights(s, float(z), colour_gr, colour_ri) for s in blank_sources]
        rho1.append(float(np.mean([x.sum() for x in w])) / area)
        rho2.append(float(np.mean([(x**2).sum() for x in w])) / area)
    return rho1, rho2


@dataclass
class RichnessBaseline:
    """Background densities (per pixel^2, on :data:`Z_GRID`) and per-fold (a, b, c) calibrations."""

    pixel_scale: float = 16 * SDSS_PIXEL_SCALE
    size: int = 64
    background: list[float] = field(default_factory=list)
    colour_gr: list[float] = field(default_factory=list)
    colour_ri: list[float] = field(default_factory=list)
    folds: list[list[float]] = field(default_factory=list)

    def count(self, src: dict[str, np.ndarray], z: float) -> tuple[float, float]:
        """(members counted inside the aperture, aperture area in pixel^2)."""
        sel = _select(src, z, np.asarray(self.colour_gr), np.asarray(self.colour_ri))
        r_ap = aperture_pix(30.0, z, self.pixel_scale, self.size)
        c = (self.size - 1) / 2
        inside = np.hypot(src["x"] - c, src["y"] - c) < r_ap
        return float((sel & inside).sum()), float(np.pi * r_ap**2)

    def richness(self, src: dict[str, np.ndarray], z: float) -> float:
        n, area = self.count(src, z)
        bkg = float(np.interp(z, Z_GRID, np.asarray(self.background)))
        return max(n - bkg * area, 1.0)

    def cluster_significance(
        self,
        src: dict[str, np.ndarray],
        z: float,
        field: tuple[list[float], list[float]] | None = None,
    ) -> float:
        """How many sigma the red sequence at ``z`` around the centre stands above the field (sources from
        :func:`detect`). NaN where it cannot be judged: z not finite or above :data:`NO_CLUSTER_Z_MAX`.

        ``field`` is (rho1, rho2) from :func:`fit_field`; default :data:`FIELD_RHO1`, :data:`FIELD_RHO2`.
        Compare with :data:`NO_CLUSTER_THRESHOLD` (:func:`no_cluster`).
        """
        z = float(z)
        if not (np.isfinite(z) and 0.0 < z <= NO_CLUSTER_Z_MAX):
            return float("nan")
        gr, ri = np.asarray(self.colour_gr, float), np.asarray(self.colour_ri, float)
        if gr.size != Z_GRID.size or ri.size != Z_GRID.size:
            gr, ri = red_sequence_table()
        rho1, rho2 = field if field is not None else (FIELD_RHO1, FIELD_RHO2)
        c = (self.size - 1) / 2
        w = red_sequence_weights(src, z, gr, ri)
        score = float((w * _radial_weight(np.hypot(src["x"] - c, src["y"] - c), self.pixel_scale)).sum())
        yy, xx = np.mgrid[0 : self.size, 0 : self.size]
        g = _radial_weight(np.hypot(xx - c, yy - c), self.pixel_scale)
        mean = float(np.interp(z, Z_GRID, np.asarray(rho1, float))) * float(g.sum())
        var = float(np.interp(z, Z_GRID, np.asarray(rho2, float))) * float((g**2).sum())
        return (score - mean) / np.sqrt(max(var, 1e-12))

    def fit_background(self, sources: list[dict[str, np.ndarray]], zs: np.ndarray) -> None:
        """Density of red-sequence-like sources at each z, measured in cutouts of clusters far in redshift."""
        gr, ri = red_sequence_table()
        self.colour_gr, self.colour_ri = gr.tolist(), ri.tolist()
        full_area = float(self.size**2)
        dens = []
        for z in Z_GRID:
            far = np.flatnonzero(np.abs(zs - z) > 0.15)
            if far.size == 0:
                dens.append(0.0)
                continue
            counts = [_select(sources[k], float(z), gr, ri).sum() for k in far[:2000]]
            dens.append(float(np.mean(counts)) / full_area)
        self.background = dens

    def fit_fold(
        self,
        lam_hat: np.ndarray,
        z: np.ndarray,
        log_m: np.ndarray,
        *,
        selection=None,
        m_lim: np.ndarray | None = None,
    ) -> list[float]:
        """(a, b, c, sigma) of log M = a + b log10(lambda_hat) + c z, with scatter sigma.

        ``log_m`` is NaN for clusters without a label. With ``selection``
        (:class:`survey_mass.selection.XraySelection`) the fit maximises the survey's likelihood, the same one the
        CNN heads use (:func:`survey_mass.selection.survey_nll`): labelled clusters as selected, unlabelled ones
        as non-detections (or, when every row is labelled, the labels given their selection). So the relation
        describes every cluster, not only the selected ones. Without it, least squares on the labelled clusters.
        """
        a = np.stack([np.ones_like(z), np.log10(lam_hat), z], axis=1)
        lab = np.isfinite(log_m)
        coef, *_ = np.linalg.lstsq(a[lab], log_m[lab], rcond=None)
        sigma = float(np.std(log_m[lab] - a[lab] @ coef))
        if selection is None:
            return [float(c) for c in coef] + [sigma]
        from scipy.optimize import minimize

        m_lim = selection.m_lim(z) if m_lim is None else m_lim
        joint = not lab.all()  # no non-detections to hand: the labels given their selection

        def nll(p):
            with np.errstate(invalid="ignore", divide="ignore"):
                rows = selection.nll(a @ p[:3], np.exp(p[3]), log_m, lab, m_lim, joint=joint)
            return float(np.sum(rows))

        start = np.array([*coef, np.log(max(sigma, 0.05))])
        res = minimize(
            nll, start, method="Nelder-Mead", options={"maxiter": 20000, "xatol": 1e-6, "fatol": 1e-6}
        )
        p = res.x
        return [float(p[0]), float(p[1]), float(p[2]), float(np.exp(p[3]))]

    @staticmethod
    def predict(coef: list[float], lam_hat: np.ndarray, z: np.ndarray) -> np.ndarray:
        return coef[0] + coef[1] * np.log10(lam_hat) + coef[2] * np.asarray(z)

    def to_dict(self) -> dict:
        return {
            "pixel_scale": self.pixel_scale,
            "size": self.size,
            "background": self.background,
            "colour_gr": self.colour_gr,
            "colour_ri": self.colour_ri,
            "folds": self.folds,
            "z_grid": Z_GRID.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> RichnessBaseline:
        return cls(
            pixel_scale=d["pixel_scale"],
            size=d["size"],
            background=list(d["background"]),
            colour_gr=list(d["colour_gr"]),
            colour_ri=list(d["colour_ri"]),
            folds=[list(f) for f in d["folds"]],
        )


# --- the no-cluster verdict -------------------------------------------------------------------------------------

#: the field model (rho1, rho2 of :func:`fit_field` on :data:`Z_GRID`, per pixel^2 of 6.336"), measured on 600
#: blank renders of the mock survey (``render_blank(MockConfig(), key, b)``, keys 20000-20599, galactic latitude
#: b uniform in 25-85 deg: field galaxies and stars at the survey's depth, per-field seeing and sky)
FIELD_RHO1 = [
    0.000392,
    0.0009643,
    0.001612,
    0.001776,
    0.001495,
    0.001027,
    0.0004721,
    0.0005746,
    0.001142,
    0.0006349,
    0.0004298,
    0.0004298,
    0.0004298,
]
FIELD_RHO2 = [
    0.0002862,
    0.0007465,
    0.0012,
    0.001088,
    0.0007683,
    0.000479,
    0.0001989,
    0.0002463,
    0.0005448,
    0.0002755,
    0.0001744,
    0.0001744,
    0.0001744,
]
#: above this redshift the detector cannot tell a cluster from the field reliably and gives NaN (no row is flagged
#: there): at z = 0.40-0.45, 11 of 348 lambda >= 20 clusters (3%; lambda 32-59) fall below the threshold, because
#: the few detected members' g-r is blended towards the field's (the aperture photometry of :func:`detect`)
NO_CLUSTER_Z_MAX = 0.40
#: a cutout whose significance is below this shows no cluster (:func:`no_cluster`). Measured on the mock: the field
#: model makes blank renders' significance ~N(0, 1) at every z. Blanks: set A (400 renders, keys 10000-10399, b
#: 25-85 deg; used to choose the threshold) / set C (300 renders, keys 40000-40299, b 20-85 deg; held out), each
#: judged at the bin's central z. Clusters: lambda >= 20 redMaPPer candidates rendered by the mock at their own z
#: (the small test store, seed 7 / 1,040 clusters over the whole sky, seed 11 / 450 at z = 0.38-0.5, seed 13).
#:
#: =========  ==========================================  =====================================
#: z          blank renders flagged, A / C                lambda >= 20 clusters flagged
#: =========  ==========================================  =====================================
#: 0.08-0.15  92% / 91% (81% of C at b < 35 deg: stars)   0/12, 2/130
#: 0.15-0.25  94% / 94%                                   0/39, 0/130
#: 0.25-0.30  94% / 93%                                   0/22, 0/130
#: 0.30-0.35  94% / 95%                                   0/42, 0/130
#: 0.35-0.40  92% / 94%                                   1/54, 0/130, 0/74
#: =========  ==========================================  =====================================
#:
#: In all, 3 of 893 clusters (0.3%) at z <= 0.40. Above 0.40 the same threshold still flags 92-95% of blanks but
#: loses 11/348 clusters (3.2%) at 0.40-0.45, 17/344 (4.9%) at 0.45-0.50 and 10/150 (6.7%) at 0.50-0.56; hence
#: :data:`NO_CLUSTER_Z_MAX`.
NO_CLUSTER_THRESHOLD = 1.5


def no_cluster(significance) -> np.ndarray:
    """True where :meth:`RichnessBaseline.cluster_significance` says the pixels show no cluster at the
    candidate's redshift (below :data:`NO_CLUSTER_THRESHOLD`); False where it is NaN (not judged)."""
    s = np.asarray(significance, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(s) & (s < NO_CLUSTER_THRESHOLD)
