"""The training report: ``report.json``, ``report.md`` and PNG plots beside the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from .. import paths


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Metric(_Strict):
    n: int
    mae: float | None
    bias: float | None
    scatter: float | None


def metrics(pred: np.ndarray, ref: np.ndarray) -> Metric:
    ok = np.isfinite(pred) & np.isfinite(ref)
    d = pred[ok] - ref[ok]
    if d.size == 0:
        return Metric(n=0, mae=None, bias=None, scatter=None)
    return Metric(
        n=int(d.size), mae=float(np.mean(np.abs(d))), bias=float(np.mean(d)), scatter=float(np.std(d))
    )


class FoldMetrics(_Strict):
    fold: int
    n: int
    #: out-of-fold MAE against the labels, per estimator (each label taken as a selected cluster)
    mae_vs_label: dict[str, float | None]
    ridge: dict[str, float]


class BinScore(_Strict):
    lo: float
    hi: float
    n: int
    mae: float | None
    bias: float | None
    coverage: float | None


class EstimatorScore(_Strict):
    """One estimator, out of fold: against the labels, and against the true masses of the clusters without
    one (with its calibrated error: coverage overall and in tertiles)."""

    vs_label: Metric
    label_coverage_68: float
    vs_truth: Metric | None
    coverage_68: float | None
    coverage_by: dict[str, list[BinScore]]


class Summary(_Strict):
    estimators: dict[str, EstimatorScore]
    label_vs_truth: Metric
    #: the mock's own E[M | lambda, BCG, z] against the truth (every cluster of the pool)
    oracle_vs_truth: Metric | None
    mean_fold_mae: dict[str, float]
    best_fold_mae: dict[str, float]
    n_population: int


class Evaluation(_Strict):
    per_fold: list[FoldMetrics]
    summary: Summary
    oof: dict[str, list]


class CalibrationReport(_Strict):
    """Per estimator: the scale on sigma (labels, out of fold) and tau (independent mocks)."""

    scale: float
    coverage_68_before: float
    coverage_68_after: float
    extrapolation_tau: float
    n_calibration_rows: int
    mass_nodes: list[float] = []
    mass_factors: list[float] = []


class FeatureReport(_Strict):
    n_raw: int
    n_kept: int
    dropped: list[str]


class TrainingReport(_Strict):
    """``report.json``: everything a training measured, out of fold."""

    model_id: str = ""
    code_version: str
    store: str
    store_provenance: dict[str, Any]
    config: dict[str, Any]
    device: str
    n_cutouts: int
    n_labelled: int
    band_accuracy: dict[str, float]
    stage1_loss_per_epoch: list[float]
    stage2_curves: dict[str, list[list[list[float]]]]
    per_fold: list[FoldMetrics]
    summary: Summary
    label_selection: dict[str, Any] | None
    calibration: dict[str, CalibrationReport]
    calibration_stores: list[str]
    #: the redshifts of the training store (the range the model speaks for)
    z_range: tuple[float, float]
    features: FeatureReport
    invariance: dict[str, Any]
    paper: dict[str, Any] = {
        "mae_mean_folds": 0.232,
        "mae_best_fold": 0.214,
        "mae_redmapper_richness": 0.192,
        "reference": "Lin et al. 2022, MNRAS 512 (arXiv:2203.06288)",
    }
    timing_s: dict[str, float]
    oof: dict[str, list]


def build_report(
    store, store_path, cfg, device, table, s1, fr, cal, ev: Evaluation, selection, timing, invariance
):
    """The training report from the stages' results."""
    from dataclasses import asdict

    from .._version import __version__

    return TrainingReport(
        code_version=__version__,
        store=str(Path(store_path).resolve()),
        store_provenance=store.attrs.get("provenance", {}),
        config=json.loads(json.dumps(asdict(cfg))),
        device=str(device),
        n_cutouts=int(table.id.size),
        n_labelled=int(np.isfinite(table.label).sum()),
        band_accuracy=s1.band_accuracy,
        stage1_loss_per_epoch=s1.loss_per_epoch,
        stage2_curves={n: [[list(p) for p in f["curve"]] for f in info] for n, info in fr.info.items()},
        per_fold=ev.per_fold,
        summary=ev.summary,
        label_selection=selection.to_dict() if selection is not None else None,
        calibration={
            name: CalibrationReport(
                scale=c.scale,
                coverage_68_before=c.coverage_before,
                coverage_68_after=c.coverage_after,
                extrapolation_tau=c.tau,
                n_calibration_rows=c.n_calibration,
                mass_nodes=list(c.mass_nodes),
                mass_factors=list(c.mass_factors),
            )
            for name, c in cal.items()
        },
        calibration_stores=[str(Path(p).resolve()) for p in cfg.calibration_stores],
        z_range=(float(np.nanmin(table.z)), float(np.nanmax(table.z))),
        features=FeatureReport(n_raw=0, n_kept=0, dropped=[]),
        invariance=invariance,
        timing_s=timing,
        oof=ev.oof,
    )


