"""Model bundles: the weights of both stages, every fold, the baseline and a model card, in one directory.

Layout::

    MODEL_DIR/model_card.json      what it is: geometry, band order, data, seed, folds, metrics, code version
    MODEL_DIR/backbone.safetensors stage-1 feature extractor
    MODEL_DIR/heads.safetensors    the k stage-2 regressors of the headline model (keys fold{k}.*) and, when
                                   the headline takes the catalogue richness, of the pixels-only model
                                   (keys pixels.fold{k}.*)

Weights are safetensors: loading them never runs code. A bundle whose band order or input geometry differs from
a store's is refused with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, model_validator

from .._version import __version__
from ..errors import ModelError
from ..paths import MODEL_BACKBONE as BACKBONE
from ..paths import MODEL_CARD as CARD
from ..paths import MODEL_HEADS as HEADS
from .catalogue import CatalogueRelation
from .mass_model import FEATURE_CLIP, OOD_FLAG, MassModel, Standardisation
from .networks import Backbone, MassRegressor
from .richness import RichnessBaseline

CARD_VERSION = 3


class _Strict(BaseModel):
    # NaN and infinity are never a valid number in a card (a NaN std gives a null mass flagged OK)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class InputGeometry(_Strict):
    cutout_size: int
    pixel_scale_arcsec: float
    flux_unit: str = "nanomaggy"


class TrainingData(_Strict):
    store: str
    survey: str
    provenance: dict[str, Any]
    n_cutouts: int
    n_labelled: int
    #: the redshifts the model was trained on; outside them it gives no mass
    z_range: tuple[float, float]


class FeatureContract(_Strict):
    """The stage-2 input contract of :class:`~survey_mass.models.mass_model.MassModel`."""

    n_raw: int
    keep: list[int]
    mean: list[float]
    std: list[float]
    dropped: list[str]
    clip: float = FEATURE_CLIP
    ood_flag: float = OOD_FLAG
    sky: str = "sep Background, 32-pixel meshes (sigma-clipped), per band"
    invariance: dict[str, Any] = {}
    #: with a central-galaxy input: [a, b, c] of its expectation given ln(lambda / 40) and z - 0.3, which
    #: stands in where a candidate has no central galaxy (:meth:`MassModel.bcg_feature`)
    bcg_fill: list[float] = []

    @model_validator(mode="after")
    def _consistent(self) -> FeatureContract:
        if not (len(self.keep) == len(self.mean) == len(self.std)):
            raise ValueError(
                f"keep, mean and std must have one entry per kept input (got {len(self.keep)}, {len(self.mean)}, "
                f"{len(self.std)})"
            )
        if any(not 0 <= k < self.n_raw for k in self.keep) or len(set(self.keep)) != len(self.keep):
            raise ValueError(f"keep must list distinct inputs in [0, {self.n_raw})")
        if any(s <= 0 for s in self.std):
            raise ValueError("every std must be positive")
        if self.clip <= 0 or self.ood_flag <= 0:
            raise ValueError("clip and ood_flag must be positive")
        return self


class Calibration(_Strict):
    scale: float = 1.0
    tau: float = 0.0
    selection: dict[str, Any] | None = None
    #: the error's factor at these predicted masses, interpolated (flat beyond); from independent mocks
    mass_nodes: list[float] = []
    mass_factors: list[float] = []

    @model_validator(mode="after")
    def _consistent(self) -> Calibration:
        if self.scale <= 0 or self.tau < 0:
            raise ValueError(f"scale must be positive and tau non-negative (got {self.scale}, {self.tau})")
        if len(self.mass_nodes) != len(self.mass_factors) or any(f <= 0 for f in self.mass_factors):
            raise ValueError("mass_nodes and mass_factors must pair up, with positive factors")
        if any(b <= a for a, b in zip(self.mass_nodes, self.mass_nodes[1:], strict=False)):
            raise ValueError("mass_nodes must increase")
        return self


class HeadSet(_Strict):
    """A second set of fold heads on the same backbone (the pixels-only model): its inputs and calibration."""

    features: FeatureContract
    calibration: Calibration


class CardMetrics(_Strict):
    """Out-of-fold figures of the training report, per estimator (:data:`survey_mass.inference.predict.ESTIMATORS`)."""

    band_accuracy: dict[str, float]
    mean_fold_mae_vs_label: dict[str, float]
    mae_vs_truth: dict[str, float | None]
    coverage_68_vs_truth: dict[str, float | None]


class ModelCard(_Strict):
    """``model_card.json``: what a model is, how it was trained and how it is calibrated."""

    card_version: int = CARD_VERSION
    model_id: str = ""
    code_version: str = __version__
    method: str
    variant: str
    widths: list[int]
    bands: list[str]
    input: InputGeometry
    training_data: TrainingData
    seed: int
    folds: int
    config: dict[str, Any]
    #: the headline model takes ln of the candidate catalogue's richness as an input
    richness_input: bool = False
    #: ... and the catalogue's central-galaxy magnitude (its absolute i magnitude)
    bcg_input: bool = False
    #: the headline model's inputs and calibration
    features: FeatureContract
    calibration: Calibration
    #: the pixels-only model, when the headline takes the richness (else the headline is pixels-only)
    pixels: HeadSet | None = None
    #: the catalogue mass-richness relation (:class:`~survey_mass.models.catalogue.CatalogueRelation`)
    lambda_relation: dict[str, Any] = {}
    #: the same relation with the catalogue's central-galaxy magnitude as well (empty for older models)
    lambda_bcg_relation: dict[str, Any] = {}
    richness_baseline: dict[str, Any]
    metrics: CardMetrics
    timing_s: dict[str, float]


METHOD = (
    "Lin et al. 2022 two-stage CNN: band-classifier features (frozen) and the catalogue richness -> k-fold "
    "linear heteroscedastic Gaussian heads, fitted with the survey's likelihood (labels as X-ray-selected, the "
    "other clusters as non-detections) and penalised towards invariance under degraded observing conditions"
)


def save_bundle(
    out: Path,
    model: MassModel,
    baseline: RichnessBaseline,
    card: ModelCard,
    *,
    pixels: MassModel | None = None,
) -> ModelCard:
    """Write the weights and the card; the model id hashes the weights and the calibration."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.backbone.state_dict().items()},
        str(out / BACKBONE),
    )
    tensors = {}
    for prefix, m in (("", model), ("pixels.", pixels)):
        for k, h in enumerate(m.heads if m is not None else []):
            for name, v in h.state_dict().items():
                tensors[f"{prefix}fold{k}.{name}"] = v.detach().cpu().contiguous()
    save_file(tensors, str(out / HEADS))
    card = card.model_copy(update={"model_id": model_id(out, card)})
    (out / CARD).write_text(card.model_dump_json(indent=1))
    return card


