"""Model bundles: the weights of both stages, every fold, the baseline and a model card, in one directory.

Layout::

    MODEL_DIR/model_card.json      what it is: geometry, band order, data, seed, folds, metrics, code version
    MODEL_DIR/backbone.safetensors stage-1 feature extractor
    MODEL_DIR/heads.safetensors    the k stage-2 regressors (keys fold{k}.*)

Weights are safetensors: loading them never runs code. A bundle whose band order or input geometry differs from
a store's is refused with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from ..errors import SurveyMassError
from .networks import VARIANTS, Backbone, MassRegressor
from .richness import RichnessBaseline

CARD = "model_card.json"
BACKBONE = "backbone.safetensors"
HEADS = "heads.safetensors"
CARD_VERSION = 1


class ModelError(SurveyMassError):
    """A model directory that cannot be used."""


def save_bundle(
    out: Path,
    *,
    backbone,
    heads,
    feature_mean,
    feature_std,
    calibration_scale,
    extrapolation_tau: float = 0.0,
    baseline,
    variant,
    store,
    report,
) -> Path:
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}, str(out / BACKBONE)
    )
    tensors = {}
    for k, h in enumerate(heads):
        for name, v in h.state_dict().items():
            tensors[f"fold{k}.{name}"] = v.detach().cpu().contiguous()
    save_file(tensors, str(out / HEADS))
    s = report["summary"]
    card = {
        "card_version": CARD_VERSION,
        "model_id": "",
        "code_version": __version__,
        "method": (
            "Lin et al. 2022 two-stage CNN: band-classifier features (frozen) -> k-fold linear Gaussian heads, "
            "fitted with the survey's likelihood (labels as X-ray-selected, the other clusters as non-detections)"
        ),
        "variant": variant,
        "widths": list(VARIANTS[variant]["widths"]),
        "bands": list(store.bands),
        "input": {
            "cutout_size": store.cutout_size,
            "pixel_scale_arcsec": store.pixel_scale,
            "flux_unit": store.attrs["flux_unit"],
        },
        "training_data": {
            "store": report["store"],
            "survey": store.attrs["survey"],
            "provenance": report["store_provenance"],
            "n_cutouts": report["n_cutouts"],
            "n_labelled": report["n_labelled"],
        },
        "seed": report["config"]["seed"],
        "folds": len(heads),
        "config": report["config"],
        "feature_mean": [float(v) for v in feature_mean],
        "feature_std": [float(v) for v in feature_std],
        "calibration_scale": calibration_scale,
        "extrapolation_tau": extrapolation_tau,
        "label_selection": report.get("label_selection"),
        "richness_baseline": baseline.to_dict(),
        "metrics": {
            "band_accuracy": report["band_accuracy"],
            "mean_fold_mae_cnn": s["mean_fold_mae_cnn"],
            "best_fold_mae_cnn": s["best_fold_mae_cnn"],
            "mean_fold_mae_richness": s["mean_fold_mae_richness"],
            "cnn_vs_truth_mae": s["cnn_vs_truth"]["mae"],
            "richness_vs_truth_mae": s["richness_vs_truth"]["mae"],
            "coverage_68_calibrated": report["calibration"]["coverage_68_after"],
        },
        "timing_s": report["timing_s"],
    }
    digest = hashlib.sha256()
    for f in (BACKBONE, HEADS):
        digest.update((out / f).read_bytes())
    # the calibration is part of the model: the same weights calibrated differently give other errors
    digest.update(json.dumps([calibration_scale, extrapolation_tau, card["label_selection"]]).encode())
    card["model_id"] = f"survey-mass-{variant}-{digest.hexdigest()[:12]}"
    (out / CARD).write_text(json.dumps(card, indent=1))
    return out


@dataclass
class ModelBundle:
    """A loaded bundle: the frozen backbone, the fold heads, the feature standardisation and the baseline."""

    path: Path
    card: dict
    backbone: Backbone
    heads: list[MassRegressor]
    feature_mean: np.ndarray
    feature_std: np.ndarray
    baseline: RichnessBaseline

    @property
    def model_id(self) -> str:
        return self.card["model_id"]

    @property
    def card_sha256(self) -> str:
        return hashlib.sha256((self.path / CARD).read_bytes()).hexdigest()

    def check_store(self, store) -> None:
        """Refuse a store whose band order or geometry differs from what the model was trained on."""
        if list(store.bands) != list(self.card["bands"]):
            raise ModelError(
                f"model {str(self.path)!r}: band order {self.card['bands']} differs from store {str(store.path)!r} "
                f"bands {list(store.bands)}"
            )
        want = self.card["input"]
        if int(want["cutout_size"]) != store.cutout_size:
            raise ModelError(
                f"model {str(self.path)!r}: trained on {want['cutout_size']}-pixel cutouts, store "
                f"{str(store.path)!r} has {store.cutout_size}"
            )
        if abs(float(want["pixel_scale_arcsec"]) - store.pixel_scale) > 1e-6:
            raise ModelError(
                f'model {str(self.path)!r}: trained on {want["pixel_scale_arcsec"]}" pixels, store '
                f'{str(store.path)!r} has {store.pixel_scale}"'
            )

    def to(self, device) -> ModelBundle:
        self.backbone.to(device)
        for h in self.heads:
            h.to(device)
        return self


def load_bundle(path: str | Path) -> ModelBundle:
    """Load a model directory; one-line ModelError for anything missing, unsafe or inconsistent."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"model {str(path)!r}: not a directory")
    for f in (CARD, BACKBONE, HEADS):
        if not (path / f).is_file():
            raise ModelError(f"model {str(path)!r}: {f} is missing")
    try:
        card = json.loads((path / CARD).read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"model {str(path / CARD)!r}: not valid JSON ({exc})") from None
    for key in ("bands", "input", "widths", "folds", "feature_mean", "feature_std", "richness_baseline"):
        if key not in card:
            raise ModelError(f"model {str(path / CARD)!r}: key {key!r} is missing")
    try:
        bb_state = load_file(str(path / BACKBONE))
        head_state = load_file(str(path / HEADS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(
            f"model {str(path)!r}: weights are not a safetensors file ({str(exc).splitlines()[0]})"
        ) from None
    backbone = Backbone(tuple(card["widths"]))
    try:
        backbone.load_state_dict(bb_state)
    except RuntimeError as exc:
        raise ModelError(
            f"model {str(path / BACKBONE)!r}: weights do not fit the network ({str(exc).splitlines()[0]})"
        ) from None
    backbone.eval()
    heads = []
    for k in range(int(card["folds"])):
        sub = {n[len(f"fold{k}.") :]: v for n, v in head_state.items() if n.startswith(f"fold{k}.")}
        head = MassRegressor(feature_dim=backbone.out_dim)
        try:
            head.load_state_dict(sub)
        except RuntimeError as exc:
            raise ModelError(
                f"model {str(path / HEADS)!r}: fold {k} does not fit ({str(exc).splitlines()[0]})"
            ) from None
        head.eval()
        heads.append(head)
    torch.set_grad_enabled(True)
    return ModelBundle(
        path=path,
        card=card,
        backbone=backbone.to(memory_format=torch.channels_last),
        heads=heads,
        feature_mean=np.asarray(card["feature_mean"], np.float32),
        feature_std=np.asarray(card["feature_std"], np.float32),
        baseline=RichnessBaseline.from_dict(card["richness_baseline"]),
    )
