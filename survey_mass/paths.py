"""The on-disk layout of stores and catalogs. No other module builds these paths.

Store (Zarr v3)::

    STORE/zarr.json                         root group; attribute 'survey_mass' holds the store contract
    STORE/Norder=k/Npix=n/                  one group per partition (HATS naming)
    STORE/Norder=k/.tmp-Npix=n-<uuid>/      a partition being written; renamed when complete

Catalog output (a HATS collection)::

    OUT/collection.properties                       written last: the collection's primary catalog and margins
    OUT/masses/                                     the primary catalog (CATALOG below)
    OUT/masses_<t>arcs/                             its margin cache of t arcsec, laid out as CATALOG
    OUT/run_config.json, run.json, .lock, .dask-scratch/   the run's sidecar files

    CATALOG/hats.properties, partition_info.csv
    CATALOG/dataset/_metadata, _common_metadata
    CATALOG/dataset/Norder=k/Dir=d/Npix=n.parquet   with d = (n // 10000) * 10000
    CATALOG/dataset/Norder=k/Dir=d/.tmp-Npix=n.parquet-<uuid>   a partition file being written

Model bundle::

    MODEL_DIR/model_card.json, backbone.safetensors, heads.safetensors
    MODEL_DIR/checkpoints/config.json, stage1.pt, fold{k}.pt     training checkpoints
    MODEL_DIR/report.json, report.md, *.png                      the training report

Every file or directory name inside a store, catalog or model directory is a constant or function here.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from .storage import as_path

PARTITION_RE = re.compile(r"^Npix=(\d+)$")

#: prefix of every half-written file or group (store partitions, catalog partition files)
TEMP_PREFIX = ".tmp-"
#: scratch directory of the Dask workers a run starts, inside the output
DASK_SCRATCH = ".dask-scratch"

# --- store -------------------------------------------------------------------------------------------------
#: the Zarr v3 root group's metadata file: its presence marks a directory as a store
STORE_ROOT_FILE = "zarr.json"

# --- catalog -----------------------------------------------------------------------------------------------
#: the primary (mass) catalog's directory inside a run's output collection
PRIMARY_CATALOG = "masses"
MARGIN_RE = re.compile(rf"^{PRIMARY_CATALOG}_(\d+(?:\.\d+)?)arcs$")
CATALOG_DATASET = "dataset"
HATS_PROPERTIES = "hats.properties"
COLLECTION_PROPERTIES = "collection.properties"
PARTITION_INFO = "partition_info.csv"
METADATA = "_metadata"
COMMON_METADATA = "_common_metadata"
#: summary of the last run into a catalog
RUN_SUMMARY = "run.json"
FRAME_INDEX_SUFFIX = ".frame_index.parquet"
#: the settings of the run that made a catalog (a resumed run must match them)
RUN_CONFIG = "run_config.json"
#: holds the pid of the run writing the catalog
RUN_LOCK = ".lock"
#: every name a run's output collection may hold at its top level, besides its margin caches (:data:`MARGIN_RE`)
COLLECTION_ENTRIES = frozenset(
    {PRIMARY_CATALOG, COLLECTION_PROPERTIES, RUN_SUMMARY, RUN_LOCK, RUN_CONFIG, DASK_SCRATCH}
)
#: what the top level of a catalog written before outputs were collections held (it is no longer resumed): its
#: markers, and every name it could hold
FLAT_CATALOG_MARKERS = frozenset({CATALOG_DATASET, HATS_PROPERTIES, PARTITION_INFO})
FLAT_CATALOG_ENTRIES = FLAT_CATALOG_MARKERS | frozenset(
    {"properties", RUN_SUMMARY, RUN_LOCK, RUN_CONFIG, DASK_SCRATCH, "skymap.fits", "point_map.fits"}
)


#: the temporary files a run makes at the top of its output, and a killed run can leave: the lock being created
#: (``mkstemp``) or set aside, the conditional-write probe, the run's settings and summary before their rename
RUN_LEFTOVER_RE = re.compile(
    rf"^{re.escape(TEMP_PREFIX)}(?:\.lock-[A-Za-z0-9_]+|lock-probe-[0-9a-f]{{12}}|"
    rf"(?:{re.escape(RUN_CONFIG)}|{re.escape(RUN_SUMMARY)})-[0-9a-f]{{8}})$"
)


def is_run_leftover(name: str) -> bool:
    """Whether ``name`` is one of the run's own top-level temporary files (:data:`RUN_LEFTOVER_RE`); any other
    ``.tmp-*`` name is not survey-mass's."""
    return RUN_LEFTOVER_RE.match(name) is not None


