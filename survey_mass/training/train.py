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

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import paths
from ..models.catalogue import CatalogueRelation, central_galaxy_feature
from ..models.mass_model import MassModel, Standardisation, measure_sky, prepare_images
from ..models.networks import VARIANTS, BandClassifier, MassRegressor
from ..photometry import BANDS, PSF_FWHM
from .heads import predict_head, train_head
from .report import BinScore, EstimatorScore, Evaluation, FoldMetrics, Summary, TrainingReport, metrics


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
    #: the headline also takes the catalogue's central-galaxy magnitude. Off by default: on the recalibrated
    #: mock it lowered the held-out MAE (0.163 -> 0.160) but turned the pixels' response over (blank sky then
    #: reads ~0.35 dex *more* massive than the cluster's own pixels: the pixels' central light and the catalogue's
    #: BCG are collinear, and the heads set them against each other), so the maps no longer explain a mass
    #: the pixels support; the lambda + BCG relation (``log10_m500_lambda_bcg``) is fitted either way
    headline_bcg: bool = False
    #: independent mock stores (other seeds, perturbed physics; never the rows a model is judged on) on which
    #: the error added below the labels' selection is calibrated (:func:`fit_tau`); none: that term is 0
    calibration_stores: tuple[str, ...] = ()
    #: a user's own labels (``train --labels``), matched to the store's clusters by id or position; they replace
    #: the store's labels, and ``label_selection`` (:meth:`~survey_mass.labels.LabelSelection.parse`) says how
    #: they were selected
    labels: str | None = None
    label_selection: str = "none"
    #: the user's labels' mass scale; hydrostatic labels are divided by 1 - b (``one_minus_b``: value, sd) onto
    #: the true scale the catalogue reports, and the sd is recorded (it is a systematic of every mass)
    label_scale: str = "true"
    one_minus_b: tuple[float, float] = (0.80, 0.10)
    #: aleatoric sigma log-linear in the predicted mass (else one sigma per head)
    heteroscedastic: bool = True
    threads: int | None = None


#: the fewest labels a training takes: below it a fold's unpenalised terms (z, z^2, richness, intercept, sigma's
#: two) fit its labels exactly and sigma collapses
MIN_LABELS = 30


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
    #: the candidate catalogue's richness (NaN where it has none)
    richness: np.ndarray
    #: the labels' X-ray flux limit at each position (NaN: the selection's own)
    flux_limit: np.ndarray
    #: the mock's own E[log10 M | lambda, BCG, z] (NaN outside mocks)
    oracle: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    #: the candidate catalogue's central-galaxy apparent i magnitude (NaN where it has none)
    bcg_mag_i: np.ndarray


def read_table(store) -> StoreTable:
    keys = (
        "z",
        "log10_m500_label",
        "log10_m500_true",
        "richness",
        "label_flux_limit",
        "log10_m500_oracle",
        "ra",
        "dec",
        "bcg_mag_i",
    )
    parts, rows, ids = [], [], []
    cols: dict[str, list] = {k: [] for k in keys}
    for p in store.partitions:
        c = store.columns(p)
        n = len(c["id"])
        parts.append(np.full(n, p))
        rows.append(np.arange(n))
        ids.append(c["id"])
        for k in keys:
            cols[k].append(np.asarray(c.get(k, np.full(n, np.nan)), dtype=float))

    def cat(a):
        return np.concatenate(a) if a else np.zeros(0)

    return StoreTable(
        cat(parts),
        cat(rows),
        cat(ids),
        *(cat(cols[k]) for k in keys),
    )


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
    from ..models.detection import detect_batch, richness_batch
    from ..models.richness import RichnessBaseline

    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed + 7)
    bkg_idx = np.sort(
        rng.choice(table.id.size, size=min(cfg.background_cutouts, table.id.size), replace=False)
    )
    found = detect_batch(read_cutouts(store, table, bkg_idx))  # the detection inference runs (sep's, batched)
    bkg_src = [found.row(k) for k in range(len(found))]
    baseline = RichnessBaseline(pixel_scale=store.pixel_scale, size=store.cutout_size)
    baseline.fit_background(bkg_src, table.z[bkg_idx])
    z_all = table.z[pool]
    lam = np.empty(pool.size)
    bar = _bar(pool.size, "richness baseline", progress)
    for s in range(0, pool.size, 512):
        images = read_cutouts(store, table, pool[s : s + 512])
        lam[s : s + 512] = richness_batch(baseline, images, z_all[s : s + 512])["richness"]
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
class HeadInputs:
    """What one set of fold heads is fitted on: standardised inputs (what the heads see) of the pool rows
    ``rows`` and the nuisance shifts, in its :class:`MassModel`'s coordinates."""

    model: MassModel
    x: np.ndarray
    nuisance: np.ndarray
    rows: np.ndarray  # bool over the pool: rows this model can predict (the headline needs a richness)


