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
    cnn_vs_label: Metric
    richness_vs_label: Metric
    cnn_vs_truth: Metric
    richness_vs_truth: Metric
    ridge: float


class Population(_Strict):
    """Out-of-fold predictions for the clusters without a label, against the mock's true masses."""

    n: int
    cnn_vs_truth: Metric
    richness_vs_truth: Metric
    cnn_coverage_68: float
    cnn_coverage_68_labels_only: float
    richness_coverage_68: float
    mae_ratio_cnn_over_richness: float


class Summary(_Strict):
    cnn_vs_label: Metric
    richness_vs_label: Metric
    cnn_vs_truth: Metric
    richness_vs_truth: Metric
    label_vs_truth: Metric
    mean_fold_mae_cnn: float
    mean_fold_mae_richness: float
    best_fold_mae_cnn: float
    mae_ratio_cnn_over_richness: float
    population: Population | None


class Evaluation(_Strict):
    per_fold: list[FoldMetrics]
    summary: Summary
    oof: dict[str, list]


class CalibrationReport(_Strict):
    scale: float
    coverage_68_before: float
    coverage_68_after: float
    extrapolation_tau: float


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
    stage2_curves: list[list[list[float]]]
    per_fold: list[FoldMetrics]
    summary: Summary
    label_selection: dict[str, Any] | None
    calibration: CalibrationReport
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
        stage2_curves=[[list(p) for p in f["curve"]] for f in fr.info],
        per_fold=ev.per_fold,
        summary=ev.summary,
        label_selection=selection.to_dict() if selection is not None else None,
        calibration=CalibrationReport(
            scale=cal.scale,
            coverage_68_before=cal.coverage_before,
            coverage_68_after=cal.coverage_after,
            extrapolation_tau=cal.tau,
        ),
        features=FeatureReport(n_raw=0, n_kept=0, dropped=[]),
        invariance=invariance,
        timing_s=timing,
        oof=ev.oof,
    )


def build_card(model, baseline, store, report: TrainingReport, cfg):
    """The model card of a trained model (its id is set when the weights are written)."""
    from ..models.bundle import (
        METHOD,
        Calibration,
        CardMetrics,
        InputGeometry,
        ModelCard,
        TrainingData,
        feature_contract,
    )
    from ..models.mass_model import Standardisation
    from ..models.networks import VARIANTS

    s = report.summary
    std = Standardisation(model.keep.numpy(), model.mean.numpy(), model.std.numpy())
    features = feature_contract(model, std, report.invariance)
    report.features = FeatureReport(n_raw=features.n_raw, n_kept=len(features.keep), dropped=features.dropped)
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
        ),
        seed=cfg.seed,
        folds=len(model.heads),
        config=report.config,
        features=features,
        calibration=Calibration(**model.calibration),
        richness_baseline=baseline.to_dict(),
        metrics=CardMetrics(
            band_accuracy=report.band_accuracy,
            mean_fold_mae_cnn=s.mean_fold_mae_cnn,
            best_fold_mae_cnn=s.best_fold_mae_cnn,
            mean_fold_mae_richness=s.mean_fold_mae_richness,
            cnn_vs_truth_mae=s.cnn_vs_truth.mae,
            richness_vs_truth_mae=s.richness_vs_truth.mae,
            coverage_68_calibrated=report.calibration.coverage_68_after,
        ),
        timing_s=report.timing_s,
    )


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def plot_predictions(out: Path, oof: dict[str, list]) -> list[Path]:
    from ..explain.figures import _plt

    plt = _plt()
    y = np.asarray(oof["label"])
    t = np.asarray(oof["truth"])
    cnn = np.asarray(oof["cnn"])
    rich = np.asarray(oof["richness"])
    z = np.asarray(oof["z"])
    files = []

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
    lo, hi = np.nanmin(y) - 0.2, np.nanmax(y) + 0.2
    for ax, pred, name in (
        (axes[0], cnn, "CNN (out of fold)"),
        (axes[1], rich, "richness baseline (out of fold)"),
    ):
        ax.scatter(y, pred, s=6, alpha=0.5)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("label log10 M500 [Msun]")
        ax.set_title(f"{name}: MAE {np.nanmean(np.abs(pred - y)):.3f} dex")
    axes[0].set_ylabel("predicted log10 M500")
    fig.tight_layout()
    p = out / paths.TRAINING_FIGURES["pred_vs_label"]
    fig.savefig(p, dpi=100)
    plt.close(fig)
    files.append(p)

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey=True)
    for row, (pred, name) in enumerate(((cnn, "CNN"), (rich, "richness"))):
        for col, (x, xl) in enumerate(
            ((t if np.isfinite(t).any() else y, "true log10 M500"), (z, "redshift"))
        ):
            ax = axes[row, col]
            ax.scatter(x, pred - y, s=6, alpha=0.5)
            ax.axhline(0, color="k", lw=1)
            ax.set_xlabel(xl)
            ax.set_ylabel(f"{name} - label [dex]")
    fig.tight_layout()
    p = out / paths.TRAINING_FIGURES["residuals"]
    fig.savefig(p, dpi=100)
    plt.close(fig)
    files.append(p)

    fig, ax = plt.subplots(figsize=(5, 4))
    zs = np.abs(cnn - y) / np.asarray(oof["sigma"])
    ax.hist(
        zs, bins=40, range=(0, 4), histtype="step", density=True, label="|residual| / sigma (uncalibrated)"
    )
    ax.axvline(np.quantile(zs, 0.6827), color="r", label="68% quantile = calibration scale")
    ax.legend(fontsize=8)
    ax.set_xlabel("|CNN - label| / sigma_aleatoric")
    fig.tight_layout()
    p = out / paths.TRAINING_FIGURES["calibration"]
    fig.savefig(p, dpi=100)
    plt.close(fig)
    files.append(p)
    return files


