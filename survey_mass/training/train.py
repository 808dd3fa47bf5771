"""Training: stage 1 (band classifier, no labels), stage 2 (k-fold mass regressors), the richness baseline,
out-of-fold calibration, and the model bundle.

Everything is seeded. Stage 1 checkpoints each epoch and stage 2 each fold (``MODEL_DIR/checkpoints``), so an
interrupted training resumes where it stopped. Checkpoints and weights hold tensors only and load with
``torch.load(weights_only=True)`` / safetensors: nothing is unpickled.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..models.networks import VARIANTS, BandClassifier, MassRegressor, band_features, normalise
from ..models.richness import RichnessBaseline, detect
from ..photometry import BANDS


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


def train_stage1(store, table: StoreTable, cfg: TrainConfig, ckpt_dir: Path, device, progress: bool):
    """Band classifier on single-band cutouts; returns (model, per-band validation accuracy, seconds)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    n_cut = min(table.id.size, max(cfg.stage1_images // len(BANDS), 16))
    pick = np.sort(rng.choice(table.id.size, size=n_cut, replace=False))
    images = torch.from_numpy(read_cutouts(store, table, pick))
    x, _ = normalise(images)  # (n, 5, H, W)
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
    ck = ckpt_dir / "stage1.pt"
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
    # per-band accuracy on the held-out cutouts
    model.eval()
    correct = np.zeros(5)
    total = np.zeros(5)
    with torch.no_grad():
        for s in range(0, len(val_pairs), 512):
            b = val_pairs[s : s + 512]
            xb = x[b[:, 0], b[:, 1]].unsqueeze(1).to(device).contiguous(memory_format=torch.channels_last)
            pred = model(xb).argmax(1).cpu().numpy()
            for band in range(5):
                m = b[:, 1] == band
                correct[band] += (pred[m] == band).sum()
                total[band] += m.sum()
    acc = {BANDS[k]: float(correct[k] / max(total[k], 1)) for k in range(5)}
    return model, acc, history, time.perf_counter() - t0


# --- features -----------------------------------------------------------------------------------------------------


@torch.no_grad()
@torch.no_grad()
def extract_features(
    backbone, store, table: StoreTable, index: np.ndarray, device, batch: int = 64, *, progress: bool = False
):
    """Frozen stage-1 features of the five bands, z and log noise for table rows ``index``: (n, D) float32."""
    backbone.eval()
    feats = []
    bar = _bar(index.size, "stage 2 features", progress)
    for s in range(0, index.size, 512):
        imgs = torch.from_numpy(read_cutouts(store, table, index[s : s + 512]))
        for t in range(0, imgs.shape[0], batch):
            f, log_sigma = band_features(backbone, imgs[t : t + batch].to(device))
            feats.append(torch.cat([f.cpu(), log_sigma.cpu()], dim=1).numpy())
        bar.update(imgs.shape[0])
    bar.close()
    f = np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)
    z = np.nan_to_num(table.z[index][:, None].astype(np.float32))  # as at inference
    return np.concatenate([f[:, : f.shape[1] - 5], z, f[:, -5:]], axis=1).astype(np.float32)


# --- stage 2 ------------------------------------------------------------------------------------------------


def assign_folds(ids: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold of each labelled cluster: a seeded permutation cut into k nearly equal parts (one fold per id)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(ids.size)
    folds = np.empty(ids.size, dtype=int)
    folds[order] = np.arange(ids.size) % k
    return folds


def head_nll(mu, sigma, y, labelled, m_lim, selection, *, joint: bool = True):
    """Per-row negative log-likelihood of the stage-2 data under a population prediction (mu, sigma).

    Without a selection, only labelled rows exist: the Gaussian NLL (label noise inside sigma). With one, the
    survey's likelihood of labels and non-detections, :func:`survey_mass.selection.survey_nll`.
    """
    if selection is None:
        return 0.5 * (y - mu) ** 2 / sigma**2 + torch.log(sigma)
    from ..selection import survey_nll

    return survey_nll(
        mu, sigma, y, labelled, m_lim, selection.s, selection.label_noise_dex, joint=joint, xp=torch
    )


def _fit_ridge(design, y, labelled, m_lim, selection, ridge: float, n_free: int, joint: bool):
    """Maximum penalised likelihood of (w, b, log sigma); a penalty of ``ridge`` per row falls on the first
    ``n_free`` weights (the principal components), not on the redshift terms."""
    w = torch.zeros(design.shape[1], dtype=torch.float64)
    lab_y = y[labelled]
    b = torch.tensor(float(lab_y.mean()) if lab_y.numel() else 14.2, dtype=torch.float64)
    ls = torch.tensor(np.log(0.25), dtype=torch.float64)
    params = [w.requires_grad_(), b.requires_grad_(), ls.requires_grad_()]
    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=400, history_size=20, line_search_fn="strong_wolfe")

    def objective():
        opt.zero_grad()
        mu = design @ w + b
        loss = head_nll(mu, torch.exp(ls).expand_as(mu), y, labelled, m_lim, selection, joint=joint).sum()
        loss = loss + ridge * design.shape[0] * (w[:n_free] ** 2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(objective)
    return w.detach(), float(b.detach()), float(ls.detach())


def _laplace_factor(design, y, labelled, m_lim, selection, ridge, k, joint, w, b, ls, proj, centre, z_index):
    """U such that |U [x, z^2, 1]|^2 is the variance of the head's mean from its weights' uncertainty.

    Laplace approximation: the weights' posterior covariance is the inverse Hessian of the penalised negative
    log-likelihood at the optimum (sigma held fixed). In design coordinates d' = [pcs, z, z^2, 1] the predictive
    variance is d'^T C d' = |L^T d'|^2 with C = L L^T; the map from the head's inputs to d' is folded in.
    """
    theta0 = torch.cat([w, torch.tensor([b], dtype=torch.float64)])
    sig = torch.full((design.shape[0],), float(np.exp(ls)), dtype=torch.float64)

    def objective(theta):
        mu = design @ theta[:-1] + theta[-1]
        loss = head_nll(mu, sig, y, labelled, m_lim, selection, joint=joint).sum()
        return loss + ridge * design.shape[0] * (theta[:k] ** 2).sum()

    hess = torch.autograd.functional.hessian(objective, theta0)
    hess = 0.5 * (hess + hess.T) + 1e-9 * torch.eye(hess.shape[0], dtype=torch.float64)
    chol = torch.linalg.cholesky(torch.linalg.inv(hess))
    n_in = proj.shape[0]
    a = torch.zeros(k + 3, n_in + 2, dtype=torch.float64)  # d' = A [x, z^2, 1]
    a[:k, :n_in] = proj.T
    a[:k, -1] = -(proj.T @ centre)
    a[k, z_index] = 1.0
    a[k + 1, n_in] = 1.0
    a[k + 2, -1] = 1.0
    return (chol.T @ a).float()


def train_head(
    x_pool: np.ndarray,
    y_pool: np.ndarray,
    m_lim_pool: np.ndarray | None,
    cfg: TrainConfig,
    seed: int,
    *,
    selection=None,
    z_index: int,
) -> tuple[MassRegressor, dict]:
    """One fold's linear head from its training pool (labels NaN for unlabelled clusters).

    The pool's features are projected on their leading principal components (whitened), the head is fitted
    with a ridge penalty for each strength in ``cfg.stage2_ridge`` on 85% of the pool, and the strength with the
    best likelihood on the other 15% (the fold's validation split) is kept: the linear model's form of early
    stopping. The projection is then folded into one linear layer, so inference sees a plain linear head.
    """
    torch.manual_seed(seed)
    x = torch.from_numpy(np.asarray(x_pool, np.float64))
    y = torch.from_numpy(np.asarray(y_pool, np.float64))
    labelled = torch.isfinite(y)
    joint = bool((~labelled).any())
    m_lim = None if m_lim_pool is None else torch.from_numpy(np.asarray(m_lim_pool, np.float64))
    centre = x.mean(dim=0)
    _, sv, vt = torch.linalg.svd(x - centre, full_matrices=False)
    k = min(cfg.stage2_components, vt.shape[0])
    proj = vt[:k].T / sv[:k] * np.sqrt(x.shape[0])  # whitened principal components
    zcol = x[:, z_index : z_index + 1]
    design = torch.cat([(x - centre) @ proj, zcol, zcol**2], dim=1)
    rng = np.random.default_rng(seed)
    val = torch.from_numpy(rng.random(x.shape[0]) < 0.15)
    tr = ~val

    def rows(mask):
        return design[mask], y[mask], labelled[mask], None if m_lim is None else m_lim[mask]

    curve, best = [], None
    dtr, ytr, ltr, mtr = rows(tr)
    split = ((dtr, ytr, ltr, mtr), rows(val))
    for ridge in cfg.stage2_ridge:
        w, b, ls = _fit_ridge(dtr, ytr, ltr, mtr, selection, ridge, k, joint)
        with torch.no_grad():
            nll = []
            for d, yy, ll, mm in split:
                mu = d @ w + b
                sig = torch.full_like(mu, float(np.exp(ls)))
                nll.append(float(head_nll(mu, sig, yy, ll, mm, selection, joint=joint).mean()))
        curve.append((nll[0], nll[1]))
        if best is None or nll[1] < best[0]:
            best = (nll[1], ridge)
    # refit on the whole pool with the chosen strength, then fold the projection into the head
    w, b, ls = _fit_ridge(design, y, labelled, m_lim, selection, best[1], k, joint)
    weight = torch.zeros(x.shape[1] + 1, dtype=torch.float64)
    weight[: x.shape[1]] = proj @ w[:k]
    weight[z_index] += w[k]
    weight[-1] = w[k + 1]
    bias = b - float(centre @ (proj @ w[:k]))
    head = MassRegressor(feature_dim=(x.shape[1] - 6) // 5)
    head.set_from_components(weight.float(), bias, ls)
    head.epistemic = _laplace_factor(
        design, y, labelled, m_lim, selection, best[1], k, joint, w, b, ls, proj, centre, z_index
    )
    info = {
        "ridge": best[1],
        "ridge_path": list(cfg.stage2_ridge),
        "val_nll": best[0],
        "curve": curve,
        "n_pool": int(x.shape[0]),
        "n_labelled": int(labelled.sum()),
        "components": k,
    }
    return head, info


@torch.no_grad()
def predict_head(head: MassRegressor, x: np.ndarray, device) -> tuple[np.ndarray, np.ndarray]:
    """Mean and total sigma (aleatoric and the head's parameter uncertainty) of each row."""
    head.eval()
    mu, log_s, epi = head.moments(torch.from_numpy(x).to(device))
    var = torch.exp(2 * log_s) + epi
    return mu.cpu().numpy().astype(float), np.sqrt(var.cpu().numpy().astype(float))


def metrics(pred: np.ndarray, ref: np.ndarray) -> dict:
    ok = np.isfinite(pred) & np.isfinite(ref)
    d = pred[ok] - ref[ok]
    if d.size == 0:
        return {"n": 0, "mae": None, "bias": None, "scatter": None}
    return {
        "n": int(d.size),
        "mae": float(np.mean(np.abs(d))),
        "bias": float(np.mean(d)),
        "scatter": float(np.std(d)),
    }


# --- the whole training ---------------------------------------------------------------------------------------------


def _check_resume(ckpt_dir: Path, cfg: TrainConfig, store) -> None:
    """Checkpoints resume only the same training: same config (but device/threads) and same store provenance."""
    from ..errors import SurveyMassError

    key = {k: v for k, v in asdict(cfg).items() if k not in ("device", "threads")}
    key["store_provenance"] = store.attrs.get("provenance", {})
    f = ckpt_dir / "config.json"
    if f.exists():
        old = json.loads(f.read_text())
        if old != json.loads(json.dumps(key)):
            diff = sorted(k for k in set(old) | set(key) if old.get(k) != json.loads(json.dumps(key)).get(k))
            raise SurveyMassError(
                f"train: {str(ckpt_dir.parent)!r} holds checkpoints of a different training ({', '.join(diff)} differ); "
                "use another --out or delete it"
            )
    else:
        f.write_text(json.dumps(key))


def train(
    store_path: str | Path, out_dir: str | Path, cfg: TrainConfig | None = None, *, progress: bool = True
) -> dict:
    """Train both stages and the baseline on a store; write the model bundle and report into ``out_dir``."""
    from ..errors import SurveyMassError
    from ..models.bundle import save_bundle
    from ..store import open_store
    from .report import write_report

    cfg = cfg or TrainConfig()
    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    store = open_store(store_path)
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(ckpt_dir, cfg, store)
    table = read_table(store)
    labelled = np.flatnonzero(np.isfinite(table.label))
    if labelled.size < 5 * cfg.folds:
        raise SurveyMassError(
            f"train: store {str(store_path)!r} has {labelled.size} labelled cutouts; {cfg.folds} folds need at least "
            f"{5 * cfg.folds}"
        )

    # stage 1
    clf, band_acc, s1_hist, s1_time = train_stage1(store, table, cfg, ckpt_dir, device, progress)
    backbone = clf.backbone

    from ..selection import (
        detection_probability,
        extrapolation_sigma,
        fit_extrapolation_tau,
        selected_moments,
        selection_for_store,
    )

    selection = selection_for_store(store) if cfg.selection_aware else None
    # With a known selection every cluster takes part in stage 2 (unlabelled ones as non-detections);
    # without one, only the labelled clusters do.
    pool = np.arange(table.id.size) if selection is not None else labelled
    is_lab = np.isfinite(table.label[pool])

    # features, standardised with the labelled subset's statistics (what the heads are scaled to)
    t_feat = time.perf_counter()
    feats = extract_features(backbone, store, table, pool, device, progress=progress)
    f_mean, f_std = feats[is_lab].mean(0), feats[is_lab].std(0) + 1e-6
    xs = np.clip((feats - f_mean) / f_std, -10.0, 10.0).astype(np.float32)  # as predict.FEATURE_CLIP
    del feats
    y_all = table.label[pool].astype(np.float64)
    truth_all = table.truth[pool].astype(np.float64)
    z_all = table.z[pool].astype(np.float64)
    feat_time = time.perf_counter() - t_feat
    m_lim_all = selection.m_lim(z_all) if selection is not None else None
    z_index = xs.shape[1] - 6

    # richness baseline: background from a sample, then lambda_hat for every cluster of the pool
    t_rich = time.perf_counter()
    rng = np.random.default_rng(cfg.seed + 7)
    bkg_idx = np.sort(
        rng.choice(table.id.size, size=min(cfg.background_cutouts, table.id.size), replace=False)
    )
    bkg_src = [detect(img) for img in read_cutouts(store, table, bkg_idx)]
    baseline = RichnessBaseline(pixel_scale=store.pixel_scale, size=store.cutout_size)
    baseline.fit_background(bkg_src, table.z[bkg_idx])
    lam_all = np.empty(pool.size)
    bar = _bar(pool.size, "richness baseline", progress)
    for s in range(0, pool.size, 512):
        for j, img in enumerate(read_cutouts(store, table, pool[s : s + 512])):
            zz = z_all[s + j]
            lam_all[s + j] = baseline.richness(detect(img), float(zz)) if np.isfinite(zz) else np.nan
        bar.update(min(512, pool.size - s))
    bar.close()
    lam_all = np.where(np.isfinite(lam_all), lam_all, 1.0)
    rich_time = time.perf_counter() - t_rich

    # stage 2: k folds. Labelled clusters are split exactly as before; unlabelled ones get their own seeded
    # split, so no cluster is in two folds.
    folds_all = np.empty(pool.size, dtype=int)
    folds_all[is_lab] = assign_folds(table.id[pool][is_lab], cfg.folds, cfg.seed)
    folds_all[~is_lab] = assign_folds(table.id[pool][~is_lab], cfg.folds, cfg.seed + 1)
    oof_mu = np.full(pool.size, np.nan)
    oof_sig = np.full(pool.size, np.nan)
    oof_rich = np.full(pool.size, np.nan)
    oof_rich_sig = np.full(pool.size, np.nan)
    heads, fold_info = [], []
    t_s2 = time.perf_counter()
    bar = _bar(cfg.folds, "stage 2 folds", progress)
    for k in range(cfg.folds):
        test = folds_all == k
        train_idx = np.flatnonzero(~test)
        ck = ckpt_dir / f"fold{k}.pt"
        if ck.exists():
            head = MassRegressor(feature_dim=(xs.shape[1] - 6) // 5).to(device)
            state = torch.load(ck, weights_only=True, map_location=device)
            head.load_state_dict(state["model"])
            info = json.loads(bytes(state["info"].numpy().tobytes()).decode())
        else:
            head, info = train_head(
                xs[train_idx],
                y_all[train_idx],
                None if m_lim_all is None else m_lim_all[train_idx],
                cfg,
                cfg.seed + k,
                selection=selection,
                z_index=z_index,
            )
            head = head.to(device)
            blob = torch.frombuffer(bytearray(json.dumps(info).encode()), dtype=torch.uint8)
            torch.save({"model": head.state_dict(), "info": blob}, ck)
        oof_mu[test], oof_sig[test] = predict_head(head, xs[test], device)
        coef = baseline.fit_fold(
            lam_all[train_idx],
            z_all[train_idx],
            y_all[train_idx],
            selection=selection,
            m_lim=None if m_lim_all is None else m_lim_all[train_idx],
        )
        baseline.folds.append(coef)
        oof_rich[test] = baseline.predict(coef, lam_all[test], z_all[test])
        oof_rich_sig[test] = coef[3]
        heads.append(head)
        fold_info.append(info)
        bar.update(1)
    bar.close()
    s2_time = time.perf_counter() - t_s2

    # The heads predict the population's mass. Against the labels, which only selected clusters have, both the
    # CNN and the baseline are scored by what they imply for a *selected* cluster (selection.selected_moments).
    lab = np.flatnonzero(is_lab)
    y, truth, z, lam_hat = y_all[lab], truth_all[lab], z_all[lab], lam_all[lab]
    folds = folds_all[lab]
    pop_mu, pop_rich = oof_mu[lab], oof_rich[lab]
    sig_lab = oof_sig[lab]
    if selection is not None:
        sn = selection.label_noise_dex
        m_lim = m_lim_all[lab]
        cnn_sel, _ = selected_moments(pop_mu, sig_lab, m_lim, selection.s, sn)
        rich_sel, _ = selected_moments(pop_rich, oof_rich_sig[lab], m_lim, selection.s, sn)

        def coverage(k, extra=0.0):
            mean, sd = selected_moments(pop_mu, np.hypot(k * sig_lab, extra), m_lim, selection.s, sn)
            return float(np.mean(np.abs(y - mean) < sd))

        # calibration: the one scale on sigma that maximises the out-of-fold likelihood of the whole survey
        # (labels and non-detections), so that it holds for the population the catalog describes
        grid = np.linspace(0.5, 3.0, 251)
        yt, lt = torch.from_numpy(y_all), torch.from_numpy(is_lab)
        mt, mut = torch.from_numpy(m_lim_all), torch.from_numpy(oof_mu)
        st = torch.from_numpy(oof_sig)
        joint = bool((~is_lab).any())
        nlls = [float(head_nll(mut, g * st, yt, lt, mt, selection, joint=joint).sum()) for g in grid]
        scale = float(grid[int(np.argmin(nlls))])
        coverage_before = coverage(1.0)
        # Below the flux limit the labels cannot tell the scatter (non-detections bound masses only from above).
        # A simulated survey can: on a mock, tau is set so the out-of-fold errors of the clusters without labels
        # cover 68% of their true masses (simulation-based calibration; 0 without true masses).
        p_det = detection_probability(oof_mu, scale * oof_sig, m_lim_all, selection.s)
        unl_truth = ~is_lab & np.isfinite(truth_all)
        tau = 0.0
        if cfg.simulation_calibration and unl_truth.sum() >= 100:
            tau = fit_extrapolation_tau(
                oof_mu[unl_truth] - truth_all[unl_truth], scale * oof_sig[unl_truth], p_det[unl_truth]
            )
        extra_all = extrapolation_sigma(tau, p_det)
        coverage_after = coverage(scale, extra_all[lab])
    else:
        cnn_sel, rich_sel = pop_mu, pop_rich
        # calibration: one scale on out-of-fold z-scores so that 68% intervals hold 68%
        zscore = np.abs(y - pop_mu) / sig_lab
        scale = float(np.quantile(zscore, 0.6827))
        coverage_before = float(np.mean(zscore < 1))
        coverage_after = float(np.mean(zscore < scale))
        tau, extra_all = 0.0, np.zeros(pool.size)

    per_fold = []
    for k in range(cfg.folds):
        t = folds == k
        per_fold.append(
            {
                "fold": k,
                "n": int(t.sum()),
                "cnn_vs_label": metrics(cnn_sel[t], y[t]),
                "richness_vs_label": metrics(rich_sel[t], y[t]),
                "cnn_vs_truth": metrics(cnn_sel[t], truth[t]),
                "richness_vs_truth": metrics(rich_sel[t], truth[t]),
                "ridge": fold_info[k]["ridge"],
            }
        )
    # the population: out-of-fold predictions for the clusters without a label, against the mock's truth
    unl = np.flatnonzero(~is_lab)
    population = None
    if unl.size and np.isfinite(truth_all[unl]).any():
        tu = truth_all[unl]
        population = {
            "n": int(unl.size),
            "cnn_vs_truth": metrics(oof_mu[unl], tu),
            "richness_vs_truth": metrics(oof_rich[unl], tu),
            "cnn_coverage_68": float(
                np.mean(np.abs(oof_mu[unl] - tu) < np.hypot(scale * oof_sig[unl], extra_all[unl]))
            ),
            "cnn_coverage_68_labels_only": float(np.mean(np.abs(oof_mu[unl] - tu) < scale * oof_sig[unl])),
            "richness_coverage_68": float(np.mean(np.abs(oof_rich[unl] - tu) < oof_rich_sig[unl])),
        }
        population["mae_ratio_cnn_over_richness"] = (
            population["cnn_vs_truth"]["mae"] / population["richness_vs_truth"]["mae"]
        )
    oof_mu, oof_rich, oof_sig = cnn_sel, rich_sel, sig_lab
    summary = {
        "cnn_vs_label": metrics(oof_mu, y),
        "richness_vs_label": metrics(oof_rich, y),
        "cnn_vs_truth": metrics(oof_mu, truth),
        "richness_vs_truth": metrics(oof_rich, truth),
        "label_vs_truth": metrics(y, truth),
        "mean_fold_mae_cnn": float(np.mean([f["cnn_vs_label"]["mae"] for f in per_fold])),
        "mean_fold_mae_richness": float(np.mean([f["richness_vs_label"]["mae"] for f in per_fold])),
        "best_fold_mae_cnn": float(np.min([f["cnn_vs_label"]["mae"] for f in per_fold])),
        "population": population,
    }
    summary["mae_ratio_cnn_over_richness"] = summary["mean_fold_mae_cnn"] / summary["mean_fold_mae_richness"]
    report = {
        "code_version": __version__,
        "store": str(Path(store_path).resolve()),
        "store_provenance": store.attrs.get("provenance", {}),
        "config": asdict(cfg),
        "device": str(device),
        "n_cutouts": int(table.id.size),
        "n_labelled": int(labelled.size),
        "band_accuracy": band_acc,
        "stage1_loss_per_epoch": s1_hist,
        "stage2_curves": [f["curve"] for f in fold_info],
        "per_fold": per_fold,
        "summary": summary,
        "label_selection": selection.to_dict() if selection is not None else None,
        "calibration": {
            "scale": scale,
            "coverage_68_before": coverage_before,
            "coverage_68_after": coverage_after,
            "extrapolation_tau": tau,
        },
        "paper": {
            "mae_mean_folds": 0.232,
            "mae_best_fold": 0.214,
            "mae_redmapper_richness": 0.192,
            "reference": "Lin et al. 2022, MNRAS 512 (arXiv:2203.06288)",
        },
        "timing_s": {
            "stage1": s1_time,
            "features": feat_time,
            "richness": rich_time,
            "stage2": s2_time,
            "total": time.perf_counter() - t_start,
        },
        "oof": {
            "id": table.id[labelled].tolist(),
            "fold": folds.tolist(),
            "label": y.tolist(),
            "truth": truth.tolist(),
            "z": z.tolist(),
            "cnn": oof_mu.tolist(),
            "sigma": oof_sig.tolist(),
            "richness": oof_rich.tolist(),
            "cnn_population": pop_mu.tolist(),
            "sigma_population": sig_lab.tolist(),
            "richness_population": pop_rich.tolist(),
            "lambda_hat": lam_hat.tolist(),
        },
    }
    save_bundle(
        out,
        backbone=backbone,
        heads=heads,
        feature_mean=f_mean,
        feature_std=f_std,
        calibration_scale=scale,
        extrapolation_tau=tau,
        baseline=baseline,
        variant=cfg.variant,
        store=store,
        report=report,
    )
    write_report(out, report)
    return report
