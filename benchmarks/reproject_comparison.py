"""Cutout resampling: the current nearest-pixel binning (:func:`survey_mass.store.ingest.resample`) against
``reproject`` (:func:`survey_mass.store.resample.resample_reproject`, ``exact`` and ``adaptive``), issue #18.

    python benchmarks/reproject_comparison.py [--out OUT_DIR] [--repeat 2] [--seed 3]

Two fake SDSS r-band fields (:func:`survey_mass.testing.write_fake_sdss_frames`: 2048 x 1489 pixels of 0.396",
12 degree rotated TAN, 128 rows shared, Gaussian PSF of 1.4" FWHM, sky noise 0.005 nmgy per pixel) hold 30 point
sources of 200-2000 nmgy at random positions around three cutout centres: ``A`` inside field 0 (one frame),
``B`` on the seam (two frames) and ``C`` 150 pixels from field 0's x edge (part of the cutout off the frame).
Sources are grouped ``interior`` (A, C), ``overlap`` (B, inside both frames by 12+ pixels), ``field_boundary``
(B, 3-12 pixels inside one frame's edge, covered by the other) and ``frame_edge`` (C, 3-25 pixels inside the
frame's edge, nothing beyond). The same centres and sources are cut at 64 x 64 pixels of 6.336" (the store's
geometry, 16 x 16 native pixels per cutout pixel) and of 3.168". For each resampler:

(a) flux: aperture sum (radius 19") minus the median of a 25-45" annulus, against the true flux: median and max
    of |relative error|, and the median signed error; and the whole of cutout A against the sum of the native
    pixels whose centres fall in it;
(b) position: flux-weighted centroid in a +-6.5" box (3 x 3 pixels at 6.336", 5 x 5 at 3.168") around the
    brightest aperture pixel, against the true position (median and p95, pixels and arcsec), and against the
    centroid of the *ideal* cutout (the PSF integrated over each cutout pixel, as the mock renderer draws), which
    separates the resampler's error from the coarse pixels' own;
(c) shape: sum over the aperture of |cutout - sky - ideal| / flux (0 = the image a perfect pixel integrator,
    and the mock renderer, would give);
(d) ms per cutout of 5 bands, one thread, frames already in memory (decompression is the same for all), for A
    (one frame per band) and B (two), best of ``repeat`` runs.

Writes ``reproject_comparison.json`` and ``.md`` to OUT_DIR (default: benchmarks/results next to this file).
"""

from __future__ import annotations

import os

for _v in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
):  # one thread, set before numpy loads
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.special import erf  # noqa: E402

RA0, DEC0 = 150.0, 2.0
NX, NY, OVERLAP, ROTATION, SKY_SIGMA, FWHM = 2048, 1489, 128, 12.0, 0.005, 1.4
SIZE, SCALES = 64, (6.336, 3.168)
AP, ANNULUS, BOX_HALF = 19.0, (25.0, 45.0), 6.5  # arcsec
N_PER_CENTRE, MIN_SEP = 10, 35.0  # sources per cutout centre; their minimum separation (arcsec)
#: the resamplers: ingest's, and resample_reproject's (algorithm, combine)
METHODS = {
    "current": None,
    "exact": ("exact", "best"),
    "exact_coadd_mean": ("exact", "mean"),
    "adaptive": ("adaptive", "best"),  # its footprint is 1 wherever it is finite: "best" is "mean" here
}
GROUPS = ("interior", "overlap", "field_boundary", "frame_edge")


def _current(frames, ra, dec, size, ps, data):
    """:func:`~survey_mass.store.ingest.resample` on frames already in memory (the ingest's own path)."""
    from survey_mass.photometry import BANDS
    from survey_mass.store.ingest import CutoutSums

    sums = CutoutSums(1, size, ps)
    for f in frames:
        sums.add(0, f, data(f), ra, dec)
    return sums.images()[0, BANDS.index(frames[0].band)]


def _resampler(method: str):
    from survey_mass.store.resample import resample_reproject

    if METHODS[method] is None:
        return _current
    algorithm, combine = METHODS[method]
    return lambda frames, ra, dec, size, ps, data: resample_reproject(
        frames, ra, dec, size, ps, data=data, algorithm=algorithm, combine=combine
    )


