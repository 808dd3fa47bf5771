"""Build the shipped ``dr12`` footprint MOC from real SDSS geometry (run once; the MOC is committed).

Sources (real mangle polygon files shipped in the PyPI package ``randomsdss==0.5.0``, read with pymangle):

* ``randomsdss/data/dr12/DR12.SDSS.ply``: SDSS legacy tiling window (DR12 ``tmp_window_unif.ply``), ~8,078 deg^2.
* ``randomsdss/data/dr12/DR12.BOSS.ply``: BOSS geometry (``boss_geometry_2014_05_28.ply``), ~10,338 deg^2.

Together they hold 98.0% of the real redMaPPer DR8 clusters and 10,838 deg^2: the DR8 imaging outside the
spectroscopic tiling (the SEGUE and southern BOSS imaging stripes) is missing. SDSS's own stripe-extent tables
(``tsChunk.drN.best.par``) could not be found offline, so the imaging stripes are added from two facts:

* the stripe geometry: great circles 2.5 deg wide in survey coordinates (eta, lambda), stripe n <= 46 centred at
  eta = 2.5 n - 57.5 deg and the southern stripes on the back of the sphere (Stoughton et al. 2002);
* each stripe's extent along lambda, bounded by where real SDSS detections lie in it: the redMaPPer central
  galaxies and the 10,000 SDSS spectroscopic galaxies shipped in ``survey_mass/data`` (a stripe needs at least
  15 detections). This is data-derived, and it is why the test that >= 99% of redMaPPer clusters lie inside is
  partly by construction for the added stripes; the polygon part alone holds 98.0%.

The footprint is the union, rasterised onto nested HEALPix by testing pixel centres and refining only the
pixels on the boundary, from order 6 down to ``--order`` (default 10, 3.4 arcmin cells).

Usage::

    pip install ".[footprint-build]"
    python tools/build_dr12_moc.py --out survey_mass/data/dr12_imaging_moc.fits
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import healpy as hp
import numpy as np


def _inside(mangles, order: int, pix: np.ndarray) -> np.ndarray:
    ra, dec = hp.pix2ang(2**order, pix, nest=True, lonlat=True)
    out = np.zeros(pix.size, dtype=bool)
    for m in mangles:
        todo = ~out
        if todo.any():
            out[todo] |= m.polyid(ra[todo], dec[todo]) >= 0
    return out


def rasterise(mangles, start_order: int = 6, final_order: int = 10) -> dict[int, np.ndarray]:
    """Return {order: nested pixels fully assigned at that order} covering the union of the masks."""
    order = start_order
    pix = np.arange(hp.order2npix(order))
    inside = _inside(mangles, order, pix)
    done: dict[int, list[np.ndarray]] = {}
    while True:
        nside = 2**order
        inset = set(pix[inside].tolist())
        # a pixel is on the boundary if any neighbour disagrees with it
        neigh = hp.get_all_neighbours(nside, pix, nest=True).T  # (n, 8)
        neigh_in = np.array([[n in inset for n in row if n >= 0] for row in neigh], dtype=object)
        boundary = np.array(
            [(any(r) != inside[k]) or (not all(r) and inside[k]) for k, r in enumerate(neigh_in)]
        )
        if order == final_order:
            done.setdefault(order, []).append(pix[inside])
            break
        done.setdefault(order, []).append(pix[inside & ~boundary])
        refine = pix[boundary]
        print(f"order {order}: {inside.sum()} inside, {boundary.sum()} boundary pixels refined", flush=True)
        children = (refine[:, None] * 4 + np.arange(4)[None, :]).ravel()
        order += 1
        pix = children
        inside = _inside(mangles, order, pix)
    return {o: np.concatenate(v) for o, v in done.items()}


def survey_coords(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SDSS survey coordinates (lambda, eta) in degrees, and whether the point is on the back (southern) side.

    Node at RA = 95 deg: lambda = -asin(cos d cos(a - 95)), eta = atan2(sin d, cos d sin(a - 95)) - 32.5 (Stoughton et al.
    2002), folded so |eta| <= 90. Southern-side lambda is returned on [0, 360) so that stripes do not wrap.
    """
    a = np.radians(ra - 95.0)
    d = np.radians(dec)
    x, y, z = np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)
    lam = -np.degrees(np.arcsin(np.clip(x, -1, 1)))
    eta = np.degrees(np.arctan2(z, y)) - 32.5
    eta = np.where(eta < -180, eta + 360, eta)
    eta = np.where(eta >= 180, eta - 360, eta)
    back = np.abs(eta) > 90
    eta = np.where(back, eta - 180 * np.sign(eta), eta)
    lam = np.where(back, (180 - lam) % 360.0, lam)
    return lam, eta, back


