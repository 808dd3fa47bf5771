"""Draw docs/mock_clusters.png: gri composites of mock clusters across mass and redshift from a mock store.

Usage: python tools/make_mock_figure.py STORE [--out docs/mock_clusters.png]
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from survey_mass.explain.figures import _plt, gri_composite
    from survey_mass.store import open_store

    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--out", default="docs/mock_clusters.png")
    args = ap.parse_args()
    st = open_store(args.store)
    rows = []
    for p in st.partitions[::3]:
        c = st.columns(p)
        for k in range(len(c["id"])):
            rows.append(
                (
                    p,
                    k,
                    float(c["z"][k]),
                    float(c["log10_m500_true"][k]),
                    float(c["richness"][k]),
                    str(c["name"][k]),
                )
            )
    rows = np.array(rows, dtype=object)
    z = rows[:, 2].astype(float)
    m = rows[:, 3].astype(float)
    zbins = [(0.08, 0.15), (0.2, 0.28), (0.33, 0.4), (0.45, 0.55)]
    mbins = [(13.7, 13.9), (14.1, 14.3), (14.45, 14.65), (14.8, 15.4)]
    plt = _plt()
    fig, axes = plt.subplots(len(mbins), len(zbins), figsize=(11, 11.8))
    for i, (mlo, mhi) in enumerate(mbins[::-1]):
        for j, (zlo, zhi) in enumerate(zbins):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            sel = np.flatnonzero((z >= zlo) & (z < zhi) & (m >= mlo) & (m < mhi))
            if not sel.size:
                ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
                continue
            p, k, zz, mm, lam, name = rows[sel[0]]
            ax.imshow(gri_composite(st.images(int(p), int(k), int(k) + 1)[0]), origin="lower")
            ax.set_title(f"{name}\nz={zz:.2f} log M500={mm:.2f} λ={lam:.0f}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"log M500 {mlo}-{mhi}")
            if i == len(mbins) - 1:
                ax.set_xlabel(f"z {zlo}-{zhi}")
    fig.suptitle(
        f'Mock SDSS gri composites ({st.cutout_size}x{st.cutout_size} px of {st.pixel_scale}", '
        "Lupton asinh stretch) at real redMaPPer clusters",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