def is_collection_entry(name: str) -> bool:
    """Whether ``name`` may sit at the top level of a run's output collection (a killed run's own temporary files
    included: the next run removes them once it holds the lock)."""
    return name in COLLECTION_ENTRIES or MARGIN_RE.match(name) is not None or is_run_leftover(name)


# --- mock SDSS frames (``survey-mass mock --frames DIR``) -------------------------------------------------------
#: the candidate catalogue beside the frames (what ``survey-mass ingest --candidates`` reads)
FRAMES_CANDIDATES = "candidates.parquet"
#: the mock config and frame layout the frames were made with (checked on resume)
FRAMES_PROVENANCE = "mock_frames.json"


def frame_file_name(band: str, run: int, camcol: int, field: int, *, compressed: bool = True) -> str:
    """SDSS's name of a corrected frame, e.g. ``frame-r-001234-3-0100.fits.bz2`` (``.fits`` uncompressed)."""
    return f"frame-{band}-{int(run):06d}-{int(camcol)}-{int(field):04d}.fits" + (".bz2" if compressed else "")


def frame_temp_file(final: Path) -> Path:
    """Temporary name a frame (or a file beside the frames) is written under before it is renamed to ``final``;
    it does not end in ``.fits`` or ``.fits.bz2``, so a scan of the directory never reads it."""
    return final.parent / f"{TEMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"


#: the temporary names :func:`frame_temp_file` gives a frame, the candidates or the provenance (no other name is
#: survey-mass's, whatever it looks like)
_FRAME_TEMP_RE = re.compile(
    rf"^{re.escape(TEMP_PREFIX)}(?:frame-[ugriz]-\d{{6}}-\d-\d{{4}}\.fits(?:\.bz2)?|candidates\.parquet|"
    rf"mock_frames\.json)-[0-9a-f]{{8}}$"
)


def frame_temporaries(directory: Path | str) -> list[Path]:
    """Half-written files an interrupted build left in a frames directory (:func:`frame_temp_file`'s names;
    no other ``.tmp-*`` file is survey-mass's)."""
    return sorted(
        p for p in Path(directory).glob(f"{TEMP_PREFIX}*") if _FRAME_TEMP_RE.match(p.name) and p.is_file()
    )


# --- model bundle, training and reports ----------------------------------------------------------------------
MODEL_CARD = "model_card.json"
MODEL_BACKBONE = "backbone.safetensors"
MODEL_HEADS = "heads.safetensors"
CHECKPOINTS = "checkpoints"
CHECKPOINT_CONFIG = "config.json"
STAGE1_CHECKPOINT = "stage1.pt"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
#: figures of the training report, by name
TRAINING_FIGURES = {
    "pred_vs_label": "pred_vs_label.png",
    "coverage": "coverage.png",
}
#: figures of a catalog report (``survey-mass report``), by the key its summary lists them under
CATALOG_REPORT_FIGURES = {
    "sky": "sky.png",
    "mass_redshift": "mass_redshift.png",
    "errors": "errors.png",
    "reference": "reference.png",
}


def fold_checkpoint(k: int, head_set: str = "pixels") -> str:
    """Training checkpoint of stage-2 fold ``k`` of a set of heads, inside :data:`CHECKPOINTS`."""
    return f"fold{int(k)}.pt" if head_set == "pixels" else f"{head_set}_fold{int(k)}.pt"


def order_dir_name(order: int) -> str:
    return f"Norder={int(order)}"


def partition_group_name(pixel: int) -> str:
    return f"Npix={int(pixel)}"


def partition_group_path(order: int, pixel: int) -> str:
    """Path of a partition's group inside a store, e.g. ``Norder=2/Npix=45``."""
    return f"{order_dir_name(order)}/{partition_group_name(pixel)}"


def temp_partition_group_path(order: int, pixel: int) -> str:
    return f"{order_dir_name(order)}/{TEMP_PREFIX}{partition_group_name(pixel)}-{uuid.uuid4().hex[:10]}"


def store_root_file(store: Path | str) -> Path:
    return as_path(store) / STORE_ROOT_FILE