def stripe_number(eta: np.ndarray) -> np.ndarray:
    """Stripe whose 2.5-deg band holds eta (centre 2.5 n - 57.5; southern stripes use the same n - 72 labels)."""
    return np.floor((eta + 57.5 + 1.25) / 2.5).astype(int)


def stripe_cells(ra: np.ndarray, dec: np.ndarray, order: int, min_count: int = 15) -> tuple[np.ndarray, list]:
    """Nested pixels at ``order`` inside the detection-bounded stripes, and the (side, n, count, lo, hi) table."""
    lam, eta, back = survey_coords(ra, dec)
    n = stripe_number(eta)
    nside = 2**order
    pix = np.arange(hp.nside2npix(nside))
    pra, pdec = hp.pix2ang(nside, pix, nest=True, lonlat=True)
    plam, peta, pback = survey_coords(pra, pdec)
    pn = stripe_number(peta)
    mask = np.zeros(pix.size, dtype=bool)
    table = []
    for side in (False, True):
        for k in np.unique(n[back == side]):
            sel = (n == k) & (back == side)
            if sel.sum() < min_count:
                continue
            lo, hi = float(lam[sel].min()), float(lam[sel].max())
            table.append(("south" if side else "north", int(k) + (72 if side else 0), int(sel.sum()), lo, hi))
            mask |= (pn == k) & (pback == side) & (plam >= lo) & (plam <= hi)
    return pix[mask], table


def main() -> None:
    import pymangle
    import randomsdss
    from mocpy import MOC

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("survey_mass/data/dr12_imaging_moc.fits"))
    ap.add_argument("--order", type=int, default=10)
    args = ap.parse_args()

    base = Path(randomsdss.__file__).parent / "data" / "dr12"
    mangles = [pymangle.Mangle(str(base / "DR12.BOSS.ply")), pymangle.Mangle(str(base / "DR12.SDSS.ply"))]
    t0 = time.time()
    cells = rasterise(mangles, final_order=args.order)
    moc = None
    for o, p in cells.items():
        part = MOC.from_healpix_cells(
            p.astype(np.uint64), np.full(p.size, o, dtype=np.uint8), max_depth=args.order
        )
        moc = part if moc is None else moc.union(part)
    poly_area = moc.sky_fraction * 4 * np.pi * (180 / np.pi) ** 2
    print(f"mangle polygons: {poly_area:.1f} deg^2")

    import pandas as pd

    data = Path(__file__).resolve().parents[1] / "survey_mass" / "data"
    rm = pd.read_parquet(data / "redmapper_dr8_v5.10.parquet")
    gal = pd.read_parquet(data / "sdss_galaxies_10k.parquet")
    ra = np.concatenate([rm["ra"].to_numpy(), gal["ra"].to_numpy()])
    dec = np.concatenate([rm["dec"].to_numpy(), gal["dec"].to_numpy()])
    pix, table = stripe_cells(ra, dec, args.order)
    for row in table:
        side, n, count, lo, hi = row
        print(f"stripe {side:5s} {n:3d}: {count:5d} detections, lambda {lo:8.2f} .. {hi:8.2f} deg")
    stripes = MOC.from_healpix_cells(
        pix.astype(np.uint64), np.full(pix.size, args.order, np.uint8), args.order
    )
    moc = moc.union(stripes)
    area = moc.sky_fraction * 4 * np.pi * (180 / np.pi) ** 2
    moc.save(str(args.out), format="fits", overwrite=True)
    print(f"wrote {args.out}: {area:.1f} deg^2 at order {args.order} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
