"""Figures a person looks at: footprint maps and gri colour composites of cutouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def gri_composite(
    images: np.ndarray, *, stretch: float = 1.5, q: float = 8.0, minimum: float = -0.05
) -> np.ndarray:
    """RGB (H, W, 3) uint8 of a (5, H, W) ugriz cutout with astropy's Lupton et al. 2004 asinh stretch (i, r, g)."""
    from astropy.visualization import make_lupton_rgb

    img = np.nan_to_num(images.astype(np.float64))
    return make_lupton_rgb(img[3], img[2], img[1], minimum=minimum, stretch=stretch, Q=q)


def footprint_map(footprint, out: str | Path, *, clusters=None) -> Path:
    """Mollweide map of a footprint's HEALPix cells with the redMaPPer clusters (or ``clusters``) over it."""
    import healpy as hp

    from ..candidates import load_redmapper

    plt = _plt()
    order = 6
    cells = np.asarray(footprint.moc.degrade_to_order(order).flatten())
    m = np.zeros(hp.order2npix(order))
    m[cells] = 1
    # cells only partly inside are shaded by the fraction covered
    if clusters is None:
        clusters = load_redmapper()
    fig = plt.figure(figsize=(10, 5.6))
    hp.mollview(
        m,
        nest=True,
        fig=fig.number,
        cmap="Blues",
        min=0,
        max=1.6,
        cbar=False,
        coord="C",
        title=f"{footprint.name}: {footprint.area_deg2:,.0f} deg$^2$, {len(footprint.partitions)} partitions "
        f"(order {footprint.order}); {len(clusters):,} clusters",
    )
    hp.graticule(dpar=30, dmer=60, alpha=0.4)
    hp.projscatter(
        clusters["ra"].to_numpy(), clusters["dec"].to_numpy(), lonlat=True, s=0.3, c="crimson", alpha=0.5
    )
    out = Path(out)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def cutout_montage(images: np.ndarray, titles: list[str], out: str | Path, *, ncols: int = 5) -> Path:
    """A grid of gri composites with titles."""
    plt = _plt()
    n = len(images)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.6 * nrows))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, img, t in zip(np.ravel(axes), images, titles, strict=False):
        ax.imshow(gri_composite(img), origin="lower")
        ax.set_title(t, fontsize=8)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def explain_figure(
    image: np.ndarray, joint: np.ndarray, row: dict, summary: dict, out: str | Path, *, pixel_scale: float
) -> Path:
    """One cluster: composite, joint IG x Grad-CAM overlay, per-band maps, per-band bars and the masses."""
    from matplotlib.patches import Circle

    from ..photometry import BANDS

    plt = _plt()
    h, w = image.shape[-2:]
    extent_arcmin = np.array([-w / 2, w / 2, -h / 2, h / 2]) * pixel_scale / 60.0
    from scipy.ndimage import gaussian_filter

    fig = plt.figure(figsize=(17, 8.4), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.2, 1.0])
    axes_top = top.subplots(1, 4, width_ratios=[1, 1.15, 0.9, 1.4])
    axes_bottom = bottom.subplots(1, 5)
    name = row.get("name") or row["id"]
    fig.suptitle(
        f"{name} (id {row['id']}), z = {row['z']:.3f}, RA {row['ra']:.4f}, Dec {row['dec']:+.4f}: "
        "why the network said what it said",
        fontsize=12,
    )

    ax = axes_top[0]
    ax.imshow(gri_composite(image), origin="lower", extent=extent_arcmin)
    ax.add_patch(Circle((0, 0), 1.0, fill=False, color="w", ls="--", lw=1))
    ax.set_title("gri composite (1 arcmin circle)", fontsize=9)
    ax.set_xlabel("arcmin")

    ax = axes_top[1]
    i_band = np.nan_to_num(image[3])
    lo, hi = np.percentile(i_band, [5, 99.5])
    ax.imshow(
        np.arcsinh((i_band - lo) / max(hi - lo, 1e-9) * 10), origin="lower", cmap="gray", extent=extent_arcmin
    )
    total = gaussian_filter(joint.sum(0), 1.0)
    total = total / max(float(total.max()), 1e-30)
    shown = np.ma.masked_less(total, 0.05)
    im = ax.imshow(shown, origin="lower", cmap="inferno", alpha=0.8, extent=extent_arcmin, vmin=0, vmax=1)
    top.colorbar(im, ax=ax, shrink=0.8, label="|IG| x Grad-CAM (smoothed, / max)")
    ax.set_title(
        f"joint attribution on the i band\nmean radius {summary['attr_radius_arcmin']:.2f} arcmin", fontsize=9
    )
    ax.set_xlabel("arcmin")

    ax = axes_top[2]
    fr = [summary[f"attr_frac_{b}"] for b in BANDS]
    colors = ["#7b3fbf", "#2f8f2f", "#d94c1a", "#a0261c", "#5a1a12"]
    ax.bar(list(BANDS), fr, color=colors)
    for k, v in enumerate(fr):
        ax.text(k, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, max(max(fr) * 1.2, 0.3))
    ax.set_title("share of the attribution per band", fontsize=9)
    ax.set_ylabel("fraction")

    ax = axes_top[3]
    entries = [("CNN", row.get("log10_m500"), row.get("log10_m500_err"), "C0")]
    entries.append(("richness", row.get("log10_m500_richness"), None, "C1"))
    if row.get("log10_m500_label") is not None:
        entries.append(("label (X-ray)", row["log10_m500_label"], None, "C2"))
    if row.get("log10_m500_true") is not None:
        entries.append(("true (mock)", row["log10_m500_true"], None, "k"))
    for k, (lab, v, e, c) in enumerate(entries):
        if v is None or not np.isfinite(v):
            ax.text(14.5, k, f"{lab}: none", va="center", fontsize=8)
            continue
        ax.errorbar(v, k, xerr=e if e else None, fmt="o", color=c, capsize=4, ms=7)
        txt = f"{v:.2f} ± {e:.2f}" if e else f"{v:.2f}"
        ax.annotate(txt, (v, k), textcoords="offset points", xytext=(0, 9), ha="center", fontsize=8)
    ax.set_yticks(range(len(entries)), [e[0] for e in entries])
    ax.set_ylim(-0.7, len(entries) - 0.3)
    vals = [e[1] for e in entries if e[1] is not None and np.isfinite(e[1])]
    if vals:
        ax.set_xlim(min(vals) - 0.6, max(vals) + 0.6)
    ax.set_xlabel(r"log$_{10}$ M$_{500}$ [M$_\odot$]")
    lam = row.get("richness")
    ax.set_title(
        f"masses (68% error)\nrichness λ̂ = {lam:.0f}; quality {row.get('quality', 0)}; IG delta "
        f"{summary['ig_delta']:.2%}"
        if lam is not None and np.isfinite(lam)
        else "masses (68% error)",
        fontsize=9,
    )

    vmax = float(np.percentile(joint, 99.7)) or 1.0
    for k, b in enumerate(BANDS):
        ax = axes_bottom[k]
        ax.imshow(joint[k], origin="lower", cmap="magma", vmin=0, vmax=vmax, extent=extent_arcmin)
        ax.set_title(f"{b}: {summary[f'attr_frac_{b}']:.0%} of the attribution", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
