"""Writing mass catalogs as HATS collections (lsdb and DuckDB read them).

A run's output is a collection: the primary catalog ``OUT/masses`` and its margin cache ``OUT/masses_60arcs``
(:mod:`survey_mass.catalog.margin`), tied together by ``OUT/collection.properties`` (see :mod:`survey_mass.paths`).
Each partition is one Parquet file, ``dataset/Norder=k/Dir=d/Npix=n.parquet``, written to a temporary name and
renamed, so a reader or a rerun never sees half a file. :func:`finalize` writes each catalog's
``partition_info.csv``, ``dataset/_metadata``, ``dataset/_common_metadata`` and ``hats.properties`` once every
partition is there, then the margin, then ``collection.properties``. The Arrow schema (types, units,
descriptions) comes from ``schemas/catalog.schema.json``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import paths, schemas
from ..errors import CatalogError
from ..storage import as_path, is_remote, remove_tree, write_bytes

__all__ = [
    "CatalogError",
    "arrow_schema",
    "check_output",
    "clear_output",
    "finalize",
    "partition_done",
    "remove_temporaries",
    "write_partition",
]

TYPES = {
    "int64": pa.int64(),
    "int32": pa.int32(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
}


@lru_cache(maxsize=1)
def arrow_schema() -> pa.Schema:
    """The catalog's Arrow schema, with unit and description in each field's metadata."""
    doc = schemas.load(schemas.CATALOG)
    fields = [
        pa.field(
            c["name"],
            TYPES[c["type"]],
            nullable=True,
            metadata={"unit": c["unit"], "description": c["description"]},
        )
        for c in doc["columns"]
    ]
    return pa.schema(fields, metadata={"survey_mass_catalog_schema_version": str(doc["schema_version"])})


def to_table(columns: dict[str, np.ndarray]) -> pa.Table:
    """An Arrow table in schema order; NaN floats become nulls; rows sorted by ``_healpix_29``."""
    from hats.pixel_math.spatial_index import compute_spatial_index

    n = len(columns["id"])
    cols = dict(columns)
    cols["_healpix_29"] = compute_spatial_index(np.asarray(cols["ra"]), np.asarray(cols["dec"]))
    order = np.argsort(cols["_healpix_29"], kind="stable")
    arrays = []
    for f in arrow_schema():
        v = cols.get(f.name)
        if v is None:
            arrays.append(pa.nulls(n, f.type))
            continue
        v = np.asarray(v)[order]
        if pa.types.is_floating(f.type):
            v = v.astype(np.float64)
            arrays.append(pa.array(v, type=f.type, from_pandas=True, mask=~np.isfinite(v)))
        elif pa.types.is_string(f.type):
            arrays.append(pa.array([str(s) for s in v], type=f.type))
        elif pa.types.is_integer(f.type) and v.dtype.kind == "f":  # NaN: null
            ok = np.isfinite(v)
            arrays.append(
                pa.array(np.where(ok, v, 0).astype(f.type.to_pandas_dtype()), type=f.type, mask=~ok)
            )
        else:
            arrays.append(pa.array(v.astype(f.type.to_pandas_dtype()), type=f.type))
    return pa.Table.from_arrays(arrays, schema=arrow_schema())


def _old_survey_mass_catalog(out, entries: set[str]) -> bool:
    """A catalog written by survey-mass before outputs were collections: only its own names at the top, and
    survey-mass provenance in its ``hats.properties``."""
    entries = {e for e in entries if not paths.is_run_leftover(e)}
    if not paths.FLAT_CATALOG_MARKERS <= entries or not entries <= paths.FLAT_CATALOG_ENTRIES:
        return False
    try:
        return "survey_mass_model_id" in paths.hats_properties(out).read_text()
    except OSError:
        return False


def written_by_survey_mass(out) -> bool:
    """Whether an output says that survey-mass wrote it: its ``run_config.json`` (written first, right after the
    lock is taken) or its primary catalog's ``hats.properties`` (written at the end) carries survey-mass's
    marks. Names alone never say so: a user's own ``masses/`` folder is not ours."""
    import json

    out = as_path(out)
    try:
        doc = json.loads(paths.run_config_file(out).read_text())
    except (OSError, ValueError):
        doc = None
    if isinstance(doc, dict) and (
        doc.get("writer") == "survey-mass" or str(doc.get("model_id", "")).startswith("survey-mass-")
    ):
        return True
    try:
        return "survey_mass_model_id" in paths.hats_properties(paths.primary_catalog(out)).read_text()
    except OSError:
        return False


