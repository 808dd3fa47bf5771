"""Public test helpers: seeded fake-data generators and assertions about stores (and, later, catalogs).

Use them in your own pipeline tests::

    from survey_mass.testing import write_fake_sdss_frames, assert_store_valid
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .photometry import BANDS, SDSS_PIXEL_SCALE


def sdss_frame_header(ra0: float, dec0: float, band: str, *, nx: int, ny: int, rotation_deg: float = 0.0):
    """A FITS header following SDSS corrected-frame conventions (:func:`survey_mass.mock.frames.frame_header`:
    TAN WCS with a CD matrix, BUNIT nanomaggy), centred on (ra0, dec0) and rotated by ``rotation_deg``."""
    from .mock.frames import frame_header

    s = SDSS_PIXEL_SCALE / 3600.0
    t = np.radians(rotation_deg)
    cd = np.array([[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]])
    return frame_header(ra0, dec0, cd, band, nx=nx, ny=ny)


def write_fake_sdss_frames(
    directory: str | Path,
    *,
    ra0: float = 150.0,
    dec0: float = 2.0,
    sources: list[tuple[float, float, float]] | None = None,
    nx: int = 600,
    ny: int = 500,
    n_fields: int = 2,
    overlap: int = 64,
    rotation_deg: float = 12.0,
    sky_sigma: float = 0.02,
    bands: tuple[str, ...] = BANDS,
    seed: int = 0,
) -> list[Path]:
    """Write small SDSS-like corrected frames (``frame-{band}-{run}-{camcol}-{field}.fits``) with point sources.

    Fields are stacked along Dec with ``overlap`` shared rows (as SDSS fields are). ``sources`` are
    (ra, dec, flux in nanomaggies) drawn with a 1.4" Gaussian PSF. Returns the paths written.
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = sources or []
    sigma_pix = 1.4 / 2.3548 / SDSS_PIXEL_SCALE
    written = []
    step_deg = (ny - overlap) * SDSS_PIXEL_SCALE / 3600.0
    for f in range(n_fields):
        dec_c = dec0 + (f - (n_fields - 1) / 2) * step_deg
        for band in bands:
            h = sdss_frame_header(ra0, dec_c, band, nx=nx, ny=ny, rotation_deg=rotation_deg)
            w = WCS(h)
            img = rng.normal(0, sky_sigma, (ny, nx)).astype(np.float32)
            yy, xx = np.mgrid[0:ny, 0:nx]
            for ra, dec, flux in sources:
                x, y = w.all_world2pix([[ra, dec]], 0)[0]
                if -20 < x < nx + 20 and -20 < y < ny + 20:
                    img += (
                        flux
                        / (2 * np.pi * sigma_pix**2)
                        * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sigma_pix**2)
                    ).astype(np.float32)
            p = directory / f"frame-{band}-001000-3-{100 + f:04d}.fits"
            fits.PrimaryHDU(img, header=h).writeto(p, overwrite=True)
            written.append(p)
    return written


def assert_store_valid(path: str | Path) -> None:
    """Assert a store follows the contract: attributes, every partition's arrays, unique ids, finite coordinates."""
    from .store import open_store

    st = open_store(path)
    seen: set[int] = set()
    for p in st.partitions:
        n = st.check_partition(p)
        cols = st.columns(p)
        ids = cols["id"].tolist()
        assert len(ids) == n, f"partition {p}: {len(ids)} ids for {n} images"
        assert not (seen & set(ids)), f"partition {p}: ids repeated across partitions"
        seen |= set(ids)
        assert np.isfinite(cols["ra"]).all() and np.isfinite(cols["dec"]).all(), (
            f"partition {p}: bad coordinates"
        )
        from .footprint import partition_of

        assert (partition_of(cols["ra"], cols["dec"], st.order) == p).all(), (
            f"partition {p}: rows outside the pixel"
        )


# --- builders and assertions the test suite uses (its conftest.py files only wrap them in fixtures) -------------

#: the sky region of :func:`small_candidates` and :func:`build_small_store`
SMALL_REGION = "box:150,160,0,12"
#: a footprint holding the small and labelled stores, for runs over them
RUN_FOOTPRINT = "box:140,170,-5,20"


