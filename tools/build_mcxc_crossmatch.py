"""Build ``survey_mass/data/mcxc_redmapper.parquet``: the MCXC clusters matched to the shipped redMaPPer DR8 table.

    python tools/build_mcxc_crossmatch.py ../shared/data/mcxc.fits [--limits]

``--limits`` prints each MCXC survey's flux limit as :data:`survey_mass.labels.MCXC_FLUX_LIMITS` holds it (the
lowest L500 flux among the survey's clusters outside the cross-match, :func:`survey_mass.labels.mcxc_survey_limits`).

``mcxc.fits`` is CDS's file of the MCXC meta-catalogue (Piffaretti et al. 2011, A&A 534, A109; CDS J/A+A/534/A109),
unchanged. The rule is :func:`survey_mass.labels.mcxc_crossmatch`.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path


def main() -> int:
    from astropy.table import Table

    from survey_mass.candidates import load_redmapper
    from survey_mass.labels import MCXC_FILE, mcxc_crossmatch, mcxc_survey_limits
    from survey_mass.resources import data_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mcxc", help="CDS's mcxc.fits")
    ap.add_argument("--out", default=str(data_path(MCXC_FILE)))
    ap.add_argument("--limits", action="store_true", help="print the per-survey flux limits, write nothing")
    args = ap.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CDS's unit string '10+14Msun' is not a FITS unit
        mcxc = Table.read(args.mcxc).to_pandas()
    m = mcxc_crossmatch(mcxc, load_redmapper())
    if args.limits:
        for k, v in mcxc_survey_limits(mcxc, set(m["mcxc"])).items():
            print(f'    "{k}": {v:.3g},')
        return 0
    m.to_parquet(Path(args.out), index=False)
    print(f"{len(m)} MCXC clusters matched to redMaPPer DR8 -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