@dataclass
class Stage2Data:
    """Everything stage 2 fits on, one row per cluster of the pool."""

    inputs: dict[str, HeadInputs]  # "pixels" and, where the candidates have a richness, "headline"
    ids: np.ndarray
    y: np.ndarray  # labels, NaN for unlabelled clusters
    truth: np.ndarray
    oracle: np.ndarray
    z: np.ndarray
    richness: np.ndarray  # the catalogue's
    lam_hat: np.ndarray
    m_lim: np.ndarray | None
    #: the catalogue's central galaxy as the relation takes it (:func:`central_galaxy_feature`; NaN: none)
    bcg: np.ndarray

    @property
    def is_lab(self) -> np.ndarray:
        return np.isfinite(self.y)


@dataclass
class FoldResult:
    heads: dict[str, list[MassRegressor]]
    relation: CatalogueRelation
    #: the relation with the central galaxy (None where the candidates carry none)
    relation_bcg: CatalogueRelation | None
    folds: np.ndarray
    #: out-of-fold (mu, sigma) of every estimator (ESTIMATORS' names), NaN where it cannot predict
    oof: dict[str, tuple[np.ndarray, np.ndarray]]
    info: dict[str, list[dict]] = field(default_factory=dict)
    seconds: float = 0.0


def split_folds(data: Stage2Data, k: int, seed: int) -> np.ndarray:
    """Labelled clusters are split as always; unlabelled ones get their own seeded split (no cluster twice)."""
    folds = np.empty(data.ids.size, dtype=int)
    lab = data.is_lab
    folds[lab] = assign_folds(data.ids[lab], k, seed)
    folds[~lab] = assign_folds(data.ids[~lab], k, seed + 1)
    return folds


def _fold_head(
    data: Stage2Data, name: str, train_idx, cfg: TrainConfig, k: int, selection, ckpt: Path, device
):
    hi = data.inputs[name]
    if ckpt.exists():
        head = MassRegressor(hi.x.shape[1], hi.model.z_index).to(device)
        state = torch.load(ckpt, weights_only=True, map_location=device)
        head.load_state_dict(state["model"])
        return head, json.loads(bytes(state["info"].numpy().tobytes()).decode())
    idx = train_idx[hi.rows[train_idx]]
    head, info = train_head(
        hi.x[idx],
        data.y[idx],
        None if data.m_lim is None else data.m_lim[idx],
        cfg,
        cfg.seed + k,
        selection=selection,
        z_index=hi.model.z_index,
        direct=hi.model.direct_indices,
        pen_direct=hi.model.penalised_direct_indices,
        nuisance=hi.nuisance,
    )
    head = head.to(device)
    blob = torch.frombuffer(bytearray(json.dumps(info).encode()), dtype=torch.uint8)
    torch.save({"model": head.state_dict(), "info": blob}, ckpt)
    return head, info