def write_report(out: Path, report: TrainingReport) -> None:
    out = Path(out)
    (out / paths.REPORT_JSON).write_text(report.model_dump_json(indent=1))
    plots = plot_predictions(out, report.oof)
    s = report.summary
    cal = report.calibration
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
        f"{report.features.n_kept} of {report.features.n_raw} raw inputs kept; "
        f"{len(report.features.dropped)} dropped for negligible spread over the training pool"
        + (
            f" ({', '.join(report.features.dropped[:12])}{', ...' if len(report.features.dropped) > 12 else ''})"
            if report.features.dropped
            else ""
        )
        + ".",
        "",
        "Invariance: the fitted ensemble's change when the training cutouts are degraded (dex):",
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
        "## Stage 2: out-of-fold masses (dex)",
        "",
        "| fold | n | CNN MAE (label) | richness MAE (label) | CNN bias | CNN scatter | CNN MAE (truth) | richness MAE (truth) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in report.per_fold:
        lines.append(
            f"| {f.fold} | {f.n} | {_fmt(f.cnn_vs_label.mae)} | {_fmt(f.richness_vs_label.mae)} | "
            f"{_fmt(f.cnn_vs_label.bias)} | {_fmt(f.cnn_vs_label.scatter)} | "
            f"{_fmt(f.cnn_vs_truth.mae)} | {_fmt(f.richness_vs_truth.mae)} |"
        )
    lines += [
        "",
        f"- Mean over folds: CNN **{s.mean_fold_mae_cnn:.3f}**, richness **{s.mean_fold_mae_richness:.3f}** "
        f"(ratio {s.mae_ratio_cnn_over_richness:.2f}); best fold CNN {s.best_fold_mae_cnn:.3f}.",
        f"- Against true masses: CNN {_fmt(s.cnn_vs_truth.mae)}, richness {_fmt(s.richness_vs_truth.mae)}; "
        f"label noise itself (label vs truth) {_fmt(s.label_vs_truth.mae)} MAE, "
        f"{_fmt(s.label_vs_truth.scatter)} scatter.",
        "- Lin et al. 2022 (real SDSS): CNN 0.232 mean over folds, 0.214 best fold; redMaPPer richness 0.192.",
        "",
    ]
    pop = s.population
    if pop:
        lines += [
            "## The population: clusters without a label (out-of-fold, against the mock's true masses)",
            "",
            f"{pop.n} clusters. CNN MAE **{_fmt(pop.cnn_vs_truth.mae)}** (bias "
            f"{_fmt(pop.cnn_vs_truth.bias)}), richness MAE **{_fmt(pop.richness_vs_truth.mae)}** (bias "
            f"{_fmt(pop.richness_vs_truth.bias)}): ratio {pop.mae_ratio_cnn_over_richness:.2f}. "
            f"68% coverage: CNN {pop.cnn_coverage_68:.3f} "
            f"({pop.cnn_coverage_68_labels_only:.3f} with the labels' calibration "
            f"alone; tau below is fitted on these same rows, so this figure is 0.68 by construction: see the "
            f"README's unseen regions for a test), richness {pop.richness_coverage_68:.3f}.",
            "",
        ]
    lines += [
        "## Calibration",
        "",
        f"One scale s = {cal.scale:.3f} multiplies the combined sigma. Out-of-fold 68% coverage: "
        f"{cal.coverage_68_before:.3f} before, {cal.coverage_68_after:.3f} after.",
        "",
        f"Below the labels' X-ray selection the labels cannot tell the scatter, so an error "
        f"tau sqrt(1 - P(detected | x)) is added in quadrature, with tau = {cal.extrapolation_tau:.3f} dex "
        "calibrated on the simulated survey's true masses, out of fold (0 when the store has no true masses).",
        "",
        "## Plots",
        "",
    ]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    (out / paths.REPORT_MD).write_text("\n".join(lines) + "\n")
