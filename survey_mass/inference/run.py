"""The survey run: a cutout store and a model in, a HATS mass catalog out, one Dask task per partition.

* The model bundle is loaded once per worker process and cached there (:data:`_CACHE`); only its path travels
  in the task graph, never the weights.
* Each task reads one partition, predicts (:func:`~survey_mass.inference.predict.predict_partition`),
  attributes, and writes its Parquet file atomically, so a task that Dask retries after a worker died rewrites
  the same file and never duplicates rows.
* Finished partitions are skipped on a rerun; the metadata is written once all partitions exist.
* A lock file in the output directory refuses a second concurrent run into the same catalog.
* :func:`run_catalog` returns a :class:`RunSummary` and writes it to ``CATALOG/run.json``
  (``schemas/run_summary.schema.json`` is generated from it).

Defaults of :class:`RunOptions` are the pipeline's (:mod:`survey_mass.pipelines`), defined there once.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import paths
from ..errors import SurveyMassError
from ..pipelines import AttributionSection, CatalogSection, ClusterSection, InferenceSection
from ..quality import Quality
from ..storage import as_path, display, is_remote

_CACHE: dict[str, object] = {}


def _default(section: type[BaseModel], key: str):
    return section.model_fields[key].default


@dataclass
class RunOptions:
    """What each partition task needs; the defaults are the pipeline sections' (device: resolved, so cpu)."""

    batch_size: int = _default(InferenceSection, "batch_size")
    device: str = "cpu"
    #: the backbone's inference precision (:func:`~survey_mass.models.mass_model.resolve_precision`); resolved
    #: once by :func:`run_catalog`, so that every worker of a run uses the same
    precision: str = "auto"
    #: the fast path: the device measures the sky and normalises (the CPU stage only reads and checks), in batches
    #: of :data:`~survey_mass.models.mass_model.DEVICE_PREP_BATCH` cutouts (the backbone's too)
    device_prep: bool = False
    attribution: str = "sample"  # all | sample | none (a pipeline's "auto" is resolved before)
    ig_steps: int = _default(AttributionSection, "ig_steps")
    ig_baselines: int = _default(AttributionSection, "ig_baselines")
    ig_tolerance_dex: float = _default(AttributionSection, "ig_tolerance_dex")
    sample_fraction: float = _default(AttributionSection, "sample_fraction")
    seed: int = 2022
    torch_threads: int = 1
    #: the store's identity and the model's id the run began with: a worker that outlives runs (``--scheduler``)
    #: reopens a store or model that changed at the same path, and refuses one that is not the run's
    store_identity: str = ""
    model_id: str = ""

    def attribution_kwargs(self) -> dict:
        """Keyword arguments of :func:`survey_mass.attribution.attribute` for this run's maps (the refinement
        stops at 16 times the initial steps)."""
        return {
            "baselines": self.ig_baselines,
            "steps": self.ig_steps,
            "tolerance": self.ig_tolerance_dex,
            "max_steps": 16 * self.ig_steps,
            "seed": self.seed,
        }


class RunSummary(BaseModel):
    """What a survey run did: returned by :func:`run_catalog` and written to ``CATALOG/run.json``."""

    model_config = ConfigDict(
        extra="forbid",
        title="survey-mass run summary (CATALOG/run.json)",
        json_schema_extra={"$id": "survey-mass/run_summary/1"},
    )

    catalog: str = Field(description="catalog directory")
    store: str = Field(description="cutout store (absolute path)")
    footprint: str = Field(description="footprint name")
    model_id: str = Field(description="id of the model bundle that made the masses")
    device: str = Field(description="torch device of the inference")
    precision: str = Field(
        "fp32", description="the CNN backbone's precision at inference: fp32, bf16 or fp16 (heads stay fp32)"
    )
    device_prep: bool = Field(
        False,
        description="the fast path: sky measurement and normalisation on the device (equal to the CPU's)",
    )
    attribution: str = Field(description="attribution mode: all, sample or none")
    rows: int = Field(ge=0, description="rows in the catalog")
    partitions: int = Field(ge=0, description="partitions of the store inside the footprint")
    partitions_computed: int = Field(ge=0, description="partitions computed by this run")
    partitions_skipped: int = Field(ge=0, description="partitions already in the catalog (resumed)")
    rows_computed: int = Field(ge=0, description="rows computed by this run")
    attributed: int = Field(ge=0, description="rows attributed by this run")
    wall_s: float = Field(description="wall time of this run, seconds")
    cutouts_per_s: float | None = Field(
        description="rows computed per second (None when nothing was computed)"
    )
    cluster: str = Field(description="where the tasks ran: in-process, LocalCluster (...), a scheduler")
    dashboard: str | None = Field(description="Dask dashboard link (None in-process)")
    attribution_s: float = Field(description="seconds spent in attribution, summed over tasks")
    margin_arcsec: float = Field(
        0.0, ge=0, description="threshold of the margin cache written beside the catalog"
    )
    margin_rows: int = Field(0, ge=0, description="rows in the margin cache")

    def write(self, catalog: str | Path) -> Path:
        from ..storage import write_bytes

        f = paths.run_summary_file(catalog)
        write_bytes(f, self.model_dump_json(indent=1).encode(), temp=paths.catalog_temp_file(f))
        return f


