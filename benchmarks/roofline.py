"""The device path's roofline, measured on this CPU (#28): what one cutout costs on its way from the store to a GPU.

    python benchmarks/roofline.py --store STORE [--json benchmarks/results/roofline.json]

Per cutout (5 x 64 x 64 float32):

* bytes as stored (the partitions' image shards, zstd level 1 with checksums) and as decoded;
* the decode cost on one core: zarr reading and decompressing whole partitions (and reading a ``codec = none``
  copy of up to 20 of them, the store the ``--device-prep`` path wants), timed over repeated passes (each
  figure rests on at least ``--min-seconds`` of work), with the page cache warm (a survey's store is read once,
  but from a file system at GB/s, not the bottleneck here);
* zstd alone on one shard's bytes (what nvCOMP or a CPU codec has to undo), and a plain ``memcpy`` of the decoded
  bytes for scale;
* the CPU's own preparation on the default path (:func:`survey_mass.models.mass_model.prepare_images`: sky and
  normalisation), and on the ``--device-prep`` path (:func:`survey_mass.inference.predict.prepare_partition`
  without the sky: the quality bits and the copy of the rows with a mass);
* for scale, the device path's sky (:func:`survey_mass.models.sky.measure_sky_torch`) run on this CPU;
* bytes copied to the device per cutout (the prepared float32 cutout and its sky sigmas).

From those it writes how many cores feed a given rate (default 10^5 cutouts/s) and where the wall is.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _repeat(fn, min_seconds: float) -> tuple[float, int]:
    """Seconds per call of ``fn``, over as many calls as fill ``min_seconds`` (at least 2)."""
    fn()  # warm: caches, imports, allocations
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_seconds and n >= 2:
            return dt / n, n


def _codec_none_read(st, parts, min_seconds: float) -> float:
    """Seconds per cutout to read ``parts`` of ``st`` copied into a ``codec = none`` store (CRC32C only)."""
    import tempfile

    from survey_mass.store import create_store, open_store, write_partition

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "none.zarr"
        m = st.meta
        create_store(
            path,
            cutout_size=m.cutout_size,
            pixel_scale_arcsec=m.pixel_scale_arcsec,
            healpix_order=m.healpix_order,
            survey=m.survey,
            kind=m.kind,
            provenance=m.provenance,
            codec="none",
        )
        for p in parts:
            write_partition(path, p, st.images(p), st.columns(p))
        copy = open_store(path)
        n = sum(copy.n_cutouts(p) for p in parts)

        def read_all():
            for p in parts:
                copy.images(p)

        return _repeat(read_all, min_seconds / 2)[0] / n


def measure(store_path: str, *, min_seconds: float = 10.0, target: float = 1e5) -> dict:
    import torch
    from numcodecs import Zstd

    from survey_mass import paths
    from survey_mass.inference.predict import prepare_partition
    from survey_mass.models.bundle import load_bundle
    from survey_mass.models.mass_model import prepare_images
    from survey_mass.models.sky import measure_sky_torch
    from survey_mass.resources import model_dir
    from survey_mass.store import open_store

    st = open_store(store_path)
    parts = st.partitions
    n = sum(st.n_cutouts(p) for p in parts)
    stored = sum(
        f.stat().st_size
        for p in parts
        for f in (Path(st.path) / paths.partition_group_path(st.order, p) / "images").rglob("*")
        if f.is_file() and f.name != "zarr.json"
    )
    decoded = n * 5 * st.cutout_size**2 * 4

    def read_all():
        for p in parts:
            st.images(p)

    t_read, reps = _repeat(read_all, min_seconds)
    t_read_none = _codec_none_read(st, parts[:20], min_seconds)
    images = np.concatenate([st.images(p) for p in parts[:4]])
    sub = images[: min(len(images), 512)]
    t_prep, _ = _repeat(lambda: prepare_images(sub), min_seconds / 2)
    bundle = load_bundle(model_dir())
    cols = {k: v for k, v in st.columns(parts[0]).items()}
    p0 = st.images(parts[0])
    t_checks, _ = _repeat(
        lambda: prepare_partition(bundle, p0, cols, detect=False, sky=False), min_seconds / 4
    )
    few = torch.from_numpy(np.ascontiguousarray(sub[:64]))
    t_sky_torch, _ = _repeat(lambda: measure_sky_torch(few), min_seconds / 4)
    # zstd alone: one chunk's worth of bytes compressed as the store does, decompressed
    raw = np.ascontiguousarray(images[:8]).tobytes()
    codec = Zstd(level=1)
    blob = codec.encode(raw)
    t_zstd, _ = _repeat(lambda: codec.decode(blob), min_seconds / 4)
    buf = np.empty_like(images)
    t_copy, _ = _repeat(lambda: np.copyto(buf, images), min_seconds / 4)
    x, log_sigma, _ = prepare_images(sub[:1])
    h2d = x.element_size() * x.numel() + log_sigma.element_size() * log_sigma.numel()
    per = {
        "stored_bytes": stored / n,
        "decoded_bytes": decoded / n,
        "compression_ratio": decoded / stored,
        "read_decode_s": t_read / n,
        "read_codec_none_s": t_read_none,
        "zstd_decode_s": t_zstd / 8,
        "memcpy_s": t_copy / len(images),
        "prepare_s": t_prep / len(sub),
        "device_prep_checks_s": t_checks / len(p0),
        "sky_torch_on_cpu_s": t_sky_torch / len(few),
        "host_to_device_bytes": h2d,
    }
    cpu_s = per["read_decode_s"] + per["prepare_s"]
    fast_s = per["read_decode_s"] + per["device_prep_checks_s"]
    fastest_s = per["read_codec_none_s"] + per["device_prep_checks_s"]
    return {
        "store": str(store_path),
        "cutouts": n,
        "passes": reps,
        "per_cutout": per,
        "target_cutouts_per_s": target,
        "cores_for_target": {
            "read_decode": target * per["read_decode_s"],
            "zstd_only": target * per["zstd_decode_s"],
            "prepare": target * per["prepare_s"],
            "all_cpu_work": target * cpu_s,
            "device_prep_cpu_work": target * fast_s,
            "device_prep_codec_none_cpu_work": target * fastest_s,
        },
        "bandwidth_for_target_GB_s": {
            "stored": target * per["stored_bytes"] / 1e9,
            "host_to_device": target * h2d / 1e9,
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--min-seconds", type=float, default=10.0)
    ap.add_argument("--target", type=float, default=1e5, help="cutouts/s to size for")
    args = ap.parse_args()
    r = measure(args.store, min_seconds=args.min_seconds, target=args.target)
    text = json.dumps(r, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
