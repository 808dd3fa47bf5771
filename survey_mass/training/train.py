"""Training, as a chain of small stages that :func:`train` only calls in order.

1. :func:`train_stage1`: the band classifier on single-band cutouts, no labels (:class:`Stage1Result`).
2. :func:`extract_pool_features`: the raw inputs of every cluster of the training pool
   (:meth:`~survey_mass.models.mass_model.MassModel.raw_inputs_of`), and :func:`nuisance_pairs`: the same
   inputs for a sample of cutouts degraded as worse observing conditions would (more sky noise, a wider PSF).
   The standardisation is fitted over both (:class:`~survey_mass.models.mass_model.Standardisation`).
3. :func:`fit_richness_baseline`: the sep lambda-hat baseline's background and every cluster's lambda-hat.
4. :func:`fit_folds`: k linear heads (:mod:`survey_mass.training.heads`) and the baseline's calibration, with
   out-of-fold predictions (:class:`FoldResult`).
5. :func:`calibrate`: the error scale and the simulation-calibrated extrapolation term (:class:`CalibrationResult`).
6. :func:`evaluate`: out-of-fold metrics against labels and true masses (:class:`~.report.Evaluation`).

Everything is seeded. Stage 1 checkpoints each epoch and stage 2 each fold (``MODEL_DIR/checkpoints``), so an
interrupted training resumes where it stopped. Checkpoints and weights hold tensors only and load with
``torch.load(weights_only=True)`` / safetensors: nothing is unpickled.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import paths
from ..models.mass_model import MassModel, Standardisation, measure_sky, prepare_images
from ..models.networks import VARIANTS, BandClassifier, MassRegressor
from ..photometry import BANDS, PSF_FWHM
from .heads import head_nll, predict_head, train_head
from .report import Evaluation, TrainingReport, metrics


@dataclass
class TrainConfig:
    folds: int = 5
    seed: int = 2022
    variant: str = "cpu"
    device: str = "auto"
    #: stage 1: single-band images drawn from the store per epoch, epochs, batch, learning rate
    stage1_images: int = 40000
    stage1_epochs: int = 2
    stage1_batch: int = 128
    stage1_lr: float = 2e-3
    #: stage 2: principal components of the frozen features the linear head is fitted on, and the ridge
    #: strengths tried, per cluster of the pool (strongest first); each fold keeps the one with the best
    #: validation likelihood
    stage2_components: int = 128
    stage2_ridge: tuple[float, ...] = (0.1, 0.05, 0.02, 0.01, 0.005, 0.002)
    #: invariance: cutouts degraded (sky noise x noise_factors, PSF FWHM x up to max_seeing_factor) and the
    #: weight of the penalty on the heads' mean response to that change, per noise factor and redshift tercile
    #: (:func:`nuisance_shifts`). 1000 keeps the mean mass within 0.01 dex for 10^0.1 more sky noise; a
    #: per-cutout penalty (every row's response, not the mean) cost 0.08 dex of MAE and raised the bias by 0.2
    invariance_cutouts: int = 4000
    invariance_weight: float = 1000.0
    noise_factors: tuple[float, ...] = (10**0.05, 10**0.1, 10**0.15, 10**0.2)
    max_seeing_factor: float = 1.3
    #: cutouts used to measure the richness baseline's background
    background_cutouts: int = 3000
    #: fit the labels with the selection-aware likelihood when the store says how they were selected
    selection_aware: bool = True
    #: on a simulated store (true masses known), calibrate the error added below the labels' selection
    #: (:func:`survey_mass.selection.fit_extrapolation_tau`); without true masses it stays 0
    simulation_calibration: bool = True
    threads: int | None = None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from ..errors import SurveyMassError

        raise SurveyMassError("--device cuda: no CUDA device is available on this machine")
    return torch.device(device)


def _bar(total: int, desc: str, progress: bool):
    from ..progress import bar

    return bar(total, desc, enabled=progress, unit="img" if "stage 1" in desc else "it")


# --- reading the store ------------------------------------------------------------------------------------


@dataclass
class StoreTable:
    partition: np.ndarray
    row: np.ndarray
    id: np.ndarray
    z: np.ndarray
    label: np.ndarray
    truth: np.ndarray


def read_table(store) -> StoreTable:
    parts, rows, ids, zs, labels, truth = [], [], [], [], [], []
    for p in store.partitions:
        c = store.columns(p)
        n = len(c["id"])
        parts.append(np.full(n, p))
        rows.append(np.arange(n))
        ids.append(c["id"])
        zs.append(c["z"].astype(float))
        labels.append(c.get("log10_m500_label", np.full(n, np.nan)).astype(float))
        truth.append(c.get("log10_m500_true", np.full(n, np.nan)).astype(float))
    cat = [np.concatenate(a) if a else np.zeros(0) for a in (parts, rows, ids, zs, labels, truth)]
    return StoreTable(*cat)


def read_cutouts(store, table: StoreTable, index: np.ndarray) -> np.ndarray:
    """Images of the table rows ``index`` (partition by partition, in index order)."""
    out = np.empty((index.size, 5, store.cutout_size, store.cutout_size), np.float32)
    order = np.argsort(table.partition[index], kind="stable")
    for p in np.unique(table.partition[index]):
        sel = order[table.partition[index][order] == p]
        imgs = store.images(int(p))
        out[sel] = imgs[table.row[index][sel]]
    return out


# --- stage 1 --------------------------------------------------------------------------------------------------


@dataclass
class Stage1Result:
    classifier: BandClassifier
    band_accuracy: dict[str, float]
    loss_per_epoch: list[float]
    seconds: float


def _band_accuracy(model: BandClassifier, x: torch.Tensor, pairs: np.ndarray, device) -> dict[str, float]:
    model.eval()
    correct, total = np.zeros(5), np.zeros(5)
    with torch.no_grad():
        for s in range(0, len(pairs), 512):
            b = pairs[s : s + 512]
            xb = x[b[:, 0], b[:, 1]].unsqueeze(1).to(device).contiguous(memory_format=torch.channels_last)
            pred = model(xb).argmax(1).cpu().numpy()
            for band in range(5):
                m = b[:, 1] == band
                correct[band] += (pred[m] == band).sum()
                total[band] += m.sum()
    return {BANDS[k]: float(correct[k] / max(total[k], 1)) for k in range(5)}


def train_stage1(
    store, table: StoreTable, cfg: TrainConfig, ckpt_dir: Path, device, progress: bool
) -> Stage1Result:
    """Band classifier on single-band cutouts (normalised exactly as the mass model normalises them)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    n_cut = min(table.id.size, max(cfg.stage1_images // len(BANDS), 16))
    pick = np.sort(rng.choice(table.id.size, size=n_cut, replace=False))
    x = torch.cat(
        [prepare_images(read_cutouts(store, table, pick[s : s + 2048]))[0] for s in range(0, n_cut, 2048)]
    )
    n_val = max(n_cut // 10, 1)
    perm = rng.permutation(n_cut)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    # single-band samples: (cutout, band)
    train_pairs = np.stack(np.meshgrid(train_idx, np.arange(5), indexing="ij"), -1).reshape(-1, 2)
    val_pairs = np.stack(np.meshgrid(val_idx, np.arange(5), indexing="ij"), -1).reshape(-1, 2)

    torch.manual_seed(cfg.seed)
    model = BandClassifier(**VARIANTS[cfg.variant]).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.stage1_lr, weight_decay=1e-4)
    start_epoch = 0
    ck = ckpt_dir / paths.STAGE1_CHECKPOINT
    if ck.exists():
        state = torch.load(ck, weights_only=True, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        start_epoch = int(state["epoch"]) + 1
    loss_fn = nn.CrossEntropyLoss()
    history = []
    for epoch in range(start_epoch, cfg.stage1_epochs):
        model.train()
        order = np.random.default_rng(cfg.seed + 1 + epoch).permutation(len(train_pairs))
        bar = _bar(len(order), f"stage 1 epoch {epoch + 1}/{cfg.stage1_epochs}", progress)
        losses = []
        for s in range(0, len(order), cfg.stage1_batch):
            b = train_pairs[order[s : s + cfg.stage1_batch]]
            xb = x[b[:, 0], b[:, 1]].unsqueeze(1).to(device).contiguous(memory_format=torch.channels_last)
            yb = torch.from_numpy(b[:, 1]).to(device)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.update(len(b))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
        bar.close()
        history.append(float(np.mean(losses)))
        torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "epoch": epoch}, ck)
    acc = _band_accuracy(model, x, val_pairs, device)
    return Stage1Result(model, acc, history, time.perf_counter() - t0)


# --- features -----------------------------------------------------------------------------------------------------


def extract_pool_features(
    model: MassModel, store, table: StoreTable, index: np.ndarray, device, *, progress: bool = False
) -> np.ndarray:
    """Raw inputs (:meth:`MassModel.input_names`) of table rows ``index``: (n, D) float32."""
    model.eval()
    feats = []
    bar = _bar(index.size, "stage 2 features", progress)
    for s in range(0, index.size, 512):
        rows = index[s : s + 512]
        feats.append(model.raw_inputs_of(read_cutouts(store, table, rows), table.z[rows], device=device))
        bar.update(rows.size)
    bar.close()
    return (
        np.concatenate(feats).astype(np.float32)
        if feats
        else np.zeros((0, len(model.input_names())), np.float32)
    )


def degrade(
    images: np.ndarray,
    sky_sigma: np.ndarray,
    noise_factor: float,
    seeing_factor: float,
    pixel_scale: float,
    rng,
) -> np.ndarray:
    """The same cutouts as worse conditions would show them: the PSF widened to ``seeing_factor`` times its
    FWHM (a Gaussian of the missing width), then Gaussian noise added to bring the sky noise to ``noise_factor``
    times its measured ``sky_sigma`` (N, 5). Both only degrade: real data can always be made worse."""
    from scipy.ndimage import gaussian_filter

    out = np.array(images, dtype=np.float32, copy=True)
    if seeing_factor > 1:
        for b, band in enumerate(BANDS):
            s_pix = np.sqrt(seeing_factor**2 - 1) * PSF_FWHM[band] / 2.3548 / pixel_scale
            for k in range(out.shape[0]):
                out[k, b] = gaussian_filter(np.nan_to_num(out[k, b]), s_pix, mode="nearest")
    if noise_factor > 1:
        extra = np.sqrt(noise_factor**2 - 1) * np.nan_to_num(sky_sigma)[..., None, None]
        out += (extra * rng.standard_normal(out.shape)).astype(np.float32)
    return out


@dataclass
class NuisancePairs:
    """Raw inputs of a sample of cutouts (``clean``) and of the same cutouts degraded (``degraded``)."""

    rows: np.ndarray  # table rows of the sample
    clean: np.ndarray
    degraded: np.ndarray
    noise_factor: np.ndarray
    seeing_factor: np.ndarray


def nuisance_pairs(
    model: MassModel,
    store,
    table: StoreTable,
    pool: np.ndarray,
    cfg: TrainConfig,
    device,
    *,
    progress: bool = False,
) -> NuisancePairs:
    """Raw inputs of ``cfg.invariance_cutouts`` pool cutouts, as observed and degraded (:func:`degrade`)."""
    rng = np.random.default_rng(cfg.seed + 31)
    m = min(cfg.invariance_cutouts, pool.size)
    pick = np.sort(rng.choice(pool, size=m, replace=False)) if m else pool[:0]
    noise = rng.choice(np.asarray(cfg.noise_factors, float), size=m) if m else np.zeros(0)
    seeing = rng.uniform(1.0, cfg.max_seeing_factor, size=m)
    clean, degraded = [], []
    bar = _bar(m, "invariance pairs", progress)
    for s in range(0, m, 256):
        rows = pick[s : s + 256]
        imgs = read_cutouts(store, table, rows)
        _, sky = measure_sky(imgs)
        worse = np.concatenate(
            [
                degrade(imgs[j : j + 1], sky[j : j + 1], noise[s + j], seeing[s + j], store.pixel_scale, rng)
                for j in range(rows.size)
            ]
        )
        clean.append(model.raw_inputs_of(imgs, table.z[rows], device=device))
        degraded.append(model.raw_inputs_of(worse, table.z[rows], device=device))
        bar.update(rows.size)
    bar.close()
    d = len(model.input_names())
    cat = [np.concatenate(a) if a else np.zeros((0, d), np.float32) for a in (clean, degraded)]
    return NuisancePairs(pick, cat[0], cat[1], noise, seeing)


def nuisance_shifts(model: MassModel, pairs: NuisancePairs, z: np.ndarray) -> np.ndarray:
    """Mean change of the standardised inputs under each degradation, per noise factor and redshift tercile.

    The heads are penalised for responding to these group means (:mod:`survey_mass.training.heads`): the
    catalogue's masses must not drift with the observing conditions on average, at any redshift. Each
    cutout's own response also holds noise, which a penalty on every row would treat as a shift too.
    """
    delta = standardised(model, pairs.degraded) - standardised(model, pairs.clean)
    if not len(delta):
        return delta
    tercile = np.digitize(z, np.quantile(z, [1 / 3, 2 / 3]))
    keys = np.round(pairs.noise_factor, 4) * 10 + tercile
    return np.stack([delta[keys == k].mean(axis=0) for k in np.unique(keys)])


def standardised(model: MassModel, raw: np.ndarray) -> np.ndarray:
    """What the heads see of raw inputs: :meth:`MassModel.standardise`, as float32 numpy."""
    with torch.no_grad():
        return model.standardise(torch.from_numpy(np.asarray(raw, np.float32))).numpy()


# --- richness baseline ------------------------------------------------------------------------------------------


@dataclass
class RichnessFit:
    baseline: object
    lam_hat: np.ndarray
    seconds: float


def fit_richness_baseline(
    store, table: StoreTable, pool: np.ndarray, cfg: TrainConfig, progress: bool
) -> RichnessFit:
    """The baseline's background from a sample of cutouts, then lambda-hat for every cluster of the pool."""
    from ..models.richness import RichnessBaseline, detect

    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed + 7)
    bkg_idx = np.sort(
        rng.choice(table.id.size, size=min(cfg.background_cutouts, table.id.size), replace=False)
    )
    bkg_src = [detect(img) for img in read_cutouts(store, table, bkg_idx)]
    baseline = RichnessBaseline(pixel_scale=store.pixel_scale, size=store.cutout_size)
    baseline.fit_background(bkg_src, table.z[bkg_idx])
    z_all = table.z[pool]
    lam = np.empty(pool.size)
    bar = _bar(pool.size, "richness baseline", progress)
    for s in range(0, pool.size, 512):
        for j, img in enumerate(read_cutouts(store, table, pool[s : s + 512])):
            zz = z_all[s + j]
            lam[s + j] = baseline.richness(detect(img), float(zz)) if np.isfinite(zz) else np.nan
        bar.update(min(512, pool.size - s))
    bar.close()
    return RichnessFit(baseline, np.where(np.isfinite(lam), lam, 1.0), time.perf_counter() - t0)