def _inside(frame, ra, dec) -> tuple[float, float]:
    """(pixels inside the frame's nearest x edge, the same for y); negative outside."""
    x, y = frame.wcs.all_world2pix([[ra, dec]], 0)[0]
    return min(x, NX - 1 - x), min(y, NY - 1 - y)


def _place_sources(frames, centres, rng) -> list[dict]:
    """30 sources: 10 around each centre, drawn within the 3.168" cutout's inner part, by group."""
    from survey_mass.store.ingest import cutout_wcs

    want = {
        "A": {"interior": 10},
        "B": {"field_boundary": 4, "overlap": 4, "interior": 2},  # the rarest first
        "C": {"frame_edge": 4, "interior": 6},
    }
    out: list[dict] = []
    for name, (ra_c, dec_c) in centres.items():
        w = cutout_wcs(ra_c, dec_c, SIZE, 3.168)
        need = dict(want[name])
        mine: list[tuple[float, float]] = []
        for _ in range(200000):
            if not any(need.values()):
                break
            px, py = rng.uniform(5, SIZE - 6, 2)
            ra, dec = (float(v) for v in w.all_pix2world([[px, py]], 0)[0])
            ins = [_inside(f, ra, dec) for f in frames]
            covering = [i for i, (ix, iy) in enumerate(ins) if ix >= 3 and iy >= 3]
            if name == "A":
                group = "interior" if covering == [0] else None
            elif name == "B":
                edge = min(min(ix, iy) for ix, iy in ins)
                if len(covering) == 1:
                    group = "interior" if edge < -25 else None
                else:
                    group = "overlap" if edge >= 12 else "field_boundary"
            else:
                ix, iy = ins[0]
                if covering != [0] or iy < 25:
                    continue
                group = "frame_edge" if ix < 25 else "interior" if ix > 40 else None
            if group != next(g for g, n in need.items() if n):
                continue
            sep = [np.hypot((ra - r) * np.cos(np.radians(dec)), dec - d) * 3600 for r, d in mine]
            if sep and min(sep) < MIN_SEP:
                continue
            mine.append((ra, dec))
            need[group] -= 1
            flux = float(np.exp(rng.uniform(np.log(200), np.log(2000))))
            out.append({"centre": name, "group": group, "ra": ra, "dec": dec, "flux": flux})
        if any(need.values()):
            raise RuntimeError(f"could not place the sources of centre {name}: {need}")
    return out


def _ideal(x: float, y: float, flux: float, ps: float) -> np.ndarray:
    """The point source integrated over each pixel of the cutout grid (north-up, so the PSF is separable)."""
    s = FWHM / 2.3548 / ps * np.sqrt(2)
    edges = np.arange(SIZE + 1) - 0.5
    gx, gy = np.diff(0.5 * erf((edges - x) / s)), np.diff(0.5 * erf((edges - y) / s))
    return flux * np.outer(gy, gx)


def _centroid(img: np.ndarray, px: int, py: int, h: int) -> tuple[float, float]:
    st = img[py - h : py + h + 1, px - h : px + h + 1]
    yy, xx = np.mgrid[py - h : py + h + 1, px - h : px + h + 1]
    return float((st * xx).sum() / st.sum()), float((st * yy).sum() / st.sum())


def _measure(img: np.ndarray, w, src: dict, ps: float) -> dict:
    """Aperture flux, centroid error (against the truth and against the ideal cutout) and shape residual; NaN
    pixels (off every frame) are left out, and flagged."""
    x, y = w.all_world2pix([[src["ra"], src["dec"]]], 0)[0]
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r = np.hypot(xx - x, yy - y) * ps
    ap = r < AP
    sky = float(np.nanmedian(img[(r >= ANNULUS[0]) & (r < ANNULUS[1])]))
    sub = np.nan_to_num(img - sky)
    h = int(round(BOX_HALF / ps))
    iy, ix = np.unravel_index(np.argmax(np.where(ap, sub, -np.inf)), sub.shape)
    ideal = _ideal(x, y, src["flux"], ps)
    iy0, ix0 = np.unravel_index(np.argmax(np.where(ap, ideal, -np.inf)), ideal.shape)
    cx, cy = _centroid(sub, ix, iy, h)
    ix_, iy_ = _centroid(ideal, ix0, iy0, h)
    return {
        "nan_in_aperture": bool(np.isnan(img[ap]).any()),
        "flux_rel_err": float(sub[ap].sum() / src["flux"] - 1),
        "pos_err_px": float(np.hypot(cx - x, cy - y)),
        "pos_err_vs_ideal_px": float(np.hypot(cx - ix_, cy - iy_)),
        "ideal_pos_err_px": float(np.hypot(ix_ - x, iy_ - y)),
        "shape_l1": float(np.abs(sub[ap] - ideal[ap]).sum() / src["flux"]),
    }