def store_temporaries(store: Path | str, order: int) -> list[Path]:
    """Half-written partition groups a killed build left in a store (they are never read)."""
    return sorted((as_path(store) / order_dir_name(order)).glob(f"{TEMP_PREFIX}*"))


def pixel_directory(pixel: int) -> int:
    """HATS ``Dir`` of a pixel."""
    return (int(pixel) // 10000) * 10000


def catalog_dataset(catalog: Path | str) -> Path:
    """The catalog's ``dataset`` directory (partition files, ``_metadata``, ``_common_metadata``)."""
    return as_path(catalog) / CATALOG_DATASET


def catalog_partition_file(catalog: Path | str, order: int, pixel: int) -> Path:
    """Parquet file of a catalog partition."""
    return (
        catalog_dataset(catalog)
        / order_dir_name(order)
        / f"Dir={pixel_directory(pixel)}"
        / f"{partition_group_name(pixel)}.parquet"
    )


def catalog_partition_files(catalog: Path | str) -> list[Path]:
    """Every finished partition file of a catalog (temporaries excluded)."""
    return sorted(catalog_dataset(catalog).glob("Norder=*/Dir=*/Npix=*.parquet"))


def catalog_temp_file(final: Path) -> Path:
    """Temporary name a partition file is written under before it is renamed to ``final``."""
    return final.parent / f"{TEMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"


def catalog_temporaries(catalog: Path | str) -> list[Path]:
    """Half-written partition files an interrupted run left in a catalog."""
    return sorted(catalog_dataset(catalog).glob(f"Norder=*/Dir=*/{TEMP_PREFIX}*"))


def primary_catalog(out: Path | str) -> Path:
    """The primary (mass) catalog of a run's output collection."""
    return as_path(out) / PRIMARY_CATALOG


def margin_name(threshold_arcsec: float) -> str:
    """Directory (and catalog) name of a margin cache, ``masses_60arcs``, as lsdb names margins."""
    return f"{PRIMARY_CATALOG}_{float(threshold_arcsec):g}arcs"


def margin_catalog(out: Path | str, threshold_arcsec: float) -> Path:
    """A margin cache of the primary catalog, inside the output collection."""
    return as_path(out) / margin_name(threshold_arcsec)


def margin_catalogs(out: Path | str) -> list[Path]:
    """Every margin cache directory inside an output collection."""
    out = as_path(out)
    return sorted(p for p in out.iterdir() if MARGIN_RE.match(p.name)) if out.is_dir() else []


def collection_properties(out: Path | str) -> Path:
    return as_path(out) / COLLECTION_PROPERTIES


def catalog_partition_pixels(catalog: Path | str) -> list[tuple[int, int]]:
    """(order, pixel) of every finished partition file of a catalog."""
    return sorted(
        (int(f.parent.parent.name.split("=")[1]), int(f.stem.split("=")[1]))
        for f in catalog_partition_files(catalog)
    )


def hats_properties(catalog: Path | str) -> Path:
    return as_path(catalog) / HATS_PROPERTIES


def is_hats_root(root: Path | str) -> bool:
    """A HATS catalog or collection directory (it holds ``hats.properties`` or ``collection.properties``)."""
    return (as_path(root) / HATS_PROPERTIES).is_file() or (as_path(root) / COLLECTION_PROPERTIES).is_file()


def partition_info_file(catalog: Path | str) -> Path:
    return as_path(catalog) / PARTITION_INFO


def frame_index_file(store: Path | str) -> Path:
    """The frame index an ingest caches beside its store: ``<store>.frame_index.parquet``."""
    store = as_path(store)
    return store.with_name(f"{store.name}{FRAME_INDEX_SUFFIX}")


def run_summary_file(catalog: Path | str) -> Path:
    return as_path(catalog) / RUN_SUMMARY


def run_config_file(catalog: Path | str) -> Path:
    return as_path(catalog) / RUN_CONFIG


def run_lock_file(catalog: Path | str) -> Path:
    return as_path(catalog) / RUN_LOCK


def lock_probe_file(catalog: Path | str) -> Path:
    """A fresh object name the run writes twice to check that an object store honours conditional writes."""
    return as_path(catalog) / f"{TEMP_PREFIX}lock-probe-{uuid.uuid4().hex[:12]}"


def dask_scratch(directory: Path | str) -> Path:
    """Scratch space of Dask workers started for a run writing into ``directory``."""
    return as_path(directory) / DASK_SCRATCH