def check_output(out: Path, *, overwrite: bool = False) -> None:
    """Refuse an output path that exists and is not a survey-mass collection; with ``overwrite``, also accept an
    older survey-mass catalog. A collection is survey-mass's when its files say so
    (:func:`written_by_survey_mass`) and it holds nothing but a collection's names; a directory that holds only
    a killed run's own temporary files (:func:`survey_mass.paths.is_run_leftover`) counts as empty. Nothing is
    deleted here (:func:`clear_output` does that, once the run holds the lock)."""
    out = as_path(out)
    if not out.exists():
        return
    if out.is_file():
        raise CatalogError(f"output {str(out)!r} exists and is not a directory; choose another --out")
    entries = {p.name for p in out.iterdir()}
    if all(paths.is_run_leftover(e) or e == paths.RUN_LOCK for e in entries):
        return  # empty, or a run that was killed before it wrote anything
    foreign = sorted(e for e in entries if not paths.is_collection_entry(e))
    if _old_survey_mass_catalog(out, entries):
        if overwrite:
            return
        raise CatalogError(
            f"output {str(out)!r} holds a catalog written before outputs became HATS collections (no margin "
            "cache); it cannot be resumed: use --overwrite or another --out"
        )
    if not foreign and written_by_survey_mass(out):
        return
    why = (
        f"holds {foreign[:3]}"
        if foreign
        else f"its {paths.RUN_CONFIG} and {paths.PRIMARY_CATALOG}/{paths.HATS_PROPERTIES} do not say survey-mass "
        "wrote it"
    )
    raise CatalogError(
        f"output {str(out)!r} exists and is not a survey-mass catalog ({why}); "
        + ("--overwrite only replaces survey-mass catalogs: " if overwrite else "")
        + "choose another --out"
    )


def remove_top_temporaries(out: Path) -> None:
    """A killed run's own temporary files at the top of the output (:func:`survey_mass.paths.is_run_leftover`);
    only once the run holds the lock."""
    out = as_path(out)
    if out.is_dir():
        for entry in out.iterdir():
            if paths.is_run_leftover(entry.name) and entry.is_file():
                entry.unlink(missing_ok=True)


def clear_output(out: Path) -> None:
    """Delete a checked output's (:func:`check_output`) collection entries, except the run's own lock; refuse
    anything else, in case the directory changed since it was checked."""
    out = as_path(out)
    if not out.is_dir():
        return
    entries = list(out.iterdir())
    foreign = sorted(e.name for e in entries if not paths.is_collection_entry(e.name))
    if foreign and not _old_survey_mass_catalog(out, {e.name for e in entries}):
        raise CatalogError(
            f"output {str(out)!r}: holds {foreign[:3]}, which survey-mass did not write; nothing was deleted"
        )
    for entry in entries:
        if entry.name == paths.RUN_LOCK:
            continue
        if entry.is_dir():
            remove_tree(entry)
        else:
            entry.unlink(missing_ok=True)


def parquet_rows(f) -> int:
    """Rows of a Parquet file (local or on an object store), from its footer."""
    with f.open("rb") as fh:
        return pq.ParquetFile(fh).metadata.num_rows


#: key of a partition file's Parquet metadata holding the hash of what the partition was computed from
SOURCE_DIGEST_KEY = b"survey_mass_source_digest"


def partition_source_digest(f) -> str | None:
    """The source digest a partition file records (None when it records none or cannot be read)."""
    try:
        with f.open("rb") as fh:
            meta = pq.ParquetFile(fh).schema_arrow.metadata or {}
    except (OSError, pa.ArrowException):
        return None
    v = meta.get(SOURCE_DIGEST_KEY)
    return v.decode() if v is not None else None


def partition_done(out: Path, order: int, pixel: int, source_digest: str | None = None) -> bool:
    """Whether a primary partition is written (its final file exists) and, given ``source_digest``, was
    computed from that source (a partition the store re-cut since is not done)."""
    f = paths.catalog_partition_file(paths.primary_catalog(out), order, pixel)
    if not f.is_file():
        return False
    return source_digest is None or partition_source_digest(f) == source_digest


def write_parquet_atomic(final: Path, table: pa.Table, *, what: str) -> Path:
    """Write one Parquet file atomically: streamed to a temporary file and renamed, or on an object store
    serialised and sent in one PUT (:func:`survey_mass.storage.write_bytes`); ``what`` names it in errors."""
    try:
        if is_remote(final):
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            write_bytes(final, sink.getvalue().to_pybytes(), temp=paths.catalog_temp_file(final))
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = paths.catalog_temp_file(final)
        try:
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, final)
        finally:  # failed or interrupted mid-write: leave nothing half-written behind
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise CatalogError(
            f"catalog {str(final)!r}: {what} could not be written ({exc.strerror or exc})"
        ) from None
    return final


def write_partition(
    out: Path, order: int, pixel: int, table: pa.Table, *, source_digest: str | None = None
) -> Path:
    """Write one primary partition atomically, recording the digest of its source in the file's metadata."""
    final = paths.catalog_partition_file(paths.primary_catalog(out), order, pixel)
    if source_digest is not None:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), SOURCE_DIGEST_KEY: source_digest.encode()}
        )
    return write_parquet_atomic(final, table, what=f"partition {pixel}")


