"""Ingest throughput and memory: SDSS-sized frames (2048 x 1489, ``.fits.bz2``) -> a cutout store.

    python benchmarks/ingest_throughput.py --fields 2 --out benchmarks/results   # N and 4N fields

For N and 4N fields along one stripe (5 bands each, SDSS's 128 shared rows), with a candidate every 2' along the
stripe, it times ``survey-mass ingest`` in a fresh process on 1 and 2 workers and records each run's peak
resident memory (the process and its Dask workers: ``/usr/bin/time``'s maximum for the in-process run, the
workers' sampled RSS for 2). It then projects the frames/s to all of DR12: 938,046 fields x 5 bands on N cores.
Writes ``ingest_throughput.json`` and ``.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DR12_FIELDS = 938_046
NX, NY, SHARED_ROWS = 2048, 1489, 128


def make_survey(folder: Path, fields: int, seed: int = 0) -> tuple[Path, Path, int]:
    """``fields`` SDSS-sized fields x 5 bands as .fits.bz2, and a candidate catalogue on them."""
    import pandas as pd

    from survey_mass.photometry import SDSS_PIXEL_SCALE
    from survey_mass.testing import write_fake_sdss_frames

    frames = folder / "frames"
    ra0, dec0 = 150.0, 2.0  # inside one partition (order 2): no frame is shared between partitions
    raw = folder / "raw"
    write_fake_sdss_frames(
        raw, ra0=ra0, dec0=dec0, n_fields=fields, nx=NX, ny=NY, overlap=SHARED_ROWS, rotation_deg=0, seed=seed
    )
    frames.mkdir(parents=True, exist_ok=True)
    for p in sorted(raw.glob("*.fits")):
        (frames / (p.name + ".bz2")).write_bytes(bz2.compress(p.read_bytes(), 9))
        p.unlink()
    step = (NY - SHARED_ROWS) * SDSS_PIXEL_SCALE / 3600.0
    half = fields * step / 2
    decs = np.arange(dec0 - half + 0.03, dec0 + half - 0.03, 2 / 60)
    ras = ra0 + np.array([-0.03, 0.03])
    rows = [(k + 1, r, d, 0.2) for k, (r, d) in enumerate((r, d) for d in decs for r in ras)]
    cands = folder / "candidates.csv"
    pd.DataFrame(rows, columns=["id", "ra", "dec", "z"]).to_csv(cands, index=False)
    return frames, cands, len(rows)


def timed_ingest(frames: Path, cands: Path, out: Path, workers: int) -> dict:
    """One ``survey-mass ingest`` in a fresh process: wall seconds and peak RSS (MB) of it and its workers."""
    import psutil

    cmd = [
        "/usr/bin/time",
        "-f",
        "%M",
        sys.executable,
        "-m",
        "survey_mass.cli",
        "ingest",
        "--frames",
        str(frames),
    ]
    cmd += ["--candidates", str(cands), "--out", str(out), "--workers", str(workers), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_children = 0.0
    parent = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            kids = parent.children(recursive=True)
            rss = sum(k.memory_info().rss for k in kids if "python" in k.name().lower())
            peak_children = max(peak_children, rss / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.1)
    out_s, err_s = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = [ln for ln in err_s.strip().splitlines() if ln.strip()][-4:-1] or ["?"]
        return {
            "wall_s": round(wall, 2),
            "peak_rss_mb": None,
            "failed": " | ".join(tail),
            "stdout": out_s.strip(),
        }
    peak_main = float(err_s.strip().splitlines()[-1]) / 1024  # /usr/bin/time %M: KB of the largest process
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(max(peak_main, peak_children), 1),
        "stdout": out_s.strip(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=2, help="N: the small survey's fields (the large has 4N)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--workdir", help="keep frames and stores here (default: a temporary folder)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="survey-mass-ingest-bench-"))
    result: dict = {"cpu_count": os.cpu_count(), "frame_shape": [NY, NX], "runs": []}
    for fields in (args.fields, 4 * args.fields):
        folder = work / f"fields-{fields}"
        t0 = time.perf_counter()
        frames, cands, n_cands = make_survey(folder, fields)
        made = time.perf_counter() - t0
        mb = sum(p.stat().st_size for p in frames.iterdir()) / 2**20
        for workers in (1, 2):
            r = timed_ingest(frames, cands, folder / f"store-w{workers}.zarr", workers)
            n_frames = 5 * fields
            result["runs"].append(
                {
                    "fields": fields,
                    "frames": n_frames,
                    "frames_mb_bz2": round(mb, 1),
                    "candidates": n_cands,
                    "workers": workers,
                    **{k: v for k, v in r.items() if k != "stdout"},
                    "frames_per_s": None if "failed" in r else round(n_frames / r["wall_s"], 2),
                    "cutouts_per_s": None if "failed" in r else round(n_cands / r["wall_s"], 2),
                    "made_s": round(made, 1),
                    "summary": r["stdout"],
                }
            )
            print(json.dumps(result["runs"][-1]), flush=True)
    big = [r for r in result["runs"] if r["fields"] == 4 * args.fields and r["frames_per_s"]]
    best = max(big, key=lambda r: r["frames_per_s"])
    per_core = best["frames_per_s"] / best["workers"]
    result["dr12_projection"] = {
        "frames": DR12_FIELDS * 5,
        "frames_per_s_per_core": round(per_core, 3),
        **{f"hours_on_{n}_cores": round(DR12_FIELDS * 5 / (per_core * n) / 3600, 1) for n in (16, 128, 1024)},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ingest_throughput.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"Ingest of SDSS-sized frames ({NX} x {NY}, .fits.bz2, fake sky and point sources), {os.cpu_count()} cores.",
        "",
        "| fields | frames | MB (bz2) | candidates | workers | wall s | frames/s | cutouts/s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['fields']} | {r['frames']} | {r['frames_mb_bz2']} | {r['candidates']} | {r['workers']} | "
            f"{r['wall_s']} | {r['frames_per_s']} | {r['cutouts_per_s']} | {r['peak_rss_mb']} |"
        )
    p = result["dr12_projection"]
    lines += [
        "",
        f"All of DR12 ({p['frames']:,} frames) at {p['frames_per_s_per_core']} frames/s per core: "
        f"{p['hours_on_16_cores']} h on 16 cores, {p['hours_on_128_cores']} h on 128, "
        f"{p['hours_on_1024_cores']} h on 1,024.",
    ]
    (out / "ingest_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
