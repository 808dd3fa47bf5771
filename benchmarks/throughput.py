"""Throughput benchmarks behind ``survey-mass bench``. One run measures, on the same cutouts and device:

(a) ``model``        the model bundle alone on in-memory arrays: the k-fold CNN ensemble plus the richness
                     baseline (source detection), i.e. everything the model computes for a catalog row;
                     ``cnn_cutouts_per_s`` is the CNN ensemble alone;
(b) ``io``           the store read and decoded, partition by partition, into a no-op model (torchgeo style):
                     reading timed apart from compute;
(c) ``pipeline``     ``survey-mass run`` end to end (store -> model -> HATS Parquet), attribution off, with
                     1..N workers (1 = in-process, >1 = a Dask LocalCluster; on a GPU a LocalCUDACluster),
                     timed on a started, warmed cluster as a survey run sees it; the cluster's start and the
                     workers' first imports are reported apart (``pipeline_startup_s``);
(d) ``attribution``  integrated-gradients seconds per cutout at the run's default settings;
(e) ``naive``        what a user would write without this tool: one FITS file per band per cutout, as SDSS
                     cutout services deliver them, opened with astropy in a torch ``Dataset`` and batched by a
                     ``DataLoader`` (batch 64, the default single process), then the same model; the same with
                     one loader worker process per core is reported beside it
                     (``naive_loader_workers_cutouts_per_s``, timed once).

The naive files and the benchmark store are made before any timing starts; making them is not timed.

Each leg is timed ``repeat`` times (the pipeline ``max(2, repeat - 1)`` times per worker count); a rate is the
median over its repeats, and ``spread`` gives each rate's (min, max), so a ratio can be read against the
machine's own noise. The default store (:data:`DEFAULT_FOOTPRINT`, about 2,500 cutouts) keeps ``survey-mass
bench`` within 5 minutes on 2 cores; ``--full`` uses the 15,577-cutout :data:`FULL_FOOTPRINT`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

#: about 2,500 clusters (mass-function mock): every leg repeated, the whole bench within 5 minutes on 2 cores
DEFAULT_FOOTPRINT = "box:120,160,0,22"
#: 15,577 clusters in 26 partitions (``--full``): starting Dask workers is then a small part of the pipeline leg
FULL_FOOTPRINT = "box:120,200,-5,40"
#: the footprint of a store given with ``--store``: all of it
ALL_SKY = "box:0,360,-90,90"
#: timings of each leg
DEFAULT_REPEAT = 3


def _times(fn, repeat: int) -> list[float]:
    """Wall seconds of ``repeat`` calls of ``fn``."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _rate(n: int, times: list[float]) -> tuple[float, tuple[float, float]]:
    """``n`` items over the median time, and the (min, max) rate over the repeats."""
    return n / float(np.median(times)), (n / max(times), n / min(times))


def bench_store(workdir: Path, footprint: str, progress: bool) -> Path:
    """A mock store of ``footprint``, made once and reused from ``workdir``.

    Its clusters are drawn from the halo mass function (no candidate catalog): throughput does not depend on
    where the clusters are, and any footprint gives a store of the size its area implies (~7 per deg^2).
    """
    from survey_mass.footprint import parse_footprint
    from survey_mass.mock.survey import MockConfig, build_mock_store

    out = workdir / f"bench-{footprint.replace(':', '_').replace(',', '_')}.zarr"
    build_mock_store(
        parse_footprint(footprint),
        out,
        config=MockConfig(seed=11),
        workers=min(2, os.cpu_count() or 1),
        progress=progress,
    )
    return out


def write_naive_fits(images: np.ndarray, ids: np.ndarray, folder: Path) -> list[list[Path]]:
    """One FITS file per band per cutout (``<id>-<band>.fits``), as a cutout service would deliver them."""
    from astropy.io import fits

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for img, i in zip(images, ids, strict=True):
        row = []
        for b, band in enumerate("ugriz"):
            f = folder / f"{int(i)}-{band}.fits"
            hdu = fits.PrimaryHDU(img[b])
            hdu.header["BUNIT"] = "nanomaggy"
            hdu.header["FILTER"] = band
            hdu.writeto(f, overwrite=True)
            row.append(f)
        files.append(row)
    return files


class NaiveFitsDataset:
    """A torch-style Dataset: item k opens the five FITS files of cutout k with astropy and stacks them."""

    def __init__(self, files: list[list[Path]], z: np.ndarray):
        self.files = files
        self.z = z

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, k: int):
        from astropy.io import fits

        bands = []
        for f in self.files[k]:
            with fits.open(f, memmap=False) as hdul:
                bands.append(np.asarray(hdul[0].data, dtype=np.float32))
        return np.stack(bands), np.float32(self.z[k])


