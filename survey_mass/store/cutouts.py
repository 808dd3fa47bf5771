"""The cutout store: HEALPix-partitioned Zarr v3 groups of ugriz cutouts. Every later stage reads through here.

Contract (:class:`StoreAttributes`, from which ``schemas/store_attributes.schema.json`` is generated):

* root attribute ``survey_mass``: schema version, bands ``[u, g, r, i, z]``, cutout size, pixel scale, flux
  unit (nanomaggy), HEALPix order, survey, orientation, provenance;
* one group per partition, ``Norder=k/Npix=n`` (:mod:`survey_mass.paths`), holding

  - ``images`` (N, 5, H, W) float32, NaN where masked; one shard per partition with inner chunks of
    :data:`INNER_CHUNK` cutouts, zstd level 1 (noise-dominated float32 compresses only ~1.1x, so we keep
    compression cheap);
  - per-cutout columns ``id`` (int64), ``name`` (str), ``ra``, ``dec`` (float64), ``z`` (float32),
    ``quality`` (int32 bitmask, :class:`~survey_mass.quality.Quality`), ``richness`` when the candidate
    catalog has it, ``log10_m500_label`` (NaN when unlabelled), ``label_flux_limit`` (the flux limit of the
    labels' X-ray survey at the cutout's position, erg/s/cm^2, when known), the field's observing conditions
    ``obs_sky_sigma_{band}`` (sky noise per pixel, nanomaggies) and ``obs_psf_fwhm_{band}`` (arcsec) when the
    source of the pixels records them, and, in a mock, ``log10_m500_true`` and ``log10_m500_oracle`` (the mock's
    own E[log10 M500 | lambda, central galaxy, z]).

A partition is written under a temporary name and renamed when complete, so a reader never sees half a
partition and an interrupted build resumes from the partitions that exist.

Examples
--------
>>> import tempfile, numpy as np
>>> from survey_mass.store import create_store, write_partition, open_store
>>> path = tempfile.mkdtemp() + "/s.zarr"
>>> _ = create_store(path, cutout_size=8, pixel_scale_arcsec=3.168, healpix_order=2, survey="doc",
...                  kind="mock", provenance={"seed": 1})
>>> cols = {"id": np.array([7, 8]), "name": np.array(["a", "b"]), "ra": np.array([1.0, 2.0]),
...         "dec": np.array([0.0, 0.5]), "z": np.array([0.1, 0.2]), "quality": np.zeros(2, int)}
>>> write_partition(path, 45, np.zeros((2, 5, 8, 8), np.float32), cols)
>>> store = open_store(path)
>>> store.partitions, store.n_cutouts(45)
([45], 2)
>>> store.read_by_id(8)[1]["name"]
'b'
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import paths
from .._version import __version__
from ..errors import StoreError, first_line
from ..photometry import BANDS
from ..storage import as_path, is_remote, remove_tree, zarr_store

ATTR_KEY = "survey_mass"
#: the most cutouts one partition may hold (8 GB of 64 x 64 pixels); a partition claiming more is damaged
MAX_PARTITION_CUTOUTS = 100_000
SCHEMA_VERSION = 1
INNER_CHUNK = 8
ORIENTATION = "north-up east-left, TAN projection centred on the candidate"

#: Column name -> numpy dtype; the required ones first.
REQUIRED_COLUMNS = {
    "id": np.int64,
    "name": str,
    "ra": np.float64,
    "dec": np.float64,
    "z": np.float32,
    "quality": np.int32,
}
OPTIONAL_COLUMNS = {
    "richness": np.float32,
    "bcg_mag_i": np.float32,
    "log10_m500_label": np.float32,
    "log10_m500_true": np.float32,
    "log10_m500_oracle": np.float32,
    "label_flux_limit": np.float64,
    **{f"obs_sky_sigma_{b}": np.float32 for b in BANDS},
    **{f"obs_psf_fwhm_{b}": np.float32 for b in BANDS},
}
#: columns a catalogue passes through from the store, unchanged, where the store has them
PASSTHROUGH_COLUMNS = tuple(c for c in OPTIONAL_COLUMNS if c != "richness")


class StoreAttributes(BaseModel):
    """The root attribute ``survey_mass`` of a cutout store: what every later stage may rely on."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        title="survey-mass cutout store: root attributes (key 'survey_mass' of the root group)",
        json_schema_extra={"$id": "survey-mass/store_attributes/1"},
    )

    schema_version: Literal[1] = Field(description="Version of this contract.")
    bands: list[str] = Field(
        description="Band order of the images' axis 1.", json_schema_extra={"const": list(BANDS)}
    )
    cutout_size: int = Field(ge=8, le=1024, description="Cutout side in pixels (H = W).")
    pixel_scale_arcsec: float = Field(gt=0, description="Pixel scale in arcsec.")
    flux_unit: Literal["nanomaggy"] = Field(description="Pixel unit; m = 22.5 - 2.5 log10(f).")
    healpix_order: int = Field(ge=0, le=12, description="Order of the partitions (nested HEALPix).")
    survey: str = Field(min_length=1, description="Survey name, e.g. 'SDSS DR12 (mock)'.")
    orientation: Literal["north-up east-left, TAN projection centred on the candidate"] = Field(
        description="Pixel grid of each cutout."
    )
    footprint: str = Field("", description="Footprint the store was made for.")
    kind: Literal["mock", "ingest"] | None = Field(None, description="How the pixels were made.")
    codec: Literal["none"] | None = Field(
        None,
        description="The image chunks' codec: absent, zstd level 1 with a checksum; 'none', a CRC32C checksum only "
        "(the --device-prep path's store: about 7% more bytes, no decompression on the CPU).",
    )
    provenance: dict[str, Any] = Field(description="Mock seed and parameters, or the input files.")
    code_version: str = Field("", description="survey-mass version that created the store.")
    partitions: dict[str, int] | None = Field(
        None, description="Manifest: complete partitions and their cutout counts, written once a build ends."
    )
    label_selection: dict[str, Any] | None = Field(
        None, description="How the labels were selected (survey_mass.selection.XraySelection), if known."
    )

    @field_validator("bands")
    @classmethod
    def _bands_in_order(cls, v: list[str]) -> list[str]:
        if v != list(BANDS):
            raise ValueError(f"must be {list(BANDS)}")
        return v

    def to_attrs(self) -> dict[str, Any]:
        """The JSON document stored in the root attribute (unset optional keys left out)."""
        return self.model_dump(mode="json", exclude_none=True)


