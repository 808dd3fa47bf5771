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
  and the extrapolation, with s the out-of-fold calibration scale. All of it is
  :meth:`survey_mass.models.mass_model.MassModel.predict`; this module adds no arithmetic of its own.
* **Sky.** ``sky_sigma_{u,g,r,i,z}``: each band's sky noise (nanomaggies per pixel) measured from its sky pixels.
* **Richness baseline.** ``richness`` (lambda_hat from sep detections) and ``log10_m500_richness`` (mean of the
  fold calibrations).
* **Quality.** The store's bits plus what the pixels show. Rows whose pixels cannot support a mass (a missing
  band, no redshift, unreadable) get NaN masses and keep their bits.
"""

from __future__ import annotations

import numpy as np

from ..photometry import BANDS
from ..quality import Quality, image_quality

#: the mass estimators in every catalogue row: estimator -> its mass column; its 68% error is the column + "_err".
#: ``headline``: pixels and the candidate's catalogue richness together (pixels alone where it has none);
#: ``pixels``: the CNN from pixels and z alone; ``lambda``: the catalogue richness and z alone (the baseline a
#: user of the candidate catalogue already has); ``richness``: our sep lambda-hat from the same cutouts.
ESTIMATORS = {
    "headline": "log10_m500",
    "pixels": "log10_m500_pixels",
    "lambda": "log10_m500_lambda",
    "richness": "log10_m500_richness",
}

NO_MASS = Quality.MISSING_BAND | Quality.NO_REDSHIFT | Quality.UNREADABLE
SKY_COLUMNS = tuple(f"sky_sigma_{b}" for b in BANDS)

OUTPUT_COLUMNS = (
    "log10_m500",
    "log10_m500_err",
    "log10_m500_err_aleatoric",
    "log10_m500_err_fold",
    "log10_m500_err_extrapolation",
    "richness",
    "log10_m500_richness",
    *SKY_COLUMNS,
    "quality",
)


def cnn_masses(bundle, images: np.ndarray, z: np.ndarray, *, batch_size: int = 64, device="cpu") -> dict:
    """Fold-ensemble masses, their error parts and the measured sky sigmas (:meth:`MassModel.predict`)."""
    out = bundle.model.predict(images, z, batch_size=batch_size, device=device)
    sky = out.pop("sky_sigma")
    for k, c in enumerate(SKY_COLUMNS):
        out[c] = sky[:, k].astype(float)
    return out


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