def fit_folds(
    data: Stage2Data, baseline, selection, cfg: TrainConfig, ckpt_dir: Path, device, progress: bool
) -> FoldResult:
    """Per fold, fitted without it: the heads of each mass model, the catalogue relation and the lambda-hat
    baseline's calibration; out-of-fold predictions of all four estimators."""
    from ..inference.predict import ESTIMATORS

    t0 = time.perf_counter()
    folds = split_folds(data, cfg.folds, cfg.seed)
    n = data.ids.size
    oof = {e: (np.full(n, np.nan), np.full(n, np.nan)) for e in ESTIMATORS}
    has_lam = np.isfinite(data.richness) & (data.richness > 0)
    has_bcg = has_lam & np.isfinite(data.bcg)
    with_bcg = has_bcg.mean() >= 0.5
    if not with_bcg:
        del oof["lambda_bcg"]
    rel_bcg = CatalogueRelation(bcg=True) if with_bcg else None
    res = FoldResult({name: [] for name in data.inputs}, CatalogueRelation(), rel_bcg, folds, oof)
    res.info = {name: [] for name in data.inputs}
    bar = _bar(cfg.folds, "stage 2 folds", progress)
    for k in range(cfg.folds):
        test = folds == k
        train_idx = np.flatnonzero(~test)
        m_lim_tr = None if data.m_lim is None else data.m_lim[train_idx]
        for name, hi in data.inputs.items():
            ck = ckpt_dir / paths.fold_checkpoint(k, name)
            head, info = _fold_head(data, name, train_idx, cfg, k, selection, ck, device)
            rows = np.flatnonzero(test & hi.rows)
            mu, sig = predict_head(head, hi.x[rows], device)
            oof[name][0][rows], oof[name][1][rows] = mu, sig
            res.heads[name].append(head)
            res.info[name].append(info)
        _fit_relation_fold(
            data, res.relation, "lambda", train_idx[has_lam[train_idx]], test & has_lam, selection, oof
        )
        if rel_bcg is not None:
            _fit_relation_fold(
                data, rel_bcg, "lambda_bcg", train_idx[has_bcg[train_idx]], test & has_bcg, selection, oof
            )
        coef = baseline.fit_fold(
            data.lam_hat[train_idx], data.z[train_idx], data.y[train_idx], selection=selection, m_lim=m_lim_tr
        )
        baseline.folds.append(coef)
        oof["richness"][0][test] = baseline.predict(coef, data.lam_hat[test], data.z[test])
        oof["richness"][1][test] = coef[3]
        bar.update(1)
    bar.close()
    if "headline" not in data.inputs:  # no catalogue richness: the headline is the pixels' mass
        oof["headline"] = oof["pixels"]
    else:  # rows without a richness take the pixels' mass
        miss = ~data.inputs["headline"].rows
        for j in (0, 1):
            oof["headline"][j][miss] = oof["pixels"][j][miss]
    res.seconds = time.perf_counter() - t0
    return res


def _fit_relation_fold(
    data: Stage2Data, rel: CatalogueRelation, name: str, tr: np.ndarray, test, selection, oof
) -> None:
    """One fold of a catalogue relation (on lambda and z, and the central galaxy for ``rel.bcg``): fitted on the
    pool rows ``tr``, its out-of-fold prediction written to ``oof[name]`` on the ``test`` rows."""
    if not tr.size or np.isfinite(data.y[tr]).sum() < 5:
        return
    coef = rel.fit_fold(
        data.richness[tr],
        data.z[tr],
        data.y[tr],
        selection=selection,
        m_lim=None if data.m_lim is None else data.m_lim[tr],
        bcg=data.bcg[tr] if rel.bcg else None,
    )
    rel.folds.append(coef)
    rows = np.flatnonzero(test)
    mus, s2, _ = CatalogueRelation(folds=[coef], bcg=rel.bcg).fold_moments(
        data.richness[rows], data.z[rows], data.bcg[rows]
    )
    oof[name][0][rows], oof[name][1][rows] = mus[0], np.sqrt(s2[0])


# --- calibration ----------------------------------------------------------------------------------------------


@dataclass
class EstimatorCalibration:
    scale: float
    tau: float
    #: out-of-fold 68% coverage of the labels (as selected clusters) before and after
    coverage_before: float
    coverage_after: float
    #: rows of the independent calibration mocks tau was fitted on
    n_calibration: int = 0
    #: the error's factor at predicted masses ``mass_nodes`` (:func:`fit_mass_factors`)
    mass_nodes: tuple[float, ...] = ()
    mass_factors: tuple[float, ...] = ()


def _own_rows(data: Stage2Data, name: str) -> np.ndarray:
    """Rows an estimator predicts itself: the headline's rows with a richness (the others take the pixels')."""
    if name == "headline" and "headline" in data.inputs:
        return data.inputs["headline"].rows
    return np.ones(data.ids.size, bool)


def fit_scale(mu, sig, data: Stage2Data, selection, rows: np.ndarray | None = None) -> float:
    """The one scale on sigma under which the out-of-fold 68% intervals of the labels hold 68% of them, each
    label taken as a *selected* cluster (:meth:`~survey_mass.selection.XraySelection.selected_moments`), over
    ``rows``. (Maximising the likelihood instead gave 0.72: the residuals' tails are heavier than a Gaussian's,
    which a likelihood answers with a wider sigma.)"""
    ok = np.isfinite(mu) & np.isfinite(sig) & (True if rows is None else rows)
    if not (data.is_lab & ok).any():
        return 1.0
    mu_, sig_ = np.where(ok, mu, np.nan), np.where(ok, sig, np.nan)
    # the first crossing from below: a selected cluster's interval is not monotone in sigma (a wider sigma also
    # moves the selected mean), so far larger scales can cross 68% again
    for g in np.linspace(0.5, 3.0, 501):
        if label_coverage(mu_, g * sig_, data, selection) >= 0.6827:
            return float(g)
    return 3.0


