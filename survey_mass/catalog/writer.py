"""Writing mass catalogs in the HATS layout (lsdb and DuckDB read them).

Each partition is one Parquet file, ``dataset/Norder=k/Dir=d/Npix=n.parquet``, written to a temporary name and
renamed, so a reader or a rerun never sees half a file. :func:`finalize` writes ``partition_info.csv``,
``dataset/_metadata``, ``dataset/_common_metadata`` and ``hats.properties`` once every partition is there.
The Arrow schema (types, units, descriptions) comes from ``schemas/catalog.schema.json``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import paths, schemas
from ..errors import CatalogError

__all__ = ["CatalogError", "arrow_schema", "check_output", "finalize", "partition_done", "remove_temporaries"]

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


def check_output(catalog: Path, *, overwrite: bool = False) -> None:
    """Refuse an output path that exists and is not a survey-mass catalog (or a half-written one)."""
    catalog = Path(catalog)
    if not catalog.exists():
        return
    if not catalog.is_dir():
        raise CatalogError(f"output {str(catalog)!r} exists and is not a directory; choose another --out")
    entries = {p.name for p in catalog.iterdir()}
    ours = paths.CATALOG_ENTRIES
    if entries and not entries <= ours:
        raise CatalogError(
            f"output {str(catalog)!r} exists and is not a survey-mass catalog (holds {sorted(entries - ours)[:3]}); "
            "choose another --out"
        )
    if overwrite:
        import shutil

        shutil.rmtree(catalog)


def partition_done(catalog: Path, order: int, pixel: int) -> bool:
    return paths.catalog_partition_file(catalog, order, pixel).is_file()


def write_partition(catalog: Path, order: int, pixel: int, table: pa.Table) -> Path:
    """Write one partition atomically (temporary file, then rename)."""
    final = paths.catalog_partition_file(catalog, order, pixel)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = paths.catalog_temp_file(final)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CatalogError(
            f"catalog {str(catalog)!r}: partition {pixel} could not be written ({exc.strerror or exc})"
        ) from None
    except BaseException:  # interrupted mid-write: leave nothing half-written behind
        tmp.unlink(missing_ok=True)
        raise
    return final


def remove_temporaries(catalog: Path) -> None:
    for f in paths.catalog_temporaries(catalog):
        f.unlink(missing_ok=True)


def finalize(catalog: Path, order: int, pixels: list[int], *, name: str, provenance: dict[str, str]) -> int:
    """Write partition_info.csv, _metadata, _common_metadata and hats.properties; return the row count."""
    import hats
    from hats.catalog import PartitionInfo, TableProperties
    from hats.pixel_math import HealpixPixel

    catalog = Path(catalog)
    remove_temporaries(catalog)
    PartitionInfo.from_healpix([HealpixPixel(order, int(p)) for p in sorted(pixels)]).write_to_file(
        paths.partition_info_file(catalog)
    )
    hats.io.write_parquet_metadata(catalog)
    total = sum(
        pq.ParquetFile(paths.catalog_partition_file(catalog, order, p)).metadata.num_rows for p in pixels
    )
    props = TableProperties(
        catalog_name=name,
        catalog_type="object",
        total_rows=int(total),
        ra_column="ra",
        dec_column="dec",
        healpix_column="_healpix_29",
        healpix_order=29,
        default_columns=[
            "id",
            "name",
            "ra",
            "dec",
            "z",
            "log10_m500",
            "log10_m500_err",
            "log10_m500_richness",
            "quality",
        ],
        **{k: str(v) for k, v in provenance.items()},
    )
    props.to_properties_file(catalog)
    return int(total)