def _contract_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) or "(top level)"
    return f"{key}: {e['msg']}" + (
        "" if e["type"] in ("missing", "extra_forbidden") else f" (got {e['input']!r})"
    )


def _root_attrs(path: Path) -> dict:
    import zarr

    try:
        root = zarr.open_group(zarr_store(path, read_only=True), mode="r", zarr_format=3)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"store {str(path)!r}: not a Zarr v3 store ({reason})") from None
    attrs = dict(root.attrs)
    if ATTR_KEY not in attrs:
        raise StoreError(
            f"store {str(path)!r}: root attribute {ATTR_KEY!r} is missing (not a survey-mass store)"
        )
    return attrs[ATTR_KEY]


_ORDER_DIR_RE = re.compile(r"^Norder=\d+$")


def check_own_store(path: Path) -> None:
    """Refuse, naming the path, to treat ``path`` as a store survey-mass wrote unless it is one: its root group
    carries the ``survey_mass`` attribute and it holds nothing but a store's own names (``zarr.json``, the
    ``Norder=k`` groups and, in them, partition groups and a killed build's temporaries). ``--overwrite`` deletes
    only such a directory."""
    path = as_path(path)
    refuse = f"store {str(path)!r}: --overwrite only replaces a cutout store survey-mass wrote, and this "
    if not path.is_dir():
        raise StoreError(refuse + "is not a directory; nothing was deleted")
    try:
        _root_attrs(path)
    except StoreError:
        raise StoreError(
            refuse
            + f"is not one (no {paths.STORE_ROOT_FILE} with a {ATTR_KEY!r} attribute); nothing was deleted"
        ) from None
    for entry in path.iterdir():
        if entry.name == paths.STORE_ROOT_FILE:
            continue
        inside = list(entry.iterdir()) if _ORDER_DIR_RE.match(entry.name) and entry.is_dir() else None
        ok = inside is not None and all(
            e.name == paths.STORE_ROOT_FILE
            or (
                e.is_dir()
                and (paths.PARTITION_RE.match(e.name) or e.name.startswith(paths.TEMP_PREFIX + "Npix="))
            )
            for e in inside
        )
        if not ok:
            raise StoreError(refuse + f"holds {entry.name!r}, which a store does not; nothing was deleted")