def label_coverage(mu, sig, data: Stage2Data, selection) -> float:
    """Out-of-fold 68% coverage of the labels by (mu, sig), each label taken as a selected cluster."""
    lab = data.is_lab & np.isfinite(mu)
    y = data.y[lab]
    if selection is None:
        return float(np.mean(np.abs(y - mu[lab]) < sig[lab]))
    mean, sd = selection.selected_moments(mu[lab], sig[lab], data.m_lim[lab])
    return float(np.mean(np.abs(y - mean) < sd))


@dataclass
class CalibrationRows:
    """Predictions of one estimator on the independent calibration mocks: (mu, sigma without tau), truth, z and
    the positions' flux limits."""

    mu: np.ndarray
    sigma: np.ndarray
    truth: np.ndarray
    z: np.ndarray
    flux_limit: np.ndarray


def fit_tau(rows: CalibrationRows | None, selection) -> float:
    """tau of the extrapolation term from the calibration mocks' unlabelled clusters (0 without them)."""
    from ..selection import detection_probability, fit_extrapolation_tau

    if rows is None or selection is None:
        return 0.0
    ok = np.isfinite(rows.mu) & np.isfinite(rows.truth)
    if ok.sum() < 100:
        return 0.0
    # P_det at each position's flux limit, as the catalogue computes it
    m_lim = selection.m_lim(rows.z[ok], rows.flux_limit[ok])
    p_det = detection_probability(rows.mu[ok], rows.sigma[ok], m_lim, selection.width)
    return fit_extrapolation_tau(rows.mu[ok] - rows.truth[ok], rows.sigma[ok], p_det)


def calibration_rows(
    stores: list[str],
    models: dict[str, MassModel],
    relation: CatalogueRelation,
    device,
    progress: bool,
    relation_bcg: CatalogueRelation | None = None,
) -> dict[str, CalibrationRows]:
    """Every estimator's prediction, with its label-calibrated scale and no tau, on the calibration mocks."""
    from ..store import open_store

    out: dict[str, list] = {}
    for path in stores:
        store = open_store(path)
        table = read_table(store)
        index = np.arange(table.id.size)
        bar = _bar(index.size, f"calibration mock {Path(path).name}", progress)
        for s in range(0, index.size, 512):
            rows = index[s : s + 512]
            imgs = read_cutouts(store, table, rows)
            z, lam, bcg = table.z[rows], table.richness[rows], table.bcg_mag_i[rows]
            preds = {
                name: m.predict(imgs, z, lam if m.richness_input else None, bcg_mag_i=bcg, device=device)
                for name, m in models.items()
            }
            preds["lambda"] = relation.predict(lam, z)
            if relation_bcg is not None:
                preds["lambda_bcg"] = relation_bcg.predict(lam, z, bcg=central_galaxy_feature(bcg, z))
            for name, p in preds.items():
                sig = np.sqrt(p["log10_m500_err_aleatoric"] ** 2 + p["log10_m500_err_fold"] ** 2)
                out.setdefault(name, []).append(
                    (p["log10_m500"], sig, table.truth[rows], z, table.flux_limit[rows])
                )
            bar.update(rows.size)
        bar.close()
    return {
        name: CalibrationRows(*(np.concatenate(c) for c in zip(*v, strict=True))) for name, v in out.items()
    }


def fit_mass_factors(rows: CalibrationRows | None, tau: float, selection) -> tuple[tuple, tuple]:
    """The error's factor in tertiles of predicted mass on the independent mocks: the 68th percentile of
    |mu - truth| / err there, at the tertiles' median predicted masses (interpolated between, flat beyond).

    The labels set sigma where the labelled (massive) clusters are, and tau adds an error below the flux
    limits; neither gives the error's trend with mass across the population, which on the mocks was too flat
    (coverage 0.61 / 0.70 / 0.74 in tertiles of predicted mass before this factor)."""
    from ..selection import detection_probability, extrapolation_sigma

    if rows is None or selection is None:
        return (), ()
    ok = np.isfinite(rows.mu) & np.isfinite(rows.truth) & np.isfinite(rows.sigma)
    if ok.sum() < 300:
        return (), ()
    mu, sig, truth = rows.mu[ok], rows.sigma[ok], rows.truth[ok]
    m_lim = selection.m_lim(rows.z[ok], rows.flux_limit[ok])
    err = np.hypot(sig, extrapolation_sigma(tau, detection_probability(mu, sig, m_lim, selection.width)))
    edges = np.quantile(mu, [0, 1 / 3, 2 / 3, 1])
    nodes, factors = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (mu >= lo) & (mu <= hi)
        nodes.append(float(np.median(mu[m])))
        factors.append(float(np.quantile(np.abs(mu[m] - truth[m]) / err[m], 0.6827)))
    return tuple(nodes), tuple(factors)


