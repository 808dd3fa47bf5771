"""Prediction for one partition: a pure function of (model bundle, partition arrays). No Dask here.

For every cutout:

* **CNN mass.** Each of the k fold regressors gives (mu_k, sigma_k) from the frozen stage-1 features. Then
  ``log10_m500`` = mean_k mu_k;
  ``log10_m500_err_aleatoric`` = s * sqrt(mean_k sigma_k^2);
  ``log10_m500_err_fold`` = s * sqrt(var_k mu_k + mean_k e_k^2), the model's uncertainty: the folds' spread and
  e_k, each head's own parameter uncertainty (its Laplace posterior);
  ``log10_m500_err_extrapolation`` = tau * sqrt(1 - P_det), P_det the probability that the labels' X-ray
  selection would detect the cluster (near 0 far below its flux limit) and tau calibrated on the simulated
  survey's true masses (:func:`survey_mass.selection.fit_extrapolation_tau`);
  ``log10_m500_err`` = the three parts in quadrature, s * sqrt(mean_k sigma_k^2 + var_k mu_k + mean_k e_k^2)
  and the extrapolation, with s the out-of-fold calibration scale.
* **Richness baseline.** ``richness`` (lambda_hat from sep detections) and ``log10_m500_richness`` (mean of the
  fold calibrations).
* **Quality.** The store's bits plus what the pixels show. Rows whose pixels cannot support a mass (a missing
  band, no redshift, unreadable) get NaN masses and keep their bits.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.networks import band_features
from ..quality import Quality, image_quality

NO_MASS = Quality.MISSING_BAND | Quality.NO_REDSHIFT | Quality.UNREADABLE
#: standardised features are clipped at FEATURE_CLIP; a row with any beyond OOD_FLAG is flagged OUT_OF_DISTRIBUTION
FEATURE_CLIP = 10.0
OOD_FLAG = 30.0


def clip(x):
    """Clip standardised features to +-FEATURE_CLIP (identity for every in-distribution row)."""
    return x.clamp(-FEATURE_CLIP, FEATURE_CLIP)


OUTPUT_COLUMNS = (
    "log10_m500",
    "log10_m500_err",
    "log10_m500_err_aleatoric",
    "log10_m500_err_fold",
    "log10_m500_err_extrapolation",
    "richness",
    "log10_m500_richness",
    "quality",
)


@torch.no_grad()
def cnn_masses(
    bundle, images: np.ndarray, z: np.ndarray, *, batch_size: int = 64, device="cpu"
) -> dict[str, np.ndarray]:
    """Fold-ensemble masses and their error parts for (N, 5, H, W) images at redshifts z."""
    n = images.shape[0]
    ood = np.zeros(n, bool)
    mus = np.full((len(bundle.heads), n), np.nan)
    sig2 = np.full((len(bundle.heads), n), np.nan)
    epi2 = np.full((len(bundle.heads), n), np.nan)
    mean = torch.from_numpy(bundle.feature_mean).to(device)
    std = torch.from_numpy(bundle.feature_std).to(device)
    for s in range(0, n, batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).to(device)
        f, log_sigma = band_features(bundle.backbone, x)
        zz = torch.from_numpy(np.nan_to_num(z[s : s + batch_size]).astype(np.float32)).to(device)[:, None]
        feats = torch.cat([f, zz, log_sigma], dim=1)
        feats = (feats - mean) / std
        ood[s : s + batch_size] = (feats.abs() > OOD_FLAG).any(dim=1).cpu().numpy()
        feats = clip(feats)
        for k, head in enumerate(bundle.heads):
            mu, ls, epi = head.moments(feats)
            mus[k, s : s + batch_size] = mu.cpu().numpy()
            sig2[k, s : s + batch_size] = np.exp(2 * ls.cpu().numpy())
            epi2[k, s : s + batch_size] = epi.cpu().numpy()
    scale = float(bundle.card.get("calibration_scale", 1.0))
    ale = np.sqrt(sig2.mean(axis=0))
    fold = np.sqrt(mus.var(axis=0) + epi2.mean(axis=0))
    mu = mus.mean(axis=0)
    extra = extrapolation(bundle, mu, scale * np.hypot(ale, fold), z)
    return {
        "log10_m500": mu,
        "log10_m500_err": np.sqrt((scale * ale) ** 2 + (scale * fold) ** 2 + extra**2),
        "log10_m500_err_aleatoric": scale * ale,
        "log10_m500_err_fold": scale * fold,
        "log10_m500_err_extrapolation": extra,
        "out_of_distribution": ood,
    }


def extrapolation(bundle, mu: np.ndarray, sigma: np.ndarray, z: np.ndarray) -> np.ndarray:
    """tau * sqrt(1 - P(detected | x)): the error added below the labels' selection (0 without one)."""
    from ..selection import XraySelection, detection_probability, extrapolation_sigma

    tau = float(bundle.card.get("extrapolation_tau", 0.0))
    spec = bundle.card.get("label_selection")
    if tau == 0.0 or not spec:
        return np.zeros_like(mu)
    sel = XraySelection.from_dict(spec)
    return extrapolation_sigma(tau, detection_probability(mu, sigma, sel.m_lim(np.nan_to_num(z)), sel.s))


def richness_masses(bundle, images: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """lambda_hat and the baseline mass (mean over the fold calibrations) for each cutout."""
    from ..models.richness import detect

    base = bundle.baseline
    lam = np.array(
        [
            base.richness(detect(img), float(zz)) if np.isfinite(zz) else np.nan
            for img, zz in zip(images, z, strict=True)
        ]
    )
    preds = [base.predict(c, lam, z) for c in base.folds]
    return {
        "richness": lam,
        "log10_m500_richness": np.mean(preds, axis=0) if preds else np.full(lam.size, np.nan),
    }


def predict_partition(
    bundle,
    images: np.ndarray,
    columns: dict[str, np.ndarray],
    *,
    batch_size: int = 64,
    device="cpu",
    richness: bool = True,
) -> dict[str, np.ndarray]:
    """Masses, errors, the richness baseline and quality for one partition's cutouts."""
    n = images.shape[0]
    z = np.asarray(columns["z"], dtype=np.float64)
    quality = np.asarray(columns.get("quality", np.zeros(n)), dtype=np.int64).copy()
    for k in range(n):
        quality[k] |= image_quality(images[k])
    quality[~np.isfinite(z) | (z <= 0)] |= int(Quality.NO_REDSHIFT)
    out = {c: np.full(n, np.nan) for c in OUTPUT_COLUMNS if c != "quality"}
    ok = (quality & int(NO_MASS)) == 0
    if ok.any():
        clean = np.where(np.isfinite(images[ok]), images[ok], np.nan).astype(np.float32)
        cnn = cnn_masses(bundle, clean, z[ok], batch_size=batch_size, device=device)
        ood = cnn.pop("out_of_distribution")
        for key, v in cnn.items():
            out[key][ok] = v
        quality[np.flatnonzero(ok)[ood]] |= int(Quality.OUT_OF_DISTRIBUTION)
        if richness:
            for key, v in richness_masses(bundle, np.nan_to_num(clean), z[ok]).items():
                out[key][ok] = v
    out["quality"] = quality.astype(np.int32)
    return out