def _bundle(model_path: str, device: str, precision: str = "fp32", model_id: str = ""):
    key = f"bundle:{model_path}:{device}:{precision}:{model_id}"
    if key not in _CACHE:
        from ..errors import ModelError
        from ..models.bundle import load_bundle
        from ..models.mass_model import resolve_precision

        bundle = load_bundle(model_path)
        if model_id and bundle.model_id != model_id:
            raise ModelError(
                f"model {str(model_path)!r}: is now {bundle.model_id!r}, the run began with {model_id!r} (it was "
                "replaced during the run)"
            )
        _CACHE[key] = bundle.to(device).with_precision(resolve_precision(precision, device))
    return _CACHE[key]


def _store(store_path, identity: str = ""):
    # a UPath's storage options are part of what it names; the identity, which store is there now
    key = (
        f"store:{store_path}:{sorted(getattr(as_path(store_path), 'storage_options', {}).items())}:{identity}"
    )
    if key not in _CACHE:
        from ..errors import StoreError
        from ..store import open_store

        store = open_store(store_path)
        if identity and store.identity != identity:
            raise StoreError(
                f"store {str(store_path)!r}: is not the store the run began with (it was rebuilt during the run)"
            )
        _CACHE[key] = store
    return _CACHE[key]


@dataclass
class PartitionJob:
    """One partition on its way through the stages (:data:`STAGES`): what each stage hands the next."""

    store_path: str
    model_path: str
    pixel: int
    catalog: str
    opts: RunOptions
    columns: dict
    images: np.ndarray
    prepared: object = None  # survey_mass.inference.predict.PreparedPartition
    predictions: dict | None = None
    attribution: dict | None = None
    attributed: int = 0
    timings: dict | None = None


def _worker_setup(opts: RunOptions) -> None:
    if "threads" not in _CACHE:
        import torch

        torch.set_num_threads(max(1, opts.torch_threads))
        _CACHE["threads"] = True


def read_stage(store_path: str, model_path: str, pixel: int, catalog: str, opts: RunOptions) -> PartitionJob:
    """CPU stage: read and decode the partition (cutout by cutout around a corrupted shard, flagging what cannot
    be read), then its CPU work (:func:`~survey_mass.inference.predict.prepare_partition`)."""
    from ..errors import StoreError
    from .predict import prepare_partition

    t0 = time.perf_counter()
    _worker_setup(opts)
    store = _store(store_path, opts.store_identity)
    bundle = _bundle(model_path, "cpu", model_id=opts.model_id)
    store.check_partition(pixel)  # from the metadata, before anything is allocated
    cols = store.columns(pixel)
    n = len(cols["id"])
    try:
        images = store.images(pixel)
        unreadable = np.zeros(n, bool)
    except StoreError:
        images = np.full((n, 5, store.cutout_size, store.cutout_size), np.nan, np.float32)
        unreadable = np.zeros(n, bool)
        for k in range(n):
            try:
                images[k] = store.images(pixel, k, k + 1)[0]
            except StoreError:
                unreadable[k] = True
    cols = dict(cols)
    cols["quality"] = np.asarray(cols.get("quality", np.zeros(n)), np.int64) | np.where(
        unreadable, int(Quality.UNREADABLE), 0
    )
    t_read = time.perf_counter()
    job = PartitionJob(store_path, model_path, pixel, catalog, opts, cols, images)
    # the baseline's detection runs where the model runs: here on the CPU, batched on the device otherwise
    job.prepared = prepare_partition(
        bundle, images, cols, detect=str(opts.device) == "cpu", sky=not opts.device_prep
    )
    job.timings = {"read_s": t_read - t0, "prepare_s": time.perf_counter() - t_read}
    return job


