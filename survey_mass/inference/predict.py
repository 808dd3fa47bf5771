"""Prediction for one partition: a pure function of (model bundle, partition arrays). No Dask here.

For every cutout, five mass estimators (:data:`ESTIMATORS`), each with its own calibrated 68% error:

* **Headline** ``log10_m500``: the fold-ensemble of the mass model that reads the pixels *and* the candidate
  catalogue's richness and, for a model trained with one, its central-galaxy magnitude (pixels alone where the
  candidate has no richness; the central galaxy's expectation given lambda and z where it has none). Each of the k fold regressors gives
  (mu_k, sigma_k) from the frozen stage-1 features, z, the sky depth and ln lambda; ``log10_m500`` = mean_k mu_k;
  ``log10_m500_err_aleatoric`` = s sqrt(mean_k sigma_k^2) (sigma_k heteroscedastic in mu_k);
  ``log10_m500_err_fold`` = s sqrt(var_k mu_k + mean_k e_k^2), the folds' spread and each head's Laplace
  parameter uncertainty; ``log10_m500_err_extrapolation`` = tau sqrt(1 - P_det), P_det the probability that the
  labels' X-ray selection would detect the cluster, tau calibrated on independent mocks; ``log10_m500_err`` =
  the three in quadrature; s the scale under which the labels' out-of-fold intervals hold 68%; every part
  times a factor in the predicted mass, calibrated on the same independent mocks. All of it is
  :meth:`survey_mass.models.mass_model.MassModel.predict_raw`.
* **Pixels** ``log10_m500_pixels`` and ``_err``: the same from pixels and z alone.
* **Catalogue lambda** ``log10_m500_lambda`` and ``_err``: the mass-richness relation on the candidate's own
  richness and z (:class:`~survey_mass.models.catalogue.CatalogueRelation`): what a user of the catalogue
  already has.
* **Catalogue lambda + central galaxy** ``log10_m500_lambda_bcg`` and ``_err``: the same relation with the
  candidate's central-galaxy i magnitude as well (``bcg_mag_i``, as an absolute magnitude): the strongest
  baseline a redMaPPer user has; NaN without a central galaxy or for a model trained without one.
* **lambda-hat** ``richness`` (sep red-sequence count) and ``log10_m500_richness`` and ``_err``.
* **Given detection** ``log10_m500_given_detection`` and ``_err``, for rows the store marks as detected by the
  labels' X-ray survey (a finite ``log10_m500_label``): the headline conditioned on that detection
  (:func:`given_detection`); NaN elsewhere.
* **Sky.** ``sky_sigma_{u,g,r,i,z}``: each band's sky noise (nanomaggies per pixel) measured from its sky pixels.
* **Quality.** The store's bits plus what the pixels show. Rows that cannot support a mass (a missing band, no
  redshift, unreadable, outside the model's redshift range) get NaN masses and keep their bits; so do rows whose
  pixels show no red-sequence overdensity at the candidate's redshift (``NO_CLUSTER``, decided up to z = 0.4:
  about 93% of blank fields and 0.3% of real clusters are flagged).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..attribution import CONTRIBUTION_COLUMNS, contributions
from ..models.richness import no_cluster
from ..photometry import BANDS
from ..quality import Quality, images_quality, redshift_quality

#: the mass estimators in every catalogue row: estimator -> its mass column; its 68% error is the column + "_err".
#: ``headline``: pixels and the candidate's catalogue richness together (pixels alone where it has none);
#: ``pixels``: the CNN from pixels and z alone; ``lambda``: the catalogue richness and z alone (the baseline a
#: user of the candidate catalogue already has); ``richness``: our sep lambda-hat from the same cutouts.
ESTIMATORS = {
    "headline": "log10_m500",
    "pixels": "log10_m500_pixels",
    "lambda": "log10_m500_lambda",
    "lambda_bcg": "log10_m500_lambda_bcg",
    "richness": "log10_m500_richness",
}

NO_MASS = Quality.MISSING_BAND | Quality.NO_REDSHIFT | Quality.UNREADABLE | Quality.OUTSIDE_Z_RANGE
SKY_COLUMNS = tuple(f"sky_sigma_{b}" for b in BANDS)

OUTPUT_COLUMNS = (
    "log10_m500",
    "log10_m500_err",
    "log10_m500_err_aleatoric",
    "log10_m500_err_fold",
    "log10_m500_err_extrapolation",
    "log10_m500_pixels",
    "log10_m500_pixels_err",
    "log10_m500_lambda",
    "log10_m500_lambda_err",
    "log10_m500_lambda_bcg",
    "log10_m500_lambda_bcg_err",
    "richness",
    "log10_m500_richness",
    "log10_m500_richness_err",
    "log10_m500_given_detection",
    "log10_m500_given_detection_err",
    *SKY_COLUMNS,
    *CONTRIBUTION_COLUMNS,
    "quality",
)


def cnn_masses(
    bundle,
    images: np.ndarray | None,
    z: np.ndarray,
    richness: np.ndarray | None = None,
    *,
    bcg_mag_i: np.ndarray | None = None,
    flux_limit: np.ndarray | None = None,
    batch_size: int = 64,
    device="cpu",
    prepared: tuple | None = None,
) -> dict:
    """Headline and pixels-only masses with their error parts, the headline's exact contributions
    (:func:`~survey_mass.attribution.contributions`) and the measured sky sigmas.

    The backbone runs once: the pixels model's raw inputs are extended by ln lambda for the headline model
    (:meth:`~survey_mass.models.mass_model.MassModel.extend_raw`); rows without a richness keep the pixels' mass.
    ``prepared`` is :func:`~survey_mass.models.mass_model.prepare_images` of ``images`` when a CPU stage has
    already made it (``images`` may then be None).
    """
    from ..models.mass_model import prepare_images

    pix, head = bundle.pixels, bundle.model
    x, log_sigma, sky = prepare_images(images) if prepared is None else prepared
    raw = pix.raw_inputs_prepared(x, log_sigma, z, batch_size=batch_size, device=device)
    if pix.backbone_autocast is not None:
        near = near_ood_threshold(bundle, raw, richness, bcg_mag_i)
        if near.size:  # the verdict is fp32's: these rows' inputs are recomputed exactly
            import torch

            idx = torch.from_numpy(near)
            raw[near] = pix.raw_inputs_prepared(
                x[idx], log_sigma[idx], np.asarray(z)[near], batch_size=batch_size, device=device, exact=True
            )
    out = pix.predict_raw(raw, z, flux_limit=flux_limit, device=device)
    out.update(contributions(pix, raw))
    pixels = {"log10_m500_pixels": out["log10_m500"], "log10_m500_pixels_err": out["log10_m500_err"]}
    if head is not pix and richness is not None:
        lam = np.asarray(richness, float)
        has = np.isfinite(lam) & (lam > 0)
        if has.any():
            fl = None if flux_limit is None else np.asarray(flux_limit, float)[has]
            raw_h = head.extend_raw(raw[has], lam[has], _rows(bcg_mag_i, has))
            h = head.predict_raw(raw_h, np.asarray(z)[has], flux_limit=fl, device=device)
            h.update(contributions(head, raw_h))
            for key, v in h.items():
                out[key] = np.asarray(out[key]).copy()
                out[key][has] = v
    out.update(pixels)
    for k, c in enumerate(SKY_COLUMNS):
        out[c] = np.asarray(sky)[:, k].astype(float)
    return out


#: rows whose out-of-distribution score lies within this fraction of the flag get fp32 inputs under reduced
#: precision (bf16 moved 5 of 26,338 dr12 verdicts before; within 10% of the flag are ~1% of rows)
OOD_GUARD = 0.1


def _rows(a: np.ndarray | None, rows) -> np.ndarray | None:
    return None if a is None else np.asarray(a, float)[rows]


def near_ood_threshold(
    bundle, raw: np.ndarray, richness: np.ndarray | None, bcg_mag_i: np.ndarray | None = None
) -> np.ndarray:
    """Rows (indices) whose out-of-distribution verdict, in the pixels or the headline model, a reduced-precision
    backbone could flip: the largest |standardised input| within :data:`OOD_GUARD` of the flag."""
    pix, head = bundle.pixels, bundle.model
    near = np.abs(pix.ood_score(raw) - pix.ood_flag) < OOD_GUARD * pix.ood_flag
    if head is not pix and richness is not None:
        lam = np.asarray(richness, float)
        has = np.flatnonzero(np.isfinite(lam) & (lam > 0))
        if has.size:
            score = head.ood_score(head.extend_raw(raw[has], lam[has], _rows(bcg_mag_i, has)))
            near[has] |= np.abs(score - head.ood_flag) < OOD_GUARD * head.ood_flag
    return np.flatnonzero(near)


def given_detection(bundle, mu, err, z, flux_limit) -> tuple[np.ndarray, np.ndarray]:
    """The headline's mass and error for a cluster *known* to be detected by the labels' X-ray survey.

    The catalogue's masses are the population's E[M | inputs]; a detected cluster scattered up in L_X, so given
    its detection its mass is higher: E[m | x, detected] = mu + sigma^2 / w lambda(k), k = (mu - m_lim) / w,
    w = sqrt(sigma^2 + s^2), with the variance of the truncated normal
    (:meth:`~survey_mass.selection.XraySelection.selected_moments`, less the label's own scatter).
    """
    from ..selection import selected_moments, selection_from_dict

    spec = bundle.model.calibration.get("selection")
    if not spec:
        return np.full(np.shape(mu), np.nan), np.full(np.shape(mu), np.nan)
    sel = selection_from_dict(spec)
    # the mass (not a label) of a selected cluster: the selected moments without label scatter
    return selected_moments(mu, err, sel.m_lim(np.asarray(z, float), flux_limit), sel.width, 0.0)


def lambda_masses(
    bundle, richness: np.ndarray | None, z: np.ndarray, flux_limit=None, bcg_mag_i: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The catalogue relations' masses and errors: on lambda and z (NaN without a richness), and on lambda, z and
    the central galaxy (NaN without one, or for a model without that relation)."""
    from ..models.catalogue import central_galaxy_feature

    n = np.size(z)
    lam = np.full(n, np.nan) if richness is None else np.asarray(richness, float)
    out = bundle.relation.predict(lam, z, flux_limit)
    res = {"log10_m500_lambda": out["log10_m500"], "log10_m500_lambda_err": out["log10_m500_err"]}
    nan = np.full(n, np.nan)
    res["log10_m500_lambda_bcg"], res["log10_m500_lambda_bcg_err"] = nan, nan.copy()
    if bundle.relation_bcg is not None and bcg_mag_i is not None:
        b = bundle.relation_bcg.predict(lam, z, flux_limit, bcg=central_galaxy_feature(bcg_mag_i, z))
        res["log10_m500_lambda_bcg"], res["log10_m500_lambda_bcg_err"] = b["log10_m500"], b["log10_m500_err"]
    return res


def richness_masses(
    bundle, images: np.ndarray, z: np.ndarray, *, device="cpu", detector: str = "torch"
) -> dict[str, np.ndarray]:
    """lambda_hat, the baseline mass (mean over the fold calibrations) and its sigma for each cutout, and the
    red-sequence significance of a cluster in the pixels (:meth:`RichnessBaseline.cluster_significance`).

    ``detector="torch"`` (default) detects all cutouts at once with
    :func:`~survey_mass.models.detection.richness_batch` on ``device``; ``"sep"`` runs sep one cutout at a time on
    the CPU. They agree (benchmarks/results/detection_validation.md: lambda-hat Spearman 1.0000, the same baseline
    MAE); torch is about twice as fast on the CPU and runs on a GPU."""
    base = bundle.baseline
    z = np.asarray(z, dtype=np.float64)
    if detector == "torch":
        from ..models.detection import richness_batch

        found = richness_batch(base, images, z, device=device)
        lam, sig_cl = found["richness"], found["cluster_significance"]
    elif detector == "sep":
        from ..models.richness import detect

        lam, sig_cl = np.full(len(z), np.nan), np.full(len(z), np.nan)
        for k, (img, zz) in enumerate(zip(images, z, strict=True)):
            if not np.isfinite(zz):
                continue
            src = detect(img)
            lam[k] = base.richness(src, float(zz))
            sig_cl[k] = base.cluster_significance(src, float(zz))
    else:
        raise ValueError(f"detector must be 'torch' or 'sep', not {detector!r}")
    preds = [base.predict(c, lam, z) for c in base.folds]
    sig = float(np.sqrt(np.mean([c[3] ** 2 for c in base.folds]))) if base.folds else np.nan
    return {
        "richness": lam,
        "log10_m500_richness": np.mean(preds, axis=0) if preds else np.full(lam.size, np.nan),
        "log10_m500_richness_err": np.full(lam.size, sig),
        "cluster_significance": sig_cl,
    }


@dataclass
class PreparedPartition:
    """The CPU half of one partition's prediction (:func:`prepare_partition`), all the device half
    (:func:`predict_prepared`) needs: on a cluster with a "GPU" worker it travels from a CPU worker to it."""

    n: int
    z: np.ndarray
    #: the store's quality bits with the pixels' and the redshift's
    quality: np.ndarray
    #: rows that can get a mass
    ok: np.ndarray
    #: the ok rows' images (NaN kept) and their :func:`~survey_mass.models.mass_model.prepare_images` (None
    #: where the device prepares them)
    clean: np.ndarray
    prepared: tuple | None
    lam_cat: np.ndarray | None
    #: the candidates' central-galaxy apparent i magnitudes, where the store has them
    bcg_mag_i: np.ndarray | None
    flux_limit: np.ndarray | None
    label: np.ndarray | None
    #: the lambda-hat baseline of the ok rows (:func:`richness_masses`), when the CPU half ran it (on a device the
    #: device half detects, batched)
    baseline: dict | None = None


def prepare_partition(
    bundle, images: np.ndarray, columns: dict[str, np.ndarray], *, detect: bool = True, sky: bool = True
):
    """Quality bits, sky measurement and normalisation (and, with ``detect``, the lambda-hat baseline's source
    detection on the CPU): the CPU work of a partition, which a device need not wait for. Without ``sky`` the
    device measures the sky and normalises (:func:`~survey_mass.models.mass_model.prepare_images_on_device`):
    the fast path, ``--device-prep``."""
    from ..models.mass_model import prepare_images

    n = images.shape[0]
    z = np.asarray(columns["z"], dtype=np.float64)
    quality = np.asarray(columns.get("quality", np.zeros(n)), dtype=np.int64).copy()
    quality |= images_quality(images)
    quality[~np.isfinite(z) | (z <= 0)] |= int(Quality.NO_REDSHIFT)
    quality |= redshift_quality(z, bundle.z_range)
    ok = (quality & int(NO_MASS)) == 0
    clean = np.where(np.isfinite(images[ok]), images[ok], np.nan).astype(np.float32)
    fl, label = columns.get("label_flux_limit"), columns.get("log10_m500_label")
    return PreparedPartition(
        n=n,
        z=z,
        quality=quality,
        ok=ok,
        clean=clean,
        prepared=prepare_images(clean) if ok.any() and sky else None,
        lam_cat=np.asarray(columns["richness"], float) if "richness" in columns else None,
        bcg_mag_i=np.asarray(columns["bcg_mag_i"], float) if "bcg_mag_i" in columns else None,
        flux_limit=None if fl is None else np.asarray(fl, float),
        label=None if label is None else np.asarray(label, float),
        baseline=richness_masses(bundle, np.nan_to_num(clean), z[ok]) if detect and ok.any() else None,
    )


def predict_prepared(
    bundle,
    prep: PreparedPartition,
    *,
    batch_size: int = 64,
    device="cpu",
    richness: bool = True,
) -> dict[str, np.ndarray]:
    """Masses of all five estimators, their errors, the lambda-hat baseline and quality from a prepared
    partition: the device half. Where the CPU half did not run the baseline's detection, it runs here, batched
    on ``device``; where it did not measure the sky, that too."""
    from ..models.mass_model import prepare_images_on_device

    n, z, ok, quality = prep.n, prep.z, prep.ok, prep.quality.copy()
    out = {c: np.full(n, np.nan) for c in OUTPUT_COLUMNS if c != "quality"}
    if ok.any():
        prepared = (
            prep.prepared if prep.prepared is not None else prepare_images_on_device(prep.clean, device)
        )
        lam_ok = None if prep.lam_cat is None else prep.lam_cat[ok]
        bcg_ok = _rows(prep.bcg_mag_i, ok)
        fl_ok = None if prep.flux_limit is None else prep.flux_limit[ok]

        masses = cnn_masses(
            bundle,
            None,
            z[ok],
            lam_ok,
            bcg_mag_i=bcg_ok,
            flux_limit=fl_ok,
            batch_size=batch_size,
            device=device,
            prepared=prepared,
        )
        rm = prep.baseline
        rm = dict(
            rm if rm is not None else richness_masses(bundle, np.nan_to_num(prep.clean), z[ok], device=device)
        )
        ood = masses.pop("out_of_distribution")
        for key, v in {**masses, **lambda_masses(bundle, lam_ok, z[ok], fl_ok, bcg_ok)}.items():
            out[key][ok] = v
        det = np.zeros(n, bool) if prep.label is None else ok & np.isfinite(prep.label)
        if det.any():  # clusters the store marks as detected by the labels' X-ray survey
            fl_det = None if prep.flux_limit is None else prep.flux_limit[det]
            m, e = given_detection(bundle, out["log10_m500"][det], out["log10_m500_err"][det], z[det], fl_det)
            out["log10_m500_given_detection"][det], out["log10_m500_given_detection_err"][det] = m, e
        quality[np.flatnonzero(ok)[ood]] |= int(Quality.OUT_OF_DISTRIBUTION)
        blank = np.flatnonzero(ok)[no_cluster(rm.pop("cluster_significance"))]
        if richness:
            for key, v in rm.items():
                out[key][ok] = v
        # the pixels show no cluster: no mass of any estimator is given (the catalogue claims one; the pixels
        # contradict it), lambda-hat is kept for inspection
        quality[blank] |= int(Quality.NO_CLUSTER)
        for key in out:
            if key.startswith("log10_m500") or key in CONTRIBUTION_COLUMNS:
                out[key][blank] = np.nan
    out["quality"] = quality.astype(np.int32)
    return out


def predict_partition(
    bundle,
    images: np.ndarray,
    columns: dict[str, np.ndarray],
    *,
    batch_size: int = 64,
    device="cpu",
    richness: bool = True,
) -> dict[str, np.ndarray]:
    """Masses of all five estimators, their errors, the lambda-hat baseline and quality for one partition:
    :func:`prepare_partition` then :func:`predict_prepared`, in this process. The baseline's detection runs on
    ``device``, batched (on the CPU in the first half, elsewhere in the second)."""
    prep = prepare_partition(bundle, images, columns, detect=str(device) == "cpu")
    return predict_prepared(bundle, prep, batch_size=batch_size, device=device, richness=richness)