# --- stage 2: folds -------------------------------------------------------------------------------------------


def assign_folds(ids: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold of each labelled cluster: a seeded permutation cut into k nearly equal parts (one fold per id)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(ids.size)
    folds = np.empty(ids.size, dtype=int)
    folds[order] = np.arange(ids.size) % k
    return folds


@dataclass
class Stage2Data:
    """Everything stage 2 fits on, one row per cluster of the pool."""

    x: np.ndarray  # standardised inputs (what the heads see)
    nuisance: np.ndarray  # mean standardised input changes under degraded conditions, per group (g, D)
    ids: np.ndarray
    y: np.ndarray  # labels, NaN for unlabelled clusters
    truth: np.ndarray
    z: np.ndarray
    lam_hat: np.ndarray
    m_lim: np.ndarray | None
    z_index: int

    @property
    def is_lab(self) -> np.ndarray:
        return np.isfinite(self.y)


@dataclass
class FoldResult:
    heads: list[MassRegressor]
    folds: np.ndarray
    oof_mu: np.ndarray
    oof_sig: np.ndarray
    oof_rich: np.ndarray
    oof_rich_sig: np.ndarray
    info: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def split_folds(data: Stage2Data, k: int, seed: int) -> np.ndarray:
    """Labelled clusters are split as always; unlabelled ones get their own seeded split (no cluster twice)."""
    folds = np.empty(data.ids.size, dtype=int)
    lab = data.is_lab
    folds[lab] = assign_folds(data.ids[lab], k, seed)
    folds[~lab] = assign_folds(data.ids[~lab], k, seed + 1)
    return folds


def _fold_head(data: Stage2Data, train_idx, cfg: TrainConfig, k: int, selection, ckpt: Path, device):
    if ckpt.exists():
        head = MassRegressor(data.x.shape[1], data.z_index).to(device)
        state = torch.load(ckpt, weights_only=True, map_location=device)
        head.load_state_dict(state["model"])
        return head, json.loads(bytes(state["info"].numpy().tobytes()).decode())
    head, info = train_head(
        data.x[train_idx],
        data.y[train_idx],
        None if data.m_lim is None else data.m_lim[train_idx],
        cfg,
        cfg.seed + k,
        selection=selection,
        z_index=data.z_index,
        nuisance=data.nuisance,
    )
    head = head.to(device)
    blob = torch.frombuffer(bytearray(json.dumps(info).encode()), dtype=torch.uint8)
    torch.save({"model": head.state_dict(), "info": blob}, ckpt)
    return head, info


def fit_folds(
    data: Stage2Data, baseline, selection, cfg: TrainConfig, ckpt_dir: Path, device, progress: bool
) -> FoldResult:
    """k heads and k baseline calibrations, each fitted without its fold; out-of-fold predictions."""
    t0 = time.perf_counter()
    folds = split_folds(data, cfg.folds, cfg.seed)
    n = data.ids.size
    res = FoldResult([], folds, *(np.full(n, np.nan) for _ in range(4)))
    bar = _bar(cfg.folds, "stage 2 folds", progress)
    for k in range(cfg.folds):
        test = folds == k
        train_idx = np.flatnonzero(~test)
        head, info = _fold_head(
            data, train_idx, cfg, k, selection, ckpt_dir / paths.fold_checkpoint(k), device
        )
        res.oof_mu[test], res.oof_sig[test] = predict_head(head, data.x[test], device)
        coef = baseline.fit_fold(
            data.lam_hat[train_idx],
            data.z[train_idx],
            data.y[train_idx],
            selection=selection,
            m_lim=None if data.m_lim is None else data.m_lim[train_idx],
        )
        baseline.folds.append(coef)
        res.oof_rich[test] = baseline.predict(coef, data.lam_hat[test], data.z[test])
        res.oof_rich_sig[test] = coef[3]
        res.heads.append(head)
        res.info.append(info)
        bar.update(1)
    bar.close()
    res.seconds = time.perf_counter() - t0
    return res


# --- calibration ----------------------------------------------------------------------------------------------


@dataclass
class CalibrationResult:
    scale: float
    tau: float
    coverage_before: float
    coverage_after: float
    extra: np.ndarray  # the extrapolation error of every pool row


def calibrate(data: Stage2Data, fr: FoldResult, selection, cfg: TrainConfig) -> CalibrationResult:
    """The one scale on sigma and the extrapolation term tau, from out-of-fold predictions."""
    from ..selection import (
        detection_probability,
        extrapolation_sigma,
        fit_extrapolation_tau,
        selected_moments,
    )

    lab = data.is_lab
    y = data.y[lab]
    mu, sig = fr.oof_mu[lab], fr.oof_sig[lab]
    if selection is None:
        # one scale on out-of-fold z-scores so that 68% intervals hold 68%
        zscore = np.abs(y - mu) / sig
        scale = float(np.quantile(zscore, 0.6827))
        return CalibrationResult(
            scale, 0.0, float(np.mean(zscore < 1)), float(np.mean(zscore < scale)), np.zeros(data.ids.size)
        )
    sn, m_lim = selection.label_noise_dex, data.m_lim[lab]

    def coverage(k, extra=0.0):
        mean, sd = selected_moments(mu, np.hypot(k * sig, extra), m_lim, selection.s, sn)
        return float(np.mean(np.abs(y - mean) < sd))

    # the one scale on sigma that maximises the out-of-fold likelihood of the whole survey (labels and
    # non-detections), so that it holds for the population the catalog describes
    grid = np.linspace(0.5, 3.0, 251)
    yt, lt = torch.from_numpy(data.y), torch.from_numpy(lab)
    mt, mut, st = torch.from_numpy(data.m_lim), torch.from_numpy(fr.oof_mu), torch.from_numpy(fr.oof_sig)
    joint = bool((~lab).any())
    nlls = [float(head_nll(mut, g * st, yt, lt, mt, selection, joint=joint).sum()) for g in grid]
    scale = float(grid[int(np.argmin(nlls))])
    # Below the flux limit the labels cannot tell the scatter (non-detections bound masses only from above).
    # A simulated survey can: tau is set so the out-of-fold errors of the clusters without labels cover 68% of
    # their true masses (simulation-based calibration; 0 without true masses).
    p_det = detection_probability(fr.oof_mu, scale * fr.oof_sig, data.m_lim, selection.s)
    unl_truth = ~lab & np.isfinite(data.truth)
    tau = 0.0
    if cfg.simulation_calibration and unl_truth.sum() >= 100:
        tau = fit_extrapolation_tau(
            fr.oof_mu[unl_truth] - data.truth[unl_truth], scale * fr.oof_sig[unl_truth], p_det[unl_truth]
        )
    extra = extrapolation_sigma(tau, p_det)
    return CalibrationResult(scale, tau, coverage(1.0), coverage(scale, extra[lab]), extra)


# --- evaluation -----------------------------------------------------------------------------------------------


def evaluate(
    data: Stage2Data, fr: FoldResult, cal: CalibrationResult, selection, cfg: TrainConfig
) -> Evaluation:
    """Out-of-fold metrics: per fold against the labels (as a *selected* cluster), and the population's."""
    from ..selection import selected_moments

    lab = data.is_lab
    y, truth, folds = data.y[lab], data.truth[lab], fr.folds[lab]
    cnn, rich = fr.oof_mu[lab], fr.oof_rich[lab]
    if selection is not None:
        sn, m_lim = selection.label_noise_dex, data.m_lim[lab]
        cnn, _ = selected_moments(cnn, fr.oof_sig[lab], m_lim, selection.s, sn)
        rich, _ = selected_moments(rich, fr.oof_rich_sig[lab], m_lim, selection.s, sn)
    per_fold = [
        {
            "fold": k,
            "n": int((folds == k).sum()),
            "cnn_vs_label": metrics(cnn[folds == k], y[folds == k]),
            "richness_vs_label": metrics(rich[folds == k], y[folds == k]),
            "cnn_vs_truth": metrics(cnn[folds == k], truth[folds == k]),
            "richness_vs_truth": metrics(rich[folds == k], truth[folds == k]),
            "ridge": fr.info[k]["ridge"],
        }
        for k in range(cfg.folds)
    ]
    unl = np.flatnonzero(~lab)
    population = None
    if unl.size and np.isfinite(data.truth[unl]).any():
        tu, mu, sig = data.truth[unl], fr.oof_mu[unl], cal.scale * fr.oof_sig[unl]
        population = {
            "n": int(unl.size),
            "cnn_vs_truth": metrics(mu, tu),
            "richness_vs_truth": metrics(fr.oof_rich[unl], tu),
            "cnn_coverage_68": float(np.mean(np.abs(mu - tu) < np.hypot(sig, cal.extra[unl]))),
            "cnn_coverage_68_labels_only": float(np.mean(np.abs(mu - tu) < sig)),
            "richness_coverage_68": float(np.mean(np.abs(fr.oof_rich[unl] - tu) < fr.oof_rich_sig[unl])),
        }
        population["mae_ratio_cnn_over_richness"] = (
            population["cnn_vs_truth"].mae / population["richness_vs_truth"].mae
        )
    mean_cnn = float(np.mean([f["cnn_vs_label"].mae for f in per_fold]))
    mean_rich = float(np.mean([f["richness_vs_label"].mae for f in per_fold]))
    summary = {
        "cnn_vs_label": metrics(cnn, y),
        "richness_vs_label": metrics(rich, y),
        "cnn_vs_truth": metrics(cnn, truth),
        "richness_vs_truth": metrics(rich, truth),
        "label_vs_truth": metrics(y, truth),
        "mean_fold_mae_cnn": mean_cnn,
        "mean_fold_mae_richness": mean_rich,
        "best_fold_mae_cnn": float(np.min([f["cnn_vs_label"].mae for f in per_fold])),
        "mae_ratio_cnn_over_richness": mean_cnn / mean_rich,
        "population": population,
    }
    oof = {
        "id": data.ids[lab].tolist(),
        "fold": folds.tolist(),
        "label": y.tolist(),
        "truth": truth.tolist(),
        "z": data.z[lab].tolist(),
        "cnn": cnn.tolist(),
        "sigma": fr.oof_sig[lab].tolist(),
        "richness": rich.tolist(),
        "cnn_population": fr.oof_mu[lab].tolist(),
        "sigma_population": fr.oof_sig[lab].tolist(),
        "richness_population": fr.oof_rich[lab].tolist(),
        "lambda_hat": data.lam_hat[lab].tolist(),
    }
    return Evaluation(per_fold=per_fold, summary=summary, oof=oof)


# --- the whole training ---------------------------------------------------------------------------------------------


def _check_resume(ckpt_dir: Path, cfg: TrainConfig, store) -> None:
    """Checkpoints resume only the same training: same config (but device/threads) and same store provenance."""
    from ..errors import SurveyMassError

    key = {k: v for k, v in asdict(cfg).items() if k not in ("device", "threads")}
    key["store_provenance"] = store.attrs.get("provenance", {})
    key = json.loads(json.dumps(key))
    f = ckpt_dir / paths.CHECKPOINT_CONFIG
    if f.exists():
        old = json.loads(f.read_text())
        if old != key:
            diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
            raise SurveyMassError(
                f"train: {str(ckpt_dir.parent)!r} holds checkpoints of a different training ({', '.join(diff)} differ); "
                "use another --out or delete it"
            )
    else:
        f.write_text(json.dumps(key))


def _labelled_pool(store, store_path, table: StoreTable, cfg: TrainConfig):
    """The labels' selection and the stage-2 pool: every cluster with a known selection, else the labelled."""
    from ..errors import SurveyMassError
    from ..selection import selection_for_store

    labelled = np.flatnonzero(np.isfinite(table.label))
    if labelled.size < 5 * cfg.folds:
        raise SurveyMassError(
            f"train: store {str(store_path)!r} has {labelled.size} labelled cutouts; {cfg.folds} folds need at least "
            f"{5 * cfg.folds}"
        )
    selection = selection_for_store(store) if cfg.selection_aware else None
    pool = np.arange(table.id.size) if selection is not None else labelled
    return selection, pool


def train(
    store_path: str | Path, out_dir: str | Path, cfg: TrainConfig | None = None, *, progress: bool = True
) -> TrainingReport:
    """Train both stages and the baseline on a store; write the model bundle and report into ``out_dir``."""
    from ..models.bundle import save_bundle
    from ..store import open_store
    from .report import build_card, build_report, write_report

    cfg = cfg or TrainConfig()
    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    store = open_store(store_path)
    out = Path(out_dir)
    ckpt_dir = out / paths.CHECKPOINTS
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(ckpt_dir, cfg, store)
    table = read_table(store)
    selection, pool = _labelled_pool(store, store_path, table, cfg)

    s1 = train_stage1(store, table, cfg, ckpt_dir, device, progress)
    model = MassModel(s1.classifier.backbone.eval())
    t_feat = time.perf_counter()
    raw = extract_pool_features(model, store, table, pool, device, progress=progress)
    pairs = nuisance_pairs(model, store, table, pool, cfg, device, progress=progress)
    model.set_standardisation(
        Standardisation.fit(np.concatenate([raw, pairs.degraded]), always_keep=(model.z_raw_index,))
    )
    feat_time = time.perf_counter() - t_feat
    rich = fit_richness_baseline(store, table, pool, cfg, progress)
    z_pool = table.z[pool].astype(np.float64)
    data = Stage2Data(
        x=standardised(model, raw),
        nuisance=nuisance_shifts(model, pairs, table.z[pairs.rows]),
        ids=table.id[pool],
        y=table.label[pool].astype(np.float64),
        truth=table.truth[pool].astype(np.float64),
        z=z_pool,
        lam_hat=rich.lam_hat,
        m_lim=selection.m_lim(z_pool) if selection is not None else None,
        z_index=model.z_index,
    )
    del raw
    fr = fit_folds(data, rich.baseline, selection, cfg, ckpt_dir, device, progress)
    cal = calibrate(data, fr, selection, cfg)
    ev = evaluate(data, fr, cal, selection, cfg)
    model.heads = nn.ModuleList(fr.heads)
    model.calibration = {
        "scale": cal.scale,
        "tau": cal.tau,
        "selection": selection.to_dict() if selection else None,
    }
    timing = {
        "stage1": s1.seconds,
        "features": feat_time,
        "richness": rich.seconds,
        "stage2": fr.seconds,
        "total": time.perf_counter() - t_start,
    }
    report = build_report(
        store,
        store_path,
        cfg,
        device,
        table,
        s1,
        fr,
        cal,
        ev,
        selection,
        timing,
        invariance_summary(model, pairs),
    )
    card = save_bundle(out, model, rich.baseline, build_card(model, rich.baseline, store, report, cfg))
    report = report.model_copy(update={"model_id": card.model_id})
    write_report(out, report)
    return report


def invariance_summary(model: MassModel, pairs: NuisancePairs) -> dict:
    """How much the fitted ensemble still moves under the training degradations, per noise factor (dex)."""
    with torch.no_grad():
        d = (
            model.forward_raw(torch.from_numpy(pairs.degraded))
            - model.forward_raw(torch.from_numpy(pairs.clean))
        ).numpy()
    out = {}
    for f in np.unique(pairs.noise_factor):
        sel = pairs.noise_factor == f
        out[f"noise_x{f:.3f}"] = {
            "mean_dex": float(d[sel].mean()),
            "rms_dex": float(np.sqrt((d[sel] ** 2).mean())),
        }
    return {
        "n": int(d.size),
        "by_noise_factor": out,
        "max_seeing_factor": float(pairs.seeing_factor.max(initial=1.0)),
    }