def _chosen_rows(job: PartitionJob, quality: np.ndarray) -> np.ndarray:
    """The rows whose attribution maps this run draws: every row with a mass, a seeded sample of them, or none."""
    from .predict import NO_MASS

    opts = job.opts
    eligible = np.flatnonzero((quality & int(NO_MASS | Quality.NO_CLUSTER)) == 0)
    if opts.attribution == "all":
        return eligible
    if opts.attribution == "sample":
        rng = np.random.default_rng([opts.seed, int(job.pixel)])
        return eligible[rng.random(eligible.size) < opts.sample_fraction]
    return eligible[:0]


def _backbone_batch(opts: RunOptions) -> int:
    """The backbone's batch: the run's, or on the fast path at least the device preparation's."""
    from ..models.mass_model import DEVICE_PREP_BATCH

    return max(opts.batch_size, DEVICE_PREP_BATCH) if opts.device_prep else opts.batch_size


def device_stage(job: PartitionJob) -> PartitionJob:
    """Device stage: the CNN ensemble and the masses (:func:`~survey_mass.inference.predict.predict_prepared`),
    then the attribution maps of the chosen rows, in batches of rows sized for the device. The maps' per-row CPU
    work (region masks, summaries) is :func:`summary_stage`'s, so that the device never waits for it."""
    from ..attribution import attribution_maps
    from .predict import predict_prepared

    t0 = time.perf_counter()
    opts, cols = job.opts, job.columns
    _worker_setup(opts)
    bundle = _bundle(job.model_path, opts.device, opts.precision, opts.model_id)
    pred = predict_prepared(bundle, job.prepared, batch_size=_backbone_batch(opts), device=opts.device)
    t_pred = time.perf_counter()
    chosen = _chosen_rows(job, pred["quality"])
    # rows per attribution call: the device sees rows x path points at once (a GPU wants many)
    per_call = 32 if opts.device == "cpu" else 512
    maps = []
    for s in range(0, chosen.size, per_call):
        idx = chosen[s : s + per_call]
        ig = attribution_maps(
            bundle,
            job.images[idx],
            np.asarray(cols["z"], float)[idx],
            ids=np.asarray(cols["id"])[idx],
            richness=None if "richness" not in cols else np.asarray(cols["richness"], float)[idx],
            bcg_mag_i=None if "bcg_mag_i" not in cols else np.asarray(cols["bcg_mag_i"], float)[idx],
            **opts.attribution_kwargs(),
        )
        maps.append((idx, {k: ig[k] for k in ("attr", "delta", "completeness", "steps")}))
    job.predictions, job.attribution = pred, {"chosen": chosen, "maps": maps, "images": job.images[chosen]}
    job.prepared, job.images = None, None  # the chosen rows' pixels travel on for their masks, no others
    job.timings = {**job.timings, "predict_s": t_pred - t0, "attribution_s": time.perf_counter() - t_pred}
    return job


def summary_stage(job: PartitionJob) -> PartitionJob:
    """CPU stage: each attributed row's region masks (sep's segmentation) and the summaries of its map
    (:func:`~survey_mass.attribution.attribution_summaries`)."""
    from ..attribution import ATTRIBUTED, SUMMARY_COLUMNS, attribution_summaries

    t0 = time.perf_counter()
    cols, done = job.columns, job.attribution
    n, chosen = len(cols["id"]), done["chosen"]
    attr: dict[str, np.ndarray] = {c: np.full(n, np.nan) for c in SUMMARY_COLUMNS}
    pixel_scale = _store(job.store_path, job.opts.store_identity).pixel_scale
    images = dict(zip(chosen.tolist(), done["images"], strict=True))
    for idx, ig in done["maps"]:
        a, _ = attribution_summaries(
            _bundle(job.model_path, "cpu", model_id=job.opts.model_id),
            ig,
            np.stack([images[int(i)] for i in idx]),
            np.asarray(cols["z"], float)[idx],
            richness=None if "richness" not in cols else np.asarray(cols["richness"], float)[idx],
            pixel_scale=pixel_scale,
        )
        for c in SUMMARY_COLUMNS:
            attr[c][idx] = a[c]
    attr[ATTRIBUTED] = np.zeros(n, bool)
    attr[ATTRIBUTED][chosen] = True
    job.attribution, job.attributed = attr, int(chosen.size)
    job.timings = {**job.timings, "summary_s": time.perf_counter() - t0}
    return job


