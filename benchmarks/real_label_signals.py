"""Which catalogue signals beyond lambda carry mass on *real* labels (#30, item 2): the 365 MCXC X-ray masses of
redMaPPer DR8 clusters, out of fold.

    python benchmarks/real_label_signals.py [--shared ../shared/data] [--json benchmarks/results/real_label_signals.json]

The real redMaPPer table (``../shared/data/redmapper_dr8_v5.10.parquet``) carries, beside lambda and z, three
signals the literature ties to mass at fixed richness:

* the central galaxy's i magnitude (``model_mag_i``, as an absolute magnitude i - DM(z));
* the centring probability ``p_cen_1`` (miscentred clusters: 10-20%, Zhang et al. 2019);
* the members' total i luminosity ``ilum`` (satellite light; ln(ilum / lambda) is the light per member).

The magnitude gap (Hearin et al. 2013) needs the second-brightest member, which is not in the offline table.

Each set of inputs is a least-squares fit of log10 M500 (MCXC) on [1, ln lambda, ln(1 + z), ...], scored out
of fold (10 folds, repeated over ``--repeats`` fold assignments and averaged per cluster), so nothing is scored
by a fit that saw it. The MAE, the Spearman rank correlation and the residual scatter are given with 95%
bootstrap intervals of the clusters, and the MAE change against lambda + z + BCG with a paired interval. The
fits ignore the labels' X-ray selection (it biases every set's level alike; only the comparison is read here).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from _results import report

SETS = {
    "λ + z": [],
    "λ + z + BCG": ["bcg"],
    "λ + z + BCG + p_cen": ["bcg", "p_cen"],
    "λ + z + BCG + ln(ilum/λ)": ["bcg", "ln_ilum_per_member"],
    "λ + z + BCG + p_cen + ln(ilum/λ)": ["bcg", "p_cen", "ln_ilum_per_member"],
    "λ + z + p_cen": ["p_cen"],
    "λ + z + ln(ilum/λ)": ["ln_ilum_per_member"],
}


def table(shared: Path) -> pd.DataFrame:
    from survey_mass import astro
    from survey_mass.labels import mcxc_label_table

    lab = mcxc_label_table()
    rm = pd.read_parquet(shared / "redmapper_dr8_v5.10.parquet").set_index("id")
    rm = rm.loc[rm.index.intersection(lab["id"])]
    lab = lab[lab["id"].isin(rm.index)].reset_index(drop=True)
    r = rm.loc[lab["id"]]
    z = r["z_lambda"].to_numpy(float)
    return pd.DataFrame(
        {
            "id": lab["id"].to_numpy(),
            "y": lab["log10_m500"].to_numpy(float),
            "ln_lambda": np.log(r["lambda"].to_numpy(float)),
            "ln_1pz": np.log1p(z),
            "bcg": r["model_mag_i"].to_numpy(float) - astro.distance_modulus(z) + 22.0,
            "p_cen": r["p_cen_1"].to_numpy(float),
            "ln_ilum_per_member": np.log(r["ilum"].to_numpy(float) / r["lambda"].to_numpy(float)),
        }
    )


def oof_predictions(t: pd.DataFrame, extra: list[str], repeats: int) -> np.ndarray:
    from survey_mass.validate_real import out_of_fold

    x = np.column_stack([np.ones(len(t)), t["ln_lambda"], t["ln_1pz"], *[t[c] for c in extra]])
    return np.mean([out_of_fold(x, t["y"].to_numpy(), seed=s) for s in range(repeats)], axis=0)


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def measure(t: pd.DataFrame, repeats: int, n_boot: int, seed: int) -> dict:
    y = t["y"].to_numpy()
    preds = {name: oof_predictions(t, extra, repeats) for name, extra in SETS.items()}
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    ref = np.abs(preds["λ + z + BCG"] - y)
    out = {}
    for name, p in preds.items():
        a = np.abs(p - y)
        boot_mae = a[idx].mean(axis=1)
        boot_rho = [spearman(p[i], y[i]) for i in idx[:300]]
        boot_sd = (p - y)[idx].std(axis=1)
        out[name] = {
            "mae": float(a.mean()),
            "mae_95": [float(v) for v in np.quantile(boot_mae, [0.025, 0.975])],
            "spearman": spearman(p, y),
            "spearman_95": [float(v) for v in np.quantile(boot_rho, [0.025, 0.975])],
            "scatter": float((p - y).std()),
            "scatter_95": [float(v) for v in np.quantile(boot_sd, [0.025, 0.975])],
            "delta_mae_vs_lambda_bcg": float(a.mean() - ref.mean()),
            "delta_mae_vs_lambda_bcg_95": [
                float(v) for v in np.quantile(boot_mae - ref[idx].mean(axis=1), [0.025, 0.975])
            ],
        }
    return out


def markdown(n: int, res: dict, repeats: int, n_boot: int) -> str:
    lines = [
        f"Real-label tests of catalogue signals beyond λ (#30, item 2): {n} MCXC X-ray masses of redMaPPer DR8 "
        f"clusters, least squares out of fold (10 folds, averaged over {repeats} fold assignments), 95% "
        f"intervals from {n_boot} bootstrap resamples of the clusters (the Spearman's from 300).",
        "",
        "| inputs | MAE (dex) | ΔMAE vs λ + z + BCG (paired 95%) | Spearman ρ | residual scatter |",
        "|---|---|---|---|---|",
    ]
    for name, r in res.items():
        lo, hi = r["delta_mae_vs_lambda_bcg_95"]
        lines.append(
            f"| {name} | {r['mae']:.4f} ({r['mae_95'][0]:.3f}–{r['mae_95'][1]:.3f}) | "
            f"{r['delta_mae_vs_lambda_bcg']:+.4f} ({lo:+.4f}, {hi:+.4f}) | "
            f"{r['spearman']:.3f} ({r['spearman_95'][0]:.3f}–{r['spearman_95'][1]:.3f}) | "
            f"{r['scatter']:.4f} ({r['scatter_95'][0]:.3f}–{r['scatter_95'][1]:.3f}) |"
        )
    lines += [
        "",
        "A signal helps where its ΔMAE interval lies below zero. The magnitude gap is not testable offline (the "
        "members are not in the table). The fits ignore the X-ray selection of the labels; it moves every "
        "set's level alike.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=30)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    t = table(Path(a.shared))
    res = measure(t, a.repeats, a.boot, a.seed)
    report(
        {"n": len(t), "repeats": a.repeats, "boot": a.boot, "results": res},
        markdown(len(t), res, a.repeats, a.boot),
        a.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