def remove_temporaries(out: Path) -> None:
    """Half-written partition files of the primary catalog and its margins (an interrupted run's)."""
    for root in (paths.primary_catalog(out), *paths.margin_catalogs(out)):
        for f in paths.catalog_temporaries(root):
            f.unlink(missing_ok=True)


class Written(NamedTuple):
    """Rows of a finished collection: its primary catalog's and its margin cache's."""

    rows: int
    margin_rows: int


#: the columns lsdb and hats show first: the headline, the catalogue-lambda, lambda + BCG and given-detection masses
#: with their errors, the quality bits, names and positions (not lambda-hat, which tracks the catalogue's lambda poorly)
DEFAULT_COLUMNS = [
    "id",
    "name",
    "ra",
    "dec",
    "z",
    "log10_m500",
    "log10_m500_err",
    "log10_m500_lambda",
    "log10_m500_lambda_err",
    "log10_m500_lambda_bcg",
    "log10_m500_lambda_bcg_err",
    "log10_m500_given_detection",
    "log10_m500_given_detection_err",
    "quality",
]


def _write_catalog_metadata(root: Path, pixels: list[tuple[int, int]], **properties) -> int:
    """partition_info.csv, _metadata, _common_metadata and hats.properties of one catalog; its row count."""
    import hats
    from hats.catalog import PartitionInfo, TableProperties
    from hats.pixel_math import HealpixPixel

    if not is_remote(root):
        root.mkdir(parents=True, exist_ok=True)
    PartitionInfo.from_healpix([HealpixPixel(o, p) for o, p in sorted(pixels)]).write_to_file(
        paths.partition_info_file(root)
    )
    if pixels:
        hats.io.write_parquet_metadata(root)
    else:  # an empty margin: its schema, and no row groups
        sink = pa.BufferOutputStream()
        pq.write_metadata(arrow_schema(), sink)
        for f in (paths.COMMON_METADATA, paths.METADATA):
            target = paths.catalog_dataset(root) / f
            write_bytes(target, sink.getvalue().to_pybytes(), temp=paths.catalog_temp_file(target))
    total = sum(parquet_rows(paths.catalog_partition_file(root, o, p)) for o, p in pixels)
    TableProperties(
        total_rows=int(total),
        ra_column="ra",
        dec_column="dec",
        healpix_column="_healpix_29",
        healpix_order=29,
        default_columns=DEFAULT_COLUMNS,
        **properties,
    ).to_properties_file(root)
    return int(total)


def finalize(
    out: Path,
    order: int,
    pixels: list[int],
    *,
    name: str,
    provenance: dict[str, str],
    margin_arcsec: float,
    progress: bool = False,
    rebuild_margin: bool = False,
) -> Written:
    """Write the primary catalog's metadata, its margin cache (none for ``margin_arcsec`` 0) and, last, the
    collection's properties; return the row counts.

    The margin's threshold is not a setting of the rows: a rerun with another one keeps the primary catalog
    and replaces the margin. A margin partition already written is kept unless ``rebuild_margin`` (this run
    computed primary partitions, whose rows the margin copies). Until ``collection.properties`` is written again
    the collection reads as unfinished."""
    from hats.catalog.catalog_collection import CollectionProperties

    from .margin import write_margin

    out = as_path(out)
    paths.collection_properties(out).unlink(missing_ok=True)
    for stale in paths.margin_catalogs(out):
        if stale.name != paths.margin_name(margin_arcsec) or margin_arcsec == 0 or rebuild_margin:
            remove_tree(stale)
    remove_temporaries(out)
    provenance = {k: str(v) for k, v in provenance.items()}
    total = _write_catalog_metadata(
        paths.primary_catalog(out),
        [(order, int(p)) for p in pixels],
        catalog_name=name,
        catalog_type="object",
        **provenance,
    )
    collection = {"obs_collection": name, "hats_primary_table_url": paths.PRIMARY_CATALOG}
    margin_total = 0
    if margin_arcsec > 0:
        margin_pixels = write_margin(
            out, order, [int(p) for p in pixels], margin_arcsec, schema=arrow_schema(), progress=progress
        )
        margin_total = _write_catalog_metadata(
            paths.margin_catalog(out, margin_arcsec),
            margin_pixels,
            catalog_name=f"{name}_{float(margin_arcsec):g}arcs",
            catalog_type="margin",
            primary_catalog=name,
            margin_threshold=float(margin_arcsec),
            **provenance,
        )
        margin = paths.margin_name(margin_arcsec)
        collection |= {"all_margins": margin, "default_margin": margin}
    CollectionProperties(**collection).to_properties_file(out)
    return Written(rows=total, margin_rows=margin_total)