def create_store(
    path: str | Path,
    *,
    cutout_size: int,
    pixel_scale_arcsec: float,
    healpix_order: int,
    survey: str,
    kind: str,
    provenance: dict[str, Any],
    footprint: str = "",
    overwrite: bool = False,
    codec: str = "zstd",
) -> StoreAttributes:
    """Create a store's root group, or check that an existing one matches (so a build can resume).

    Returns the root attributes (of the existing store when it matches).
    """
    import zarr

    path = as_path(path)
    try:
        meta = StoreAttributes(
            schema_version=SCHEMA_VERSION,
            bands=list(BANDS),
            cutout_size=int(cutout_size),
            pixel_scale_arcsec=float(pixel_scale_arcsec),
            flux_unit="nanomaggy",
            healpix_order=int(healpix_order),
            survey=survey,
            orientation=ORIENTATION,
            footprint=footprint,
            kind=kind,
            codec=None if str(codec).lower() == "zstd" else str(codec).lower(),
            provenance=provenance,
            code_version=__version__,
        )
    except ValidationError as exc:
        raise StoreError(
            f"store {str(path)!r}: attributes do not follow the contract: {_contract_error(exc)}"
        ) from None
    if path.exists() and overwrite:
        if isinstance(path, Path) and path.is_symlink():
            raise StoreError(
                f"store {str(path)!r}: is a symbolic link; --overwrite replaces a store at its own path only "
                "(give the path it points to); nothing was deleted"
            )
        check_own_store(path)
        remove_tree(path)
        if path.exists():
            raise StoreError(f"store {str(path)!r}: could not be deleted for --overwrite; delete it by hand")
    if path.exists():
        if not paths.store_root_file(path).is_file():
            raise StoreError(f"store {str(path)!r}: exists and is not a Zarr store; choose another --out")
        old = open_store(path).meta
        for key in ("cutout_size", "pixel_scale_arcsec", "healpix_order", "kind", "provenance", "codec"):
            a, b = getattr(old, key), getattr(meta, key)
            if a != b:
                if key == "codec":  # absent means zstd
                    a, b = a or "zstd", b or "zstd"
                raise StoreError(
                    f"store {str(path)!r}: exists with a different {key} ({a!r} != {b!r}); rebuild it with "
                    "--overwrite or choose another store path"
                )
        return old
    root = zarr.open_group(zarr_store(path), mode="w", zarr_format=3)
    root.attrs[ATTR_KEY] = meta.to_attrs()
    root.create_group(paths.order_dir_name(healpix_order))
    return meta


def write_partition(
    path: str | Path,
    pixel: int,
    images: np.ndarray,
    columns: dict[str, np.ndarray],
    attrs: dict | None = None,
) -> None:
    """Write one partition atomically: into a temporary group, then renamed into place. ``attrs`` are extra
    group attributes that travel with it (e.g. what it was built from).

    On an object store, which cannot rename, the group is written in place and its attributes last, in one PUT
    of its ``zarr.json``: a partition counts as written once they carry ``n_cutouts``
    (:meth:`CutoutStore.partitions`)."""
    import zarr

    path = as_path(path)
    meta = open_store(path).meta
    order, size = meta.healpix_order, meta.cutout_size
    n = images.shape[0]
    if images.shape[1:] != (len(BANDS), size, size):
        raise StoreError(
            f"partition {pixel}: images have shape {images.shape[1:]}, store wants (5, {size}, {size})"
        )
    for c in REQUIRED_COLUMNS:
        if c not in columns:
            raise StoreError(f"partition {pixel}: column {c!r} is missing")
    done = {"n_cutouts": int(n), "healpix_pixel": int(pixel), **(attrs or {})}
    root = zarr.open_group(zarr_store(path), mode="r+", zarr_format=3)
    if is_remote(path):
        final = paths.partition_group_path(order, pixel)
        remove_tree(path / final)  # an earlier, unfinished write
        g = root.create_group(final)
        try:
            _write_arrays(g, n, size, images, columns, meta.codec)
        except BaseException:
            remove_tree(path / final)
            raise
        g.update_attributes(done)  # the last object: the partition is complete
        return
    tmp = paths.temp_partition_group_path(order, pixel)
    g = root.create_group(tmp)
    g.attrs.update(done)
    try:
        _write_arrays(g, n, size, images, columns, meta.codec)
    except BaseException:
        shutil.rmtree(path / tmp, ignore_errors=True)
        raise
    final = path / paths.partition_group_path(order, pixel)
    if final.exists():
        shutil.rmtree(final)
    os.replace(path / tmp, final)