def build_card(models: dict, relation, baseline, store, report: TrainingReport, cfg, relation_bcg=None):
    """The model card of a trained model (its id is set when the weights are written)."""
    from ..models.bundle import (
        METHOD,
        Calibration,
        CardMetrics,
        HeadSet,
        InputGeometry,
        ModelCard,
        TrainingData,
        feature_contract,
    )
    from ..models.mass_model import Standardisation
    from ..models.networks import VARIANTS

    def contract(model):
        std = Standardisation(model.keep.numpy(), model.mean.numpy(), model.std.numpy())
        return feature_contract(model, std, report.invariance)

    headline = models.get("headline", models["pixels"])
    features = contract(headline)
    report.features = FeatureReport(n_raw=features.n_raw, n_kept=len(features.keep), dropped=features.dropped)
    pixels = None
    if "headline" in models:
        pixels = HeadSet(
            features=contract(models["pixels"]), calibration=Calibration(**models["pixels"].calibration)
        )
    s = report.summary

    def mae(name):
        sc = s.estimators.get(name)
        return None if sc is None or sc.vs_truth is None else sc.vs_truth.mae

    return ModelCard(
        method=METHOD,
        variant=cfg.variant,
        widths=list(VARIANTS[cfg.variant]["widths"]),
        bands=list(store.bands),
        input=InputGeometry(
            cutout_size=store.cutout_size,
            pixel_scale_arcsec=store.pixel_scale,
            flux_unit=store.attrs["flux_unit"],
        ),
        training_data=TrainingData(
            store=report.store,
            survey=store.attrs["survey"],
            provenance=report.store_provenance,
            n_cutouts=report.n_cutouts,
            n_labelled=report.n_labelled,
            z_range=_z_range(report),
        ),
        seed=cfg.seed,
        folds=len(headline.heads),
        config=report.config,
        richness_input=headline.richness_input,
        bcg_input=headline.bcg_input,
        features=features,
        calibration=Calibration(**headline.calibration),
        pixels=pixels,
        lambda_relation=relation.to_dict(),
        lambda_bcg_relation=relation_bcg.to_dict() if relation_bcg is not None else {},
        richness_baseline=baseline.to_dict(),
        metrics=CardMetrics(
            band_accuracy=report.band_accuracy,
            mean_fold_mae_vs_label=s.mean_fold_mae,
            mae_vs_truth={e: mae(e) for e in s.estimators},
            coverage_68_vs_truth={e: sc.coverage_68 for e, sc in s.estimators.items()},
        ),
        timing_s=report.timing_s,
    )


def _z_range(report: TrainingReport) -> tuple[float, float]:
    return report.z_range


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


NAMES = {
    "headline": "headline (pixels + catalogue)",
    "pixels": "pixels alone (CNN)",
    "lambda": "catalogue lambda + z",
    "lambda_bcg": "catalogue lambda + BCG + z",
    "richness": "our sep lambda-hat",
}