def read_shared_redmapper(shared_data: str | Path):
    """The full redMaPPer catalog from a ``shared/data`` checkout, or None when it is not there."""
    import pandas as pd

    p = Path(shared_data) / "redmapper_dr8_v5.10.parquet"
    return pd.read_parquet(p) if p.exists() else None


def small_candidates():
    """240 real redMaPPer clusters from one small sky region (all richnesses), for quick mocks."""
    from .candidates import load_redmapper

    cat = load_redmapper()
    sel = cat[(cat.ra > 150) & (cat.ra < 160) & (cat.dec > 0) & (cat.dec < 12)]
    return sel.reset_index(drop=True)


def build_small_store(out: str | Path, candidates=None) -> Path:
    """A mock store of the small region (:data:`SMALL_REGION`), built in-process (no Dask)."""
    from .footprint import parse_footprint
    from .mock.survey import MockConfig, build_mock_store

    build_mock_store(
        parse_footprint(SMALL_REGION),
        out,
        candidates=small_candidates() if candidates is None else candidates,
        config=MockConfig(seed=7),
        workers=1,
        progress=False,
    )
    return out


def build_labelled_store(out: str | Path) -> Path:
    """~550 real clusters with a lowered X-ray flux limit, so that ~40% carry labels (enough for k folds)."""
    from .candidates import load_redmapper
    from .footprint import parse_footprint
    from .mock.survey import MockConfig, build_mock_store

    build_mock_store(
        parse_footprint("box:140,165,0,15"),
        out,
        candidates=load_redmapper(),
        config=MockConfig(seed=5, label_flux_limit=4e-13),
        workers=1,
        progress=False,
    )
    return Path(out)


def train_smoke_model(store: str | Path, out: str | Path) -> tuple[Path, dict]:
    """A model trained in well under a minute on a labelled store: (model directory, training report)."""
    from .training.train import TrainConfig, train

    cfg = TrainConfig(
        folds=3,
        stage1_images=2800,
        stage1_epochs=4,
        background_cutouts=300,
        invariance_cutouts=120,
        invariance_weight=0.0,  # the penalty triples stage 2's L-BFGS time; tests/training tests it alone
        stage2_components=32,
        stage2_ridge=(0.05, 0.01),
        seed=1,
    )
    report = train(store, out, cfg, progress=False)
    return Path(out), report


def run_small(store: str | Path, out: str | Path, **kw) -> dict:
    """Run the shipped model over a small store into ``out`` (sampled attribution, in-process by default)."""
    from .footprint import parse_footprint
    from .inference.run import RunOptions, run_catalog
    from .resources import model_dir

    opts = RunOptions(
        attribution=kw.pop("attribution", "sample"),
        sample_fraction=kw.pop("sample_fraction", 0.04),
        seed=3,
        precision=kw.pop("precision", "auto"),
    )
    return run_catalog(
        store_path=store,  # a UPath keeps its storage options
        model_path=str(model_dir()),
        catalog=out,
        footprint=parse_footprint(RUN_FOOTPRINT),
        opts=opts,
        progress=False,
        workers=kw.pop("workers", 1),
        **kw,
    )


def catalog_files(out: str | Path) -> list[Path]:
    """The partition files of a run's primary catalog (never its margin cache)."""
    from . import paths

    return paths.catalog_partition_files(paths.primary_catalog(out))


def read_catalog(out: str | Path, columns: list[str] | None = None):
    """Every row of a run's primary catalog as a DataFrame, sorted by id."""
    import pyarrow.parquet as pq

    df = pq.ParquetDataset(catalog_files(out)).read(columns=columns).to_pandas()
    return df.sort_values("id").reset_index(drop=True) if "id" in df else df


def spearman(a, b) -> float:
    """Spearman rank correlation of two sequences."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(a), np.asarray(b)).statistic)


def cli(argv, capsys) -> tuple[int, str, str]:
    """Run the command line in-process; return (exit code, stdout, stderr). ``capsys`` is pytest's fixture.

    Any exception a user could see as a traceback propagates (and fails the calling test)."""
    from .cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *words) -> None:
    """Assert a command failed with a one-line message (no traceback) holding every one of ``words``."""
    assert code != 0, "a bad input must exit non-zero"
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert "Traceback" not in err
    for w in words:
        assert str(w) in lines[0], (w, lines[0])


def tree_snapshot(root: str | Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root`` with its size and SHA-256: equal snapshots mean nothing was written, changed
    or deleted there."""
    import hashlib

    out = {}
    for f in sorted(Path(root).rglob("*")):
        if f.is_file():
            out[str(f.relative_to(root))] = (f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest())
    return out


