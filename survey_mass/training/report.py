"""The training report: ``report.json``, ``report.md`` and PNG plots beside the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def plot_predictions(out: Path, oof: dict) -> list[Path]:
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
    p = out / "pred_vs_label.png"
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
    p = out / "residuals.png"
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
    p = out / "calibration.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    files.append(p)
    return files


def write_report(out: Path, report: dict) -> None:
    out = Path(out)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    plots = plot_predictions(out, report["oof"])
    s = report["summary"]
    cal = report["calibration"]
    lines = [
        "# Training report",
        "",
        f"Store `{report['store']}`: {report['n_cutouts']} cutouts, {report['n_labelled']} labelled; "
        f"{report['config']['folds']} folds, seed {report['config']['seed']}, variant `{report['config']['variant']}`, "
        f"device {report['device']}. Total time {report['timing_s']['total'] / 60:.1f} min.",
        "",
        "## Stage 1: band classifier accuracy (held-out cutouts)",
        "",
        "| " + " | ".join(report["band_accuracy"]) + " |",
        "|" + "---|" * len(report["band_accuracy"]),
        "| " + " | ".join(f"{v:.3f}" for v in report["band_accuracy"].values()) + " |",
        "",
        "## Stage 2: out-of-fold masses (dex)",
        "",
        "| fold | n | CNN MAE (label) | richness MAE (label) | CNN bias | CNN scatter | CNN MAE (truth) | richness MAE (truth) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in report["per_fold"]:
        lines.append(
            f"| {f['fold']} | {f['n']} | {_fmt(f['cnn_vs_label']['mae'])} | {_fmt(f['richness_vs_label']['mae'])} | "
            f"{_fmt(f['cnn_vs_label']['bias'])} | {_fmt(f['cnn_vs_label']['scatter'])} | "
            f"{_fmt(f['cnn_vs_truth']['mae'])} | {_fmt(f['richness_vs_truth']['mae'])} |"
        )
    lines += [
        "",
        f"- Mean over folds: CNN **{s['mean_fold_mae_cnn']:.3f}**, richness **{s['mean_fold_mae_richness']:.3f}** "
        f"(ratio {s['mae_ratio_cnn_over_richness']:.2f}); best fold CNN {s['best_fold_mae_cnn']:.3f}.",
        f"- Against true masses: CNN {_fmt(s['cnn_vs_truth']['mae'])}, richness {_fmt(s['richness_vs_truth']['mae'])}; "
        f"label noise itself (label vs truth) {_fmt(s['label_vs_truth']['mae'])} MAE, "
        f"{_fmt(s['label_vs_truth']['scatter'])} scatter.",
        "- Lin et al. 2022 (real SDSS): CNN 0.232 mean over folds, 0.214 best fold; redMaPPer richness 0.192.",
        "",
    ]
    pop = s.get("population")
    if pop:
        lines += [
            "## The population: clusters without a label (out-of-fold, against the mock's true masses)",
            "",
            f"{pop['n']} clusters. CNN MAE **{_fmt(pop['cnn_vs_truth']['mae'])}** (bias "
            f"{_fmt(pop['cnn_vs_truth']['bias'])}), richness MAE **{_fmt(pop['richness_vs_truth']['mae'])}** (bias "
            f"{_fmt(pop['richness_vs_truth']['bias'])}): ratio {pop['mae_ratio_cnn_over_richness']:.2f}. "
            f"68% coverage: CNN {pop['cnn_coverage_68']:.3f} "
            f"({pop.get('cnn_coverage_68_labels_only', pop['cnn_coverage_68']):.3f} with the labels' calibration "
            f"alone; tau below is set to give 68% here, so see the README's unseen regions for a test), "
            f"richness {pop['richness_coverage_68']:.3f}.",
            "",
        ]
    lines += [
        "## Calibration",
        "",
        f"One scale s = {cal['scale']:.3f} multiplies the combined sigma. Out-of-fold 68% coverage: "
        f"{cal['coverage_68_before']:.3f} before, {cal['coverage_68_after']:.3f} after.",
        "",
        f"Below the labels' X-ray selection the labels cannot tell the scatter, so an error "
        f"tau sqrt(1 - P(detected | x)) is added in quadrature, with tau = {cal.get('extrapolation_tau', 0.0):.3f} dex "
        "calibrated on the simulated survey's true masses, out of fold (0 when the store has no true masses).",
        "",
        "## Plots",
        "",
    ]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    (out / "report.md").write_text("\n".join(lines) + "\n")
