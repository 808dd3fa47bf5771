"""Named, declarative run definitions (``pipelines/*.toml``) as a typed :class:`Pipeline`.

The models here are the contract: ``schemas/pipeline.schema.json`` is generated from :class:`Pipeline`
(``python -m survey_mass.schemas --write``), every key a TOML may hold is a field, and every default is defined
once, here (or, for the mock's and the training's own parameters, in :class:`~survey_mass.mock.survey.MockConfig`
and :class:`~survey_mass.training.train.TrainConfig`, which an unset key leaves in charge).

Examples
--------
>>> p = load_pipeline("smoke")
>>> p.footprint.spec, p.mock.seed, p.cluster.workers
('box:150,160,0,12', 7, 1)
>>> p.updated(cluster={"workers": 4}).cluster.workers
4
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from .errors import PipelineError
from .footprint import DEFAULT_PARTITION_ORDER
from .resources import pipeline_dir

if TYPE_CHECKING:
    from .training.train import TrainConfig

#: the candidate catalog that ships with the package (``mock.candidates`` unset or this name)
EMBEDDED_CANDIDATES = "redmapper_dr8_v5.10"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FootprintSection(_Section):
    spec: str = Field(min_length=1, description="dr12, a MOC FITS file, or box:RA_MIN,RA_MAX,DEC_MIN,DEC_MAX")
    partition_order: int = Field(
        DEFAULT_PARTITION_ORDER, ge=0, le=12, description="HEALPix order of the partitions (nested)"
    )


class StoreSection(_Section):
    path: str = Field(
        "", description="cutout store; empty: build (or reuse) the embedded mock store <footprint>_store.zarr"
    )


class MockSection(_Section):
    """How ``survey-mass run`` builds its mock store when ``store.path`` is empty; unset keys keep MockConfig's.

    :func:`survey_mass.api.mock_config` turns it into a :class:`~survey_mass.mock.survey.MockConfig`.
    """

    seed: int | None = Field(None, ge=0, description="mock seed (default: MockConfig's)")
    candidates: str | None = Field(
        None,
        description=f"candidate catalog file (FITS/CSV/Parquet), or {EMBEDDED_CANDIDATES!r} for the embedded "
        "redMaPPer DR8 catalog (the default)",
    )
    density: float | None = Field(
        None, gt=0, description="draw clusters from the mass function at this many per deg^2 instead"
    )
    cutout_size: int | None = Field(None, ge=16, le=512, description="cutout side in pixels")
    pixel_scale_arcsec: float | None = Field(None, gt=0, description="pixel scale in arcsec")
    set: list[str] = Field(
        [],
        description="physics overrides NAME=VALUE (as survey-mass mock --set), e.g. 'sky_noise_scale=1.26'",
    )

    @property
    def uses_embedded_candidates(self) -> bool:
        return self.candidates in (None, "", EMBEDDED_CANDIDATES)


class ModelSection(_Section):
    path: str = Field("", description="model directory; empty for the shipped weights")


class TrainingSection(_Section):
    """Defaults of ``survey-mass train --pipeline NAME``; unset keys keep TrainConfig's."""

    folds: int | None = Field(None, ge=2, le=20)
    seed: int | None = Field(None, ge=0)
    variant: Literal["cpu", "gpu"] | None = None
    stage1_images: int | None = Field(None, ge=100)
    stage1_epochs: int | None = Field(None, ge=1)
    calibration_stores: tuple[str, ...] | None = Field(
        None, description="independent mock stores for the simulation-calibrated error term"
    )
    stage2_components: int | None = Field(
        None, ge=2, description="principal components the heads are fitted on"
    )
    invariance_cutouts: int | None = Field(
        None, ge=0, description="cutouts degraded for the invariance penalty"
    )
    invariance_weight: float | None = Field(None, ge=0, description="weight of the invariance penalty")
    background_cutouts: int | None = Field(
        None, ge=10, description="cutouts for the richness baseline's background"
    )

    def train_config(self, **flags: Any) -> TrainConfig:
        """A TrainConfig: ``flags`` that are not None, then this section's keys, then TrainConfig's defaults."""
        from .training.train import TrainConfig

        fields = self.model_dump(exclude_none=True)
        fields.update({k: v for k, v in flags.items() if v is not None})
        return TrainConfig(**fields)


class InferenceSection(_Section):
    batch_size: int = Field(64, ge=1, le=4096)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="the CNN backbone's precision at inference (heads, attribution and training stay fp32); auto: "
        "fp16 on a GPU, bf16 on a CPU that computes it natively, else fp32 (each moves no mass by more than "
        "0.005 dex)",
    )
    device_prep: bool = Field(
        False,
        description="the fast path for GPUs: the device measures each band's sky (sep's estimator, batched) and "
        "normalises, in batches of 2,048 cutouts copied on a side stream; the CPU only reads. The same masses as "
        "the default path (the sky equals sep's to float32 rounding); slower on a CPU",
    )


