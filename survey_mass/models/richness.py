"""The richness baseline: our stand-in for redMaPPer masses, measured on the same cutouts as the CNN.

1. **Detect.** sep (Source Extractor as a library) finds sources in the i band: 1.5 sigma, 4 pixels. Aperture
   photometry (radius 1.5 pixels) follows in g, r and i.
2. **Select the red sequence at the cluster's redshift.** The colour is g-r below z = 0.35 and r-i above.
   - The window is +-0.15 mag around the median colour of the real red SDSS galaxies at that z.
   - The magnitude cut is i < m*_i(z) + 1.75 (0.2 L*), with m*_i(z) tied to real redMaPPer central galaxies.
3. **Count inside R = min(R_lambda, 30 pixels) and subtract the background.** The background is the density of
   sources passing the same cuts in cutouts of clusters at other redshifts (|dz| > 0.15), whose members have
   other colours. It is measured on the training store (:class:`RichnessBaseline`.fit).
4. **Calibrate on the same folds as the CNN.** log10 M = a + b log10(lambda_hat) + c z with scatter sigma, fitted
   on each training fold with the survey's likelihood when the labels' selection is known (labelled clusters
   as selected, the others as non-detections; :mod:`survey_mass.selection`), least squares otherwise.
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


def detect(images: np.ndarray) -> dict[str, np.ndarray]:
    """Sources in one (5, H, W) cutout: pixel x, y and aperture magnitudes in g, r, i."""
    import sep

    img = np.ascontiguousarray(np.nan_to_num(images, nan=0.0), dtype=np.float64)
    det = img[3]
    med = float(np.median(det))
    sig = float(1.4826 * np.median(np.abs(det - med))) or 1.0
    try:
        objs = sep.extract(det - med, DETECT_SIGMA, err=sig, minarea=MIN_AREA, deblend_cont=0.005)
    except Exception:  # sep raises on pathological images (e.g. all zero); no sources then
        objs = np.zeros(0, dtype=[("x", float), ("y", float)])
    out = {"x": np.asarray(objs["x"], float), "y": np.asarray(objs["y"], float)}
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

        from ..selection import survey_nll

        m_lim = selection.m_lim(z) if m_lim is None else m_lim
        joint = not lab.all()  # no non-detections to hand: the labels given their selection

        def nll(p):
            with np.errstate(invalid="ignore", divide="ignore"):
                rows = survey_nll(
                    a @ p[:3],
                    np.exp(p[3]),
                    log_m,
                    lab,
                    m_lim,
                    selection.s,
                    selection.label_noise_dex,
                    joint=joint,
                )
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
