"""Every estimator of a survey-mass catalogue against the real MCXC X-ray masses (#29: where the product stands).

    python benchmarks/mcxc_real_masses.py --catalog dr12_masses [--json benchmarks/results/mcxc_real_masses.json]

At the redMaPPer clusters that MCXC also holds (``survey_mass.labels.load_mcxc_labels``, 365), with the real
lambda, z and central galaxy and the mock's pixels (the default dr12 run), for each estimator: bias (mean of
estimate - label) and MAE, each with a bootstrap 95% interval; bias per tertile of lambda and of z; the 68%
interval's coverage (the catalogue's own error, no label error) per tertile; the headline's MAE over the
catalogue lambda's (paired bootstrap).

The strongest baselines a user already has, fitted on the real labels themselves but scored out of fold (10
folds, seeded: no row is scored by a fit that saw it): label ~ 1 + ln lambda + ln(1 + z) (``oof_lambda``) and
the same plus the central galaxy's absolute i magnitude, i_BCG - DM(z) (``oof_lambda_bcg``). No selection is
folded in anywhere: MCXC is X-ray selected from the same L_X its mass is made from, so these are raw numbers, the
baseline `validate --real` is to improve on, not a verdict.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ESTIMATORS = (
    "log10_m500",
    "log10_m500_lambda",
    "log10_m500_pixels",
    "log10_m500_richness",
    "log10_m500_given_detection",
)


def _boot(values: np.ndarray, stat, rng, n_boot: int) -> list[float]:
    idx = rng.integers(0, len(values), (n_boot, len(values)))
    s = np.array([stat(values[i]) for i in idx])
    return [float(np.quantile(s, 0.025)), float(np.quantile(s, 0.975))]


def _tertiles(v: np.ndarray) -> tuple[np.ndarray, list[float]]:
    edges = np.nanquantile(v, [1 / 3, 2 / 3])
    return np.digitize(v, edges), edges.tolist()


def _per_bin(values: np.ndarray, ok: np.ndarray, bins: np.ndarray) -> list[float | None]:
    return [float(values[ok & (bins == k)].mean()) if (ok & (bins == k)).any() else None for k in range(3)]


def score(catalog: str | Path, *, n_boot: int = 2000, seed: int = 29) -> dict:
    from survey_mass import astro
    from survey_mass.candidates import load_redmapper
    from survey_mass.labels import load_mcxc_labels
    from survey_mass.testing import read_catalog
    from survey_mass.validate_real import out_of_fold

    labels = load_mcxc_labels().set_index("id")
    errs = [f"{e}_err" for e in ESTIMATORS]
    cat = read_catalog(catalog, ["id", "z", "richness_catalog", *ESTIMATORS, *errs]).set_index("id")
    both = cat.index.intersection(labels.index)
    cat, lab = cat.loc[both].copy(), labels.loc[both, "log10_m500"].to_numpy(float)
    rng = np.random.default_rng(seed)
    lam, z = cat["richness_catalog"].to_numpy(float), cat["z"].to_numpy(float)
    bcg = load_redmapper().set_index("id")["bcg_mag_i"].reindex(both).to_numpy(float)
    base = np.stack([np.ones_like(z), np.log(lam), np.log1p(z)], 1)
    cat["oof_lambda"] = out_of_fold(base, lab, seed=seed)
    cat["oof_lambda_bcg"] = out_of_fold(
        np.column_stack([base, bcg - astro.distance_modulus(z)]), lab, seed=seed
    )
    t_lam, e_lam = _tertiles(lam)
    t_z, e_z = _tertiles(z)
    out: dict = {
        "catalog": str(catalog),
        "matched": int(both.size),
        "lambda_tertile_edges": e_lam,
        "z_tertile_edges": e_z,
    }
    for e in (*ESTIMATORS, "oof_lambda", "oof_lambda_bcg"):
        d = cat[e].to_numpy(float) - lab
        ok = np.isfinite(d)
        r = d[ok]
        err = cat[f"{e}_err"].to_numpy(float) if f"{e}_err" in cat else None
        inside = None if err is None else (np.abs(d) <= err).astype(float)
        out[e] = {
            "n": int(ok.sum()),
            "bias": float(r.mean()) if r.size else None,
            "bias_95": _boot(r, np.mean, rng, n_boot) if r.size > 2 else None,
            "mae": float(np.abs(r).mean()) if r.size else None,
            "mae_95": _boot(np.abs(r), np.mean, rng, n_boot) if r.size > 2 else None,
            "bias_by_lambda_tertile": _per_bin(d, ok, t_lam),
            "bias_by_z_tertile": _per_bin(d, ok, t_z),
            "coverage_68": None if inside is None else float(inside[ok].mean()),
            "coverage_68_by_lambda_tertile": None if inside is None else _per_bin(inside, ok, t_lam),
            "coverage_68_by_z_tertile": None if inside is None else _per_bin(inside, ok, t_z),
        }
    a = np.abs(cat["log10_m500"].to_numpy(float) - lab)
    b = np.abs(cat["log10_m500_lambda"].to_numpy(float) - lab)
    ok = np.isfinite(a) & np.isfinite(b)
    pairs = np.stack([a[ok], b[ok]], 1)
    out["headline_over_lambda_mae"] = float(a[ok].mean() / b[ok].mean())
    out["headline_over_lambda_mae_95"] = _boot(pairs, lambda p: p[:, 0].mean() / p[:, 1].mean(), rng, n_boot)
    return out


def markdown(r: dict) -> str:
    def three(v, fmt):
        return "" if v is None else " / ".join("—" if x is None else format(x, fmt) for x in v)

    rows = [
        f"MCXC x redMaPPer clusters in the catalogue: {r['matched']}; lambda tertile edges "
        f"{r['lambda_tertile_edges'][0]:.1f}, {r['lambda_tertile_edges'][1]:.1f}; z tertile edges "
        f"{r['z_tertile_edges'][0]:.3f}, {r['z_tertile_edges'][1]:.3f}. `oof_*`: least squares on the real labels, "
        "scored out of fold (10 folds).",
        "",
        "| estimator | n | bias (95%) | MAE (95%) | bias by λ tertile | bias by z tertile | 68% coverage "
        "(by λ tertile) |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in (*ESTIMATORS, "oof_lambda", "oof_lambda_bcg"):
        s = r[e]
        if not s["n"]:
            rows.append(f"| `{e}` | 0 | | | | | |")
            continue
        cov = (
            ""
            if s["coverage_68"] is None
            else f"{s['coverage_68']:.2f} ({three(s['coverage_68_by_lambda_tertile'], '.2f')})"
        )
        rows.append(
            f"| `{e}` | {s['n']} | {s['bias']:+.3f} ({s['bias_95'][0]:+.3f}, {s['bias_95'][1]:+.3f}) | "
            f"{s['mae']:.3f} ({s['mae_95'][0]:.3f}, {s['mae_95'][1]:.3f}) | {three(s['bias_by_lambda_tertile'], '+.3f')} | "
            f"{three(s['bias_by_z_tertile'], '+.3f')} | {cov} |"
        )
    lo, hi = r["headline_over_lambda_mae_95"]
    rows += [
        "",
        f"Headline MAE / catalogue-lambda MAE: {r['headline_over_lambda_mae']:.3f} ({lo:.3f}–{hi:.3f}).",
    ]
    return "\n".join(rows) + "\n"


def main() -> int:
    from _results import report

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", required=True, help="a survey-mass catalogue (the default dr12 run's)")
    ap.add_argument("--json", help="write the figures here, and a .md beside it")
    args = ap.parse_args()
    r = score(args.catalog)
    report(r, markdown(r), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