def calibrate(
    data: Stage2Data, fr: FoldResult, selection, cal_rows: dict[str, CalibrationRows]
) -> dict[str, EstimatorCalibration]:
    """Per estimator: the scale on sigma from the labels (out of fold), and tau from the independent mocks."""
    out = {}
    for name, (mu, sig) in fr.oof.items():
        if name == "richness":  # the lambda-hat baseline keeps its fitted sigma
            cov = label_coverage(mu, sig, data, selection)
            out[name] = EstimatorCalibration(1.0, 0.0, cov, cov)
            continue
        scale = fit_scale(mu, sig, data, selection, rows=_own_rows(data, name))
        rows = cal_rows.get(name)  # their sigma already carries the model's scale (calibration_rows)
        tau = fit_tau(rows, selection)
        nodes, factors = fit_mass_factors(rows, tau, selection)
        out[name] = EstimatorCalibration(
            scale,
            tau,
            label_coverage(mu, sig, data, selection),
            label_coverage(mu, scale * sig, data, selection),
            0 if rows is None else int(np.isfinite(rows.truth).sum()),
            nodes,
            factors,
        )
    return out


def _calibration_dict(c: EstimatorCalibration) -> dict:
    return {"tau": c.tau, "mass_nodes": list(c.mass_nodes), "mass_factors": list(c.mass_factors)}


def final_errors(data: Stage2Data, fr: FoldResult, cal: dict[str, EstimatorCalibration], selection) -> dict:
    """Out-of-fold calibrated error of every estimator and pool row: scale sigma and the extrapolation term."""
    from ..selection import detection_probability, extrapolation_sigma

    errs = {}
    for name, (mu, sig) in fr.oof.items():
        own = _own_rows(data, name)
        scale = np.where(own, cal[name].scale, cal["pixels"].scale)
        tau = np.where(own, cal[name].tau, cal["pixels"].tau)
        s = scale * sig
        extra = np.zeros_like(s)
        if selection is not None:
            extra = extrapolation_sigma(tau, detection_probability(mu, s, data.m_lim, selection.width))
        factor = np.ones_like(s)
        for nm in (name, "pixels"):
            c = cal[nm]
            if c.mass_nodes:
                f = np.interp(mu, c.mass_nodes, c.mass_factors)
                factor = np.where(own if nm == name else ~own, f, factor)
        errs[name] = factor * np.hypot(s, extra)
    return errs


# --- evaluation -----------------------------------------------------------------------------------------------


def _bins(x: np.ndarray, pred, truth, err, edges) -> list[BinScore]:
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (x >= lo) & (x <= hi) & np.isfinite(pred) & np.isfinite(truth)
        d = pred[m] - truth[m]
        out.append(
            BinScore(
                lo=float(lo),
                hi=float(hi),
                n=int(m.sum()),
                mae=float(np.mean(np.abs(d))) if d.size else None,
                bias=float(np.mean(d)) if d.size else None,
                coverage=float(np.mean(np.abs(d) < err[m])) if d.size else None,
            )
        )
    return out


def tertile_edges(x: np.ndarray) -> list[float]:
    x = x[np.isfinite(x)]
    return [float(v) for v in np.quantile(x, [0, 1 / 3, 2 / 3, 1])] if x.size else [0.0, 0.0]


def score_population(pred, err, truth, richness, z) -> dict:
    """MAE, bias, 68% coverage, overall and in tertiles of catalogue richness, z, predicted and true mass."""
    ok = np.isfinite(pred) & np.isfinite(truth)
    cov = float(np.mean(np.abs(pred[ok] - truth[ok]) < err[ok])) if ok.any() else None
    by = {
        "catalogue_richness": _bins(richness, pred, truth, err, tertile_edges(richness)),
        "z": _bins(z, pred, truth, err, tertile_edges(z)),
        "predicted_mass": _bins(pred, pred, truth, err, tertile_edges(pred)),
        "true_mass": _bins(truth, pred, truth, err, tertile_edges(truth)),
    }
    return {"vs_truth": metrics(pred, truth), "coverage_68": cov, "coverage_by": by}