def plot_predictions(out: Path, oof: dict[str, list]) -> list[Path]:
    from ..explain.figures import _plt

    plt = _plt()
    y = np.asarray(oof["label"])
    names = [e for e in NAMES if f"{e}_as_selected" in oof]
    files = []
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4.2), sharex=True, sharey=True)
    axes = np.atleast_1d(axes)
    lo, hi = np.nanmin(y) - 0.2, np.nanmax(y) + 0.2
    for ax, e in zip(axes, names, strict=True):
        pred = np.asarray(oof[f"{e}_as_selected"], float)
        ax.scatter(y, pred, s=5, alpha=0.5)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("label log10 M500 [Msun]")
        ax.set_title(f"{e}: MAE {np.nanmean(np.abs(pred - y)):.3f}", fontsize=9)
    axes[0].set_ylabel("predicted (as a selected cluster)")
    fig.tight_layout()
    p = out / paths.TRAINING_FIGURES["pred_vs_label"]
    fig.savefig(p, dpi=100)
    plt.close(fig)
    files.append(p)
    return files


def plot_coverage(out: Path, s: Summary) -> list[Path]:
    """68% coverage and bias of each estimator in tertiles (every cluster, out of fold, against the truth)."""
    from ..explain.figures import _plt

    keys = ("catalogue_richness", "z", "predicted_mass", "true_mass")
    if not any(sc.coverage_by for sc in s.estimators.values()):
        return []
    plt = _plt()
    fig, axes = plt.subplots(2, len(keys), figsize=(3.6 * len(keys), 6), sharey="row")
    for col, key in enumerate(keys):
        for e, sc in s.estimators.items():
            bins = sc.coverage_by.get(key, [])
            x = np.arange(len(bins)) + 1
            axes[0, col].plot(x, [np.nan if b.coverage is None else b.coverage for b in bins], "o-", label=e)
            axes[1, col].plot(x, [np.nan if b.bias is None else b.bias for b in bins], "o-", label=e)
        axes[0, col].axhspan(0.58, 0.78, color="0.9")
        axes[0, col].axhline(0.683, color="k", lw=0.8)
        axes[1, col].axhline(0, color="k", lw=0.8)
        axes[1, col].set_xlabel(f"tertile of {key.replace('_', ' ')}")
    axes[0, 0].set_ylabel("68% coverage")
    axes[1, 0].set_ylabel("bias vs truth [dex]")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    p = out / paths.TRAINING_FIGURES["coverage"]
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return [p]


def _estimator_table(s: Summary) -> list[str]:
    lines = [
        "| estimator | MAE vs label | bias vs label | MAE vs truth | bias vs truth | 68% coverage (truth) |",
        "|---|---|---|---|---|---|",
    ]
    for e, sc in s.estimators.items():
        t = sc.vs_truth
        lines.append(
            f"| {NAMES.get(e, e)} | {_fmt(sc.vs_label.mae)} | {_fmt(sc.vs_label.bias)} | "
            f"{_fmt(t.mae if t else None)} | {_fmt(t.bias if t else None)} | {_fmt(sc.coverage_68)} |"
        )
    if s.oracle_vs_truth is not None:
        o = s.oracle_vs_truth
        lines.append(
            f"| the mock's own E[M \\| lambda, BCG, z] | – | – | {_fmt(o.mae)} | {_fmt(o.bias)} | – |"
        )
    return lines