class AttributionSection(_Section):
    mode: Literal["auto", "all", "sample", "none"] = Field(
        "auto", description="auto: all on a GPU, sample on a CPU"
    )
    ig_steps: int = Field(
        32,
        ge=2,
        le=4096,
        description="integrated-gradients trapezoid steps per baseline to start with (doubled per row until "
        "complete to ig_tolerance_dex, up to 16 times as many)",
    )
    ig_baselines: int = Field(
        2, ge=1, le=64, description="blank-sky baselines per row (1 or an even number: antithetic pairs)"
    )
    ig_tolerance_dex: float = Field(
        0.005,
        gt=0,
        le=0.1,
        description="|sum of the map - F(x) + F(baseline)| at which a row's map is complete",
    )
    sample_fraction: float = Field(0.02, ge=0, le=1, description="fraction of rows attributed in mode sample")

    @field_validator("ig_baselines")
    @classmethod
    def _antithetic(cls, v: int) -> int:
        if v != 1 and v % 2:
            raise ValueError(f"ig_baselines must be 1 or even (antithetic pairs of sky draws), got {v}")
        return v


class CatalogSection(_Section):
    margin_arcsec: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="margin cache written beside the catalog, arcsec (lsdb's cross-matches within this radius are "
        "exact across partition borders); 0 for none",
    )

    @field_validator("margin_arcsec")
    @classmethod
    def _margin(cls, v: float) -> float:
        if 0 < v < 1:
            raise ValueError(f"margin_arcsec must be 0 (no margin) or at least 1 arcsec, got {v}")
        return v


class ClusterSection(_Section):
    scheduler: str = Field("", description="address of a running Dask scheduler; empty for a local cluster")
    workers: int = Field(
        2, ge=1, description="local inference workers (1 = in-process, >1 = a Dask LocalCluster)"
    )


class Pipeline(_Section):
    """A pipeline definition (``pipelines/*.toml``); ``survey-mass run`` flags override it."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        title="survey-mass pipeline definition (pipelines/*.toml)",
        json_schema_extra={"$id": "survey-mass/pipeline/2"},
    )

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    footprint: FootprintSection
    store: StoreSection = StoreSection()
    mock: MockSection = MockSection()
    model: ModelSection = ModelSection()
    training: TrainingSection = TrainingSection()
    inference: InferenceSection = InferenceSection()
    attribution: AttributionSection = AttributionSection()
    catalog: CatalogSection = CatalogSection()
    cluster: ClusterSection = ClusterSection()

    #: where the pipeline came from (a file, or its name), for error messages
    _source: str = PrivateAttr("")

    @property
    def source(self) -> str:
        """``pipeline 'FILE'`` (or ``pipeline 'NAME'``): how errors about this pipeline start."""
        return f"pipeline {self._source or self.name!r}"

    def updated(self, **sections: dict[str, Any]) -> Pipeline:
        """A validated copy with keys of sections changed, e.g. ``p.updated(cluster={"workers": 4})``."""
        doc = self.model_dump()
        for section, keys in sections.items():
            if section not in doc:
                raise PipelineError(f"{self.source}: no section {section!r}")
            doc[section] = {**doc[section], **keys} if isinstance(keys, dict) else keys
        new = validate(doc, self.source)
        new._source = self._source
        return new


#: ``survey-mass run`` flag -> (section, key) of the pipeline it overrides
RUN_FLAGS: dict[str, tuple[str, str]] = {
    "footprint": ("footprint", "spec"),
    "store": ("store", "path"),
    "model": ("model", "path"),
    "scheduler": ("cluster", "scheduler"),
    "workers": ("cluster", "workers"),
    "device": ("inference", "device"),
    "precision": ("inference", "precision"),
    "device_prep": ("inference", "device_prep"),
    "attribution": ("attribution", "mode"),
    "margin_arcsec": ("catalog", "margin_arcsec"),
}


def pipeline_with_flags(pipeline: Pipeline, **flags: Any) -> Pipeline:
    """The pipeline with the ``survey-mass run`` flags (:data:`RUN_FLAGS`) that are not None put in."""
    sections: dict[str, dict[str, Any]] = {}
    for flag, value in flags.items():
        if value is not None:
            section, key = RUN_FLAGS[flag]
            sections.setdefault(section, {})[key] = value
    return pipeline.updated(**sections) if sections else pipeline


def validate(doc: Any, where: str) -> Pipeline:
    """``doc`` as a Pipeline; PipelineError (one line: ``where``, the key and the reason) if it does not fit."""
    try:
        return Pipeline.model_validate(doc)
    except ValidationError as exc:
        raise PipelineError(f"{where}: {first_error(exc)}") from None


def first_error(exc: ValidationError) -> str:
    """``key.path: reason`` of a pydantic validation error's first error, in one line."""
    e = exc.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = e["msg"].replace("\n", " ")
    if e["type"] not in ("missing", "extra_forbidden"):
        msg += f" (got {e['input']!r})"
    return f"{key}: {msg}"


def available() -> list[str]:
    """Names of the shipped pipelines."""
    return sorted(p.stem for p in pipeline_dir().glob("*.toml"))


def load_pipeline(name_or_path: str | Path) -> Pipeline:
    """Read and validate a pipeline by shipped name (``dr12``) or path; PipelineError names the file and key."""
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        p = pipeline_dir() / f"{name_or_path}.toml"
        if not p.exists():
            raise PipelineError(
                f"pipeline {str(name_or_path)!r}: unknown; shipped pipelines: {', '.join(available())}"
            )
    if not p.is_file():
        raise PipelineError(f"pipeline {str(p)!r}: no such file")
    try:
        doc = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"pipeline {str(p)!r}: not valid TOML ({exc})") from None
    pipe = validate(doc, f"pipeline {str(p)!r}")
    pipe._source = str(p)
    return pipe
