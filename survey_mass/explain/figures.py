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


def explain_figure(image: np.ndarray, a: dict, row: dict, out: str | Path, *, pixel_scale: float) -> Path:
    """One row's explanation: the gri composite with its regions; the signed map over the i band; the exact
    per-input contributions beside the map's per-band sums; the masses; and the signed map of each band.

    ``a`` is :func:`survey_mass.attribution.attribute` for this one row with ``return_maps`` (maps in dex per
    pixel), ``row`` the catalogue row (its ``contrib_*`` columns).
    """
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Circle

    from ..attribution import CONTRIBUTION_GROUPS, REGIONS
    from ..photometry import BANDS

    plt = _plt()
    maps, regions = a["maps"][0], a["regions"][0]
    h, w = image.shape[-2:]
    extent = np.array([-w / 2, w / 2, -h / 2, h / 2]) * pixel_scale / 60.0
    fig = plt.figure(figsize=(18, 8.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.2, 1.0])
    axes_top = top.subplots(1, 4, width_ratios=[1, 1.15, 1.4, 1.2])
    axes_bottom = bottom.subplots(1, 5)
    fig.suptitle(
        f"{row.get('name') or row['id']} (id {row['id']}), z = {row['z']:.3f}, RA {row['ra']:.4f}, "
        f"Dec {row['dec']:+.4f}: what made its mass",
        fontsize=12,
    )

    ax = axes_top[0]
    ax.imshow(gri_composite(image), origin="lower", extent=extent)
    members = np.ma.masked_where(~regions[REGIONS.index("members")], np.ones((h, w)))
    ax.imshow(members, origin="lower", extent=extent, cmap="cool", alpha=0.35, vmin=0, vmax=1)
    ax.add_patch(Circle((0, 0), 3 * pixel_scale / 60, fill=False, color="w", lw=1))
    if regions[REGIONS.index("outside")].any():  # R_lambda inside the cutout: draw it
        ax.add_patch(Circle((0, 0), _edge_radius(regions, pixel_scale), fill=False, color="w", ls="--", lw=1))
        ax.set_title("gri; central aperture, members (tint), R$_\\lambda$ (dashed)", fontsize=9)
    else:
        ax.set_title("gri; central aperture, members (tint); R$_\\lambda$ covers the cutout", fontsize=9)
    ax.set_xlabel("arcmin")

    total = maps.sum(0)
    lim = max(float(np.percentile(np.abs(total), 99.5)), 1e-6)
    norm = TwoSlopeNorm(0.0, -lim, lim)
    ax = axes_top[1]
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(total, 1.0)  # one pixel: the map's pixel noise averaged over the PSF's scale
    slim = max(float(np.percentile(np.abs(smooth), 99.5)), 1e-6)
    im = ax.imshow(smooth, origin="lower", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -slim, slim), extent=extent)
    i_band = gaussian_filter(np.nan_to_num(image[3]), 0.7)
    levels = np.percentile(i_band, [90, 97, 99.5])
    ax.contour(i_band, levels=levels, colors="0.35", linewidths=0.6, origin="lower", extent=extent)
    top.colorbar(im, ax=ax, shrink=0.8, label="dex per pixel, all bands (smoothed 1 px)")
    ax.set_title(
        f"integrated gradients from blank sky: {a['attr_delta_dex'][0]:+.3f} dex explained; i-band contours\n"
        f"completeness {a['ig_completeness_dex'][0]:.4f} dex, {int(a['ig_steps'][0])} steps per baseline",
        fontsize=9,
    )
    ax.set_xlabel("arcmin")

    ax = axes_top[2]
    groups = list(CONTRIBUTION_GROUPS)
    contrib = [float(row.get(f"contrib_{g}") or 0.0) for g in groups]
    ypos = np.arange(len(groups))
    ax.barh(
        ypos + 0.2,
        contrib,
        height=0.4,
        color=["C3" if v > 0 else "C0" for v in contrib],
        label="contribution",
    )
    band_sums = [float(a[f"attr_{b}_dex"][0]) for b in BANDS]
    ax.barh(ypos[: len(BANDS)] - 0.2, band_sums, height=0.4, color="0.6", label="map sum (vs blank sky)")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(ypos, groups)
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    ax.set_xlabel("dex")
    ref = row.get("log10_m500_reference")
    ax.set_title(
        f"exact contributions to log10 M500 = {row.get('log10_m500', float('nan')):.3f} from the\n"
        f"population-mean input ({ref:.3f}); grey: the map's band sums, from blank sky"
        if ref is not None
        else "contributions",
        fontsize=9,
    )

    _masses_panel(axes_top[3], row)

    for k, b in enumerate(BANDS):
        ax = axes_bottom[k]
        ax.imshow(maps[k], origin="lower", cmap="RdBu_r", norm=norm, extent=extent)
        ax.set_title(f"{b}: map {band_sums[k]:+.3f} dex, contribution {contrib[k]:+.3f} dex", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _edge_radius(regions: np.ndarray, pixel_scale: float) -> float:
    """R_lambda (arcmin) from the region masks: the largest radius of a pixel not outside it."""
    from ..attribution import REGIONS

    h, w = regions.shape[-2:]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - (w - 1) / 2, yy - (h - 1) / 2)
    inside = ~regions[REGIONS.index("outside")]
    return float(r[inside].max()) * pixel_scale / 60.0


def _masses_panel(ax, row: dict) -> None:
    entries = [
        ("headline", row.get("log10_m500"), row.get("log10_m500_err"), "C0"),
        ("catalogue λ", row.get("log10_m500_lambda"), row.get("log10_m500_lambda_err"), "C1"),
        ("pixels only", row.get("log10_m500_pixels"), row.get("log10_m500_pixels_err"), "C4"),
    ]
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
    lam = row.get("richness_catalog")
    ax.set_title(
        f"masses (68% error); catalogue λ = {lam:.0f}; quality {row.get('quality', 0)}"
        if lam is not None and np.isfinite(lam)
        else f"masses (68% error); quality {row.get('quality', 0)}",
        fontsize=9,
    )