def evaluate(data: Stage2Data, fr: FoldResult, errs: dict, selection, cfg: TrainConfig) -> Evaluation:
    """Out-of-fold metrics of every estimator: against the labels (each taken as a *selected* cluster) and, for
    every cluster of the pool (labelled or not: the population the catalogue describes), against the mock's
    true masses with their calibrated errors."""
    lab = data.is_lab
    y, truth, folds = data.y[lab], data.truth[lab], fr.folds[lab]
    as_selected = {}
    for name, (mu, sig) in fr.oof.items():
        m = mu[lab]
        if selection is not None:
            m, _ = selection.selected_moments(m, sig[lab], data.m_lim[lab])
        as_selected[name] = m
    per_fold = [
        FoldMetrics(
            fold=k,
            n=int((folds == k).sum()),
            mae_vs_label={e: metrics(p[folds == k], y[folds == k]).mae for e, p in as_selected.items()},
            ridge={name: info[k]["ridge"] for name, info in fr.info.items()},
        )
        for k in range(cfg.folds)
    ]
    unl = np.isfinite(data.truth)
    scores = {}
    for name, (mu, _) in fr.oof.items():
        pop = score_population(mu[unl], errs[name][unl], data.truth[unl], data.richness[unl], data.z[unl])
        scores[name] = EstimatorScore(
            vs_label=metrics(as_selected[name], y),
            label_coverage_68=label_coverage(mu, errs[name], data, selection),
            **(pop if unl.any() else {"vs_truth": None, "coverage_68": None, "coverage_by": {}}),
        )
    fold_mae = {
        e: [f.mae_vs_label[e] for f in per_fold if f.mae_vs_label[e] is not None] for e in as_selected
    }
    summary = Summary(
        estimators=scores,
        label_vs_truth=metrics(y, truth),
        oracle_vs_truth=metrics(data.oracle[unl], data.truth[unl])
        if np.isfinite(data.oracle[unl]).any()
        else None,
        mean_fold_mae={e: float(np.mean(v)) for e, v in fold_mae.items() if v},
        best_fold_mae={e: float(np.min(v)) for e, v in fold_mae.items() if v},
        n_population=int(unl.sum()),
    )
    oof = {
        "id": data.ids[lab].tolist(),
        "fold": folds.tolist(),
        "label": y.tolist(),
        "truth": truth.tolist(),
        "z": data.z[lab].tolist(),
        "richness_catalogue": data.richness[lab].tolist(),
        "lambda_hat": data.lam_hat[lab].tolist(),
        **{f"{e}_as_selected": p.tolist() for e, p in as_selected.items()},
        **{f"{e}_population": fr.oof[e][0][lab].tolist() for e in fr.oof},
        **{f"{e}_sigma": fr.oof[e][1][lab].tolist() for e in fr.oof},
    }
    return Evaluation(per_fold=per_fold, summary=summary, oof=oof)


# --- the whole training ---------------------------------------------------------------------------------------------


def _check_resume(ckpt_dir: Path, cfg: TrainConfig, store) -> None:
    """Checkpoints resume only the same training: same config (but device/threads) and same store provenance."""
    from ..errors import SurveyMassError

    key = {k: v for k, v in asdict(cfg).items() if k not in ("device", "threads")}
    key["store_provenance"] = store.attrs.get("provenance", {})
    if cfg.labels:  # the labels' content, not only their path
        key["labels_sha256"] = hashlib.sha256(Path(cfg.labels).read_bytes()).hexdigest()
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


def user_label_offset(cfg: TrainConfig) -> float:
    """The user's labels' scale minus the true one (dex): log10(1 - b) for hydrostatic labels, else 0."""
    from ..labels import scale_offset_dex

    return scale_offset_dex(cfg.label_scale, cfg.one_minus_b)[0]  # type: ignore[arg-type]


def with_user_labels(table: StoreTable, labels, declared, cfg: TrainConfig) -> StoreTable:
    """The table with a user's labels (:func:`~survey_mass.labels.read_labels` of ``cfg.labels``) in place of
    the store's: matched by id or position, and each row's limit from the ``declared`` selection (its label
    survey's; the default for unlabelled rows)."""
    from ..labels import match_labels

    rows, lab = match_labels(labels, table.id, table.ra, table.dec, table.z)
    y = np.full(table.id.size, np.nan)
    y[rows] = labels["log10_m500"].to_numpy(float)[lab] - user_label_offset(cfg)  # onto the true scale
    survey = np.full(table.id.size, "*", dtype=object)
    survey[rows] = labels["survey"].to_numpy()[lab]
    return replace(table, label=y, flux_limit=declared.row_limits(survey))