def _finished_remotely(group) -> bool:
    """Whether a partition group on an object store was written to the end (its attributes came last)."""
    import json

    try:
        doc = json.loads((group / paths.STORE_ROOT_FILE).read_text())
    except (OSError, ValueError):
        return False
    return "n_cutouts" in doc.get("attributes", {})


def remove_temporaries(path: str | Path, order: int) -> None:
    """Delete half-written partition groups a killed build left behind (they are never read)."""
    for d in paths.store_temporaries(path, order):
        shutil.rmtree(d, ignore_errors=True)


def write_manifest(path: str | Path) -> dict[str, int]:
    """Record the complete partitions and their cutout counts in the root attribute ``partitions``.

    Builders call this once every partition is written. Readers then notice a partition group that has gone
    missing since (:meth:`CutoutStore.missing_partitions`) instead of silently producing fewer rows.
    """
    import zarr

    store = open_store(path)
    manifest = {str(p): store.n_cutouts(p) for p in store.partitions}
    root = zarr.open_group(zarr_store(path), mode="r+", zarr_format=3)
    root.attrs[ATTR_KEY] = store.meta.model_copy(update={"partitions": manifest}).to_attrs()
    return manifest


def _write_arrays(
    g, n: int, size: int, images: np.ndarray, columns: dict[str, np.ndarray], codec: str | None = None
) -> None:
    from zarr.codecs import Crc32cCodec, ZstdCodec

    nn = max(n, 1)
    inner = min(INNER_CHUNK, nn)
    arr = g.create_array(
        "images",
        shape=(n, len(BANDS), size, size),
        chunks=(inner, len(BANDS), size, size),
        shards=(-(-nn // inner) * inner, len(BANDS), size, size),
        dtype="float32",
        # a corrupted chunk fails loudly either way
        compressors=Crc32cCodec() if codec == "none" else ZstdCodec(level=1, checksum=True),
        fill_value=np.nan,
    )
    if n:
        arr[:] = images.astype(np.float32, copy=False)
    for name, dtype in {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}.items():
        if name not in columns:
            continue
        values = np.asarray(columns[name])
        if dtype is str:
            a = g.create_array(name, shape=(n,), chunks=(nn,), dtype=str)
            if n:
                a[:] = np.asarray(values, dtype=object).astype(str)  # numpy StringDType too
        else:
            a = g.create_array(name, shape=(n,), chunks=(nn,), dtype=dtype, fill_value=0)
            if n:
                a[:] = values.astype(dtype)


@dataclass(frozen=True)
class CutoutStore:
    """Read access to a cutout store. Open it with :func:`open_store`.

    ``meta`` is the validated root attribute (:class:`StoreAttributes`); ``attrs`` the same as a JSON dict.
    """

    path: Path
    meta: StoreAttributes

    @property
    def attrs(self) -> dict[str, Any]:
        return self.meta.to_attrs()

    @property
    def order(self) -> int:
        return self.meta.healpix_order

    @property
    def cutout_size(self) -> int:
        return self.meta.cutout_size

    @property
    def pixel_scale(self) -> float:
        return self.meta.pixel_scale_arcsec

    @property
    def bands(self) -> list[str]:
        return list(self.meta.bands)

    @property
    def partitions(self) -> list[int]:
        """Complete partitions, sorted."""
        d = self.path / paths.order_dir_name(self.order)
        if not d.is_dir():
            return []
        out = []
        for entry in d.iterdir():
            m = paths.PARTITION_RE.match(entry.name)
            if m and entry.is_dir() and (not is_remote(entry) or _finished_remotely(entry)):
                out.append(int(m.group(1)))
        return sorted(out)

    def missing_partitions(self) -> list[int]:
        """Partitions the store's manifest lists whose group is gone (empty without a manifest)."""
        listed = {int(p) for p in self.meta.partitions or {}}
        return sorted(listed - set(self.partitions))

    def _group(self, pixel: int):
        import zarr

        gp = paths.partition_group_path(self.order, pixel)
        if not (self.path / gp).is_dir():
            raise StoreError(f"store {str(self.path)!r}: partition {pixel} ({gp}) is missing")
        try:
            return zarr.open_group(zarr_store(self.path / gp, read_only=True), mode="r", zarr_format=3)
        except Exception as exc:
            raise StoreError(
                f"store {str(self.path)!r}: partition {pixel}: unreadable group ({exc})"
            ) from None

    def check_partition(self, pixel: int) -> int:
        """Validate a partition's arrays against the contract from their metadata alone, before anything is read
        or allocated: every array present, the images (N, 5, H, W) float32 at the store's size, every column N
        rows of its contract dtype, N what the partition's attributes say and at most
        :data:`MAX_PARTITION_CUTOUTS`. Returns N; one-line StoreError naming the partition otherwise."""
        where = f"store {str(self.path)!r}: partition {pixel}"
        g = self._group(pixel)
        try:
            names = set(g.array_keys())
            arrays = {c: g[c] for c in names}
        except Exception as exc:
            raise StoreError(f"{where}: unreadable array metadata ({first_line(exc)})") from None
        for c in ("images", *REQUIRED_COLUMNS):
            if c not in names:
                raise StoreError(f"{where}: array {c!r} is missing")
        images = arrays["images"]
        shape, s = tuple(images.shape), self.cutout_size
        if len(shape) != 4 or shape[1:] != (len(BANDS), s, s):
            raise StoreError(f"{where}: images shape {shape} is not (N, 5, {s}, {s})")
        if images.dtype != np.float32:
            raise StoreError(f"{where}: images are {images.dtype}, the contract says float32")
        n = int(shape[0])
        if n > MAX_PARTITION_CUTOUTS:
            raise StoreError(
                f"{where}: claims {n} cutouts, more than the {MAX_PARTITION_CUTOUTS} a partition may hold "
                f"({MAX_PARTITION_CUTOUTS * len(BANDS) * s * s * 4 / 1e9:.0f} GB of pixels); the store is damaged"
            )
        claimed = dict(g.attrs).get("n_cutouts")
        if claimed is not None and claimed != n:
            raise StoreError(f"{where}: holds {n} images, its attributes say n_cutouts = {claimed!r}")
        contract = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}
        for c in sorted(names - {"images"}):
            a = arrays[c]
            if tuple(a.shape) != (n,):
                raise StoreError(f"{where}: column {c!r} has shape {tuple(a.shape)}, images have {n} rows")
            want = contract.get(c)
            if want is str:
                ok = a.dtype.kind in "OUT" or "str" in str(a.dtype).lower()
            else:
                ok = want is None or np.dtype(a.dtype) == np.dtype(want)
            if not ok:
                raise StoreError(
                    f"{where}: column {c!r} is {a.dtype}, the contract says "
                    f"{'text' if want is str else np.dtype(want)}"
                )
        return n

    def n_cutouts(self, pixel: int) -> int:
        g = self._group(pixel)
        try:
            return int(g["images"].shape[0])
        except Exception as exc:
            raise StoreError(
                f"store {str(self.path)!r}: partition {pixel}: images unreadable ({first_line(exc)})"
            ) from None

    def partition_attrs(self, pixel: int) -> dict:
        """The attributes of a partition's group (``n_cutouts``, ``healpix_pixel`` and any its builder added)."""
        return dict(self._group(pixel).attrs)

    def has_column(self, pixel: int, name: str) -> bool:
        """Whether a partition holds the column ``name``: its array's metadata file exists (nothing is read, so a
        damaged partition is left to the stage that reads it)."""
        return (self.path / paths.partition_group_path(self.order, pixel) / name / "zarr.json").exists()

    def columns(self, pixel: int) -> dict[str, np.ndarray]:
        """All per-cutout columns of a partition (everything but the images)."""
        g = self._group(pixel)
        out = {}
        for name in sorted(g.array_keys()):
            if name == "images":
                continue
            try:
                out[name] = np.asarray(g[name][:])
            except Exception as exc:
                raise StoreError(
                    f"store {str(self.path)!r}: partition {pixel}: column {name!r} unreadable ({exc})"
                ) from None
        return out

    def images(self, pixel: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Images [start:stop] of a partition, (n, 5, H, W) float32."""
        g = self._group(pixel)
        try:
            return np.asarray(g["images"][start:stop], dtype=np.float32)
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreError(
                f"store {str(self.path)!r}: partition {pixel}: images [{start}:{stop}] unreadable ({reason})"
            ) from None

    def iter_batches(self, pixel: int, batch_size: int = 64) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield (row slice, images) for consecutive batches of a partition."""
        n = self.n_cutouts(pixel)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield slice(start, stop), self.images(pixel, start, stop)

    @cached_property
    def _id_index(self) -> dict[int, tuple[int, int]]:
        index = {}
        for p in self.partitions:
            ids = np.asarray(self._group(p)["id"][:])
            for row, i in enumerate(ids.tolist()):
                index[int(i)] = (p, row)
        return index

    def read_by_id(self, cutout_id: int) -> tuple[np.ndarray, dict[str, Any]]:
        """One cutout (5, H, W) and its row of columns, by candidate id."""
        if int(cutout_id) not in self._id_index:
            raise StoreError(f"store {str(self.path)!r}: no cutout with id {cutout_id}")
        pixel, row = self._id_index[int(cutout_id)]
        cols = self.columns(pixel)
        record = {k: (v[row].item() if hasattr(v[row], "item") else v[row]) for k, v in cols.items()}
        record["partition"] = pixel
        return self.images(pixel, row, row + 1)[0], record

    @cached_property
    def identity(self) -> str:
        """A hash of the store's root attributes, its manifest included: what it is (geometry, mock seed and
        physics, or the ingest's inputs) and which partitions it holds. A store rebuilt at the same path with
        another seed or other physics has another identity (a run that resumes on it is refused)."""
        return _digest(self.meta.to_attrs())

    def source_digest(self, pixel: int) -> str:
        """A hash of what partition ``pixel`` was made from: the store's provenance (mock seed and physics, or
        the ingest's inputs) and the partition's own attributes (the ingest's frames digest). A catalogue
        partition records it; a partition re-cut from other frames has another."""
        attrs = self.partition_attrs(pixel)
        meta = self.meta.to_attrs()
        return _digest({"store": {k: v for k, v in meta.items() if k != "partitions"}, "partition": attrs})

    @property
    def n_total(self) -> int:
        return sum(self.n_cutouts(p) for p in self.partitions)


def _digest(doc: Any) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def open_store(path: str | Path) -> CutoutStore:
    """Open and validate a cutout store.

    Raises
    ------
    StoreError
        One line naming the store and what is wrong: not a store, a wrong schema version, attributes that break
        the contract.
    """
    path = as_path(path)
    if not path.exists():
        raise StoreError(f"store {str(path)!r}: does not exist")
    attrs = _root_attrs(path)
    if not isinstance(attrs, dict):
        raise StoreError(f"store {str(path)!r}: root attribute {ATTR_KEY!r} is not an object")
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"store {str(path)!r}: schema_version {version!r} is not supported (this survey-mass reads {SCHEMA_VERSION})"
        )
    try:
        meta = StoreAttributes.model_validate(attrs)
    except ValidationError as exc:
        raise StoreError(
            f"store {str(path)!r}: root attributes break the contract: {_contract_error(exc)}"
        ) from None
    return CutoutStore(path=path, meta=meta)