#: card fields that do not change what the model computes (what it is called, how it scored, how long it took,
#: where its training data lay); every other field is part of the model's id
_ID_EXEMPT = ("model_id", "code_version", "metrics", "timing_s", "training_data", "config", "seed", "method")
#: card fields added after models were shipped: left out of the id at their defaults, so that older models keep
#: their ids
_ID_NEW_AT_DEFAULT = {"bcg_input": False, "lambda_bcg_relation": {}}


def model_id(path: Path, card: ModelCard) -> str:
    """The id of the model in ``path``: a hash of its weights' files and of every card field that changes what
    it computes (the geometry, bands, folds, input contracts, calibrations, the catalogue relation, the
    lambda-hat baseline and the redshifts it gives masses for); the card's ``model_id`` must equal it
    (:func:`load_bundle` recomputes it)."""
    digest = hashlib.sha256()
    for f in (BACKBONE, HEADS):
        digest.update((Path(path) / f).read_bytes())
    fields = card.model_dump(mode="json", exclude=set(_ID_EXEMPT))
    for k, default in _ID_NEW_AT_DEFAULT.items():
        if fields.get(k) == default:
            del fields[k]
    for contract in (fields["features"], (fields.get("pixels") or {}).get("features", {})):
        if contract.get("bcg_fill") == []:
            del contract["bcg_fill"]
    fields["z_range"] = list(card.training_data.z_range)  # masses are given only inside it
    digest.update(json.dumps(fields, sort_keys=True).encode())
    return f"survey-mass-{card.variant}-{digest.hexdigest()[:12]}"