def write_stage(job: PartitionJob) -> dict:
    """CPU stage: the catalogue rows of the partition, written atomically; returns counts and timings."""
    from ..catalog.writer import to_table, write_partition
    from ..store.cutouts import PASSTHROUGH_COLUMNS

    t0 = time.perf_counter()
    cols, pred = job.columns, job.predictions
    n = len(cols["id"])
    out = {
        "id": cols["id"],
        "name": cols["name"],
        "ra": cols["ra"],
        "dec": cols["dec"],
        "z": cols["z"],
        **{k: v for k, v in pred.items() if k != "quality"},
        "quality": pred["quality"],
        **job.attribution,
        "richness_catalog": cols.get("richness"),
        **{c: cols[c] for c in PASSTHROUGH_COLUMNS if c in cols},
        "model_id": np.full(n, _bundle(job.model_path, "cpu", model_id=job.opts.model_id).model_id),
    }
    store = _store(job.store_path, job.opts.store_identity)
    write_partition(
        as_path(job.catalog),
        store.order,
        job.pixel,
        to_table(out),
        source_digest=store.source_digest(job.pixel),
    )
    t = job.timings
    write_s = time.perf_counter() - t0
    return {
        "pixel": int(job.pixel),
        "rows": n,
        "attributed": job.attributed,
        "read_s": t["read_s"],
        "predict_s": t["prepare_s"] + t["predict_s"],
        "attribution_s": t["attribution_s"] + t.get("summary_s", 0.0),
        "write_s": write_s,
        "total_s": sum(t.values()) + write_s,
    }


def _stages():
    from ..engine import Stage

    return (
        Stage(read_stage, "CPU"),
        Stage(device_stage, "GPU"),
        Stage(summary_stage, "CPU"),
        Stage(write_stage, "CPU"),
    )


class RunConfig(BaseModel):
    """``OUT/run_config.json``: what a run into an output was made with. A resumed run must match it, or the
    catalogue would mix rows made two ways; it also marks the output as survey-mass's (``--overwrite`` replaces
    nothing else)."""

    model_config = ConfigDict(
        extra="forbid",
        title="survey-mass run settings (OUT/run_config.json)",
        json_schema_extra={"$id": "survey-mass/run_config/1"},
    )

    writer: Literal["survey-mass"] = Field("survey-mass", description="marks an output survey-mass wrote")
    store: str = Field(description="the cutout store (absolute path or URL)")
    store_identity: str = Field(description="hash of the store's root attributes and manifest")
    store_attributes: dict = Field(description="the store's root attributes (to name what differs)")
    model_id: str = Field(description="id of the model bundle (a hash of its weights and calibration)")
    model_card_sha256: str = Field(description="SHA-256 of the model card file")
    footprint: str = Field(description="footprint name")
    footprint_digest: str = Field(description="hash of the footprint's cells (not of its name)")
    attribution: str
    ig_steps: int | None
    ig_baselines: int | None
    ig_tolerance_dex: float | None
    sample_fraction: float | None
    seed: int
    precision: str
    device_prep: bool = Field(
        False,
        description="the sky measured on the device (--device-prep; its 2,048-cutout backbone batches can choose "
        "other reduced-precision kernels, so a resume keeps the path it began with)",
    )

    @classmethod
    def read(cls, f: Path) -> RunConfig:
        """The settings in ``f``; one line naming the file when it is unreadable, corrupt or another version's."""
        from pydantic import ValidationError

        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            raise SurveyMassError(
                f"output {str(f.parent)!r}: {f.name} is unreadable ({str(exc).splitlines()[0] or 'empty'}); "
                f"the run that wrote it cannot be resumed: use --overwrite or another --out"
            ) from None
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            e = exc.errors()[0]
            key = ".".join(str(p) for p in e["loc"]) or "(top level)"
            raise SurveyMassError(
                f"output {str(f.parent)!r}: {f.name} was written by another survey-mass version or is damaged "
                f"({key}: {e['msg']}); it cannot be resumed: use --overwrite or another --out"
            ) from None

    def write(self, f: Path) -> None:
        """Write atomically (a temporary file renamed; one PUT on an object store)."""
        from ..storage import write_bytes

        write_bytes(f, self.model_dump_json(indent=1).encode(), temp=paths.catalog_temp_file(f))

    def differences(self, other: RunConfig) -> list[str]:
        """What differs from ``other``, as ``key: this then, other now``, most telling first."""
        out = []
        if self.store_identity != other.store_identity:
            out.append(
                "store: the store at "
                f"{other.store!r} is not the one this output was made from ({_attribute_diff(self.store_attributes, other.store_attributes)})"
            )
        if self.model_card_sha256 != other.model_card_sha256 and self.model_id == other.model_id:
            out.append("model_card_sha256: the model card changed")
        for k in type(self).model_fields:
            if k in ("store_identity", "store_attributes", "model_card_sha256"):
                continue
            a, b = getattr(self, k), getattr(other, k)
            if a != b:
                out.append(f"{k}: {a!r} then, {b!r} now")
        return out


