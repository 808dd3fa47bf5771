"""Run THERE (the device machine), after the wheels are installed: the GPU survey run, measured.

    python3 benchmarks/gpu/run_kit.py --out "$OUT"                       # on the H200 (defaults: cuda, dr12)
    python benchmarks/gpu/run_kit.py --out /tmp/kit --device cpu \\
        --footprint box:150,160,0,12 --workers 2                           # here, end to end on a small box

Steps, each timed and logged to ``OUT/kit.log`` (a failing step is recorded and the kit goes on):

1. ``survey-mass mock`` of the footprint (the real redMaPPer clusters) on every core;
2. ``survey-mass bench --device D --store STORE --json`` (every leg; LocalCUDACluster for the pipeline on a GPU);
3. ``survey-mass run --store STORE --attribution all --device D``: masses and every row's map;
4. the same run on the CPU with ``--attribution none``, for the catalogues' agreement.

Writes ``OUT/results-<name>.json`` (``--name``, default h200): ``pipeline_cutouts_per_s``,
``model_cutouts_per_s``, ``io_cutouts_per_s``, ``attribution_cutouts_per_s``, the run's own rate, the
agreement of the masses with the CPU run (max and 99th percentile |difference|, dex), the bench JSON, and what
failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _step(name: str, cmd: list[str], log: Path, results: dict, timeout: float) -> str | None:
    """Run one CLI step, append its output to the log; return its stdout (None when it failed)."""
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=log.parent)
        ok, out, err = p.returncode == 0, p.stdout, p.stderr
    except subprocess.TimeoutExpired as exc:
        ok, out, err = False, exc.stdout or "", f"timed out after {timeout:.0f} s"
    dt = time.perf_counter() - t0
    with log.open("a") as f:
        f.write(f"\n### {name} ({dt:.1f} s, {'ok' if ok else 'FAILED'})\n$ {' '.join(cmd)}\n{out}\n{err}\n")
    results["steps"][name] = {"seconds": round(dt, 1), "ok": ok}
    if not ok:
        results["failed"].append(
            f"{name}: {(err or out).strip().splitlines()[-1] if (err or out).strip() else '?'}"
        )
    return out if ok else None


def _masses(catalog: Path):
    import pandas as pd

    return pd.read_parquet(catalog / "dataset", columns=["id", "log10_m500"]).set_index("id")["log10_m500"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="where results-<name>.json and kit.log go ($OUT there)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--footprint", default="dr12")
    ap.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="cores for the mock and the CPU run"
    )
    ap.add_argument("--name", default="h200")
    ap.add_argument("--work", default="/tmp/survey-mass-kit", help="scratch for the store and catalogues")
    ap.add_argument(
        "--budget-s", type=float, default=470.0, help="stop starting steps after this many seconds"
    )
    args = ap.parse_args()

    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log = out / "kit.log"
    log.write_text(f"survey-mass GPU kit: {args.device}, {args.footprint}, {args.workers} workers\n")
    cli = [sys.executable, "-m", "survey_mass.cli"]
    store, gpu_cat, cpu_cat = work / "store.zarr", work / "masses_dev", work / "masses_cpu"
    results: dict = {"device": args.device, "footprint": args.footprint, "steps": {}, "failed": []}
    t_start = time.perf_counter()

    def left() -> float:
        return args.budget_s - (time.perf_counter() - t_start)

    try:
        import torch

        results["torch"] = torch.__version__
        results["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception as exc:  # noqa: BLE001 - recorded, not fatal
        results["failed"].append(f"torch: {exc}")
    common = ["--no-progress"]
    _step(
        "mock",
        [
            *cli,
            "mock",
            "--footprint",
            args.footprint,
            "--out",
            str(store),
            "--workers",
            str(args.workers),
            *common,
        ],
        log,
        results,
        left(),
    )
    bench = _step(
        "bench",
        [
            *cli,
            "bench",
            "--json",
            "--device",
            args.device,
            "--store",
            str(store),
            "--repeat",
            "2",
            "--workdir",
            str(work / "bench"),
        ],
        log,
        results,
        max(left(), 1),
    )
    if bench:
        b = json.loads(bench.strip().splitlines()[-1])
        results["bench"] = b
        for k in (
            "pipeline_cutouts_per_s",
            "model_cutouts_per_s",
            "io_cutouts_per_s",
            "cnn_cutouts_per_s",
            "naive_cutouts_per_s",
            "pipeline_over_model",
            "pipeline_over_naive",
        ):
            results[k] = b.get(k)
    run = [*cli, "run", "--store", str(store), "--footprint", args.footprint, "--overwrite", *common]
    if (
        _step(
            "run_attribution_all",
            [*run, "--out", str(gpu_cat), "--device", args.device, "--attribution", "all"],
            log,
            results,
            max(left(), 1),
        )
        is not None
    ):
        s = json.loads((gpu_cat / "run.json").read_text())
        results["run"] = s
        results["run_cutouts_per_s"] = s["cutouts_per_s"]
        results["attribution_cutouts_per_s"] = s["rows"] / s["wall_s"] if s["wall_s"] else None
    if (
        _step(
            "run_cpu_reference",
            [
                *run,
                "--out",
                str(cpu_cat),
                "--device",
                "cpu",
                "--attribution",
                "none",
                "--workers",
                str(args.workers),
            ],
            log,
            results,
            max(left(), 1),
        )
        is not None
        and gpu_cat.exists()
    ):
        import numpy as np

        a, b = _masses(gpu_cat), _masses(cpu_cat)
        d = (a - b.reindex(a.index)).abs().dropna().to_numpy()
        results["agreement_with_cpu"] = {
            "rows": int(d.size),
            "max_abs_dex": float(d.max()) if d.size else None,
            "p99_abs_dex": float(np.quantile(d, 0.99)) if d.size else None,
            "within_0.005_dex": float(np.mean(d <= 0.005)) if d.size else None,
        }
    results["wall_s"] = round(time.perf_counter() - t_start, 1)
    f = out / f"results-{args.name}.json"
    f.write_text(json.dumps(results, indent=1))
    print(
        json.dumps(
            {
                k: results.get(k)
                for k in (
                    "pipeline_cutouts_per_s",
                    "model_cutouts_per_s",
                    "attribution_cutouts_per_s",
                    "agreement_with_cpu",
                    "failed",
                    "wall_s",
                )
            }
        )
    )
    return 0 if not results["failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