def _native_sum(frame, data, ra, dec, ps) -> float:
    """The sum of the native pixels whose centres fall in the cutout."""
    from survey_mass.store.ingest import cutout_wcs

    yy, xx = np.mgrid[:NY, :NX]
    wra, wdec = frame.wcs.all_pix2world(xx.ravel(), yy.ravel(), 0)
    tx, ty = cutout_wcs(ra, dec, SIZE, ps).all_world2pix(wra, wdec, 0)
    inside = (tx >= -0.5) & (tx < SIZE - 0.5) & (ty >= -0.5) & (ty < SIZE - 0.5)
    return float(data.ravel()[inside].sum())


def _summary(rows: list[dict], ps: float) -> dict:
    """Flux over the sources whose aperture is all on the frames (frame-edge sources apart); position and shape over
    those; each group apart (frame-edge sources: their NaN pixels left out)."""
    ok = [r for r in rows if not r["nan_in_aperture"]]
    main = [r for r in ok if r["group"] != "frame_edge"]

    def col(sel, key):
        return np.array([r[key] for r in sel])

    f, p, pi = col(main, "flux_rel_err"), col(ok, "pos_err_px"), col(ok, "pos_err_vs_ideal_px")
    groups = {}
    for g in GROUPS:
        sel = [r for r in (rows if g == "frame_edge" else ok) if r["group"] == g]
        v, pg = col(sel, "flux_rel_err"), col(sel, "pos_err_px")
        groups[g] = {
            "n": len(sel),
            "n_nan_in_aperture": sum(r["nan_in_aperture"] for r in sel),
            "flux_rel_err_median": float(np.median(v)) if len(sel) else None,
            "flux_abs_rel_err_max": float(np.abs(v).max()) if len(sel) else None,
            "pos_err_px_median": float(np.median(pg)) if len(sel) else None,
        }
    return {
        "n_sources": len(rows),
        "n_nan_in_aperture": len(rows) - len(ok),
        "flux_abs_rel_err_median": float(np.median(np.abs(f))),
        "flux_abs_rel_err_max": float(np.abs(f).max()),
        "flux_rel_err_median": float(np.median(f)),
        "by_group": groups,
        "pos_err_px_median": float(np.median(p)),
        "pos_err_px_p95": float(np.percentile(p, 95)),
        "pos_err_arcsec_median": float(np.median(p) * ps),
        "pos_err_arcsec_p95": float(np.percentile(p, 95) * ps),
        "pos_err_vs_ideal_px_median": float(np.median(pi)),
        "pos_err_vs_ideal_px_p95": float(np.percentile(pi, 95)),
        "ideal_pos_err_px_median": float(np.median(col(ok, "ideal_pos_err_px"))),
        "shape_l1_median": float(np.median(col(ok, "shape_l1"))),
    }


