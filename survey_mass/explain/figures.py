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