def _pipeline_times(store_path: Path, fp, out: Path, workers: int, device: str, precision: str, repeat: int):
    """Wall seconds of ``repeat`` runs of ``survey-mass run`` (attribution off) of the whole store, and its start-up.

    As in a survey run, where one cluster serves every partition, the cluster (for ``workers`` > 1 or a GPU) is
    started once and its workers warmed by a first run; the timed runs follow on it. The first run's excess over
    the median timed run, plus the cluster's start, is reported as ``startup_s``, and ``cold_s`` is that first run
    with the start: what a run on a fresh cluster pays once."""
    from survey_mass.engine import start_cluster
    from survey_mass.inference.run import RunOptions, run_catalog
    from survey_mass.resources import model_dir

    choice = None
    t0 = time.perf_counter()
    if workers > 1 or device.startswith("cuda"):
        choice = start_cluster(workers=workers, device=device, local_directory=str(out) + "-dask")
    t_start = time.perf_counter() - t0

    def run_once():
        shutil.rmtree(out, ignore_errors=True)
        run_catalog(
            store_path=str(store_path),
            model_path=str(model_dir()),
            catalog=str(out),
            footprint=fp,
            opts=RunOptions(attribution="none", device=device, precision=precision),
            workers=workers,
            client=None if choice is None else choice.client,
            progress=False,
            name="bench",
        )

    try:
        first = _times(run_once, 1)[0]
        times = _times(run_once, repeat)
    finally:
        if choice is not None:
            choice.client.close()
            choice.owned.close()
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(str(out) + "-dask", ignore_errors=True)
    kind = "in-process" if choice is None else choice.kind
    steady = float(np.median(times))
    return times, {"startup_s": t_start + max(first - steady, 0.0), "cold_s": t_start + first, "kind": kind}


