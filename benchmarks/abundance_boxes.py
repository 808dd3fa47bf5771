"""The mock's predicted redMaPPer abundance against the real catalogue, box by box and in both redshift ranges
(#29 item 2's abundance criterion: within 15% everywhere).

    python benchmarks/abundance_boxes.py [--json benchmarks/results/abundance_boxes.json]

Boxes of 40 deg x 25 deg over the dr12 footprint (and two over the southern stripe), each cut to the footprint's
MOC; those under 500 deg^2 of footprint are skipped. Per box and z range: the real count of lambda >= 20
clusters and the mock's prediction (``survey_mass.mock.abundance.predicted_abundance`` times the box's area),
overall and for lambda >= 40. The footprint is the DR12 imaging MOC, about 10% larger than redMaPPer DR8's
masked area (10,400 deg^2), so ratios near 1.1 are partly area.
"""

from __future__ import annotations

import argparse

Z_RANGES = ((0.1, 0.33), (0.33, 0.55))
BOXES = [f"box:{a},{a + 40},{d},{d + 25}" for a in (110, 150, 190, 230) for d in (-5, 20, 45)] + [
    "box:310,360,-10,35",
    "box:0,50,-10,35",
]


def measure() -> list[dict]:
    from survey_mass.candidates import load_redmapper
    from survey_mass.footprint import Footprint, parse_footprint
    from survey_mass.mock.abundance import predicted_abundance

    cat = load_redmapper()
    dr12 = parse_footprint("dr12")
    ra, dec, z, lam = (cat[c].to_numpy() for c in ("ra", "dec", "z", "richness"))
    rows = []
    for zr in Z_RANGES:
        pred = predicted_abundance(z_range=zr)
        for b in BOXES:
            moc = dr12.moc.intersection(parse_footprint(b).moc)
            area = moc.sky_fraction * 41252.96
            if area < 500:
                continue
            inside = Footprint(name=b, moc=moc, order=2).contains(ra, dec) & (z > zr[0]) & (z < zr[1])
            n, n40 = int((inside & (lam >= 20)).sum()), int((inside & (lam >= 40)).sum())
            rows.append(
                {
                    "z_range": list(zr),
                    "box": b,
                    "area_deg2": round(area, 1),
                    "real": n,
                    "predicted_over_real": round(float(pred.sum() * area / n), 3),
                    "real_lambda40": n40,
                    "predicted_over_real_lambda40": round(float(pred[3:].sum() * area / max(n40, 1)), 3),
                }
            )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| z | box (∩ dr12) | area deg² | real λ ≥ 20 | predicted / real | real λ ≥ 40 | predicted / real |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['z_range'][0]}–{r['z_range'][1]} | {r['box']} | {r['area_deg2']:.0f} | {r['real']} | "
            f"{r['predicted_over_real']:.2f} | {r['real_lambda40']} | {r['predicted_over_real_lambda40']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    from _results import report

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = measure()
    report(rows, markdown(rows), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
