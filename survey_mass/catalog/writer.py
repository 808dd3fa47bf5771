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
    entries = {e for e in entries if not e.startswith(paths.TEMP_PREFIX)}
    if not paths.FLAT_CATALOG_MARKERS <= entries or not entries <= paths.FLAT_CATALOG_ENTRIES:
        return False
    try:
        return "survey_mass_model_id" in paths.hats_properties(out).read_text()
    except OSError:
        return False


def check_output(out: Path, *, overwrite: bool = False) -> None:
    """Refuse an output path that exists and is not a survey-mass collection (or a half-written one); with
    ``overwrite``, also an older survey-mass catalog. Nothing is deleted here (:func:`clear_output` does that,
    once the run holds the lock)."""
    out = as_path(out)
    if not out.exists():
        return
    if out.is_file():
        raise CatalogError(f"output {str(out)!r} exists and is not a directory; choose another --out")
    entries = {p.name for p in out.iterdir()}
    foreign = sorted(e for e in entries if not paths.is_collection_entry(e))
    if not foreign:
        return
    if _old_survey_mass_catalog(out, entries):
        if overwrite:
            return
        raise CatalogError(
            f"output {str(out)!r} holds a catalog written before outputs became HATS collections (no margin "
            "cache); it cannot be resumed: use --overwrite or another --out"
        )
    raise CatalogError(
        f"output {str(out)!r} exists and is not a survey-mass catalog (holds {foreign[:3]}); "
        + ("--overwrite only replaces survey-mass catalogs: " if overwrite else "")
        + "choose another --out"
    )


def remove_top_temporaries(out: Path) -> None:
    """A killed run's leftovers at the top of the output (a lock set aside, a lock probe); only once the run
    holds the lock."""
    out = as_path(out)
    if out.is_dir():
        for entry in out.iterdir():
            if entry.name.startswith(paths.TEMP_PREFIX) and entry.is_file():
                entry.unlink(missing_ok=True)


def clear_output(out: Path) -> None:
    """Delete what a checked output (:func:`check_output`) holds, except the run's own lock."""
    out = as_path(out)
    if not out.is_dir():
        return
    for entry in out.iterdir():
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


def partition_done(out: Path, order: int, pixel: int) -> bool:
    """Whether a primary partition is written (its final file exists)."""
    return paths.catalog_partition_file(paths.primary_catalog(out), order, pixel).is_file()


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


def write_partition(out: Path, order: int, pixel: int, table: pa.Table) -> Path:
    """Write one primary partition atomically."""
    final = paths.catalog_partition_file(paths.primary_catalog(out), order, pixel)
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


#: the columns lsdb and hats show first
DEFAULT_COLUMNS = [
    "id",
    "name",
    "ra",
    "dec",
    "z",
    "log10_m500",
    "log10_m500_err",
    "log10_m500_richness",
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