def run_benchmarks(
    *,
    store: str | Path | None = None,
    footprint: str = DEFAULT_FOOTPRINT,
    device: str = "cpu",
    precision: str = "auto",
    max_workers: int | None = None,
    workdir: str | Path | None = None,
    progress: bool = True,
    ig_steps: int | None = None,
    repeat: int = DEFAULT_REPEAT,
) -> dict:
    """Run (a)-(e) and return one flat dict of figures (see the module docstring)."""
    import torch
    from torch.utils.data import DataLoader

    from survey_mass.attribution import attribute
    from survey_mass.footprint import parse_footprint
    from survey_mass.inference.predict import cnn_masses, predict_partition, richness_masses
    from survey_mass.models.bundle import load_bundle
    from survey_mass.models.mass_model import resolve_precision
    from survey_mass.pipelines import load_pipeline
    from survey_mass.resources import model_dir
    from survey_mass.store import open_store
    from survey_mass.training.train import resolve_device

    dev = resolve_device(device)
    ncpu = os.cpu_count() or 1
    max_workers = max_workers or (torch.cuda.device_count() if dev.type == "cuda" else ncpu) or 1
    own_tmp = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="survey-mass-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        store_path = Path(store) if store else bench_store(work, footprint, progress)
        st = open_store(store_path)
        prec = resolve_precision(precision, dev)
        bundle = load_bundle(model_dir()).to(dev).with_precision(prec)
        bundle.check_store(st)
        torch.set_num_threads(ncpu)
        parts = st.partitions
        # the same cutouts for every leg: the whole store
        images = np.concatenate([st.images(p) for p in parts])
        cols = [st.columns(p) for p in parts]
        z = np.concatenate([c["z"] for c in cols]).astype(float)
        lam = np.concatenate([c.get("richness", np.full(len(c["z"]), np.nan)) for c in cols]).astype(float)
        ids = np.concatenate([c["id"] for c in cols])
        n = images.shape[0]
        batch = 64

        # (a) the model alone, in memory
        def model_all():
            for s in range(0, n, batch):
                sl = slice(s, s + batch)
                cnn_masses(bundle, images[sl], z[sl], lam[sl], batch_size=batch, device=dev)
                richness_masses(bundle, images[sl], z[sl], device=dev)

        def cnn_all():
            cnn_masses(bundle, images, z, lam, batch_size=batch, device=dev)

        cnn_all()  # warm-up
        t_cnn = _times(cnn_all, repeat)
        t_model = _times(model_all, repeat)

        # (b) read + decode only, no-op model
        def io_all():
            total = 0.0
            for p in parts:
                imgs = st.images(p)
                st.columns(p)
                total += float(imgs[:, :, 0, 0].sum())  # the no-op model touches the data
            return total

        t_io = _times(io_all, repeat)

        # (c) the pipeline, 1..N workers
        pipeline, pipeline_times, startup = {}, {}, {}
        fp = parse_footprint(footprint)
        for w in range(1, max_workers + 1):
            pipeline_times[w], startup[w] = _pipeline_times(
                store_path, fp, work / f"catalog-w{w}", w, str(dev), prec, max(2, repeat - 1)
            )
            pipeline[w] = _rate(n, pipeline_times[w])[0]

        # (d) attribution
        att = load_pipeline("dr12").attribution
        steps = ig_steps or att.ig_steps
        k = min(16, n)
        t_attr = min(
            _times(
                lambda: attribute(
                    bundle,
                    images[:k],
                    z[:k],
                    steps=steps,
                    baselines=att.ig_baselines,
                    tolerance=att.ig_tolerance_dex,
                    max_steps=16 * steps,
                    pixel_scale=st.pixel_scale,
                    richness=lam[:k],
                ),
                1,
            )
        )

        # (e) the naive way: FITS per band per cutout -> astropy -> DataLoader -> the same model
        files = write_naive_fits(images, ids, work / "naive_fits")
        loader = DataLoader(NaiveFitsDataset(files, z), batch_size=batch, shuffle=False)

        def naive_all():
            for s, (xb, zb) in zip(range(0, n, batch), loader, strict=False):
                xb_np, zb_np = xb.numpy(), zb.numpy().astype(float)
                cnn_masses(bundle, xb_np, zb_np, lam[s : s + batch], batch_size=batch, device=dev)
                richness_masses(bundle, xb_np, zb_np, device=dev)

        def naive_read_only():
            for xb, _ in loader:
                float(xb[:, :, 0, 0].sum())

        t_naive = _times(naive_all, repeat)
        t_naive_io = _times(naive_read_only, repeat)
        # the naive way with the DataLoader's worker processes reading ahead (one per core): reported beside it
        loader = DataLoader(NaiveFitsDataset(files, z), batch_size=batch, shuffle=False, num_workers=ncpu)
        t_naive_workers = _times(naive_all, 1)

        # the pipeline's own per-partition compute, for the overhead breakdown
        def predict_only():
            for p, c in zip(parts, cols, strict=True):
                predict_partition(bundle, st.images(p), c, batch_size=batch, device=dev)

        t_pred = _times(predict_only, 1)
        best_w = max(pipeline, key=pipeline.get)
        rates = {
            "model_cutouts_per_s": _rate(n, t_model),
            "cnn_cutouts_per_s": _rate(n, t_cnn),
            "io_cutouts_per_s": _rate(n, t_io),
            "pipeline_cutouts_per_s": _rate(n, pipeline_times[best_w]),
            "naive_cutouts_per_s": _rate(n, t_naive),
            "naive_io_cutouts_per_s": _rate(n, t_naive_io),
            "naive_loader_workers_cutouts_per_s": _rate(n, t_naive_workers),
        }
        result = {
            "device": str(dev),
            "precision": prec,
            "cpu_count": ncpu,
            "torch_threads": torch.get_num_threads(),
            "cutouts": int(n),
            "partitions": len(parts),
            "store": str(store_path),
            "model_id": bundle.model_id,
            **{key: r[0] for key, r in rates.items()},
            "predict_partition_cutouts_per_s": n / t_pred[0],
            "pipeline_best_workers": best_w,
            "pipeline_cutouts_per_s_by_workers": {str(k): v for k, v in pipeline.items()},
            # the pipeline's one-off cost: starting the cluster and its workers' first partitions (imports,
            # model loading), and the rate of a run that pays it
            "pipeline_startup_s": startup[best_w]["startup_s"],
            "pipeline_cold_cutouts_per_s": n / startup[best_w]["cold_s"],
            "pipeline_cluster": startup[best_w]["kind"],
            "attribution_s_per_cutout": t_attr / k,
            "attribution_ig_steps": steps,
            "repeat": repeat,
            "spread": {key: list(r[1]) for key, r in rates.items()},
        }
        result["pipeline_over_model"] = result["pipeline_cutouts_per_s"] / result["model_cutouts_per_s"]
        result["pipeline_over_naive"] = result["pipeline_cutouts_per_s"] / result["naive_cutouts_per_s"]
        # the ratios' ranges from the legs' (min, max): how far the machine's noise could move them
        sp = result["spread"]
        result["pipeline_over_naive_range"] = [
            sp["pipeline_cutouts_per_s"][0] / sp["naive_cutouts_per_s"][1],
            sp["pipeline_cutouts_per_s"][1] / sp["naive_cutouts_per_s"][0],
        ]
        result["pipeline_over_model_range"] = [
            sp["pipeline_cutouts_per_s"][0] / sp["model_cutouts_per_s"][1],
            sp["pipeline_cutouts_per_s"][1] / sp["model_cutouts_per_s"][0],
        ]
        return result
    finally:
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)


def projection(result: dict, n_clusters: int) -> dict:
    """Hours to run ``n_clusters`` at the measured pipeline rate, with and without attribution on every row."""
    rate = result["pipeline_cutouts_per_s"]
    return {
        "clusters": n_clusters,
        "hours_masses": n_clusters / rate / 3600,
        "hours_with_attribution_all": (n_clusters / rate + n_clusters * result["attribution_s_per_cutout"])
        / 3600,
    }
