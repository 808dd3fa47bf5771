"""A catalogue-only baseline with the central galaxy: log M = a + b ln(l/40) + c (z-0.3) + d (i_BCG - DM(z) + 22),
heteroscedastic sigma, fitted on the training store's labels and non-detections with the survey likelihood;
scored on the held-out catalogue.

Usage: python benchmarks/lambda_bcg_baseline.py TRAIN_STORE HELD_OUT_CATALOG
(the README's figures: train.zarr of the shipped model's training, and a `survey-mass validate` catalogue of the
held-out box 200-240, 20-45 at seed 11)."""

import sys

import numpy as np
import torch
from scipy.optimize import minimize

from survey_mass import astro
from survey_mass.candidates import load_redmapper
from survey_mass.models.networks import log_sigma_of
from survey_mass.selection import selection_for_store
from survey_mass.store import open_store
from survey_mass.testing import read_catalog
from survey_mass.training.train import read_table

st = open_store(sys.argv[1])
t = read_table(st)
sel = selection_for_store(st)
cat = load_redmapper().set_index("id")
bcg = cat["bcg_mag_i"].reindex(t.id).to_numpy(float)
ok = np.isfinite(bcg) & np.isfinite(t.richness)


def design(lam, z, b):
    return np.stack([np.ones_like(z), np.log(lam / 40), z - 0.3, b - astro.distance_modulus(z) + 22.0], 1)


X = design(t.richness[ok], t.z[ok], bcg[ok])
y = sel.to_true(t.label[ok])  # hydrostatic mock labels onto the true scale, as training takes them
lab = np.isfinite(y)
m_lim = sel.m_lim(t.z[ok], t.flux_limit[ok])


def moments(p, X):
    mu = X @ p[:4]
    return mu, np.exp(log_sigma_of(torch.from_numpy(mu), float(p[4]), float(p[5])).numpy())


def nll(p):
    mu, s = moments(p, X)
    with np.errstate(all="ignore"):
        v = np.sum(sel.nll(mu, s, y, lab, m_lim, joint=True))
    return v if np.isfinite(v) else 1e30


c0, *_ = np.linalg.lstsq(X[lab], y[lab], rcond=None)
res = minimize(
    nll,
    np.r_[c0, np.log(0.15), 0.0],
    method="Nelder-Mead",
    options={"maxiter": 20000, "xatol": 1e-6, "fatol": 1e-6},
)
print("coef", np.round(res.x, 4))
df = read_catalog(sys.argv[2])  # the primary catalog only (never the margin cache)
b = cat["bcg_mag_i"].reindex(df["id"]).to_numpy(float)
Xh = design(df["richness_catalog"].to_numpy(float), df["z"].to_numpy(float), b)
mu, _ = moments(res.x, Xh)
T = df["log10_m500_true"].to_numpy(float)
common = df[["log10_m500", "log10_m500_lambda", "log10_m500_pixels", "log10_m500_richness"]].notna().all(
    axis=1
).to_numpy() & np.isfinite(mu)
lam = df["richness_catalog"].to_numpy(float)[common]
k = np.digitize(lam, np.quantile(lam, [1 / 3, 2 / 3]))
preds = {
    "lambda+BCG (catalogue)": mu,
    "headline": df["log10_m500"].to_numpy(),
    "lambda": df["log10_m500_lambda"].to_numpy(),
    "oracle": df["log10_m500_oracle"].to_numpy(),
}
absd = {n: np.abs(p[common] - T[common]) for n, p in preds.items()}
idx = np.random.default_rng(29).integers(0, common.sum(), size=(1000, common.sum()))
base = absd["lambda+BCG (catalogue)"][idx].mean(axis=1)
for name, pred in preds.items():
    d = pred[common] - T[common]
    lo, hi = np.quantile(absd[name][idx].mean(axis=1) / base, [0.025, 0.975])
    ratio = np.mean(np.abs(d)) / np.mean(absd["lambda+BCG (catalogue)"])
    tert = " / ".join(f"{d[k == i].mean():+.3f}" for i in range(3))
    print(
        f"{name:24s} n={common.sum()} MAE {np.mean(np.abs(d)):.4f} bias {np.mean(d):+.4f} by lambda tertile {tert}"
        f"  MAE / lambda+BCG's {ratio:.3f} ({lo:.3f}-{hi:.3f})"
    )
