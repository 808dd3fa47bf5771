"""Querying mass catalogs: DuckDB SQL over the catalog's partition files, with a cone search that opens only
the partitions the cone touches.

The SQL sees one table, ``catalog``. It is built from the primary catalog's partition files
(``dataset/Norder=k/Dir=d/Npix=n.parquet``) only, so a margin cache or the other members of a HATS collection
are never counted twice. The connection is in memory, and only a single ``SELECT`` (or ``WITH ... SELECT``)
statement is accepted: a query never writes anything, least of all into the catalog.

Examples
--------
>>> from survey_mass.catalog.query import check_sql
>>> check_sql("SELECT id FROM catalog ORDER BY log10_m500 DESC LIMIT 20")
'SELECT id FROM catalog ORDER BY log10_m500 DESC LIMIT 20'
>>> check_sql("COPY catalog TO 'x.csv'")
Traceback (most recent call last):
...
survey_mass.errors.CatalogError: query: only a single SELECT statement is allowed (got COPY)
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from .. import paths
from ..errors import CatalogError, first_line
from ..storage import as_path, is_remote

#: what a user gets when they give no SQL and no --columns: everything but the spatial index
DEFAULT_SQL = "SELECT * EXCLUDE (_healpix_29) FROM catalog"


@dataclass(frozen=True, kw_only=True)
class Cone:
    """A cone on the sky: centre (deg) and radius (arcmin)."""

    ra: float
    dec: float
    radius_arcmin: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ra) and 0.0 <= self.ra < 360.0 + 1e-9):
            raise CatalogError(f"--cone: RA {self.ra} is outside [0, 360) deg")
        if not (math.isfinite(self.dec) and -90.0 <= self.dec <= 90.0):
            raise CatalogError(f"--cone: Dec {self.dec} is outside [-90, 90] deg")
        if not (math.isfinite(self.radius_arcmin) and 0.0 < self.radius_arcmin <= 180.0 * 60.0):
            raise CatalogError(f"--cone: radius {self.radius_arcmin} arcmin must be in (0, 10800]")

    def sql(self) -> str:
        """A WHERE condition: haversine separation from the centre at most the radius."""
        r0, d0 = math.radians(self.ra), math.radians(self.dec)
        hav = (
            f"pow(sin((radians(dec) - {d0!r}) / 2), 2) + "
            f"cos(radians(dec)) * {math.cos(d0)!r} * pow(sin((radians(ra) - {r0!r}) / 2), 2)"
        )
        return f"2 * asin(sqrt(least(1.0, {hav}))) <= {math.radians(self.radius_arcmin / 60.0)!r}"


@dataclass
class QueryResult:
    """A query's rows and what it read."""

    table: pa.Table
    #: the partition files the query opened
    files: list[Path] = field(default_factory=list)
    #: partitions in the catalog
    n_partitions: int = 0


def open_catalog(catalog: str | Path):
    """(hats catalog object, its root directory) for a catalog or a collection's primary catalog."""
    import hats

    root = as_path(catalog)
    if not root.is_dir():
        raise CatalogError(f"catalog {str(root)!r}: no such directory")
    if not paths.is_hats_root(root):
        raise CatalogError(f"catalog {str(root)!r}: not a HATS catalog (no hats.properties)")
    try:
        cat = hats.read_hats(root)
    except Exception as exc:  # hats raises several kinds for unreadable metadata
        raise CatalogError(
            f"catalog {str(root)!r}: cannot be read by hats ({str(exc).splitlines()[0]})"
        ) from None
    main = getattr(cat, "main_catalog", None)
    if main is not None:  # a collection: the primary catalog only (never its margin)
        cat = main
        root = as_path(cat.catalog_path)
    if getattr(cat.catalog_info, "catalog_type", "object") not in ("object", "source"):
        raise CatalogError(
            f"catalog {str(root)!r}: is a {cat.catalog_info.catalog_type} catalog, not an object catalog"
        )
    return cat, root