def biggest_partition(store: str | Path) -> tuple[int, np.ndarray, dict]:
    """The biggest partition of a store: (pixel, images, columns)."""
    from .store import open_store

    st = open_store(store)
    p = max(st.partitions, key=st.n_cutouts)
    return p, st.images(p), st.columns(p)


def make_store(
    path: str | Path,
    pixel: int,
    images: np.ndarray,
    columns: dict,
    *,
    manifest: bool = True,
    provenance: dict | None = None,
    attrs: dict | None = None,
) -> Path:
    """A one-partition store with the mock's geometry (the shipped model's); ``provenance`` for its root
    attributes, ``attrs`` for its partition's (such as an ingest's ``frames_digest``)."""
    from .mock.survey import SURVEY_NAME, MockConfig
    from .store import create_store, write_partition
    from .store.cutouts import write_manifest

    create_store(
        path,
        cutout_size=images.shape[-1],
        pixel_scale_arcsec=MockConfig().pixel_scale_arcsec,
        healpix_order=2,
        survey=SURVEY_NAME,
        kind="mock",
        provenance=provenance if provenance is not None else {"test": "reliability"},
    )
    write_partition(path, pixel, images, columns, attrs=attrs)
    if manifest:
        write_manifest(path)
    return Path(path)


def make_tiny_store(path: str | Path, partition: tuple[int, np.ndarray, dict], n: int = 16) -> Path:
    """A store of the first ``n`` cutouts of ``partition`` (as :func:`biggest_partition` returns it)."""
    p, images, cols = partition
    return make_store(path, p, images[:n].copy(), {k: v[:n] for k, v in cols.items()})


def copy_model(out: str | Path) -> Path:
    """A copy of the shipped model bundle (weights and card, no report) that a test may damage."""
    import shutil

    from .resources import model_dir

    shutil.copytree(model_dir(), out, ignore=shutil.ignore_patterns("*.png", "report.*"))
    return Path(out)


def reseal_model(path: str | Path) -> str:
    """Give a model directory whose card a test edited the id its weights and card hash to now, as if it had
    been saved so (a model trained for other bands, say); returns the id."""
    import json

    from .models.bundle import _read_card, model_id

    path = Path(path)
    card = _read_card(path)
    doc = json.loads((path / "model_card.json").read_text())
    doc["model_id"] = model_id(path, card)
    (path / "model_card.json").write_text(json.dumps(doc))
    return doc["model_id"]


def same_scenes(
    out: str | Path, overrides: list[str] | tuple[str, ...] = (), *, n: int = 60, seed: int = 7
) -> Path:
    """The first ``n`` clusters of :func:`small_candidates` rendered with the same seed (the same scenes and
    noise draws) under physics ``overrides`` such as ``["sky_noise_scale=1.2589"]``."""
    from .footprint import parse_footprint
    from .mock.survey import MockConfig, build_mock_store

    build_mock_store(
        parse_footprint(SMALL_REGION),
        out,
        candidates=small_candidates().iloc[:n],
        config=MockConfig.with_overrides(list(overrides), seed=seed),
        workers=1,
        progress=False,
    )
    return Path(out)


def predict_store(store_path: str | Path, model_path: str | Path | None = None) -> dict:
    """The shipped (or given) model's predictions for every cutout of a store, rows in store order."""
    import numpy as np

    from .inference.predict import predict_partition
    from .models.bundle import load_bundle
    from .resources import model_dir
    from .store import open_store

    bundle = load_bundle(model_path or model_dir())
    st = open_store(store_path)
    parts = [predict_partition(bundle, st.images(p), st.columns(p), richness=False) for p in st.partitions]
    ids = np.concatenate([st.columns(p)["id"] for p in st.partitions])
    return {"id": ids, **{k: np.concatenate([q[k] for q in parts]) for k in parts[0]}}


