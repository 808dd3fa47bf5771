"""Stage-2 heads: one linear head per fold, fitted with the survey's likelihood and an invariance penalty.

A head is linear in the whitened leading principal components of the standardised inputs (plus z and z^2).
Besides the likelihood and a ridge penalty, the fit penalises the head's response to *nuisance* directions:
the mean change of the inputs when the same cutouts are degraded (more sky noise, wider PSF), per noise factor
and redshift tercile (:func:`survey_mass.training.train.nuisance_shifts`). With ``invariance`` = gamma the
objective gains gamma * N * mean_g (delta_g . w)^2, so the fitted masses do not drift, on average, when the
observing conditions change.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.networks import MassRegressor, log_sigma_of


def head_nll(mu, sigma, y, labelled, m_lim, selection, *, joint: bool = True):
    """Per-row negative log-likelihood of the stage-2 data under a population prediction (mu, sigma).

    Without a selection, only labelled rows exist: the Gaussian NLL (label noise inside sigma). With one, the
    survey's likelihood of labels and non-detections, :func:`survey_mass.selection.survey_nll`.
    """
    if selection is None:
        return 0.5 * (y - mu) ** 2 / sigma**2 + torch.log(sigma)
    return selection.nll(mu, sigma, y, labelled, m_lim, joint=joint, xp=torch)


def _penalty(w, n_rows: int, ridge: float, n_free: int, nuisance, invariance: float):
    """Ridge on the component weights plus the invariance penalty gamma N mean((delta . w)^2)."""
    pen = ridge * n_rows * (w[:n_free] ** 2).sum()
    if nuisance is not None and invariance > 0:
        pen = pen + invariance * n_rows * ((nuisance @ w[:n_free]) ** 2).mean()
    return pen


def _fit_ridge(
    design,
    y,
    labelled,
    m_lim,
    selection,
    ridge: float,
    n_free: int,
    joint: bool,
    nuisance=None,
    invariance=0.0,
    heteroscedastic: bool = True,
    init=None,
):
    """Maximum penalised likelihood of (w, b, (log sigma, its slope in mu)); a penalty of ``ridge`` per row falls on the first
    ``n_free`` weights (the principal components), not on the redshift terms; ``nuisance`` (m, n_free) are
    input changes under degraded conditions, in the same components, penalised with weight ``invariance``."""
    w = torch.zeros(design.shape[1], dtype=torch.float64)
    lab_y = y[labelled]
    b = torch.tensor(float(lab_y.mean()) if lab_y.numel() else 14.2, dtype=torch.float64)
    ls = torch.tensor([np.log(0.25), 0.0], dtype=torch.float64)  # log sigma at the pivot, its slope in mu
    if init is not None:  # warm start from (w, b, (log sigma, slope))
        w = init[0].clone()
        b = torch.tensor(float(init[1]), dtype=torch.float64)
        ls = torch.tensor([float(init[2][0]), float(init[2][1])], dtype=torch.float64)
    params = [w.requires_grad_(), b.requires_grad_(), ls.requires_grad_()]
    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=400, history_size=20, line_search_fn="strong_wolfe")

    def objective():
        opt.zero_grad()
        mu = design @ w + b
        sigma = torch.exp(log_sigma_of(mu, ls[0], ls[1] if heteroscedastic else 0.0))
        loss = head_nll(mu, sigma, y, labelled, m_lim, selection, joint=joint).sum()
        loss = loss + _penalty(w, design.shape[0], ridge, n_free, nuisance, invariance)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(objective)
    ls = ls.detach()
    return w.detach(), float(b.detach()), (float(ls[0]), float(ls[1]) if heteroscedastic else 0.0)


def _laplace_factor(
    design,
    y,
    labelled,
    m_lim,
    selection,
    ridge,
    k,
    joint,
    w,
    b,
    ls,
    proj,
    centre,
    z_index,
    pen_direct,
    direct,
    nuisance,
    invariance,
):
    """U such that |U [x, z^2, 1]|^2 is the variance of the head's mean from its weights' uncertainty.

    Laplace approximation: the weights' posterior covariance is the inverse Hessian of the penalised negative
    log-likelihood at the optimum (sigma held at its fitted values). In design coordinates
    d' = [pcs, z, z^2, direct..., 1] the predictive variance is d'^T C d' = |L^T d'|^2 with C = L L^T; the map
    from the head's inputs to d' is folded in.
    """
    theta0 = torch.cat([w, torch.tensor([b], dtype=torch.float64)])
    with torch.no_grad():
        sig = torch.exp(log_sigma_of(design @ w + b, ls[0], ls[1]))

    def objective(theta):
        mu = design @ theta[:-1] + theta[-1]
        loss = head_nll(mu, sig, y, labelled, m_lim, selection, joint=joint).sum()
        return loss + _penalty(theta[:-1], design.shape[0], ridge, k + len(pen_direct), nuisance, invariance)

    hess = torch.autograd.functional.hessian(objective, theta0)
    hess = 0.5 * (hess + hess.T)
    # C = V diag(1 / e) V^T, L = V diag(e^-1/2): with few labels (a user's own) the Hessian can be singular or
    # indefinite along a weight the data do not constrain; that direction gets a large (floored) variance
    e, v = torch.linalg.eigh(hess)
    if float(e.min()) < -1e-3 * float(e.max()):  # not a minimum: the fit did not converge
        from ..errors import SurveyMassError

        raise SurveyMassError(
            f"train: a head's fit ended off a minimum (Hessian eigenvalue {float(e.min()):.3g}); give more labels"
        )
    e = torch.clamp(e, min=max(float(e.max()), 1.0) * 1e-8)
    chol = v * e.rsqrt()
    n_in = proj.shape[0]
    p, nd = len(pen_direct), len(direct)
    a = torch.zeros(k + p + 3 + nd, n_in + 2, dtype=torch.float64)  # d' = A [x, z^2, 1]
    a[:k, :n_in] = proj.T
    a[:k, -1] = -(proj.T @ centre)
    for j, d in enumerate(pen_direct):
        a[k + j, d] = 1.0
        a[k + j, -1] = -centre[d]
    a[k + p, z_index] = 1.0
    a[k + p + 1, n_in] = 1.0
    for j, d in enumerate(direct):
        a[k + p + 2 + j, d] = 1.0
    a[k + p + 2 + nd, -1] = 1.0
    return (chol.T @ a).float()


def train_head(
    x_pool: np.ndarray,
    y_pool: np.ndarray,
    m_lim_pool: np.ndarray | None,
    cfg,
    seed: int,
    *,
    selection=None,
    z_index: int,
    direct: tuple[int, ...] = (),
    pen_direct: tuple[int, ...] = (),
    nuisance: np.ndarray | None = None,
) -> tuple[MassRegressor, dict]:
    """One fold's linear head from its training pool (labels NaN for unlabelled clusters).

    The pool's features are projected on their leading principal components (whitened), the head is fitted
    with a ridge penalty for each strength in ``cfg.stage2_ridge`` on 85% of the pool, and the strength with the
    best likelihood on the other 15% (the fold's validation split) is kept: the linear model's form of early
    stopping. The ``pen_direct`` inputs (the central photometry) enter beside the components as themselves,
    under the same ridge and invariance penalties; the redshift, its square and the ``direct`` inputs (the
    catalogue richness) enter unpenalised. sigma is heteroscedastic, log-linear in the predicted mass. The projection is then
    folded into one linear layer, so inference sees a plain linear head. ``nuisance`` (m, D) are changes of the
    standardised inputs under degraded conditions; the head is penalised for responding to them with weight
    ``cfg.invariance_weight``.
    """
    torch.manual_seed(seed)
    x = torch.from_numpy(np.asarray(x_pool, np.float64))
    y = torch.from_numpy(np.asarray(y_pool, np.float64))
    labelled = torch.isfinite(y)
    joint = bool((~labelled).any())
    m_lim = None if m_lim_pool is None else torch.from_numpy(np.asarray(m_lim_pool, np.float64))
    centre = x.mean(dim=0)
    _, sv, vt = torch.linalg.svd(x - centre, full_matrices=False)
    # components the pool spans (a centred pool of n rows spans at most n - 1: few labels, no selection)
    k = min(cfg.stage2_components, int((sv > sv[0] * 1e-6).sum()), max(x.shape[0] - 1, 1))
    proj = vt[:k].T / sv[:k] * np.sqrt(x.shape[0])  # whitened principal components
    zcol = x[:, z_index : z_index + 1]
    direct = tuple(int(d) for d in direct)
    pen_direct = tuple(int(d) for d in pen_direct)
    p = len(pen_direct)
    design = torch.cat(
        [
            (x - centre) @ proj,
            *[x[:, d : d + 1] - centre[d] for d in pen_direct],
            zcol,
            zcol**2,
            *[x[:, d : d + 1] for d in direct],
        ],
        dim=1,
    )
    gamma = float(getattr(cfg, "invariance_weight", 0.0))
    hetero = bool(getattr(cfg, "heteroscedastic", True))
    nuis = None
    if nuisance is not None and len(nuisance) and gamma > 0:
        nd_ = torch.from_numpy(np.asarray(nuisance, np.float64))
        nuis = torch.cat([nd_ @ proj, nd_[:, list(pen_direct)]], dim=1)  # z is never degraded
    rng = np.random.default_rng(seed)
    val = torch.from_numpy(rng.random(x.shape[0]) < 0.15)
    tr = ~val

    def rows(mask):
        return design[mask], y[mask], labelled[mask], None if m_lim is None else m_lim[mask]

    curve, best = [], None
    dtr, ytr, ltr, mtr = rows(tr)
    split = ((dtr, ytr, ltr, mtr), rows(val))
    # the strength is chosen with one sigma per head (fast); the final fit adds sigma's slope in mu
    for ridge in cfg.stage2_ridge:
        w, b, ls = _fit_ridge(dtr, ytr, ltr, mtr, selection, ridge, k + p, joint, nuis, gamma, False)
        with torch.no_grad():
            nll = []
            for d, yy, ll, mm in split:
                mu = d @ w + b
                sig = torch.exp(log_sigma_of(mu, ls[0], ls[1]))
                nll.append(float(head_nll(mu, sig, yy, ll, mm, selection, joint=joint).mean()))
        curve.append((nll[0], nll[1]))
        if best is None or nll[1] < best[0]:
            best = (nll[1], ridge)
    # refit on the whole pool with the chosen strength, then fold the projection into the head
    w, b, ls = _fit_ridge(design, y, labelled, m_lim, selection, best[1], k + p, joint, nuis, gamma, False)
    if hetero:
        w, b, ls = _fit_ridge(
            design, y, labelled, m_lim, selection, best[1], k + p, joint, nuis, gamma, True, init=(w, b, ls)
        )
    if not (torch.isfinite(w).all() and np.isfinite(b) and all(np.isfinite(float(v)) for v in ls)):
        from ..errors import SurveyMassError

        raise SurveyMassError(
            f"train: a head's fit diverged on {int(labelled.sum())} labels and {x.shape[0]} clusters; give more labels"
        )
    weight = torch.zeros(x.shape[1] + 1, dtype=torch.float64)
    weight[: x.shape[1]] = proj @ w[:k]
    bias = b - float(centre @ (proj @ w[:k]))
    for j, d in enumerate(pen_direct):
        weight[d] += w[k + j]
        bias -= float(w[k + j] * centre[d])
    weight[z_index] += w[k + p]
    weight[-1] = w[k + p + 1]
    for j, d in enumerate(direct):
        weight[d] += w[k + p + 2 + j]
    head = MassRegressor(x.shape[1], z_index)
    head.set_from_components(weight.float(), bias, *ls)
    head.epistemic = _laplace_factor(
        design,
        y,
        labelled,
        m_lim,
        selection,
        best[1],
        k,
        joint,
        w,
        b,
        ls,
        proj,
        centre,
        z_index,
        pen_direct,
        direct,
        nuis,
        gamma,
    )
    info = {
        "ridge": best[1],
        "ridge_path": list(cfg.stage2_ridge),
        "val_nll": best[0],
        "curve": curve,
        "n_pool": int(x.shape[0]),
        "n_labelled": int(labelled.sum()),
        "components": k,
        "direct_inputs": list(direct),
        "penalised_direct_inputs": list(pen_direct),
        "log_sigma": list(ls),
        "invariance_weight": gamma,
        "nuisance_rms_dex": None if nuis is None else float(torch.sqrt(((nuis @ w[: k + p]) ** 2).mean())),
    }
    return head, info


@torch.no_grad()
def predict_head(head: MassRegressor, x: np.ndarray, device) -> tuple[np.ndarray, np.ndarray]:
    """Mean and total sigma (aleatoric and the head's parameter uncertainty) of each row."""
    head.eval()
    mu, log_s, epi = head.moments(torch.from_numpy(x).to(device))
    var = torch.exp(2 * log_s) + epi
    return mu.cpu().numpy().astype(float), np.sqrt(var.cpu().numpy().astype(float))