def _bins_table(s: Summary) -> list[str]:
    lines = []
    for key in ("catalogue_richness", "z", "predicted_mass", "true_mass"):
        lines += [f"**By tertile of {key.replace('_', ' ')}** (MAE / bias / coverage):", ""]
        header = None
        for e, sc in s.estimators.items():
            bins = sc.coverage_by.get(key, [])
            if not bins:
                continue
            if header is None:
                header = (
                    "| estimator | "
                    + " | ".join(
                        f"{b.lo:.2f}-{b.hi:.2f}" if key != "predicted_mass" else f"tertile {i + 1}"
                        for i, b in enumerate(bins)
                    )
                    + " |"
                )
                lines += [header, "|---" * (len(bins) + 1) + "|"]
            cells = [f"{_fmt(b.mae)} / {_fmt(b.bias)} / {_fmt(b.coverage)}" for b in bins]
            lines.append(f"| {e} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def write_report(out: Path, report: TrainingReport) -> None:
    out = Path(out)
    (out / paths.REPORT_JSON).write_text(report.model_dump_json(indent=1))
    s = report.summary
    plots = plot_predictions(out, report.oof) + plot_coverage(out, s)
    cfg = report.config
    acc = report.band_accuracy
    lines = [
        "# Training report",
        "",
        f"Model `{report.model_id}`. Store `{report.store}`: {report.n_cutouts} cutouts, {report.n_labelled} "
        f"labelled; {cfg['folds']} folds, seed {cfg['seed']}, variant `{cfg['variant']}`, device {report.device}. "
        f"Total time {report.timing_s['total'] / 60:.1f} min.",
        "",
        "## Stage 1: band classifier accuracy (held-out cutouts)",
        "",
        "| " + " | ".join(acc) + " |",
        "|" + "---|" * len(acc),
        "| " + " | ".join(f"{v:.3f}" for v in acc.values()) + " |",
        "",
        "## Stage 2 inputs",
        "",
        f"{report.features.n_kept} of {report.features.n_raw} raw inputs of the headline model kept; "
        f"{len(report.features.dropped)} dropped for negligible spread over the training pool.",
        "",
        "Invariance: the pixels model's change when the training cutouts are degraded (dex):",
        "",
        "| degradation | mean | rms |",
        "|---|---|---|",
    ]
    for k, v in report.invariance.get("by_noise_factor", {}).items():
        lines.append(
            f"| {k} (PSF up to x{report.invariance.get('max_seeing_factor', 1.0):.2f}) | {v['mean_dex']:+.4f} | {v['rms_dex']:.4f} |"
        )
    lines += [
        "",
        "## Four estimators, out of fold (dex)",
        "",
        "Against the labels each prediction is taken as a *selected* cluster (the labels are X-ray selected). "
        f"Against the truth: all {s.n_population} clusters of the pool, out of fold, with each estimator's "
        "calibrated error; the extrapolation term of that error is fitted on independent mocks"
        + (
            f" ({', '.join(Path(p).name for p in report.calibration_stores)})"
            if report.calibration_stores
            else " (none given: 0)"
        )
        + ", never on these rows.",
        "",
        *_estimator_table(s),
        "",
        f"Label vs truth: MAE {_fmt(s.label_vs_truth.mae)}, bias {_fmt(s.label_vs_truth.bias)} "
        "(labels come from L_X: they scatter high near the flux limits).",
        "",
        "| fold | n | " + " | ".join(s.mean_fold_mae) + " |",
        "|---" * (len(s.mean_fold_mae) + 2) + "|",
    ]
    for f in report.per_fold:
        lines.append(
            f"| {f.fold} | {f.n} | " + " | ".join(_fmt(f.mae_vs_label.get(e)) for e in s.mean_fold_mae) + " |"
        )
    lines += [
        "",
        "- Lin et al. 2022 (real SDSS): CNN 0.232 mean over folds, 0.214 best fold; redMaPPer richness 0.192.",
        "",
        "## Coverage and bias in bins (every cluster, out of fold, against the truth)",
        "",
        *_bins_table(s),
        "## Calibration",
        "",
        "| estimator | scale | label coverage before | after | tau (independent mocks) | mass factors (mocks) | mock rows |",
        "|---|---|---|---|---|---|---|",
    ]
    for e, c in report.calibration.items():
        mf = (
            ", ".join(f"{f:.2f} at {m:.2f}" for m, f in zip(c.mass_nodes, c.mass_factors, strict=True)) or "–"
        )
        lines.append(
            f"| {e} | {c.scale:.3f} | {c.coverage_68_before:.3f} | {c.coverage_68_after:.3f} | "
            f"{c.extrapolation_tau:.3f} | {mf} | {c.n_calibration_rows} |"
        )
    lines += ["", "## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    (out / paths.REPORT_MD).write_text("\n".join(lines) + "\n")