# --- the offset cross-match check (README recipe; needs lsdb) ----------------------------------------------


@dataclass(frozen=True)
class OffsetMatch:
    """What the README's cross-match recipe found for re-observations of a catalog's rows."""

    rows: int
    #: re-observations that found a row of the catalog within the radius
    matched: int
    #: ... and the row they came from
    matched_to_own: int
    #: ... and the row nearest to them in the whole catalog (by brute force): the cross-match is exact
    matched_to_nearest: int
    #: re-observations with some row of the catalog within the radius (by brute force)
    reachable: int

    @property
    def lost(self) -> int:
        """Re-observations with a counterpart within the radius that the cross-match did not find."""
        return self.reachable - self.matched


def reobserve(
    ra: np.ndarray, dec: np.ndarray, offset_arcsec: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``offset_arcsec`` from (ra, dec) in uniformly random directions, exactly on the sphere."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    rng = np.random.default_rng(seed)
    c = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(
        rng.uniform(0, 360, len(ra)) * u.deg, offset_arcsec * u.arcsec
    )
    return c.ra.deg, c.dec.deg


def offset_crossmatch(
    catalog, rows, *, offset_arcsec: float = 40.0, radius_arcsec: float = 60.0, seed: int = 19
) -> OffsetMatch:
    """Run the README's recipe on re-observations of ``rows`` (columns id, ra, dec) against ``catalog``
    (a path lsdb opens, or an opened lsdb catalog).

    Each row is "re-observed" ``offset_arcsec`` away in a random direction; the re-observations become an lsdb
    catalog as a user's own list would (``lsdb.from_dataframe``). A pair is lost (:attr:`OffsetMatch.lost`) when
    a re-observation with a row within the radius finds none; a match to another row than the nearest one is
    counted apart (``matched - matched_to_nearest``). Near a partition border the counterpart sits in the next
    partition, which only the margin cache brings in."""
    import lsdb
    import pandas as pd

    masses = lsdb.open_catalog(str(catalog)) if isinstance(catalog, str | Path) else catalog
    ra, dec = reobserve(rows["ra"].to_numpy(float), rows["dec"].to_numpy(float), offset_arcsec, seed)
    mine = lsdb.from_dataframe(pd.DataFrame({"my_id": rows["id"].to_numpy(), "ra": ra, "dec": dec}))
    matched = mine.crossmatch(
        masses,
        radius_arcsec=radius_arcsec,
        n_neighbors=1,
        suffixes=("_mine", "_sm"),
        suffix_method="all_columns",
    ).compute(progress_bar=False)
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    ids = rows["id"].to_numpy()
    nearest, sep, _ = SkyCoord(ra * u.deg, dec * u.deg).match_to_catalog_sky(
        SkyCoord(rows["ra"].to_numpy(float) * u.deg, rows["dec"].to_numpy(float) * u.deg)
    )
    truth = pd.Series(ids[nearest], index=ids)[sep.arcsec <= radius_arcsec]
    got = matched.set_index("my_id_mine")["id_sm"]
    return OffsetMatch(
        rows=len(rows),
        matched=int(got.index.nunique()),
        matched_to_own=int((got.index.to_numpy() == got.to_numpy()).sum()),
        matched_to_nearest=int((truth.reindex(got.index).to_numpy() == got.to_numpy()).sum()),
        reachable=len(truth),
    )


# --- an S3 API on loopback (moto's server mode; needs the test extra) ------------------------------------------


@contextmanager
def moto_s3(bucket: str = "survey-mass"):
    """A real S3 API on 127.0.0.1 (moto's server, in this process) with one empty bucket; yields its URL.

    fsspec's configuration points ``s3://`` at it, in this process and (through the environment) in the
    processes it starts, as a user's ``FSSPEC_S3_*`` settings would. Everything is restored on exit."""
    import logging
    import os

    import fsspec.config
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    options = {"endpoint_url": url, "key": "testing", "secret": "testing"}
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        **{f"FSSPEC_S3_{k.upper()}": v for k, v in options.items()},
    }
    saved_env = {k: os.environ.get(k) for k in env}
    saved_conf = {k: dict(v) for k, v in fsspec.config.conf.items()}
    os.environ.update(env)
    fsspec.config.conf["s3"] = dict(options)
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
        yield url
    finally:
        import requests

        try:
            requests.post(f"{url}/moto-api/reset", timeout=5)
        finally:
            server.stop()
            fsspec.config.conf.clear()
            fsspec.config.conf.update(saved_conf)
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()