def main(argv=None) -> dict:
    from survey_mass.store.ingest import cutout_wcs, frame_files, read_frame_data, read_frame_header, resample
    from survey_mass.testing import write_fake_sdss_frames

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    kw = dict(ra0=RA0, dec0=DEC0, nx=NX, ny=NY, overlap=OVERLAP, rotation_deg=ROTATION, sky_sigma=SKY_SIGMA)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "frames"
        write_fake_sdss_frames(d, bands=("r",), seed=args.seed, **kw)  # the geometry, to place sources in
        frames = [read_frame_header(p) for p in frame_files(d)]
        f0 = frames[0].wcs
        centres = {
            "A": tuple(float(v) for v in f0.all_pix2world([[NX / 2, NY / 2 - 75]], 0)[0]),
            "B": (RA0, DEC0),
            "C": tuple(float(v) for v in f0.all_pix2world([[NX - 1 - 150, NY / 2 - 75]], 0)[0]),
        }
        sources = _place_sources(frames, centres, rng)
        write_fake_sdss_frames(
            d, sources=[(s["ra"], s["dec"], s["flux"]) for s in sources], bands=("r",), seed=args.seed, **kw
        )
        frames = [read_frame_header(p) for p in frame_files(d)]
        arrays = {f.path: read_frame_data(f.path) for f in frames}
        data = arrays.__getitem__
        by_path = lambda f: data(f.path)  # noqa: E731

        def reaching(ra, dec, ps):  # frames that cover any of the cutout (as the frame index would pick)
            from survey_mass.store.resample import _crop

            return [f for f in frames if _crop(f, ra, dec, SIZE, ps) is not None]

        res: dict = {"geometries": {}}
        for ps in SCALES:
            geo: dict = {"ms_per_cutout_5_bands": {}, "methods": {}}
            fr = {k: reaching(*c, ps) for k, c in centres.items()}
            geo["frames_per_band"] = {k: len(v) for k, v in fr.items()}
            # the in-memory path is the ingest's: check it against resample() itself once
            same = _current(fr["B"], *centres["B"], SIZE, ps, by_path)
            assert np.array_equal(same, resample(fr["B"], *centres["B"], SIZE, ps), equal_nan=True)
            native_a = _native_sum(fr["A"][0], arrays[fr["A"][0].path], *centres["A"], ps)
            for m in METHODS:
                fn = _resampler(m)
                fn(fr["A"], *centres["A"], SIZE, ps, by_path)  # warm-up (imports)
                imgs, ms = {}, {}
                for k in ("A", "B"):
                    times = []
                    for _ in range(args.repeat):
                        t0 = time.perf_counter()
                        for _band in range(5):  # five bands: the r frames five times (timing ignores content)
                            imgs[k] = fn(fr[k], *centres[k], SIZE, ps, by_path)
                        times.append(time.perf_counter() - t0)
                    ms[k] = 1000 * float(np.min(times))  # the least disturbed run (the machine is shared)
                imgs["C"] = fn(fr["C"], *centres["C"], SIZE, ps, by_path)
                geo["ms_per_cutout_5_bands"][m] = {"A_one_frame": ms["A"], "B_two_frames": ms["B"]}
                rows = []
                for s in sources:
                    w = cutout_wcs(*centres[s["centre"]], SIZE, ps)
                    rows.append({**s, **_measure(imgs[s["centre"]], w, s, ps)})
                summ = _summary(rows, ps)
                summ["total_flux_A_rel_diff"] = float(np.nansum(imgs["A"]) / native_a - 1)
                summ["nan_fraction_C"] = float(np.isnan(imgs["C"]).mean())
                summ["nan_any_A_B"] = bool(np.isnan(imgs["A"]).any() or np.isnan(imgs["B"]).any())
                summ["sources"] = rows
                geo["methods"][m] = summ
                print(f'{ps}" {m}: done ({time.perf_counter() - t_start:.0f} s)', flush=True)
            res["geometries"][f"{ps}"] = geo
    import astropy
    import reproject

    res["config"] = {
        "frames": f'2 fields of {NX} x {NY} px (0.396"), {ROTATION} deg rotated TAN, {OVERLAP} rows shared',
        "sky_sigma_nmgy": SKY_SIGMA,
        "psf_fwhm_arcsec": FWHM,
        "cutout_size": SIZE,
        "aperture_arcsec": AP,
        "annulus_arcsec": list(ANNULUS),
        "centroid_box_half_arcsec": BOX_HALF,
        "seed": args.seed,
        "repeat": args.repeat,
        "reproject": reproject.__version__,
        "astropy": astropy.__version__,
        "numpy": np.__version__,
        "cpu": platform.processor() or platform.machine(),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "current_ingest": _ingest_state(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reproject_comparison.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "reproject_comparison.md").write_text(_markdown(res))
    print(_markdown(res))
    return res


def _table(ps: str, geo: dict) -> list[str]:
    """One geometry's table, a row per figure and a column per resampler."""
    lines: list[str] = []
    ms = geo["methods"]
    lines += [
        f'## {ps}" pixels',
        "",
        "| | " + " | ".join(METHODS) + " |",
        "|---" * (len(METHODS) + 1) + "|",
    ]

    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(m) for m in METHODS) + " |")

    row("flux: median abs rel error", lambda m: f"{100 * ms[m]['flux_abs_rel_err_median']:.2f}%")
    row("flux: max abs rel error", lambda m: f"{100 * ms[m]['flux_abs_rel_err_max']:.2f}%")
    row("flux: median signed error", lambda m: f"{100 * ms[m]['flux_rel_err_median']:+.2f}%")
    for g in GROUPS:

        def grp(m, g=g):
            d = ms[m]["by_group"][g]
            nan = f", {d['n_nan_in_aperture']} with NaN" if d["n_nan_in_aperture"] else ""
            return (
                f"{100 * d['flux_rel_err_median']:+.2f}% / {100 * d['flux_abs_rel_err_max']:.2f}% "
                f"(n = {d['n']}{nan})"
            )

        row(f"flux, {g}: median / max abs", grp)
    row("sources with NaN in aperture", lambda m: str(ms[m]["n_nan_in_aperture"]))
    row("whole cutout A vs native sum", lambda m: f"{100 * ms[m]['total_flux_A_rel_diff']:+.3f}%")
    row(
        "position error, median / p95 (px)",
        lambda m: f"{ms[m]['pos_err_px_median']:.3f} / {ms[m]['pos_err_px_p95']:.3f}",
    )
    row(
        "position error, median / p95 (arcsec)",
        lambda m: f"{ms[m]['pos_err_arcsec_median']:.2f} / {ms[m]['pos_err_arcsec_p95']:.2f}",
    )
    row(
        "position vs ideal cutout, median / p95 (px)",
        lambda m: f"{ms[m]['pos_err_vs_ideal_px_median']:.3f} / {ms[m]['pos_err_vs_ideal_px_p95']:.3f}",
    )
    row("shape residual vs ideal (median)", lambda m: f"{100 * ms[m]['shape_l1_median']:.1f}%")
    row("NaN fraction, edge cutout C", lambda m: f"{100 * ms[m]['nan_fraction_C']:.1f}%")
    t = geo["ms_per_cutout_5_bands"]
    row("ms per cutout (5 bands), 1 frame/band", lambda m: f"{t[m]['A_one_frame']:.0f}")
    row("ms per cutout (5 bands), 2 frames/band", lambda m: f"{t[m]['B_two_frames']:.0f}")
    ideal = ms["current"]["ideal_pos_err_px_median"]
    lines += [
        "",
        f"The ideal cutout's own centroid error (pixelisation alone): median {ideal:.3f} px.",
        "",
    ]
    return lines