def feature_contract(model: MassModel, s: Standardisation, invariance: dict | None = None) -> FeatureContract:
    names = model.input_names()
    kept = set(int(i) for i in s.keep)
    return FeatureContract(
        n_raw=len(names),
        keep=[int(i) for i in s.keep],
        mean=[float(v) for v in s.mean],
        std=[float(v) for v in s.std],
        dropped=[n for i, n in enumerate(names) if i not in kept],
        invariance=invariance or {},
        bcg_fill=[float(v) for v in model.bcg_fill.cpu().numpy()] if model.bcg_input else [],
    )


@dataclass
class ModelBundle:
    """A loaded bundle: the headline mass model (backbone, input contract, fold heads, calibration), the
    pixels-only model (the same object when the headline takes no richness), the catalogue relation and the
    lambda-hat baseline."""

    path: Path
    card: ModelCard
    model: MassModel
    baseline: RichnessBaseline
    pixels: MassModel
    relation: CatalogueRelation
    #: the relation with the catalogue's central galaxy as well (None for models trained without one)
    relation_bcg: CatalogueRelation | None = None

    @property
    def z_range(self) -> tuple[float, float]:
        return tuple(self.card.training_data.z_range)

    @property
    def model_id(self) -> str:
        return self.card.model_id

    @property
    def backbone(self) -> Backbone:
        return self.model.backbone

    @property
    def heads(self) -> list[MassRegressor]:
        return list(self.model.heads)

    @property
    def card_sha256(self) -> str:
        return hashlib.sha256((self.path / CARD).read_bytes()).hexdigest()

    def check_store(self, store) -> None:
        """Refuse a store whose band order or geometry differs from what the model was trained on."""
        if list(store.bands) != list(self.card.bands):
            raise ModelError(
                f"model {str(self.path)!r}: band order {self.card.bands} differs from store {str(store.path)!r} "
                f"bands {list(store.bands)}"
            )
        want = self.card.input
        if int(want.cutout_size) != store.cutout_size:
            raise ModelError(
                f"model {str(self.path)!r}: trained on {want.cutout_size}-pixel cutouts, store "
                f"{str(store.path)!r} has {store.cutout_size}"
            )
        if abs(float(want.pixel_scale_arcsec) - store.pixel_scale) > 1e-6:
            raise ModelError(
                f'model {str(self.path)!r}: trained on {want.pixel_scale_arcsec}" pixels, store '
                f'{str(store.path)!r} has {store.pixel_scale}"'
            )

    def to(self, device) -> ModelBundle:
        """Move both models to ``device``. On a CUDA device, fp32 there means fp32: TF32 (which cuDNN's
        convolutions and cuBLAS's matmuls may otherwise use, with a 10-bit mantissa) is switched off for this
        process (:func:`exact_fp32_on_cuda`), so the fp32 reference, the near-OOD recomputation, the attribution
        maps and ``--precision fp32`` are exact; reduced precision is chosen only by ``--precision``."""
        if torch.device(device).type == "cuda":
            exact_fp32_on_cuda()
        self.model.to(device)
        self.pixels.to(device)
        return self

    def with_precision(self, precision: str) -> ModelBundle:
        """Run both models' backbones at inference in ``precision`` (resolved: fp32, bf16 or fp16;
        :func:`~survey_mass.models.mass_model.resolve_precision`)."""
        from .mass_model import autocast_dtype

        self.model.backbone_autocast = self.pixels.backbone_autocast = autocast_dtype(precision)
        return self