def _labelled_pool(store, store_path, table: StoreTable, cfg: TrainConfig, declared=None):
    """The labels' selection and the stage-2 pool: every cluster with a known selection, else the labelled.
    ``declared``: the user's declared :class:`~survey_mass.labels.LabelSelection` (with ``cfg.labels``)."""
    from ..errors import SurveyMassError
    from ..selection import selection_for_store

    labelled = np.flatnonzero(np.isfinite(table.label))
    need = max(5 * cfg.folds, MIN_LABELS)
    if labelled.size < need:
        whose = f"labels {cfg.labels!r} match" if cfg.labels else f"store {str(store_path)!r} has"
        raise SurveyMassError(
            f"train: {whose} {labelled.size} labelled cutouts; {cfg.folds} folds need at least {need} (each fold's "
            "heads have unpenalised terms in z, richness and sigma that fewer labels fit exactly)"
        )
    if cfg.labels:
        selection = declared.selection(user_label_offset(cfg)) if cfg.selection_aware else None
    else:
        selection = selection_for_store(store) if cfg.selection_aware else None
    pool = np.arange(table.id.size) if selection is not None else labelled
    return selection, pool


def _check_calibration_stores(cfg: TrainConfig, store_path) -> None:
    from ..errors import SurveyMassError
    from ..store import open_store

    seed = open_store(store_path).meta.provenance.get("seed")
    for p in cfg.calibration_stores:
        if Path(p).resolve() == Path(store_path).resolve():
            raise SurveyMassError(
                f"train: calibration store {str(p)!r} is the training store; use an independent mock"
            )
        cal = open_store(p)
        if seed is not None and cal.meta.provenance.get("seed") == seed:
            raise SurveyMassError(
                f"train: calibration store {str(p)!r} has the training store's seed ({seed}); use another seed"
            )
        if not np.isfinite(read_table(cal).truth).any():
            raise SurveyMassError(
                f"train: calibration store {str(p)!r} has no true masses (a mock is needed)"
            )


def build_stage2(
    backbone_model: MassModel, store, table: StoreTable, pool: np.ndarray, selection, cfg, device, progress
) -> tuple[Stage2Data, NuisancePairs, RichnessFit, float]:
    """Features of the pool, the standardisation of each mass model, and the lambda-hat baseline."""
    t0 = time.perf_counter()
    raw = extract_pool_features(backbone_model, store, table, pool, device, progress=progress)
    pairs = nuisance_pairs(backbone_model, store, table, pool, cfg, device, progress=progress)
    lam = table.richness[pool]
    has_lam = np.isfinite(lam) & (lam > 0)
    bcg_mag = table.bcg_mag_i[pool]
    bcg = central_galaxy_feature(bcg_mag, table.z[pool])
    # the headline takes the central galaxy where most candidates with a richness give one
    with_bcg = bool(cfg.headline_bcg and has_lam.any() and np.isfinite(bcg[has_lam]).mean() >= 0.5)
    inputs = {}
    for name in ("pixels", "headline"):
        with_lam = name == "headline"
        if with_lam and has_lam.mean() < 0.5:  # the candidates carry (almost) no richness: pixels alone
            continue
        model = MassModel(backbone_model.backbone, richness_input=with_lam, bcg_input=with_lam and with_bcg)
        if model.bcg_input:
            model.fit_bcg_fill(lam[has_lam], table.z[pool][has_lam], bcg_mag[has_lam])
        at_pairs = np.searchsorted(pool, pairs.rows)
        lam_pairs = lam[at_pairs] if with_lam else None
        r = model.extend_raw(raw, lam if with_lam else None, bcg_mag)
        clean = model.extend_raw(pairs.clean, lam_pairs, bcg_mag[at_pairs])
        worse = model.extend_raw(pairs.degraded, lam_pairs, bcg_mag[at_pairs])
        fit_rows = has_lam if with_lam else np.ones(pool.size, bool)
        pair_rows = np.isfinite(worse).all(axis=1)
        model.set_standardisation(
            Standardisation.fit(
                np.concatenate([r[fit_rows], worse[pair_rows]]), always_keep=model.always_keep()
            )
        )
        sub = NuisancePairs(
            pairs.rows[pair_rows],
            clean[pair_rows],
            worse[pair_rows],
            pairs.noise_factor[pair_rows],
            pairs.seeing_factor[pair_rows],
        )
        x = np.nan_to_num(standardised(model, np.nan_to_num(r, nan=1.0)))
        inputs[name] = HeadInputs(model, x, nuisance_shifts(model, sub, table.z[sub.rows]), fit_rows)
    feat_time = time.perf_counter() - t0
    rich = fit_richness_baseline(store, table, pool, cfg, progress)
    z_pool = table.z[pool].astype(np.float64)
    data = Stage2Data(
        inputs=inputs,
        ids=table.id[pool],
        y=table.label[pool].astype(np.float64),
        truth=table.truth[pool].astype(np.float64),
        oracle=table.oracle[pool].astype(np.float64),
        z=z_pool,
        richness=lam.astype(np.float64),
        lam_hat=rich.lam_hat,
        m_lim=selection.m_lim(z_pool, table.flux_limit[pool]) if selection is not None else None,
        bcg=bcg,
    )
    return data, pairs, rich, feat_time