def read_properties(f: Path) -> dict[str, str]:
    """The keys and values of a java-style properties file (HATS's), read without hats."""
    return {
        k.strip(): v.strip()
        for k, v in (
            line.split("=", 1)
            for line in f.read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
    }


def primary_root(catalog: str | Path) -> Path:
    """The object catalog a catalog path means: a collection's primary catalog, or the catalog itself."""
    root = as_path(catalog)
    collection = paths.collection_properties(root)
    if collection.is_file():
        primary = read_properties(collection).get("hats_primary_table_url", "")
        if primary and "://" not in primary and not primary.startswith("/"):
            return root / primary
    return root


def _plain_partitions(root: Path) -> tuple[Path, list[tuple[int, int]]] | None:
    """The object catalog's root and the (order, pixel) of its partitions, from ``partition_info.csv``, for a
    plain object catalog or a collection's primary catalog, without importing hats (2.5 s of a query's start);
    None for anything else (another catalog type, no partition list), which hats then judges."""
    root = primary_root(root)
    props, info = root / paths.HATS_PROPERTIES, paths.partition_info_file(root)
    if not props.is_file() or not info.is_file():
        return None
    if read_properties(props).get("dataproduct_type", "") not in ("object", "source"):
        return None
    lines = info.read_text().split()
    header = lines[0].split(",") if lines else []
    if "Norder" not in header or "Npix" not in header:
        return None
    i, j = header.index("Norder"), header.index("Npix")
    return root, [(int(r.split(",")[i]), int(r.split(",")[j])) for r in lines[1:]]


def partition_files(catalog: str | Path, *, cone: Cone | None = None) -> tuple[list[Path], int]:
    """Partition files to read (all, or those whose HEALPix cell meets ``cone``) and the number of partitions.
    Without a cone, a plain catalog's partition list is read without hats."""
    plain = _plain_partitions(as_path(catalog)) if cone is None and as_path(catalog).is_dir() else None
    if plain is not None:
        root, plain = plain
        files = [paths.catalog_partition_file(root, o, p) for o, p in plain]
        for f in files:
            if not f.is_file():
                raise CatalogError(f"catalog {str(root)!r}: partition file {str(f)!r} is missing")
        return files, len(plain)
    cat, root = open_catalog(catalog)
    pixels = cat.get_healpix_pixels()
    if cone is not None:
        try:
            pixels = cat.filter_by_cone(cone.ra, cone.dec, cone.radius_arcmin * 60.0).get_healpix_pixels()
        except ValueError:  # hats: no partition in the cone
            pixels = []
    files = [paths.catalog_partition_file(root, p.order, p.pixel) for p in pixels]
    for f in files:
        if not f.is_file():
            raise CatalogError(f"catalog {str(root)!r}: partition file {str(f)!r} is missing")
    return files, len(cat.get_healpix_pixels())


def check_sql(sql: str) -> str:
    """Return ``sql`` if it is exactly one SELECT statement; raise a one-line CatalogError otherwise."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise CatalogError(f"query: SQL does not parse ({first_line(exc)})") from None
    if len(statements) != 1:
        raise CatalogError(f"query: give exactly one SQL statement (got {len(statements)})")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise CatalogError(f"query: only a single SELECT statement is allowed (got {kind.name})")
    return sql


def check_where(where: str):
    """``where`` as one DuckDB expression (:class:`duckdb.Expression`), under the SQL argument's rules: it must
    parse as a single expression on its own, and as the condition of exactly one SELECT. A closing parenthesis
    followed by another statement, a comment that swallows the rest, or anything but an expression is refused
    in one line.

    >>> str(check_where("quality = 0 AND z < 0.3"))
    'quality = 0 AND z < 0.3'
    >>> check_where("1) ; COPY catalog TO 'x.csv' --")
    Traceback (most recent call last):
    ...
    survey_mass.errors.CatalogError: query: --where is not a single SQL expression (Parser Error: syntax error at or near ")")
    """
    import duckdb

    if not where.strip():
        raise CatalogError("query: --where is empty")
    try:
        expression = duckdb.SQLExpression(where)
    except duckdb.Error as exc:
        raise CatalogError(f"query: --where is not a single SQL expression ({first_line(exc)})") from None
    try:
        check_sql(f"SELECT * FROM catalog WHERE (\n{where}\n)")
    except CatalogError as exc:
        raise CatalogError(f"query: --where is not a single SQL expression ({exc})") from None
    return expression


def sandboxed_connection(allowed: Path | None):
    """An in-memory DuckDB connection that can read files under ``allowed`` (a catalog's root) and nothing else
    on disk or on the network, cannot spill to disk, and cannot change those settings. Nothing a user typed has
    been parsed when this returns: every user string is parsed on the connection it returns."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.execute("SET temp_directory = ''")  # no spilling: the only place DuckDB would otherwise write
        con.execute(
            "SET allowed_directories = "
            + (f"[{_literal(str(allowed).rstrip('/') + '/')}]" if allowed is not None else "[]")
        )
        con.execute("SET enable_external_access = false")
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def _source(con, files: list, catalog: str | Path):
    """The relation of the catalog's partition files (or an empty one with the catalog's columns)."""
    from .writer import arrow_schema

    if files and is_remote(files[0]):
        # an object store: pyarrow reads the files through fsspec (DuckDB's httpfs would be a download)
        import pyarrow.dataset as pads

        return con.from_arrow(pads.dataset([f.path for f in files], filesystem=files[0].fs, format="parquet"))
    if files:
        return con.read_parquet([str(f) for f in files], hive_partitioning=False)
    return con.from_arrow(arrow_schema().empty_table())


def query(
    catalog: str | Path,
    sql: str | None = None,
    *,
    cone: Cone | None = None,
    where: str | None = None,
    columns: list[str] | None = None,
) -> QueryResult:
    """Run SQL over a mass catalog (the table is ``catalog``) and return the rows as Arrow.

    Parameters
    ----------
    catalog
        A catalog written by ``survey-mass run`` (or any HATS object catalog).
    sql
        One SELECT statement over ``catalog``. Default: every column, or ``columns``.
    cone
        Restrict ``catalog`` to a cone; only partitions that meet it are opened.
    where
        An extra SQL condition on ``catalog`` (e.g. ``"quality = 0 AND z < 0.3"``): one expression.
    columns
        Columns to return when no ``sql`` is given.

    The connection is sandboxed (:func:`sandboxed_connection`) before any of these strings is parsed: the SQL
    can read the catalog's own partition files and nothing else, and writes nowhere.

    Examples
    --------
    >>> from survey_mass.catalog.query import query, Cone
    >>> r = query(catalog_path, cone=Cone(ra=155.0, dec=5.0, radius_arcmin=60), columns=["id", "ra"])  # doctest: +SKIP
    """
    import duckdb

    if sql is not None and columns:
        raise CatalogError("query: give SQL or --columns, not both")
    files, n_parts = partition_files(catalog, cone=cone)
    local = [f for f in files if not is_remote(f)]
    # the partition files' dataset directory (CATALOG/dataset/Norder=k/Dir=d/Npix=n.parquet) and nothing else
    con = sandboxed_connection(Path(local[0]).parents[2] if local else None)
    try:
        if sql is None:
            sql = f"SELECT {', '.join(_ident(c) for c in columns)} FROM catalog" if columns else DEFAULT_SQL
        check_sql(sql)
        condition = check_where(where) if where is not None else None
        try:
            rel = _source(con, files, catalog)
            if cone is not None:
                rel = rel.filter(duckdb.SQLExpression(cone.sql()))
            if condition is not None:
                rel = rel.filter(condition)
            rel.create_view("catalog", replace=False)
            table = _arrow(con.sql(sql))
        except duckdb.Error as exc:
            raise CatalogError(f"query on {str(catalog)!r}: {first_line(exc)}") from None
    finally:
        con.close()
    return QueryResult(table=table, files=files, n_partitions=n_parts)


def _arrow(result) -> pa.Table:
    """A DuckDB result as an Arrow table (the method's name changed across DuckDB versions)."""
    for name in ("to_arrow_table", "fetch_arrow_table"):
        if hasattr(result, name):
            return getattr(result, name)()
    out = result.arrow()
    return out.read_all() if hasattr(out, "read_all") else out


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


#: what ``query --format`` writes
FORMATS = ("table", "csv", "json", "parquet")


def _check_format_holds(table: pa.Table, fmt: str) -> None:
    """Refuse, naming the column, a result column that ``fmt`` cannot hold: nested values (lists, structs, maps)
    in csv, binary values in csv or json."""
    for f in table.schema:
        t = f.type
        nested = pa.types.is_nested(t)
        binary = pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
        if (fmt == "csv" and (nested or binary)) or (fmt == "json" and binary):
            raise CatalogError(
                f"--format {fmt}: column {f.name!r} is {t}, which {fmt} cannot hold; select scalar columns "
                "or use --format parquet"
            )


def _catalog_roots(catalog: str | Path) -> list[Path]:
    """Every local directory a query's output must stay out of: the catalog as given, the primary catalog it
    means, and the collection that holds it (its margin and sidecars included)."""
    if is_remote(catalog):
        return []
    given = as_path(catalog).resolve()
    roots = {given, primary_root(given).resolve()}
    for r in list(roots):
        if paths.collection_properties(r.parent).is_file():  # a collection's primary catalog
            roots.add(r.parent)
    # where the data really lives, should a dataset or margin directory be a link to elsewhere
    for r in list(roots):
        for c in (r, *paths.margin_catalogs(r)):
            roots.add(paths.catalog_dataset(c).resolve())
    return sorted(roots)


def _check_out(out: str | Path, catalog: str | Path) -> Path:
    """The local file a result is written to; refused in one line inside the catalog or its collection."""
    if is_remote(out):
        raise CatalogError(f"--out {str(out)!r}: give a local file")
    o = as_path(out).resolve()
    for root in _catalog_roots(catalog):
        if o == root or root in o.parents:
            raise CatalogError(
                f"--out {str(out)!r}: is inside the catalog {str(catalog)!r}; queries never write there"
            )
    if o.is_dir():
        raise CatalogError(f"--out {str(out)!r}: is a directory")
    if not o.parent.is_dir():
        raise CatalogError(f"--out {str(out)!r}: directory {str(o.parent)!r} does not exist")
    return o


def _serialise(table: pa.Table, fmt: str, max_rows: int) -> bytes:
    """The result as ``fmt``'s bytes."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        return sink.getvalue().to_pybytes()
    if fmt == "table":
        import pandas as pd

        df = table.slice(0, max_rows).to_pandas()
        with pd.option_context("display.max_columns", 40, "display.width", 200, "display.precision", 4):
            text = df.to_string(index=False) if len(df) else "(no rows)"
        if table.num_rows > max_rows:
            text += f"\n... {table.num_rows - max_rows} more rows ({table.num_rows} in all; use --format csv or --out)"
    elif fmt == "csv":
        import io

        import pyarrow.csv as pacsv

        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        text = buf.getvalue().decode()
    else:  # json
        import json

        import numpy as np

        def _clean(v):
            if isinstance(v, float) and not np.isfinite(v):
                return None
            return v

        # dates, times and decimals as their ISO / exact text
        text = json.dumps([{k: _clean(v) for k, v in r.items()} for r in table.to_pylist()], default=str)
    return (text if text.endswith("\n") else text + "\n").encode()


def write_result(
    table: pa.Table, fmt: str, out: str | Path | None, *, catalog: str | Path, max_rows: int = 50
):
    """Print or save a result: table (pretty, first ``max_rows``), csv, json (records) or parquet (needs ``out``).

    ``out`` may not lie inside the catalog or its collection: a query never writes there. It is written whole
    under a temporary name and renamed, so an existing file is replaced, never written through (a hard link to
    a catalog file stays the catalog's), and a failed write leaves it as it was.
    """
    import sys

    from ..storage import write_bytes

    target = _check_out(out, catalog) if out is not None else None
    if fmt not in FORMATS:
        raise CatalogError(f"--format {fmt!r}: use {', '.join(FORMATS)}")
    if fmt == "parquet" and target is None:
        raise CatalogError("--format parquet needs --out FILE")
    _check_format_holds(table, fmt)
    try:
        data = _serialise(table, fmt, max_rows)
    except (pa.ArrowException, TypeError, ValueError, OverflowError, NotImplementedError) as exc:
        types = ", ".join(f"{f.name} {f.type}" for f in table.schema)
        raise CatalogError(
            f"--format {fmt}: the result ({types[:200]}) cannot be written as {fmt} ({first_line(exc)}); "
            "select other columns or use another --format"
        ) from None
    if target is None:
        sys.stdout.write(data.decode())
        return
    write_bytes(
        target, data, temp=target.with_name(f"{paths.TEMP_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}")
    )