# --- a CUDA device simulated on the CPU ---------------------------------------------------------------------------


@functools.cache
def _simulated_cuda_modes():
    """The simulated device's tensor subclass and modes, made once per process: a tensor put on the device in
    one :func:`simulated_cuda` context (a module's cache of device constants, say) is still a device tensor in
    the next, as a CUDA tensor would be."""

    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten, tree_map

    aten = torch.ops.aten
    simulated = torch.device("meta")
    index_ops = {
        aten.index.Tensor,
        aten.index_put_.default,
        aten.index_put.default,
        aten._index_put_impl_.default,
    }

    def unwrap(a):
        return a.elem if isinstance(a, OnDevice) else a

    def wrap(a):
        return OnDevice(a) if isinstance(a, torch.Tensor) and not isinstance(a, OnDevice) else a

    def check(func, args, kwargs) -> None:
        """Raise as CUDA does for an op that mixes device and CPU tensors."""
        if func in (aten.copy_.default, aten._to_copy.default, aten._local_scalar_dense.default):
            return
        if func in index_ops:  # CPU indices may index a device tensor, not the other way round
            self_, indices = args[0], [i for i in args[1] if i is not None]
            if not isinstance(self_, OnDevice) and any(isinstance(i, OnDevice) for i in indices):
                raise RuntimeError(
                    f"indices should be either on cpu or on the same device as the indexed tensor (cpu) ({func})"
                )
            args = (self_, *args[2:])
        flat, _ = tree_flatten((args, kwargs))
        tensors = [a for a in flat if isinstance(a, torch.Tensor)]
        if any(isinstance(a, OnDevice) for a in tensors) and any(
            not isinstance(a, OnDevice) and a.dim() > 0 for a in tensors
        ):
            raise RuntimeError(
                "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu! "
                f"({func})"
            )

    class OnDevice(torch.Tensor):
        """A tensor "on cuda": its data is the CPU tensor ``elem``."""

        elem: torch.Tensor

        @staticmethod
        def __new__(cls, elem: torch.Tensor):
            r = torch.Tensor._make_wrapper_subclass(
                cls,
                elem.size(),
                strides=elem.stride(),
                storage_offset=elem.storage_offset(),
                dtype=elem.dtype,
                layout=elem.layout,
                device=simulated,
                requires_grad=elem.requires_grad,
            )
            r.elem = elem.detach()
            return r

        def __repr__(self) -> str:
            return f"OnDevice({self.elem!r})"

        @classmethod
        def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            check(func, args, kwargs)
            if func is aten.copy_.default:  # into the destination, whichever device each is on
                unwrap(args[0]).copy_(unwrap(args[1]), *args[2:])
                return args[0]
            target = kwargs.get("device")
            if target is not None:
                kwargs["device"] = torch.device("cpu")
            out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
            if func is aten._local_scalar_dense.default:
                return out
            if func is aten._to_copy.default and target is not None and torch.device(target).type == "cpu":
                return out  # .cpu(), .to("cpu"): back to a plain tensor
            return tree_map(wrap, out)

    class DeviceCalls(TorchFunctionMode):
        """Calls that name ``cuda`` name ``meta`` instead (which :class:`DeviceFactories` and the subclass turn
        into CPU-backed device tensors, through autograd: a move to the device stays differentiable)."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func is torch.Tensor.pin_memory:
                return args[0]
            if func is torch.Tensor.tolist and isinstance(args[0], OnDevice):  # legal on a device: a copy
                return args[0].elem.tolist()
            if func is torch.Tensor.cuda:
                return args[0].to(simulated, non_blocking=bool(kwargs.get("non_blocking", False)))
            if func is torch.Tensor.to:
                device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args[1:], **kwargs)
                if device is None or device.type != "cuda":
                    return func(*args, **kwargs)
                extra = {"dtype": dtype} if dtype is not None else {}
                if memory_format is not None:
                    extra["memory_format"] = memory_format
                return args[0].to(
                    simulated, non_blocking=non_blocking, copy=bool(kwargs.get("copy", False)), **extra
                )
            d = kwargs.get("device")
            if d is not None and torch.device(d).type in ("cuda", "meta"):
                # a factory (torch.tensor builds below the dispatch modes): made on the CPU, then wrapped
                kwargs["device"] = torch.device("cpu")
                return tree_map(wrap, func(*args, **kwargs))
            return func(*args, **kwargs)

    class DeviceFactories(TorchDispatchMode):
        """Tensors made inside an op for the simulated device (a scalar promoted to a tensor beside a device
        tensor, say) hold CPU data, not meta's nothing."""

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            d = kwargs.get("device")
            if d is not None and torch.device(d).type in ("cuda", "meta"):
                kwargs["device"] = torch.device("cpu")
                return tree_map(wrap, func(*args, **kwargs))
            return func(*args, **kwargs)

    return DeviceCalls, DeviceFactories


