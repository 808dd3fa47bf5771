"""``survey-mass report``: pictures and numbers that describe a whole mass catalog.

Writes into ``OUT``:

* ``sky.png`` - HEALPix maps (Mollweide) of the cluster density and the median CNN mass;
* ``mass_redshift.png`` - the headline and the catalogue-lambda mass against redshift;
* ``errors.png`` - the distribution of the total error and its aleatoric and fold parts;
* ``reference.png`` (when the catalog carries labels or true masses) - predicted against reference mass,
  residuals against mass, and the calibration curve: the fraction of rows whose |pred - ref| / err is below k,
  against the Gaussian expectation; the headline is compared with the masses a catalogue user already has
  (catalogue lambda, and lambda + central galaxy), not with the tool's own lambda-hat, which tracks the
  catalogue's lambda poorly at 6.3" pixels (README, "lambda-hat");
* ``report.json`` and ``report.md`` - the figures' numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import paths
from .figures import _plt

REFERENCES = (("log10_m500_true", "true mass (mock)"), ("log10_m500_label", "label (X-ray)"))
COLUMNS = (
    "id",
    "ra",
    "dec",
    "z",
    "log10_m500",
    "log10_m500_err",
    "log10_m500_err_aleatoric",
    "log10_m500_err_fold",
    "log10_m500_err_extrapolation",
    "log10_m500_lambda",
    "log10_m500_lambda_err",
    "log10_m500_lambda_bcg",
    "log10_m500_lambda_bcg_err",
    "quality",
    "log10_m500_label",
    "log10_m500_true",
)


#: the estimators the report compares, key -> (mass column, label): the headline and the catalogue's baselines
COMPARED = {
    "headline": ("log10_m500", "headline"),
    "lambda": ("log10_m500_lambda", "catalogue λ"),
    "lambda_bcg": ("log10_m500_lambda_bcg", "catalogue λ + BCG"),
}


def _stats(pred, ref, err) -> dict:
    ok = np.isfinite(pred) & np.isfinite(ref)
    if not ok.any():
        return {"n": 0}
    d = pred[ok] - ref[ok]
    out = {
        "n": int(ok.sum()),
        "mae": float(np.mean(np.abs(d))),
        "bias": float(np.mean(d)),
        "scatter": float(np.std(d)),
    }
    if err is not None:
        e = err[ok]
        out["coverage_68"] = float(np.mean(np.abs(d) <= e))
        out["coverage_95"] = float(np.mean(np.abs(d) <= 2 * e))
    return out


def catalog_report(catalog: str | Path, out: str | Path) -> dict:
    """Draw the report pictures of ``catalog`` into ``out`` and return the numbers."""
    import json

    from ..catalog.query import query
    from ..catalog.writer import CatalogError
    from ..storage import as_path, is_remote

    cat = as_path(catalog)
    res = query(cat, columns=None)
    t = res.table
    names = [c for c in COLUMNS if c in t.column_names]
    d = {c: t.column(c).to_numpy(zero_copy_only=False) for c in names}
    for c in names:
        if c != "id":
            d[c] = np.asarray(d[c], dtype=float)
    out = Path(out).resolve()
    if not is_remote(cat) and (out == cat.resolve() or cat.resolve() in out.parents):
        raise CatalogError(f"--out {str(out)!r}: is inside the catalog; reports never write there")
    out.mkdir(parents=True, exist_ok=True)
    n = len(d["id"])
    if n == 0:
        raise CatalogError(f"catalog {str(catalog)!r}: has no rows")
    summary: dict = {"catalog": str(cat), "rows": n, "partitions": res.n_partitions}
    has_mass = np.isfinite(d["log10_m500"])
    summary["rows_with_mass"] = int(has_mass.sum())
    summary["median_log10_m500"] = float(np.nanmedian(d["log10_m500"]))
    summary["median_err"] = float(np.nanmedian(d["log10_m500_err"]))
    summary["files"] = {}
    fig = {k: out / v for k, v in paths.CATALOG_REPORT_FIGURES.items()}
    summary["files"]["sky"] = str(sky_map(d, fig["sky"]))
    summary["files"]["mass_redshift"] = str(mass_redshift(d, fig["mass_redshift"]))
    summary["files"]["errors"] = str(error_distribution(d, fig["errors"]))
    refs = [(c, lab) for c, lab in REFERENCES if c in d and np.isfinite(d[c]).any()]
    summary["reference"] = {}
    for c, _ in refs:
        summary["reference"][c] = {
            key: _stats(d[col], d[c], d.get(f"{col}_err")) for key, (col, _) in COMPARED.items() if col in d
        }
    if refs:
        summary["files"]["reference"] = str(reference_plot(d, refs, fig["reference"]))
    (out / paths.REPORT_JSON).write_text(json.dumps(summary, indent=1))
    (out / paths.REPORT_MD).write_text(_markdown(summary))
    return summary


def _markdown(s: dict) -> str:
    lines = [
        f"# Mass catalog report: {s['catalog']}",
        "",
        f"{s['rows']:,} rows in {s['partitions']} partitions; {s['rows_with_mass']:,} with a CNN mass. "
        f"Median log10 M500 {s['median_log10_m500']:.2f}, median error {s['median_err']:.3f} dex.",
        "",
    ]
    if s["reference"]:
        lines += [
            "| reference | estimator | n | MAE (dex) | bias | scatter | 68% coverage | 95% coverage |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for ref, v in s["reference"].items():
            for est, m in v.items():
                if m["n"]:
                    cov = (
                        f"{m['coverage_68']:.2f} | {m['coverage_95']:.2f}" if "coverage_68" in m else "- | -"
                    )
                    lines.append(
                        f"| {ref} | {est} | {m['n']} | {m['mae']:.3f} | {m['bias']:+.3f} | {m['scatter']:.3f} | {cov} |"
                    )
        lines.append("")
    lines += [f"![{k}]({Path(v).name})" for k, v in s["files"].items()]
    return "\n".join(lines) + "\n"


def sky_map(d: dict, out: Path, *, order: int = 5) -> Path:
    import healpy as hp

    plt = _plt()
    npix = hp.order2npix(order)
    pix = hp.ang2pix(hp.order2nside(order), d["ra"], d["dec"], lonlat=True, nest=True)
    counts = np.bincount(pix, minlength=npix).astype(float)
    area = hp.nside2pixarea(hp.order2nside(order), degrees=True)
    dens = np.where(counts > 0, counts / area, hp.UNSEEN)
    med = np.full(npix, hp.UNSEEN)
    ok = np.isfinite(d["log10_m500"])
    order_idx = np.argsort(pix[ok])
    sp, sm = pix[ok][order_idx], d["log10_m500"][ok][order_idx]
    uniq, start = np.unique(sp, return_index=True)
    for u, part in zip(uniq, np.split(sm, start[1:]), strict=True):
        med[u] = np.median(part)
    fig = plt.figure(figsize=(15, 5))
    hp.mollview(
        dens,
        nest=True,
        fig=fig.number,
        sub=(1, 2, 1),
        cmap="viridis",
        unit="clusters / deg$^2$",
        title=f"cluster density ({len(pix):,} rows, order {order} cells)",
        badcolor="white",
    )
    hp.graticule(dpar=30, dmer=60, alpha=0.3)
    hp.mollview(
        med,
        nest=True,
        fig=fig.number,
        sub=(1, 2, 2),
        cmap="magma",
        unit=r"median log$_{10}$ M$_{500}$",
        title="median CNN mass per cell",
        badcolor="white",
    )
    hp.graticule(dpar=30, dmer=60, alpha=0.3)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def mass_redshift(d: dict, out: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for ax, col, title in (
        (axes[0], "log10_m500", "headline"),
        (axes[1], "log10_m500_lambda", "catalogue-λ"),
    ):
        ok = np.isfinite(d.get(col, np.full(len(d["z"]), np.nan))) & np.isfinite(d["z"])
        if ok.sum() > 200:
            hb = ax.hexbin(d["z"][ok], d[col][ok], gridsize=45, bins="log", cmap="Blues", mincnt=1)
            fig.colorbar(hb, ax=ax, label="clusters")
        else:
            ax.scatter(d["z"][ok], d[col][ok], s=8)
        ax.set_xlabel("redshift z")
        ax.set_title(f"{title} mass vs redshift ({ok.sum():,} rows)")
    axes[0].set_ylabel(r"log$_{10}$ M$_{500}$ [M$_\odot$]")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def error_distribution(d: dict, out: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.4))
    parts = (
        ("log10_m500_err", "total", "k"),
        ("log10_m500_err_aleatoric", "aleatoric", "C0"),
        ("log10_m500_err_fold", "model (folds + weights)", "C1"),
        ("log10_m500_err_extrapolation", "below the label selection", "C2"),
    )
    vals = [d[c][np.isfinite(d[c])] for c, _, _ in parts if c in d]
    hi = max(float(np.percentile(v, 99.5)) for v in vals if v.size) if vals else 1.0
    bins = np.linspace(0, hi, 50)
    for c, lab, col in parts:
        if c in d:
            v = d[c][np.isfinite(d[c])]
            ax.hist(
                v, bins=bins, histtype="step", lw=1.8, color=col, label=f"{lab} (median {np.median(v):.3f})"
            )
    ax.set_xlabel("68% error on log$_{10}$ M$_{500}$ [dex]")
    ax.set_ylabel("rows")
    ax.set_title("error budget (calibrated)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def reference_plot(d: dict, refs: list[tuple[str, str]], out: Path) -> Path:
    from scipy.stats import norm

    plt = _plt()
    fig, axes = plt.subplots(len(refs), 3, figsize=(15, 4.6 * len(refs)), squeeze=False)
    for row, (c, lab) in enumerate(refs):
        ok = np.isfinite(d[c]) & np.isfinite(d["log10_m500"])
        ref, pred, err = d[c][ok], d["log10_m500"][ok], d["log10_m500_err"][ok]
        lam = d.get("log10_m500_lambda", np.full(len(ok), np.nan))[ok]
        lo, hi = np.percentile(np.concatenate([ref, pred]), [0.5, 99.5])
        ax = axes[row, 0]
        if ok.sum() > 500:
            ax.hexbin(ref, pred, gridsize=50, bins="log", cmap="Blues", mincnt=1, extent=(lo, hi, lo, hi))
        else:
            ax.errorbar(ref, pred, yerr=err, fmt=".", alpha=0.5, ms=3, lw=0.5)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"{lab}: log$_{{10}}$ M$_{{500}}$")
        ax.set_ylabel("CNN log$_{10}$ M$_{500}$")
        s = _stats(pred, ref, err)
        ax.set_title(
            f"CNN vs {lab}: MAE {s['mae']:.3f}, bias {s['bias']:+.3f} dex (n={s['n']:,})", fontsize=10
        )

        ax = axes[row, 1]
        edges = np.linspace(lo, hi, 12)
        mid = 0.5 * (edges[1:] + edges[:-1])
        for est, y, col in (("headline", pred, "C0"), ("catalogue λ", lam, "C1")):
            r = y - ref
            idx = np.digitize(ref, edges) - 1
            med = [np.nanmedian(r[idx == k]) if (idx == k).sum() >= 5 else np.nan for k in range(len(mid))]
            p16 = [
                np.nanpercentile(r[idx == k], 16) if (idx == k).sum() >= 5 else np.nan
                for k in range(len(mid))
            ]
            p84 = [
                np.nanpercentile(r[idx == k], 84) if (idx == k).sum() >= 5 else np.nan
                for k in range(len(mid))
            ]
            ax.plot(mid, med, "o-", color=col, label=f"{est} median")
            ax.fill_between(mid, p16, p84, color=col, alpha=0.2, label=f"{est} 16-84%")
        ax.axhline(0, color="k", lw=1)
        ax.set_xlabel(f"{lab}: log$_{{10}}$ M$_{{500}}$")
        ax.set_ylabel("estimate - reference [dex]")
        ax.set_title("residuals against reference mass", fontsize=10)
        ax.legend(fontsize=8)

        ax = axes[row, 2]
        k = np.linspace(0, 3, 61)
        zsc = np.abs(pred - ref) / err
        ax.plot(k, [np.mean(zsc <= kk) for kk in k], "C0", lw=2, label="CNN, observed")
        ax.plot(k, 2 * norm.cdf(k) - 1, "k--", lw=1, label="Gaussian expectation")
        ax.axvline(1, color="gray", lw=0.6)
        ax.axhline(0.6827, color="gray", lw=0.6)
        ax.set_xlabel("|CNN - reference| / log10_m500_err")
        ax.set_ylabel("fraction of rows within")
        ax.set_title(f"calibration: 68% interval holds {np.mean(zsc <= 1):.0%}", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
