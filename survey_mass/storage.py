"""Where stores and catalogs live: local paths, or fsspec URLs (``s3://bucket/key``, ``file:///...``) through
universal-pathlib, as hats and lsdb address them.

* :func:`as_path` turns what a user typed into a :class:`pathlib.Path` (local, ``file://`` included) or a
  :class:`upath.UPath` (anything else). Every other module takes paths from here and from :mod:`survey_mass.paths`,
  whose joins work on both.
* Credentials and endpoints are fsspec's own configuration: ``FSSPEC_S3_ENDPOINT_URL``, ``FSSPEC_S3_KEY``, ... in
  the environment, or ``~/.config/fsspec/*.json``, or a UPath with storage options passed to the Python API. The
  engine hands the driver's fsspec configuration to every Dask worker under the run's own name
  (:func:`register_run_options`), and each task binds the paths it is given to it (:func:`bind_run_options`), so
  workers read and write with the driver's options; paths nested inside other objects (an ingest's frame
  records) use the worker's own configuration.
* Object stores have no rename. A file is written with one complete PUT (:func:`write_bytes`); a reader sees the
  whole object or none. Finished partitions are known by their final objects. Listings are never cached
  (``use_listings_cache=False``): other processes write the objects a run looks for.
* :func:`create_exclusive` writes an object only if none is there (S3's conditional ``If-None-Match: *``; a
  hard link on local disk); stores that cannot do that are refused (:class:`~survey_mass.errors.StorageError`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import StorageError

#: storage options every remote path gets unless given: other processes write what a run lists
DEFAULT_OPTIONS = {"use_listings_cache": False}


def is_url(s: Any) -> bool:
    return isinstance(s, str) and "://" in s


def as_path(p: Any):
    """A local :class:`~pathlib.Path` for a path or ``file://`` URL, a :class:`upath.UPath` for other URLs; a
    UPath given stays as it is (with its storage options)."""
    if isinstance(p, Path):
        return p
    if type(p).__module__.startswith("upath"):
        return Path(p.path) if getattr(p, "protocol", "") in ("", "file", "local") else p
    s = os.fspath(p) if not isinstance(p, str) else p
    if not is_url(s):
        return Path(s)
    if "::" in s:  # a chained URL (simplecache::file://...) hides which filesystem it finally reaches
        raise StorageError(
            f"{s!r}: chained fsspec URLs are not supported; give the path or the store's own URL"
        )
    for local in ("file://", "local://"):
        if s.startswith(local):
            return Path(s[len(local) :])
    from upath import UPath

    return UPath(s, **DEFAULT_OPTIONS)


def is_remote(p: Any) -> bool:
    """Whether a path lives on an object store (or any non-local fsspec filesystem)."""
    return not isinstance(as_path(p), Path)


def display(p: Any) -> str:
    """How a path is named in messages and provenance: an absolute local path, or the URL."""
    q = as_path(p)
    return str(q.resolve()) if isinstance(q, Path) else str(q)


def write_bytes(p: Any, data: bytes, *, temp: Path) -> None:
    """Write a whole file: locally to ``temp`` (its temporary name, from :mod:`survey_mass.paths`) then
    renamed, remotely in one PUT. Nothing half-written is left behind, whatever interrupts it."""
    q = as_path(p)
    if isinstance(q, Path):
        q.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(temp)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, q)
        finally:
            tmp.unlink(missing_ok=True)
        return
    q.fs.pipe_file(q.path, data)


def remove_tree(p: Any) -> None:
    """Delete a directory (a prefix on an object store) and everything under it."""
    q = as_path(p)
    if isinstance(q, Path):
        shutil.rmtree(q, ignore_errors=True)
    elif q.fs.exists(q.path):
        q.fs.rm(q.path, recursive=True)


def create_exclusive(p: Any, data: bytes) -> bool:
    """Write ``data`` at ``p`` only if nothing is there; True if this call created it.

    Atomic on local disk (a complete temporary file hard-linked into place) and on S3 (a conditional PUT,
    ``If-None-Match: *``). Raises StorageError on a filesystem that cannot create exclusively."""
    q = as_path(p)
    if isinstance(q, Path):
        q.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=q.parent, prefix=f".tmp-{q.name}-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.link(tmp, q)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
    if q.protocol not in ("s3", "s3a"):
        raise StorageError(
            f"{q}: {q.protocol}:// cannot write an object only if it is absent, so two runs into the same output "
            "could not be told apart; survey-mass refuses to write there (use a local path or s3://)"
        )
    try:
        q.fs.pipe_file(q.path, data, mode="create")
        return True
    except FileExistsError:  # 412 PreconditionFailed: someone else's object is there
        return False
    except OSError as exc:
        if _s3_error_code(exc) == "ConditionalRequestConflict":  # 409: a concurrent conditional PUT won
            return False
        raise


def _s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an error s3fs raised (it keeps botocore's ClientError as the cause)."""
    response = getattr(exc.__cause__, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def check_exclusive_create(probe: Any) -> None:
    """Refuse an object store whose endpoint ignores conditional PUTs (some S3-compatible servers do): write the
    object ``probe`` (a fresh name) twice; the second must be refused. Nothing to check on local disk."""
    probe = as_path(probe)
    if isinstance(probe, Path):
        return
    q = probe.parent
    try:
        if not create_exclusive(probe, b"1") or create_exclusive(probe, b"2"):
            raise StorageError(
                f"{q}: the endpoint does not honour conditional writes (If-None-Match), so two runs into the same "
                "output could not be told apart; survey-mass refuses to write there"
            )
    finally:
        probe.unlink(missing_ok=True)


def storage_failure(exc: BaseException) -> str | None:
    """One line for an object store's failure (an unreachable endpoint, refused credentials, a throttled
    request) that reached the user; None for anything else."""
    import sys

    kinds = tuple(
        getattr(sys.modules[m], name)
        for m, name in (
            ("botocore.exceptions", "BotoCoreError"),
            ("botocore.exceptions", "ClientError"),
            ("aiohttp", "ClientError"),
        )
        if m in sys.modules  # a library that was never imported raised nothing
    )
    chain, e = [], exc
    while e is not None and len(chain) < 8:  # the explicit causes only: never an error met while handling one
        chain.append(e)
        e = e.__cause__
    if not kinds or not any(isinstance(e, kinds) for e in chain):
        return None
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return f"object storage: {first or type(exc).__name__} (check the endpoint and credentials: FSSPEC_S3_* or fsspec's config)"


def zarr_store(p: Any, *, read_only: bool = False):
    """What :func:`zarr.open_group` takes for a store at ``p``: the path string locally, an fsspec store
    remotely (zarr wants an asynchronous filesystem, which it builds from the URL and options)."""
    q = as_path(p)
    if isinstance(q, Path):
        return str(q)
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(str(q), storage_options=dict(q.storage_options), read_only=read_only)


def fsspec_config() -> dict:
    """The fsspec configuration of this process (what the engine gives each worker)."""
    import fsspec.config

    return {k: dict(v) for k, v in fsspec.config.conf.items()}


#: storage options of the runs whose tasks this process serves, by the name of each run's worker plugin
_RUN_OPTIONS: dict[str, dict] = {}


def register_run_options(name: str, conf: dict) -> None:
    """Keep a run's fsspec configuration in this (worker) process under the run's own name."""
    _RUN_OPTIONS[name] = {k: dict(v) for k, v in conf.items()}


def forget_run_options(name: str) -> None:
    _RUN_OPTIONS.pop(name, None)


def bind_run_options(args: tuple, name: str) -> tuple:
    """``args`` with each remote path (a UPath, or a URL string other than ``file://``) given the storage options
    of the run ``name`` (:func:`register_run_options`) for its protocol; options the path carries itself win.
    Local paths and everything else pass unchanged."""
    if name not in _RUN_OPTIONS:
        raise StorageError(
            f"this worker holds no storage options for {name!r} (its worker plugin was not set up here)"
        )
    conf = _RUN_OPTIONS[name]

    def bind(a):
        if not (is_url(a) or type(a).__module__.startswith("upath")):
            return a
        q = as_path(a)
        if isinstance(q, Path):
            return a
        from upath import UPath

        options = {**conf.get(q.protocol, {}), **dict(q.storage_options)}
        return UPath(str(q), **options)

    return tuple(bind(a) for a in args)