def exact_fp32_on_cuda() -> dict[str, bool]:
    """Switch TF32 off for cuDNN convolutions and cuBLAS matmuls in this process; returns the flags now set
    (the GPU kit records them)."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return tf32_flags()


def tf32_flags() -> dict[str, bool]:
    """Whether cuDNN and cuBLAS may use TF32 for fp32 work in this process."""
    return {
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
    }


def _read_card(path: Path) -> ModelCard:
    from pydantic import ValidationError

    try:
        doc = json.loads((path / CARD).read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"model {str(path / CARD)!r}: not valid JSON ({exc})") from None
    try:
        return ModelCard.model_validate(doc)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        kind = "is missing" if e["type"] == "missing" else e["msg"]
        raise ModelError(f"model {str(path / CARD)!r}: key {where!r} {kind}") from None


def read_model_card(path: str | Path) -> ModelCard:
    """The model card of the model directory ``path`` (ModelError naming the file when missing or invalid)."""
    path = Path(path)
    if not (path / CARD).is_file():
        raise ModelError(f"model {str(path)!r}: no {CARD} (not a model directory)")
    return _read_card(path)


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
    card = _read_card(path)
    try:
        bb_state = load_file(str(path / BACKBONE))
        head_state = load_file(str(path / HEADS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(
            f"model {str(path)!r}: weights are not a safetensors file ({str(exc).splitlines()[0]})"
        ) from None
    expected = model_id(path, card)
    if card.model_id != expected:
        raise ModelError(
            f"model {str(path)!r}: its weights or calibration do not match its card's model_id "
            f"({card.model_id!r}; they hash to {expected!r}): the model was changed after it was saved"
        )
    backbone = Backbone(tuple(card.widths))
    try:
        backbone.load_state_dict(bb_state)
        backbone = backbone.to(memory_format=torch.channels_last)
    except RuntimeError as exc:
        raise ModelError(
            f"model {str(path / BACKBONE)!r}: weights do not fit the network ({str(exc).splitlines()[0]})"
        ) from None
    model = _mass_model(
        path, card, backbone, card.features, card.calibration, card.richness_input, card.bcg_input
    )
    _load_heads(path, model, head_state, "", int(card.folds))
    pixels = model
    if card.pixels is not None:
        pixels = _mass_model(path, card, backbone, card.pixels.features, card.pixels.calibration, False)
        _load_heads(path, pixels, head_state, "pixels.", int(card.folds))
    torch.set_grad_enabled(True)
    return ModelBundle(
        path=path,
        card=card,
        model=model,
        baseline=RichnessBaseline.from_dict(card.richness_baseline),
        pixels=pixels,
        relation=CatalogueRelation.from_dict(card.lambda_relation),
        relation_bcg=CatalogueRelation.from_dict(card.lambda_bcg_relation)
        if card.lambda_bcg_relation
        else None,
    )


def _mass_model(
    path: Path,
    card: ModelCard,
    backbone,
    f: FeatureContract,
    cal: Calibration,
    richness: bool,
    bcg: bool = False,
) -> MassModel:
    model = MassModel(
        backbone,
        bands=tuple(card.bands),
        calibration=cal.model_dump(),
        ood_flag=f.ood_flag,
        richness_input=richness,
        bcg_input=bcg,
        standardisation=Standardisation(
            np.asarray(f.keep, np.int64), np.asarray(f.mean, np.float32), np.asarray(f.std, np.float32)
        ),
    )
    if f.n_raw != len(model.input_names()):
        raise ModelError(
            f"model {str(path / CARD)!r}: the card has {f.n_raw} raw inputs, the network makes "
            f"{len(model.input_names())}"
        )
    if bcg:
        if len(f.bcg_fill) != 3:
            raise ModelError(
                f"model {str(path / CARD)!r}: a central-galaxy input needs its 3 bcg_fill coefficients"
            )
        model.bcg_fill = torch.as_tensor(f.bcg_fill, dtype=torch.float64)
    return model


def _load_heads(path: Path, model: MassModel, head_state: dict, prefix: str, folds: int) -> None:
    heads = []
    for k in range(folds):
        key = f"{prefix}fold{k}."
        sub = {n[len(key) :]: v for n, v in head_state.items() if n.startswith(key)}
        head = MassRegressor(len(model.keep), model.z_index)
        try:
            head.load_state_dict(sub)
        except RuntimeError as exc:
            raise ModelError(
                f"model {str(path / HEADS)!r}: {prefix}fold {k} does not fit ({str(exc).splitlines()[0]})"
            ) from None
        heads.append(head)
    model.heads = torch.nn.ModuleList(heads)
    model.eval()