def simulated_cuda():
    """A context in which ``"cuda"`` is a device that computes on the CPU but keeps CUDA's rules, so that a CPU
    test catches what a GPU's first call would: an op whose tensors sit on two devices (a CPU tensor indexed by
    or combined with a device tensor), ``.numpy()`` of a device tensor, pinned memory without a device.

    Tensors "on cuda" are wrapper subclasses holding a CPU tensor, their ``device`` reading ``meta`` (the one
    other device a CPU build can guard: autograd and the stream bookkeeping of a real ``cuda`` device would abort
    the process); every op on them runs on the held CPU tensors after checking devices as CUDA does (CPU 0-dim tensors mix freely; a
    device tensor may be indexed by CPU indices, not the other way round; ``copy_`` crosses devices). A torch
    function mode turns ``.to("cuda")``, ``.cuda()`` and factories given ``device="cuda"`` into such tensors;
    ``.cpu()`` gives plain ones back. ``torch.cuda.is_available()`` says True inside; ``synchronize`` does
    nothing.

    >>> import torch
    >>> with simulated_cuda():
    ...     a = torch.ones(3).to("cuda")
    ...     (a * 2).cpu().tolist(), a.device.type, torch.zeros(2, device="cuda").device.type
    ([2.0, 2.0, 2.0], 'meta', 'meta')
    >>> with simulated_cuda():
    ...     torch.ones(3).to("cuda") + torch.ones(3)
    Traceback (most recent call last):
    ...
    RuntimeError: Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu! (aten.add.Tensor)
    """
    from contextlib import ExitStack, contextmanager, nullcontext
    from unittest import mock

    import torch

    DeviceCalls, DeviceFactories = _simulated_cuda_modes()

    @contextmanager
    def swapped_params():
        """Module.to("cuda") swaps each parameter for its device copy (a plain Parameter cannot hold one)."""
        before = torch.__future__.get_swap_module_params_on_conversion()
        torch.__future__.set_swap_module_params_on_conversion(True)
        try:
            yield
        finally:
            torch.__future__.set_swap_module_params_on_conversion(before)

    @contextmanager
    def context():
        with ExitStack() as stack:
            stack.enter_context(swapped_params())
            real_autocast = torch.autocast

            def autocast(device_type, *args, **kwargs):
                # the simulated device computes on the CPU in fp32: its autocast does nothing
                if device_type in ("cuda", "meta"):
                    return nullcontext()
                return real_autocast(device_type, *args, **kwargs)

            stack.enter_context(mock.patch("torch.autocast", autocast))
            stack.enter_context(mock.patch("torch.cuda._lazy_init", lambda: None))
            stack.enter_context(mock.patch("torch.cuda.is_available", return_value=True))
            stack.enter_context(mock.patch("torch.cuda.device_count", return_value=1))
            stack.enter_context(mock.patch("torch.cuda.synchronize", lambda *a, **k: None))
            stack.enter_context(mock.patch("torch.cuda.get_device_name", lambda *a, **k: "simulated CUDA"))
            stack.enter_context(mock.patch("torch.cuda.is_bf16_supported", lambda *a, **k: True))
            stack.enter_context(DeviceCalls())
            stack.enter_context(DeviceFactories())
            yield

    return context()