def train(
    store_path: str | Path, out_dir: str | Path, cfg: TrainConfig | None = None, *, progress: bool = True
) -> TrainingReport:
    """Train both stages, the catalogue relation and the baseline on a store; write the bundle and report."""
    from ..models.bundle import save_bundle
    from ..store import open_store
    from .report import build_card, build_report, write_report

    cfg = cfg or TrainConfig()
    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    store = open_store(store_path)
    declared = None
    if cfg.labels:  # read (and refuse bad labels or a bad selection) before anything is written
        from ..labels import LabelSelection, read_labels

        declared = LabelSelection.parse(cfg.label_selection)
        labels = read_labels(cfg.labels)
    _check_calibration_stores(cfg, store_path)
    out = Path(out_dir)
    ckpt_dir = out / paths.CHECKPOINTS
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(ckpt_dir, cfg, store)
    table = read_table(store)
    if cfg.labels:
        table = with_user_labels(table, labels, declared, cfg)
    selection, pool = _labelled_pool(store, store_path, table, cfg, declared)
    if selection is not None and selection.label_offset_dex and not cfg.labels:
        # a mock store's hydrostatic labels onto the true mass scale (a user's are converted as they are read)
        table = replace(table, label=selection.to_true(table.label))

    s1 = train_stage1(store, table, cfg, ckpt_dir, device, progress)
    data, pairs, rich, feat_time = build_stage2(
        MassModel(s1.classifier.backbone.eval()), store, table, pool, selection, cfg, device, progress
    )
    fr = fit_folds(data, rich.baseline, selection, cfg, ckpt_dir, device, progress)
    sel_dict = selection.to_dict() if selection else None
    models = {}
    for name, hi in data.inputs.items():
        hi.model.heads = nn.ModuleList(fr.heads[name])
        scale = fit_scale(*fr.oof[name], data, selection, rows=_own_rows(data, name))
        hi.model.calibration = {"scale": scale, "tau": 0.0, "selection": sel_dict}
        models[name] = hi.model
    relations = {"lambda": fr.relation, "lambda_bcg": fr.relation_bcg}
    for name, rel in relations.items():
        if rel is not None:
            rel.calibration = {
                "scale": fit_scale(*fr.oof[name], data, selection),
                "tau": 0.0,
                "selection": sel_dict,
            }
    t_cal = time.perf_counter()
    cal_rows = calibration_rows(
        list(cfg.calibration_stores), models, fr.relation, device, progress, fr.relation_bcg
    )
    if "headline" not in models and "pixels" in cal_rows:
        cal_rows["headline"] = cal_rows["pixels"]
    cal = calibrate(data, fr, selection, cal_rows)
    for name, m in models.items():
        m.calibration.update(_calibration_dict(cal[name]))
    for name, rel in relations.items():
        if rel is not None:
            rel.calibration.update(_calibration_dict(cal[name]))
    errs = final_errors(data, fr, cal, selection)
    ev = evaluate(data, fr, errs, selection, cfg)
    timing = {
        "stage1": s1.seconds,
        "features": feat_time,
        "richness": rich.seconds,
        "stage2": fr.seconds,
        "calibration": time.perf_counter() - t_cal,
        "total": time.perf_counter() - t_start,
    }
    headline = models.get("headline", models["pixels"])
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
        invariance_summary(models["pixels"], pairs),
    )
    card = save_bundle(
        out,
        headline,
        rich.baseline,
        build_card(models, fr.relation, rich.baseline, store, report, cfg, fr.relation_bcg),
        pixels=models["pixels"] if headline is not models["pixels"] else None,
    )
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
