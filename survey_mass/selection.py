"""How the labelled clusters were selected, and regression that allows for it.

Masses exist for clusters an X-ray (or SZ) survey detected: a flux limit. At fixed richness or fixed pixels, a
detected cluster is more massive than a typical one, so a plain fit to the labelled subset over-predicts the mass
of every other cluster (measured on the dr12 mock: +0.63 dex on average, 68% intervals holding 5%).

The selection is modelled as a probit in true log mass, P(sel | m, z) = Phi((m - m_lim(z)) / s), where m_lim(z)
is the mass whose mean L_X - M luminosity gives the flux limit at z, and s is the L_X scatter in mass units. The
label is y = m + e, e ~ N(0, sigma_n). For a model that predicts the population's m ~ N(mu, sigma) from the
observables, the likelihood of a labelled cluster is then (all Gaussian integrals, closed form)::

    p(y | x, sel) = N(y; mu, sqrt(sigma^2 + sigma_n^2)) Phi((m_hat - m_lim) / sqrt(tau^2 + s^2))
                    / Phi((mu - m_lim) / sqrt(sigma^2 + s^2))

with m_hat, tau the mean and width of m given y and x. Maximising it recovers the population relation, which is
what the catalog needs for clusters that were never selected.

Labels like MCXC's (``labels_from_lx``) are the masses the mean L_X - M relation gives for the *observed* L_X: then
the label error is the selection variable, y = m + e is labelled iff y >= m_lim, and the same closed forms hold
with (sqrt(sigma^2 + s^2), 0, a 0.01 dex rounding) in place of (sigma, s, sigma_n) (:meth:`XraySelection.effective`).
Both assume the label error independent of m at fixed inputs; a mock whose L_X scatter correlates with the
richness excess (``HaloScatter``) breaks that by about 0.02 dex.

Examples
--------
>>> sel = XraySelection(flux_limit_cgs=2e-12)
>>> float(sel.m_lim(np.array([0.1]))[0]) < float(sel.m_lim(np.array([0.4]))[0])
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import astro

#: the mock's X-ray flux limit (erg/s/cm^2) and label noise (dex): the defaults of its physics
#: (``MockPhysics.labels``), and what a mock store that does not record them was made with
FLUX_LIMIT_CGS = 2.0e-12
LABEL_NOISE_DEX = 0.12
#: labels derived from L_X are exact at the flux limit; this small width stands for their rounding
LABEL_ROUNDING_DEX = 0.01


@dataclass(frozen=True, kw_only=True)
class XraySelection:
    """A flux-limited X-ray selection: L500 = L0 E(z)^ez_power (M500 / M0)^slope with log-normal scatter.

    The defaults are the L_X-M relation of :mod:`survey_mass.astro` (Pratt et al. 2009; Arnaud et al. 2010).
    """

    flux_limit_cgs: float
    l0: float = astro.LX_L0
    m0: float = astro.LX_M0
    slope: float = astro.LX_SLOPE
    sigma_ln_l: float = astro.LX_SIGMA_LN_L
    label_noise_dex: float = LABEL_NOISE_DEX
    ez_power: float = astro.LX_EZ_POWER
    #: the label mass is derived from the observed L_X (as MCXC's are), so its error *is* the selection
    #: variable: labelled iff label >= m_lim. Otherwise the label carries independent noise label_noise_dex.
    labels_from_lx: bool = False
    #: the flux measurement error (in ln), part of the selection variable when labels_from_lx
    flux_error_ln: float = 0.0
    #: labels_from_lx: the scatter (ln) between the flux the survey detected the cluster by and the label's
    #: flux, a soft limit on the label (0: the label's flux is the detection's, a hard limit)
    detection_error_ln: float = 0.0
    #: the labels' mass scale minus the true one, log10(1 - b) for hydrostatic labels: labels are converted
    #: with :meth:`to_true` and :meth:`m_lim` is on the true scale
    label_offset_dex: float = 0.0

    def m_lim(self, z: np.ndarray, flux_limit: np.ndarray | None = None) -> np.ndarray:
        """log10 M500 whose mean luminosity is at the flux limit at redshift z (per row where ``flux_limit``
        gives each position's limit; NaN or missing limits are the selection's own)."""
        z = np.asarray(z, float)
        limit = np.full(z.shape, self.flux_limit_cgs)
        if flux_limit is not None:
            fl = np.asarray(flux_limit, float)
            limit = np.where(np.isfinite(fl) & (fl > 0), fl, limit)
        ez = astro.efunc(z)
        dl = astro.luminosity_distance_cm(z)
        llim = np.log10(limit * 4 * np.pi * dl**2)
        m_label = (llim - np.log10(self.l0) - self.ez_power * np.log10(ez)) / self.slope + np.log10(self.m0)
        return m_label - self.label_offset_dex

    @property
    def s(self) -> float:
        """Width of the selection in log10 mass (the L_X scatter, and the flux error, over the slope)."""
        return float(np.hypot(self.sigma_ln_l, self.flux_error_ln)) / np.log(10) / self.slope

    @property
    def s_detection(self) -> float:
        """The soft limit's width on the label (log10 mass): the detection's flux scatter over the slope."""
        return float(self.detection_error_ln) / np.log(10) / self.slope

    @property
    def width(self) -> float:
        """Width of P(detected | true mass) in log10 mass: the label's scatter and the detection's together."""
        return float(np.hypot(self.s, self.s_detection))

    def to_true(self, label):
        """Labels on the true mass scale."""
        return np.asarray(label, float) - self.label_offset_dex

    def effective(self, sigma, xp=np):
        """(sigma, s, sigma_n) to put into the closed-form likelihoods for a population width ``sigma``.

        With independent label noise they are (sigma, s, label_noise_dex). With labels derived from L_X, the
        label y = m + e is itself the selection variable: y ~ N(mu, sqrt(sigma^2 + s^2)) truncated at m_lim,
        which is the same formula with (sqrt(sigma^2 + s^2), 0, a 0.01 dex rounding of the labels).
        """
        if not self.labels_from_lx:
            return sigma, self.s, self.label_noise_dex
        return xp.sqrt(sigma**2 + self.s**2), self.s_detection, LABEL_ROUNDING_DEX

    def nll(self, mu, sigma, y, labelled, m_lim, *, joint: bool = True, xp=np):
        """Per-row negative log-likelihood of labels and non-detections (:func:`survey_nll`)."""
        sig, s, sn = self.effective(sigma, xp)
        return survey_nll(mu, sig, y, labelled, m_lim, s, sn, joint=joint, xp=xp)

    def selected_moments(self, mu, sigma, m_lim):
        """Mean and sd of a selected cluster's label (:func:`selected_moments`)."""
        sig, s, sn = self.effective(np.asarray(sigma, float))
        return selected_moments(mu, sig, m_lim, s, sn)

    def to_dict(self) -> dict:
        return {"kind": "xray_flux_limit", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> XraySelection:
        return cls(**{k: v for k, v in d.items() if k != "kind"})


@dataclass(frozen=True, kw_only=True)
class SZSelection:
    """An SZ signal-to-noise selection, as SPT's: zeta = A (M500 / M0)^B (E(z) / E(0.6))^C, ln-normal scatter
    sigma_ln_zeta, detected where xi = sqrt(zeta^2 + 3) >= snr_limit (Bocquet et al. 2019, ApJ 878, 55: A = 5.24,
    B = 1.534, C = 0.465, sigma = 0.161, M0 = 3e14 h^-1 Msun; A scales with a survey's depth, so set it for
    yours). Labels derived from the SZ signal (as SPT's and Planck's masses are) make the label error the
    selection variable, as with L_X (``labels_from_observable``). The same interface as :class:`XraySelection`:
    a per-row limit (``m_lim``'s second argument) is a signal-to-noise limit here."""

    snr_limit: float
    a_sz: float = 5.24
    b_sz: float = 1.534
    c_sz: float = 0.465
    m0: float = 3e14 / 0.7
    sigma_ln_zeta: float = 0.161
    labels_from_observable: bool = True
    label_noise_dex: float = LABEL_NOISE_DEX

    def m_lim(self, z: np.ndarray, snr_limit: np.ndarray | None = None) -> np.ndarray:
        """log10 M500 whose mean zeta reaches the signal-to-noise limit at redshift z."""
        z = np.asarray(z, float)
        xi = np.full(z.shape, self.snr_limit)
        if snr_limit is not None:
            v = np.asarray(snr_limit, float)
            xi = np.where(np.isfinite(v) & (v > 0), v, xi)
        zeta = np.sqrt(np.maximum(xi**2 - 3.0, 1e-6))
        ratio = astro.efunc(z) / astro.efunc(np.array(0.6))
        m_label = np.log10(self.m0) + (np.log10(zeta / self.a_sz) - self.c_sz * np.log10(ratio)) / self.b_sz
        return m_label - self.label_offset_dex

    @property
    def s(self) -> float:
        """Width of the selection in log10 mass: the intrinsic scatter and the unit noise at the limit."""
        return float(np.hypot(self.sigma_ln_zeta, 1.0 / self.snr_limit)) / np.log(10) / self.b_sz

    label_offset_dex: float = 0.0
    s_detection = 0.0

    @property
    def width(self) -> float:
        return self.s

    to_true = XraySelection.to_true

    def effective(self, sigma, xp=np):
        """As :meth:`XraySelection.effective`."""
        if not self.labels_from_observable:
            return sigma, self.s, self.label_noise_dex
        return xp.sqrt(sigma**2 + self.s**2), 0.0, LABEL_ROUNDING_DEX

    nll = XraySelection.nll
    selected_moments = XraySelection.selected_moments

    def to_dict(self) -> dict:
        return {"kind": "sz_snr_limit", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> SZSelection:
        return cls(**{k: v for k, v in d.items() if k != "kind"})


Selection = XraySelection | SZSelection


def selection_from_dict(d: dict) -> Selection:
    """The selection a model card or store records (its ``kind``: ``xray_flux_limit`` or ``sz_snr_limit``)."""
    if d.get("kind") == "sz_snr_limit":
        return SZSelection.from_dict(d)
    return XraySelection.from_dict(d)


def selection_for_store(store) -> Selection | None:
    """The labels' selection: the store's ``label_selection`` attribute, or the mock's own (it made the labels).

    A mock store records its physics in its provenance; the selection is read from there (``physics.labels``),
    so overridden label physics is followed.
    """
    meta = store.meta  # StoreAttributes
    if meta.label_selection is not None:
        return selection_from_dict(meta.label_selection)
    if meta.kind == "mock":
        prov = meta.provenance
        lab = prov.get("physics", {}).get("labels", {})
        surveys = lab.get("surveys") or [{"flux_limit_cgs": lab.get("flux_limit_cgs", FLUX_LIMIT_CGS)}]
        limit = prov.get("label_flux_limit") or max(float(s["flux_limit_cgs"]) for s in surveys)
        extra = {k: float(lab[k]) for k in ("l0", "m0", "slope", "ez_power", "sigma_ln_l") if k in lab}
        if "surveys" in lab:  # labels derived from the observed L_X (the MCXC-like mock)
            return XraySelection(
                flux_limit_cgs=float(limit),
                labels_from_lx=True,
                flux_error_ln=float(lab.get("flux_error_ln", 0.0)),
                detection_error_ln=float(lab.get("detection_error_ln", 0.0)),
                label_offset_dex=float(np.log10(lab.get("hydrostatic_one_minus_b", 1.0))),
                **extra,
            )
        noise = float(lab.get("label_noise_dex", LABEL_NOISE_DEX))
        return XraySelection(flux_limit_cgs=float(limit), label_noise_dex=noise, **extra)
    return None


def detection_score(mu, sigma, m_lim, s: float, xp=np):
    """(mu - m_lim) / sqrt(sigma^2 + s^2): P(selected | x) = Phi of it, for a prediction (mu, sigma)."""
    return (mu - m_lim) / xp.sqrt(sigma**2 + s**2)


def truncated_nll(mu, sigma, y, m_lim, s: float, sigma_n: float, xp=np):
    """Negative log-likelihood of labels y under population (mu, sigma) and the probit selection (per row).

    ``xp`` is numpy or torch (``torch.special`` supplies log_ndtr there).
    """
    var = sigma**2 + sigma_n**2
    m_hat = (y * sigma**2 + mu * sigma_n**2) / var
    tau2 = sigma**2 * sigma_n**2 / var
    if xp is np:
        from scipy.special import log_ndtr
    else:
        log_ndtr = xp.special.log_ndtr
    ll = (
        -0.5 * (y - mu) ** 2 / var
        - 0.5 * xp.log(var)
        + log_ndtr((m_hat - m_lim) / xp.sqrt(tau2 + s**2))
        - log_ndtr((mu - m_lim) / xp.sqrt(sigma**2 + s**2))
    )
    return -ll


def survey_nll(mu, sigma, y, labelled, m_lim, s: float, sigma_n: float, *, joint: bool = True, xp=np):
    """Negative log-likelihood of the whole survey, per row: labels and non-detections.

    A labelled cluster contributes -log p(y, selected | x) and an unlabelled one, which the X-ray survey did
    not detect, -log P(not selected | x) (a non-detection, as upper limits are in survival analysis). ``y`` may
    be NaN where ``labelled`` is False. With ``joint=False`` (no unlabelled clusters to hand) labelled rows
    contribute -log p(y | x, selected), :func:`truncated_nll`.
    """
    if xp is np:
        from scipy.special import log_ndtr

        y0 = np.nan_to_num(y)
    else:
        log_ndtr = xp.special.log_ndtr
        y0 = xp.nan_to_num(y, nan=0.0)
    lab = truncated_nll(mu, sigma, y0, m_lim, s, sigma_n, xp=xp)
    if not joint:
        return lab
    k = detection_score(mu, sigma, m_lim, s, xp=xp)
    return xp.where(labelled, lab - log_ndtr(k), -log_ndtr(-k))


def selected_moments(mu, sigma, m_lim, s: float, sigma_n: float):
    """Mean and sd of a *selected* cluster's label given the population prediction (mu, sigma).

    The selected distribution of m is skew-normal; the label adds sigma_n. Used to score predictions against the
    labelled (selected) clusters on the same footing as the labels themselves.
    """
    from scipy.special import log_ndtr
    from scipy.stats import norm

    w = np.sqrt(sigma**2 + s**2)
    k = (mu - m_lim) / w
    lam = np.exp(norm.logpdf(k) - log_ndtr(k))
    mean = mu + sigma**2 / w * lam
    var_m = sigma**2 * (1 - sigma**2 / w**2 * lam * (lam + k))
    return mean, np.sqrt(np.maximum(var_m, 1e-12) + sigma_n**2)


def detection_probability(mu, sigma, m_lim, s: float):
    """P(selected | x): the probability that the labels' survey would have detected a cluster predicted at
    (mu, sigma). Near 1 inside the labelled domain, near 0 far below the flux limit."""
    from scipy.special import ndtr

    return ndtr(detection_score(np.asarray(mu, float), np.asarray(sigma, float), m_lim, s))


def extrapolation_sigma(tau: float, p_detect):
    """The error added for extrapolating below the labels' selection: tau * sqrt(1 - P(selected | x)).

    Labels constrain the aleatoric sigma only where clusters are detected. Below the flux limit the data hold
    non-detections, which bound masses from above but not their scatter, so that scatter cannot be learned from
    labels (see :func:`fit_extrapolation_tau`).
    """
    return tau * np.sqrt(np.clip(1.0 - np.asarray(p_detect, float), 0.0, 1.0))


def fit_extrapolation_tau(residual, sigma, p_detect, *, target: float = 0.6827) -> float:
    """tau such that ``sqrt(sigma^2 + extrapolation_sigma(tau, p)^2)`` covers ``target`` of |residual|.

    A simulation-based calibration: ``residual`` is out-of-fold prediction minus *true* mass for clusters
    without labels, which only a simulated survey (the mock) has. Returns 0 when sigma alone already covers the
    target.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> r = rng.normal(0, 0.25, 20000)  # true scatter 0.25, quoted 0.20, never detected
    >>> round(fit_extrapolation_tau(r, np.full(r.size, 0.2), np.zeros(r.size)), 2)
    0.15
    """
    r = np.abs(np.asarray(residual, float))
    sigma = np.asarray(sigma, float)
    ok = np.isfinite(r) & np.isfinite(sigma) & np.isfinite(p_detect)
    r, sigma, extra = r[ok], sigma[ok], extrapolation_sigma(1.0, np.asarray(p_detect, float)[ok])
    if r.size == 0:
        return 0.0
    # each row is covered once tau exceeds its own threshold, so tau is the target quantile of the thresholds
    # (inf where no tau can cover the row; if the target needs those, the largest finite threshold is returned)
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.where(r <= sigma, 0.0, np.sqrt(np.maximum(r**2 - sigma**2, 0.0)) / extra)
    tau = float(np.quantile(need, target, method="higher"))
    return tau if np.isfinite(tau) else float(np.max(need, initial=0.0, where=np.isfinite(need)))