def _attribute_diff(old: dict, new: dict, prefix: str = "") -> str:
    """The first key at which two attribute documents differ, with both values."""
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k), new.get(k)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                return _attribute_diff(a, b, f"{prefix}{k}.")
            return f"{prefix}{k}: {a!r} then, {b!r} now"
    return "same attributes"


def _run_config(store, store_path, bundle, footprint, opts: RunOptions) -> RunConfig:
    attributing = opts.attribution != "none"
    return RunConfig(
        store=display(store_path),
        store_identity=store.identity,
        store_attributes=store.meta.to_attrs(),
        model_id=bundle.model_id,
        model_card_sha256=bundle.card_sha256,
        footprint=footprint.name,
        footprint_digest=footprint.digest,
        attribution=opts.attribution,
        ig_steps=opts.ig_steps if attributing else None,
        ig_baselines=opts.ig_baselines if attributing else None,
        ig_tolerance_dex=opts.ig_tolerance_dex if attributing else None,
        sample_fraction=opts.sample_fraction if opts.attribution == "sample" else None,
        seed=opts.seed,
        precision=opts.precision,
        device_prep=opts.device_prep,
    )


def _check_run_config(catalog: Path, cfg: RunConfig) -> None:
    """A resumed run must be the same run: the same store (by content), model (weights and card), footprint (by
    its cells) and attribution settings. The first run records them in ``run_config.json``."""
    f = paths.run_config_file(catalog)
    if f.exists():
        diff = RunConfig.read(f).differences(cfg)
        if diff:
            raise SurveyMassError(
                f"output {str(catalog)!r} holds a run made with other settings ({diff[0]}"
                + (f"; and {len(diff) - 1} more" if len(diff) > 1 else "")
                + "); rerun with the same settings to resume, or use --overwrite or another --out"
            )
    else:
        cfg.write(f)


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field 22), with this boot's
    id: a pid reused after a restart has another. None where /proc has no such process or no such file (other
    systems)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        ticks = stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError, ValueError):
        return None
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{boot}:{ticks}"


def _pid_namespace() -> str:
    """This process's PID namespace (``/proc/self/ns/pid``): pids mean nothing across namespaces (containers
    sharing a hostname each have a pid 1). "-" where there is no such link."""
    try:
        return os.readlink("/proc/self/ns/pid").replace(" ", "")
    except OSError:
        return "-"


#: the tokens of the locks this process holds (two RunLocks of one process on one output are two runs)
_HELD_TOKENS: set[str] = set()
#: a held lock's file is touched this often (s); a lock from another PID namespace untouched for
#: :data:`LOCK_STALE_S` belongs to a run that is gone
LOCK_HEARTBEAT_S = 10.0
LOCK_STALE_S = 60.0