def _ingest_state() -> str:
    """Which ingest.py ``current`` is: the committed one or a working tree changed from it."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", "survey_mass/store/ingest.py"]
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return "outside a git checkout"
    return f"the working tree, changed from {head}" if dirty else f"as committed at {head}"


def _markdown(res: dict) -> str:
    c = res["config"]
    lines = [
        "# Cutout resampling: current binning vs reproject (issue #18)",
        "",
        f"`python benchmarks/reproject_comparison.py`: {c['frames']}; 30 point sources of 200-2000 nmgy, PSF "
        f'{c["psf_fwhm_arcsec"]}" FWHM, sky noise {c["sky_sigma_nmgy"]} nmgy/px; cutouts {c["cutout_size"]} x '
        f"{c['cutout_size']}; reproject {c['reproject']}, astropy {c['astropy']}; one thread; {c['wall_s']} s "
        "wall. Columns: `current` is `survey_mass.store.ingest.resample` (nearest-pixel binning; here "
        f"{c['current_ingest']}); `exact` and `adaptive` are `survey_mass.store.resample.resample_reproject` "
        "(`reproject_exact`; `reproject_adaptive(conserve_flux=True)`) keeping in each pixel the frame that "
        "covers most of it; `exact_coadd_mean` is `reproject_exact` through `reproject_and_coadd`'s "
        'footprint-weighted mean. Flux errors are the 19" aperture minus the annulus median against the true '
        "flux, over sources whose aperture is all on the frames (frame-edge sources apart, their NaN pixels "
        'left out); position is the centroid in +-6.5" (3 x 3 or 5 x 5 pixels) around the brightest pixel; '
        "'vs ideal' compares with the centroid of the PSF integrated over the cutout pixels (what the mock "
        "renderer draws), and the shape residual is sum |cutout - ideal| / flux over the aperture. Times are "
        "the best of the repeats on a shared 2-core machine: read them to a factor of about 2.",
        "",
    ]
    for ps, geo in res["geometries"].items():
        lines += _table(ps, geo)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
