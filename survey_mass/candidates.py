"""Candidate catalogs: where clusters enter the system.

A candidate catalog has one row per cluster candidate with at least ``ra``, ``dec`` (degrees) and a redshift.
Optional columns: ``id``, ``name``, ``richness`` (``lambda``), ``log10_m500_label`` and the central galaxy's
``bcg_mag_{u,g,r,i,z}``. FITS, CSV and Parquet are read; common aliases are mapped (``z_lambda`` -> ``z``,
``lambda`` -> ``richness``, ``model_mag_i`` -> ``bcg_mag_i``).

The real redMaPPer SDSS DR8 v5.10 catalogue (Rykoff et al. 2014; 26,350 clusters) ships as package data and is
the default candidate list of the ``dr12`` footprint.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CatalogInputError
from .resources import data_path

REDMAPPER_FILE = "redmapper_dr8_v5.10.parquet"
SDSS_GALAXIES_FILE = "sdss_galaxies_10k.parquet"

ALIASES = {
    "z": ("z", "z_lambda", "redshift", "zphot", "z_spec"),
    "richness": ("richness", "lambda", "lambda_chisq"),
    "ra": ("ra", "raj2000", "ra_deg"),
    "dec": ("dec", "dej2000", "dec_deg"),
    "id": ("id", "mem_match_id", "objid_cluster"),
    "name": ("name",),
    "log10_m500_label": ("log10_m500_label", "log10_m500", "logm500"),
}
BANDS = ("u", "g", "r", "i", "z")


def _read_table(path: Path, what: str = "candidates") -> pd.DataFrame:
    name = str(path)
    if not path.is_file():
        raise CatalogInputError(f"{what} {name!r}: no such file")
    suffix = "".join(path.suffixes).lower()
    if not isinstance(path, Path):  # a URL (s3://...): read the object once, through fsspec
        import io

        path = io.BytesIO(path.read_bytes())
    try:
        if suffix.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if suffix.endswith((".csv", ".csv.gz")):
            compression = "gzip" if suffix.endswith(".gz") else None
            header = pd.read_csv(path, compression=compression, nrows=0).columns
            if hasattr(path, "seek"):
                path.seek(0)
            # ids as text: a 19-digit SDSS objID read as a number in a column with a gap would become a float
            ids = {c: str for c in header if str(c).lower() in ALIASES["id"]}
            return pd.read_csv(path, compression=compression, dtype=ids)
        if suffix.endswith((".fits", ".fit", ".fits.gz")):
            from astropy.table import Table

            t = Table.read(path, format="fits")
            names = [n for n in t.colnames if len(t[n].shape) <= 1]
            return t[names].to_pandas()
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CatalogInputError(f"{what} {name!r}: cannot be read ({reason})") from None
    raise CatalogInputError(f"{what} {name!r}: unknown format; use .fits, .csv or .parquet")


_INT64 = (-(2**63), 2**63 - 1)
#: the integers a float holds exactly, by its size in bytes (float32: 2^24, float64: 2^53)
_FLOAT_EXACT = {4: 2**24, 8: 2**53, 2: 2**11}
#: an id written as text: an optional sign and ASCII digits, nothing else ("1_000", "1e3", "1.0" are not ids)
_ID_TEXT = re.compile(r"^[+-]?[0-9]+$")


def exact_ids(values: np.ndarray, source: str) -> np.ndarray:
    """Candidate ids as int64, exactly: integers as they are, text of ASCII digits parsed exactly, floats only
    while their type holds them exactly (below 2^53 for float64, 2^24 for float32). A non-integral id (1.2), one
    outside int64 (2^63), text that is not plain digits ("1e3", "1_000") or a float that cannot hold its id (a
    19-digit objID) is refused in one line naming the row; nothing is rounded or wrapped.

    >>> exact_ids(np.array(["1237657070000000001", "7"], dtype=object), "c.csv")
    array([1237657070000000001,                   7])
    >>> exact_ids(np.array([1.2]), "c.csv")
    Traceback (most recent call last):
    ...
    survey_mass.errors.CatalogInputError: candidates 'c.csv': row 0: id 1.2 is not an integer
    """

    def refuse(row: int, v, why: str):
        raise CatalogInputError(f"candidates {source!r}: row {row}: id {v!r} {why}")

    values = np.asarray(values)
    if values.dtype.kind == "i":
        return values.astype(np.int64)
    if values.dtype.kind == "u":
        big = np.flatnonzero(values > np.uint64(_INT64[1]))
        if big.size:
            refuse(int(big[0]), int(values[big[0]]), "is beyond the int64 range of ids")
        return values.astype(np.int64)
    exact = _FLOAT_EXACT.get(values.itemsize, 2**53) if values.dtype.kind == "f" else 2**53
    out = np.empty(len(values), np.int64)
    for row, v in enumerate(values.tolist()):
        if isinstance(v, bool) or v is None or (isinstance(v, float) and not np.isfinite(v)):
            refuse(row, v, "is not an integer")
        if isinstance(v, float):
            if v != int(v):
                refuse(row, v, "is not an integer")
            if abs(v) >= exact:
                refuse(
                    row,
                    v,
                    "was stored as a floating-point number, which cannot hold it exactly; store ids as integers",
                )
            out[row] = int(v)
            continue
        if isinstance(v, int):
            n = v
        else:
            text = str(v).strip()
            if not _ID_TEXT.match(text):
                refuse(row, v, "is not an integer")
            n = int(text)
        if not _INT64[0] <= n <= _INT64[1]:
            refuse(row, v, "is beyond the int64 range of ids")
        out[row] = n
    return out


def normalise(df: pd.DataFrame, *, source: str) -> pd.DataFrame:
    """Map aliases onto the standard column names and validate every row.

    Raises
    ------
    CatalogInputError
        Naming the file for a table with no rows, and the first offending row for missing columns, NaN or
        out-of-range coordinates, non-positive redshifts, duplicate ids and richnesses that are not finite and
        positive (NaN, or an empty cell, means unknown and is allowed).
    """
    if len(df) == 0:
        have = ", ".join(map(str, df.columns)) or "none"
        raise CatalogInputError(
            f"candidates {source!r}: no rows (columns: {have}); a candidate catalog needs at least one cluster"
        )
    lower = {c.lower(): c for c in df.columns}
    out = pd.DataFrame(index=df.index)
    for std, names in ALIASES.items():
        for n in names:
            if n in lower:
                out[std] = df[lower[n]].to_numpy()
                break
    for b in BANDS:
        for n in (f"bcg_mag_{b}", f"model_mag_{b}"):
            if n in lower:
                out[f"bcg_mag_{b}"] = df[lower[n]].to_numpy(dtype=np.float64)
                break
    missing = [c for c in ("ra", "dec", "z") if c not in out]
    if missing:
        raise CatalogInputError(
            f"candidates {source!r}: missing column(s) {', '.join(missing)} (have: {', '.join(map(str, df.columns))})"
        )
    for c in ("ra", "dec", "z"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(np.float64)
    ra, dec, z = out["ra"].to_numpy(), out["dec"].to_numpy(), out["z"].to_numpy()
    checks = [
        (~np.isfinite(ra) | ~np.isfinite(dec), "RA/Dec is NaN"),
        ((ra < 0) | (ra >= 360), "RA outside [0, 360)"),
        ((dec < -90) | (dec > 90), "Dec outside [-90, 90]"),
        (~np.isfinite(z) | (z <= 0) | (z > 3), "redshift is missing or outside (0, 3]"),
    ]
    for bad, why in checks:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise CatalogInputError(f"candidates {source!r}: row {row}: {why} ({bad.sum()} row(s) in all)")
    out["id"] = (
        exact_ids(out["id"].to_numpy(), source) if "id" in out else np.arange(len(out), dtype=np.int64)
    )
    dup = out["id"].duplicated(keep="first").to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise CatalogInputError(
            f"candidates {source!r}: row {row}: duplicate id {int(out['id'].iloc[row])} ({dup.sum()} duplicate(s))"
        )
    if "name" not in out:
        out["name"] = [f"C{i}" for i in out["id"]]
    out["name"] = out["name"].astype(str)
    if "richness" in out:
        raw = out["richness"].to_numpy()
        given = pd.notna(out["richness"]).to_numpy()
        out["richness"] = pd.to_numeric(out["richness"], errors="coerce").astype(np.float64)
        lam = out["richness"].to_numpy()
        with np.errstate(invalid="ignore"):
            # NaN (an empty cell) is "unknown" and allowed; text, zero, negative and infinite values are not
            bad = (given & np.isnan(lam)) | (~np.isnan(lam) & ~(np.isfinite(lam) & (lam > 0)))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise CatalogInputError(
                f"candidates {source!r}: row {row}: richness {str(raw[row])!r} is not a finite positive number "
                f"(leave it empty when unknown) ({bad.sum()} row(s) in all)"
            )
    return out.reset_index(drop=True)


def read_candidates(path: str | Path) -> pd.DataFrame:
    """Read and validate a user's candidate catalog (FITS, CSV or Parquet), a local path or an fsspec URL."""
    from .storage import as_path

    path = as_path(path)
    return normalise(_read_table(path), source=str(path))


def load_redmapper() -> pd.DataFrame:
    """The real redMaPPer SDSS DR8 v5.10 clusters shipped with the package, in standard columns."""
    df = pd.read_parquet(data_path(REDMAPPER_FILE))
    return normalise(df, source=REDMAPPER_FILE)


def load_sdss_galaxies() -> pd.DataFrame:
    """The 10,000 real SDSS galaxies (kcorrect 5.1.9 test file) with ugriz model fluxes in nanomaggies."""
    return pd.read_parquet(data_path(SDSS_GALAXIES_FILE))