class RunLock:
    """``OUT/.lock`` holds ``pid@host nonce start pidns`` of the run writing the output (``start``: the process's
    start time and boot id, :func:`_process_start`; ``pidns``: its PID namespace); a live holder makes others
    refuse.

    It is created exclusively (:func:`survey_mass.storage.create_exclusive`: a hard link on local disk, a
    conditional PUT on S3, after checking that the endpoint honours them), so two runs starting together cannot
    both take it. While held, a local lock file is touched every :data:`LOCK_HEARTBEAT_S` seconds.

    Whose lock is stale:

    * one from this process (its pid, its namespace) that this process does not hold: a dead run's whose pid
      came back to us (a restart); one this process holds is a live run's;
    * one whose pid is dead in this namespace, or alive but started at another time (a reused pid);
    * one from another PID namespace on this host (another container) whose file has not been touched for
      :data:`LOCK_STALE_S` seconds; a touched one is a live run's, refused;
    * one from another host cannot be judged from here: refused, and the message names it.

    A stale lock is taken over: on local disk it is first renamed to a private name and given back if it turns
    out to be a live run's. On exit the lock is deleted only if it is still this run's."""

    def __init__(self, catalog: Path):
        self.path = paths.run_lock_file(catalog)
        self.token = ""
        self._stop = None
        #: set when the lock was found to be another run's while this one held it
        self.lost = False

    def check_held(self) -> None:
        """Refuse to go on (before finalizing an output) once the lock is no longer this run's."""
        if self.lost or self._read() != self.token:
            self.lost = True
            raise SurveyMassError(
                f"output {str(self.path.parent)!r}: this run lost its lock to another run (it stalled for longer "
                f"than {LOCK_STALE_S:.0f} s); its finished partitions are kept, the other run completes the output"
            )

    def __enter__(self):
        import socket
        import uuid

        from ..storage import check_exclusive_create, create_exclusive

        check_exclusive_create(paths.lock_probe_file(self.path.parent))
        start = _process_start(os.getpid()) or "-"
        self.token = f"{os.getpid()}@{socket.gethostname()} {uuid.uuid4().hex} {start} {_pid_namespace()}"
        for _ in range(3):
            if create_exclusive(self.path, self.token.encode()):
                _HELD_TOKENS.add(self.token)
                self._start_heartbeat()
                return self
            text = self._read()
            holder = self._holder(text)
            if holder is not None and self._alive(text, *holder):
                pid, host, _, ns = holder
                where = "" if host in (None, socket.gethostname()) else f" on {host}"
                if host in (None, socket.gethostname()) and ns not in (None, _pid_namespace()):
                    where = f" in another PID namespace ({ns}: another container)"
                raise SurveyMassError(
                    f"output {str(self.path.parent)!r} is being written by another run (pid {pid}{where}); wait for "
                    f"it or choose another --out (if no run is writing it, delete {str(self.path)!r})"
                ) from None
            self._take_over(text)  # a stale lock from a run that died
        raise SurveyMassError(f"output {str(self.path.parent)!r}: cannot take the lock {str(self.path)!r}")

    def _start_heartbeat(self) -> None:
        """Touch a local lock file while it is held, so that runs in other PID namespaces see it is alive."""
        import threading

        if not isinstance(self.path, Path):
            return
        stop = threading.Event()

        def beat():
            while not stop.wait(LOCK_HEARTBEAT_S):
                try:
                    if self._read() == self.token:
                        os.utime(self.path)
                    else:
                        self.lost = True  # another run took it (this one stalled): it must not finalize
                except OSError:
                    pass

        threading.Thread(target=beat, name="survey-mass-lock-heartbeat", daemon=True).start()
        self._stop = stop

    def _read(self) -> str | None:
        try:
            return self.path.read_text().strip()
        except FileNotFoundError:
            return None

    def _age_s(self) -> float | None:
        """Seconds since the lock file was last touched (None on an object store or when it is gone)."""
        import time

        if not isinstance(self.path, Path):
            return None
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return None

    def _take_over(self, stale: str | None) -> None:
        """Remove the stale lock ``stale``, and only it (another contender may have replaced it meanwhile)."""
        if not isinstance(self.path, Path):
            # an object store cannot rename: delete it if it still reads stale
            if self._read() == stale:
                self.path.unlink(missing_ok=True)
            return
        import time
        import uuid

        aside = self.path.with_name(f"{paths.TEMP_PREFIX}{self.path.name}-{uuid.uuid4().hex[:12]}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        try:
            holder = self._holder(stale)
            touched = time.time() - aside.stat().st_mtime < LOCK_STALE_S
            other_ns = holder is not None and holder[3] not in (None, _pid_namespace())
            if aside.read_text().strip() != (stale or "") or (other_ns and touched):
                # we took a live contender's fresh lock, or the holder's heartbeat touched it since we judged it
                os.link(aside, self.path)
        except OSError:  # a third run's lock is already there, or the aside copy was cleared: nothing to give
            pass
        aside.unlink(missing_ok=True)

    @staticmethod
    def _holder(text: str | None) -> tuple[int, str | None, str | None, str | None] | None:
        """(pid, host, process start, PID namespace) of a lock's text; start and namespace are None in locks
        written before they were kept."""
        if not text:
            return None
        words = text.split(" ")
        pid, _, host = words[0].partition("@")
        start = words[2] if len(words) > 2 and words[2] != "-" else None
        ns = words[3] if len(words) > 3 and words[3] != "-" else None
        try:
            return int(pid or 0), host or None, start, ns
        except ValueError:
            return None

    def _alive(self, text: str | None, pid: int, host: str | None, start=None, ns=None) -> bool:
        import socket

        if host not in (None, socket.gethostname()):
            return True  # another machine's run: assume it lives
        if ns is not None and ns != _pid_namespace():
            age = self._age_s()  # another container's run: its pids are not ours to look up
            return age is None or age < LOCK_STALE_S
        if pid <= 0:
            return False
        if pid == os.getpid():
            return (
                text in _HELD_TOKENS
            )  # ours if this process holds it; else a dead run's pid came back to us
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except (PermissionError, OverflowError):
            pass
        if start is not None:
            now = _process_start(pid)
            if now is not None and now != start:
                return False  # the pid now names another process (a restart reused it)
        return True

    def __exit__(self, *exc):
        if self._stop is not None:
            self._stop.set()
        _HELD_TOKENS.discard(self.token)
        if self._read() == self.token:
            self.path.unlink(missing_ok=True)


def _warn_without_central_galaxies(store, bundle) -> None:
    """One line on stderr when the model gives lambda + BCG masses but the store carries no central-galaxy
    magnitudes (a store written before they were stored, or candidates without them): that column is then null."""
    import sys

    if bundle.relation_bcg is None or not store.partitions:
        return
    if not store.has_column(store.partitions[0], "bcg_mag_i"):
        print(
            f"warning: store {str(store.path)!r} has no bcg_mag_i column, so log10_m500_lambda_bcg will be null "
            "(rebuild the store, or ingest candidates with central-galaxy magnitudes)",
            file=sys.stderr,
        )


def run_catalog(
    *,
    store_path: str,
    model_path: str,
    catalog: str,
    footprint,
    opts: RunOptions,
    scheduler: str | None = None,
    workers: int = _default(ClusterSection, "workers"),
    client=None,
    overwrite: bool = False,
    progress: bool = True,
    name: str = "survey-mass",
    split: bool = False,
    margin_arcsec: float = _default(CatalogSection, "margin_arcsec"),
) -> RunSummary:
    """Run the model over every partition of the store inside the footprint and write the HATS catalog.

    The tasks run on ``client`` (a ``distributed.Client``) if given, else on ``scheduler``, else on a local
    cluster of ``workers`` processes (in this process for 1). Each partition passes three stages (read and CPU
    work, device, write; :func:`read_stage`, :func:`device_stage`, :func:`write_stage`): one task on a plain
    cluster, three tasks on one whose workers are tagged ``GPU`` and ``CPU`` (a ``LocalCUDACluster``, a
    ``scheduler`` with such workers, or a local CPU cluster with ``split``).
    """
    from .. import __version__
    from ..catalog.margin import check_margin
    from ..catalog.writer import (
        check_output,
        clear_output,
        finalize,
        partition_done,
        remove_temporaries,
        remove_top_temporaries,
    )
    from ..engine import Task, fan_out
    from ..models.bundle import load_bundle
    from ..models.mass_model import resolve_precision
    from ..store import open_store

    t0 = time.perf_counter()
    # one precision for the whole run, whichever worker computes a partition
    opts = replace(opts, precision=resolve_precision(opts.precision, opts.device))
    catalog_p = as_path(catalog)
    check_output(catalog_p, overwrite=overwrite)
    store = open_store(store_path)
    bundle = load_bundle(model_path)
    bundle.check_store(store)
    check_margin(margin_arcsec, store.order)
    _warn_without_central_galaxies(store, bundle)
    opts = replace(opts, store_identity=store.identity, model_id=bundle.model_id)
    parts = [
        p
        for p in store.partitions
        if p in set(footprint.moc.degrade_to_order(store.order).flatten().tolist())
    ]
    in_fp = set(footprint.moc.degrade_to_order(store.order).flatten().tolist())
    gone = [p for p in store.missing_partitions() if p in in_fp]
    if gone:
        from ..errors import StoreError
        from ..paths import partition_group_path

        raise StoreError(
            f"store {store_path!r}: partition {gone[0]} ({partition_group_path(store.order, gone[0])}) is listed in "
            f"the store's manifest but missing{f' (and {len(gone) - 1} more)' if len(gone) > 1 else ''}; restore it "
            "or rebuild the store (survey-mass mock resumes)"
        )
    if not parts:
        raise SurveyMassError(f"store {store_path!r} has no partition inside footprint {footprint.name!r}")
    with RunLock(catalog_p) as lock:
        remove_top_temporaries(catalog_p)
        if overwrite:
            clear_output(catalog_p)
        _check_run_config(catalog_p, _run_config(store, store_path, bundle, footprint, opts))
        base_opts = opts

        def threads_per_worker(n_workers: int) -> tuple:
            # torch in each worker gets its share of the cores (all of them in-process)
            threads = max(1, (os.cpu_count() or 1) // n_workers)
            return (RunOptions(**{**asdict(base_opts), "torch_threads": threads}),)

        model_p = str(Path(model_path))
        # the paths travel as objects: a UPath given through the Python API keeps its storage options
        tasks = [Task(p, store.n_cutouts(p), (store.path, model_p, p, catalog_p)) for p in parts]
        done = fan_out(
            tasks,
            _stages(),
            # done: written from the partition the store holds now (one the ingest re-cut is computed again)
            is_done=lambda p: partition_done(catalog_p, store.order, p, store.source_digest(p)),
            shared_args=threads_per_worker,
            workers=workers,
            scheduler=scheduler,
            client=client,
            device=opts.device,
            progress=progress,
            desc="partitions",
            # worker scratch space stays inside the output (nothing is written outside --out)
            scratch=None if is_remote(catalog_p) else paths.dask_scratch(catalog_p),
            retries=3,
            # workers stopped mid-write leave temporaries; finished partitions are complete files
            cleanup=lambda: remove_temporaries(catalog_p),
            announce=progress,
            split=split,
        )
        results: list[dict] = list(done)
        todo = done.computed
        kind, dashboard = done.kind, done.dashboard
        provenance = {
            "survey_mass_version": __version__,
            "survey_mass_model_id": bundle.model_id,
            "survey_mass_model_card_sha256": bundle.card_sha256,
            "survey_mass_footprint": footprint.name,
            "survey_mass_store": display(store_path),
            "survey_mass_attribution": (
                f"{opts.attribution} (integrated gradients from {opts.ig_baselines} blank-sky baselines, "
                f"trapezoid from {opts.ig_steps} steps, complete to {opts.ig_tolerance_dex} dex)"
            ),
        }
        lock.check_held()  # a run that stalled and lost its lock leaves the output to the run that took it
        written = finalize(
            catalog_p,
            store.order,
            parts,
            name=name,
            provenance=provenance,
            margin_arcsec=margin_arcsec,
            progress=progress,
            rebuild_margin=bool(todo),
        )
    wall = time.perf_counter() - t0
    new_rows = sum(r["rows"] for r in results)
    summary = RunSummary(
        catalog=str(catalog_p),
        store=display(store_path),
        footprint=footprint.name,
        model_id=bundle.model_id,
        device=str(opts.device),
        precision=opts.precision,
        device_prep=opts.device_prep,
        attribution=opts.attribution,
        rows=written.rows,
        partitions=len(parts),
        partitions_computed=len(todo),
        partitions_skipped=len(parts) - len(todo),
        rows_computed=new_rows,
        attributed=sum(r["attributed"] for r in results),
        wall_s=round(wall, 1),
        cutouts_per_s=round(new_rows / wall, 1) if wall > 0 and new_rows else None,
        cluster=kind,
        dashboard=dashboard,
        attribution_s=round(sum(r["attribution_s"] for r in results), 1),
        margin_arcsec=margin_arcsec,
        margin_rows=written.margin_rows,
    )
    summary.write(catalog_p)
    return summary
