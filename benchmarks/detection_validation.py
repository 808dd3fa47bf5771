"""Does the batched torch detection (:mod:`survey_mass.models.detection`) give the richness baseline sep gives?

    python benchmarks/detection_validation.py [--store STORE] [--out OUT_DIR] [--blanks 300] [--max-cutouts 2500]

On the same cutouts, sep (:func:`survey_mass.inference.predict.richness_masses`, one cutout at a time) against
:func:`survey_mass.models.detection.richness_batch`:

* the source lists (sources matched within 1 pixel, cutouts with identical lists);
* lambda-hat: Spearman (criterion >= 0.95), median ratio torch / sep, fraction identical;
* the baseline mass (mean over the fold calibrations, as ``richness_masses``): MAE against log10_m500_true
  (criterion: torch within 0.01 dex of sep), bias and MAE in z bins and in true-mass bins;
* the no-cluster verdict (:func:`survey_mass.models.richness.no_cluster`) on the clusters and on blank renders
  (keys 40000-40299, galactic latitude uniform in 20-85 deg, each judged at a z uniform in 0.08-0.40);
* time per cutout on this CPU with one torch thread (median of 3), for 256 cutouts and for the whole store.

Without ``--store`` it builds the mock of ``box:120,160,0,22`` (2,464 cutouts, seed 11) in a temporary folder.
Writes ``detection_validation.json`` and ``.md`` to OUT_DIR (default: benchmarks/results next to this file).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

Z_BINS = (0.05, 0.15, 0.25, 0.35, 0.45, 0.65)
M_BINS = (13.0, 13.75, 14.0, 14.25, 14.5, 15.5)


def _load(store_path: str, max_cutouts: int):
    from survey_mass.store import open_store

    st = open_store(store_path)
    images, cols = [], []
    for p in st.partitions:
        images.append(st.images(p))
        cols.append(st.columns(p))
    images = np.concatenate(images)[:max_cutouts]
    col = {
        k: np.concatenate([c[k] for c in cols])[:max_cutouts] for k in ("z", "log10_m500_true", "richness")
    }
    return images, col


def _build_store(out: Path) -> str:
    from survey_mass.footprint import parse_footprint
    from survey_mass.mock.survey import MockConfig, build_mock_store

    build_mock_store(
        parse_footprint("box:120,160,0,22"), out, config=MockConfig(seed=11), workers=1, progress=False
    )
    return str(out)


def _timed(fn, repeat: int = 3) -> tuple[float, object]:
    ts, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), out


def _source_agreement(images, sources) -> dict:
    """sep's source lists (:func:`~survey_mass.models.richness.detect`) against the torch ones, cutout by cutout."""
    from scipy.spatial import cKDTree

    from survey_mass.models.richness import detect

    n_sep = n_torch = matched = same_rows = 0
    dpos, dmag = [], []
    for k, img in enumerate(images):
        a, b = detect(img), sources.row(k)
        n_sep += a["x"].size
        n_torch += b["x"].size
        if a["x"].size and b["x"].size:
            d, j = cKDTree(np.c_[b["x"], b["y"]]).query(np.c_[a["x"], a["y"]])
            ok = d < 1.0
            matched += int(ok.sum())
            dpos.extend(d[ok].tolist())
            with np.errstate(invalid="ignore"):
                dmag.extend(np.abs(b["mag_i"][j[ok]] - a["mag_i"][ok])[np.isfinite(a["mag_i"][ok])].tolist())
            same_rows += int(ok.all() and a["x"].size == b["x"].size and np.all(d < 1e-6))
        else:
            same_rows += int(a["x"].size == b["x"].size)
    return {
        "sources_sep": n_sep,
        "sources_torch": n_torch,
        "sep_sources_found": matched / max(n_sep, 1),
        "torch_sources_in_sep": matched / max(n_torch, 1),
        "position_error_pix_p50_p99_max": [
            float(np.percentile(dpos, 50)),
            float(np.percentile(dpos, 99)),
            float(np.max(dpos)),
        ],
        "mag_i_abs_diff_p99_max": [float(np.percentile(dmag, 99)), float(np.max(dmag))],
        "cutouts_identical": same_rows / len(images),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mass(base, lam, z) -> np.ndarray:
    return np.mean([base.predict(c, lam, z) for c in base.folds], axis=0)


def _binned(x, edges, err_sep, err_torch) -> list[dict]:
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (x >= lo) & (x < hi)
        if not m.any():
            continue
        rows.append(
            {
                "bin": [lo, hi],
                "n": int(m.sum()),
                "bias_sep": float(np.mean(err_sep[m])),
                "bias_torch": float(np.mean(err_torch[m])),
                "mae_sep": float(np.mean(np.abs(err_sep[m]))),
                "mae_torch": float(np.mean(np.abs(err_torch[m]))),
            }
        )
    return rows


def _blanks(base, n: int, seed: int = 2026) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from survey_mass.mock.survey import MockConfig, render_blank

    rng = np.random.default_rng(seed)
    lat = rng.uniform(20.0, 85.0, n)
    z = rng.uniform(0.08, 0.40, n)
    cfg = MockConfig()
    images = np.stack([render_blank(cfg, 40000 + k, float(lat[k])) for k in range(n)])
    return images, z, lat


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--store", help="a mock store (default: build box:120,160,0,22, seed 11, in a temporary folder)"
    )
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--blanks", type=int, default=300)
    ap.add_argument("--max-cutouts", type=int, default=2500)
    args = ap.parse_args(argv)

    import torch
    from scipy.stats import spearmanr

    from survey_mass.inference.predict import richness_masses
    from survey_mass.models.bundle import load_bundle
    from survey_mass.models.detection import detect_batch, richness_batch
    from survey_mass.models.richness import detect, no_cluster
    from survey_mass.resources import model_dir

    torch.set_num_threads(1)
    tmp = None
    store = args.store
    if store is None:
        tmp = tempfile.TemporaryDirectory()
        store = _build_store(Path(tmp.name) / "bench-box_120_160_0_22.zarr")
    images, col = _load(store, args.max_cutouts)
    z, truth = col["z"].astype(float), col["log10_m500_true"].astype(float)
    bundle = load_bundle(model_dir())
    base = bundle.baseline
    n = len(z)
    print(f"{n} cutouts from {store}", flush=True)

    # --- the same cutouts through both ---------------------------------------------------------------------
    richness_batch(base, images[:64], z[:64])  # warm-up (astropy, allocations)
    t_sep_all, rs = _timed(lambda: richness_masses(bundle, images, z, detector="sep"))
    t_torch_all, rt = _timed(lambda: richness_batch(base, images, z))
    t_torch_one, _ = _timed(lambda: richness_batch(base, images, z, batch_size=n))
    t_sep_256, _ = _timed(lambda: richness_masses(bundle, images[:256], z[:256], detector="sep"))
    t_torch_256, _ = _timed(lambda: richness_batch(base, images[:256], z[:256]))
    t_torch_256_one, _ = _timed(lambda: richness_batch(base, images[:256], z[:256], batch_size=256))
    t_det_sep, _ = _timed(lambda: [detect(im) for im in images[:256]])
    t_det_torch, _ = _timed(lambda: detect_batch(images[:256]))
    print("timed", flush=True)

    lam_s, lam_t = rs["richness"], rt["richness"]
    sig_s, sig_t = rs["cluster_significance"], rt["cluster_significance"]
    ok = np.isfinite(lam_s) & np.isfinite(lam_t)
    m_s, m_t = rs["log10_m500_richness"], _mass(base, lam_t, z)
    lab = ok & np.isfinite(truth)
    e_s, e_t = m_s[lab] - truth[lab], m_t[lab] - truth[lab]
    mae_s, mae_t = float(np.mean(np.abs(e_s))), float(np.mean(np.abs(e_t)))
    sources = _source_agreement(images, detect_batch(images))
    print("sources compared", flush=True)

    # --- the no-cluster verdict ------------------------------------------------------------------------------
    judged = np.isfinite(sig_s)
    fl_s, fl_t = no_cluster(sig_s), no_cluster(sig_t)
    bl_img, bl_z, bl_lat = _blanks(base, args.blanks)
    bl_s = np.array(
        [base.cluster_significance(detect(im), float(zz)) for im, zz in zip(bl_img, bl_z, strict=True)]
    )
    bl_t = richness_batch(base, bl_img, bl_z)["cluster_significance"]
    bf_s, bf_t = no_cluster(bl_s), no_cluster(bl_t)

    res = {
        "store": str(store) if args.store else "mock box:120,160,0,22, seed 11 (built)",
        "cutouts": n,
        "machine": f"{_cpu_name()}, torch {torch.__version__}, 1 torch thread",
        "sources": sources,
        "lambda_hat": {
            "spearman": float(spearmanr(lam_s[ok], lam_t[ok]).statistic),
            "median_ratio_torch_over_sep": float(np.median(lam_t[ok] / lam_s[ok])),
            "identical_fraction": float(np.mean(lam_t[ok] == lam_s[ok])),
            "within_1_fraction": float(np.mean(np.abs(lam_t[ok] - lam_s[ok]) <= 1.0)),
            "criterion": "spearman >= 0.95",
            "pass": bool(spearmanr(lam_s[ok], lam_t[ok]).statistic >= 0.95),
        },
        "mass": {
            "n": int(lab.sum()),
            "mae_sep": mae_s,
            "mae_torch": mae_t,
            "bias_sep": float(np.mean(e_s)),
            "bias_torch": float(np.mean(e_t)),
            "mass_abs_diff_p99_max": [
                float(np.percentile(np.abs(m_t[ok] - m_s[ok]), 99)),
                float(np.max(np.abs(m_t[ok] - m_s[ok]))),
            ],
            "criterion": "|MAE torch - MAE sep| <= 0.01 dex",
            "pass": bool(abs(mae_t - mae_s) <= 0.01),
            "by_z": _binned(z[lab], Z_BINS, e_s, e_t),
            "by_true_mass": _binned(truth[lab], M_BINS, e_s, e_t),
        },
        "no_cluster": {
            "clusters_judged": int(judged.sum()),
            "clusters_flagged_sep": float(np.mean(fl_s[judged])),
            "clusters_flagged_torch": float(np.mean(fl_t[judged])),
            "clusters_verdict_agreement": float(np.mean(fl_s[judged] == fl_t[judged])),
            "clusters_nan_pattern_identical": bool(np.array_equal(np.isnan(sig_s), np.isnan(sig_t))),
            "significance_abs_diff_p50_p99": [
                float(np.percentile(np.abs(sig_t[judged] - sig_s[judged]), 50)),
                float(np.percentile(np.abs(sig_t[judged] - sig_s[judged]), 99)),
            ],
            "blanks": int(args.blanks),
            "blanks_flagged_sep": float(np.mean(bf_s)),
            "blanks_flagged_torch": float(np.mean(bf_t)),
            "blanks_verdict_agreement": float(np.mean(bf_s == bf_t)),
            "blanks_significance_spearman": float(spearmanr(bl_s, bl_t).statistic),
        },
        "time_ms_per_cutout": {
            "sep_richness_masses_256": 1e3 * t_sep_256 / 256,
            "torch_richness_batch_256": 1e3 * t_torch_256 / 256,
            "torch_richness_batch_256_one_chunk": 1e3 * t_torch_256_one / 256,
            "sep_richness_masses_store": 1e3 * t_sep_all / n,
            "torch_richness_batch_store": 1e3 * t_torch_all / n,
            "torch_richness_batch_store_one_chunk": 1e3 * t_torch_one / n,
            "sep_detect_only_256": 1e3 * t_det_sep / 256,
            "torch_detect_batch_only_256": 1e3 * t_det_torch / 256,
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "detection_validation.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "detection_validation.md").write_text(_markdown(res))
    print(_markdown(res))
    if tmp is not None:
        tmp.cleanup()
    return res


def _markdown(r: dict) -> str:
    s, lam, m, nc, t = r["sources"], r["lambda_hat"], r["mass"], r["no_cluster"], r["time_ms_per_cutout"]
    yes = {True: "pass", False: "**FAIL**"}
    lines = [
        f"sep (`richness_masses`) vs torch (`richness_batch`) on {r['cutouts']} cutouts of {r['store']}; "
        f"{nc['blanks']} blank renders. {r['machine']}.",
        "",
        "| test | sep | torch | criterion |",
        "|---|---|---|---|",
        f"| sources | {s['sources_sep']} | {s['sources_torch']}: {100 * s['sep_sources_found']:.2f}% of sep's found, "
        f"{100 * s['torch_sources_in_sep']:.2f}% of these are sep's; position error p99 "
        f"{s['position_error_pix_p50_p99_max'][1]:.1e} px; identical lists in {100 * s['cutouts_identical']:.1f}% "
        "of cutouts | (reported) |",
        f"| lambda-hat Spearman | | {lam['spearman']:.4f}; median ratio torch/sep {lam['median_ratio_torch_over_sep']:.3f}; "
        f"identical in {100 * lam['identical_fraction']:.2f}% of cutouts | >= 0.95: {yes[lam['pass']]} |",
        f"| baseline mass MAE (dex, n = {m['n']}) | {m['mae_sep']:.4f} | {m['mae_torch']:.4f} | "
        f"within 0.01: {yes[m['pass']]} |",
        f"| baseline mass bias (dex) | {m['bias_sep']:+.4f} | {m['bias_torch']:+.4f} | (reported) |",
        f"| cluster significance, abs difference p50 / p99 | | {nc['significance_abs_diff_p50_p99'][0]:.1e} / "
        f"{nc['significance_abs_diff_p50_p99'][1]:.1e}; blanks: Spearman {nc['blanks_significance_spearman']:.4f} "
        "| (reported) |",
        f"| clusters flagged NO_CLUSTER (z <= 0.4, n = {nc['clusters_judged']}) | {100 * nc['clusters_flagged_sep']:.2f}% | "
        f"{100 * nc['clusters_flagged_torch']:.2f}%; verdicts agree {100 * nc['clusters_verdict_agreement']:.2f}% | (reported) |",
        f"| blanks flagged NO_CLUSTER (n = {nc['blanks']}) | {100 * nc['blanks_flagged_sep']:.1f}% | "
        f"{100 * nc['blanks_flagged_torch']:.1f}%; verdicts agree {100 * nc['blanks_verdict_agreement']:.1f}% | (reported) |",
        f"| ms per cutout, 256 cutouts | {t['sep_richness_masses_256']:.3f} | {t['torch_richness_batch_256']:.3f} "
        f"(one chunk of 256: {t['torch_richness_batch_256_one_chunk']:.3f}) | (reported) |",
        f"| ms per cutout, whole store | {t['sep_richness_masses_store']:.3f} | {t['torch_richness_batch_store']:.3f} "
        f"(one chunk: {t['torch_richness_batch_store_one_chunk']:.3f}) | (reported) |",
        f"| ms per cutout, detection alone (256) | {t['sep_detect_only_256']:.3f} | {t['torch_detect_batch_only_256']:.3f} | (reported) |",
        "",
        "| z bin | n | bias sep | bias torch | MAE sep | MAE torch |",
        "|---|---|---|---|---|---|",
    ]
    for b in m["by_z"]:
        lines.append(
            f"| {b['bin'][0]:.2f}-{b['bin'][1]:.2f} | {b['n']} | {b['bias_sep']:+.4f} | {b['bias_torch']:+.4f} | "
            f"{b['mae_sep']:.4f} | {b['mae_torch']:.4f} |"
        )
    lines += [
        "",
        "| log10 M500 true | n | bias sep | bias torch | MAE sep | MAE torch |",
        "|---|---|---|---|---|---|",
    ]
    for b in m["by_true_mass"]:
        lines.append(
            f"| {b['bin'][0]:.2f}-{b['bin'][1]:.2f} | {b['n']} | {b['bias_sep']:+.4f} | {b['bias_torch']:+.4f} | "
            f"{b['mae_sep']:.4f} | {b['mae_torch']:.4f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
