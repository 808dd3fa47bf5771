"""Run THERE (the device machine), after the wheels are installed: the GPU survey run, measured.

    python3 benchmarks/gpu/run_kit.py --out "$OUT"                       # on the H200 (defaults: cuda, dr12)
    python benchmarks/gpu/run_kit.py --out /tmp/kit --device cpu \\
        --footprint box:150,160,0,12 --workers 2                           # here, end to end on a small box

Steps, each timed and logged to ``OUT/kit.log`` (a failing step is recorded and the kit goes on):

1. ``survey-mass mock`` of the footprint (the real redMaPPer clusters) on every core;
2. ``survey-mass bench --device D --store STORE --json`` (every leg; LocalCUDACluster for the pipeline on a GPU);
3. ``survey-mass run --store STORE --attribution all --device D``: masses and every row's map;
4. the same run on the CPU with ``--attribution none --precision fp32``, for the catalogues' agreement: the
   device run's masses (in its default precision, bf16 on an H200) against the exact fp32 reference;
5. reduced precision: the CNN masses of up to 4,096 cutouts in fp32 and under bf16 and fp16 autocast, with the
   largest change in mass (the issue allows autocast only where it moves no mass by more than 0.005 dex).

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


def autocast_check(store: Path, device: str, n: int = 4096) -> dict:
    """Largest |change| in the CNN masses (dex) and cutouts/s, fp32 against bf16 and fp16 autocast."""
    import numpy as np
    import torch

    from survey_mass.inference.predict import cnn_masses
    from survey_mass.models.bundle import load_bundle
    from survey_mass.resources import model_dir
    from survey_mass.store import open_store

    st = open_store(store)
    imgs, zs, lams = [], [], []
    for p in st.partitions:
        c = st.columns(p)
        imgs.append(st.images(p))
        zs.append(np.asarray(c["z"], float))
        lams.append(np.asarray(c["richness"], float))
        if sum(len(z) for z in zs) >= n:
            break
    images, z, lam = (np.concatenate(a)[:n] for a in (imgs, zs, lams))
    bundle = load_bundle(model_dir()).to(device)
    batch = 64 if device == "cpu" else 1024

    def masses(dtype=None):
        # the backbone alone in reduced precision (MassModel.backbone_autocast); the heads stay fp32
        bundle.model.backbone_autocast = bundle.pixels.backbone_autocast = dtype
        t0 = time.perf_counter()
        m = cnn_masses(bundle, images, z, lam, batch_size=batch, device=device)["log10_m500"]
        return np.asarray(m, float), len(z) / (time.perf_counter() - t0)

    masses()  # warm-up: the first pass pays for allocations and kernel choices
    ref, rate = masses()
    out = {"cutouts": int(len(z)), "fp32_cutouts_per_s": rate}
    for name, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        try:
            m, r = masses(dt)
            d = np.abs(m - ref)[np.isfinite(ref)]
            out[name] = {
                "max_abs_dex": float(d.max()),
                "p99_abs_dex": float(np.quantile(d, 0.99)),
                "cutouts_per_s": r,
                "usable": bool(d.max() <= 0.005),
            }
        except Exception as exc:  # noqa: BLE001 - a dtype the device lacks is a result, not a failure
            out[name] = {"error": str(exc).splitlines()[0][:200]}
    return out


def _masses(catalog: Path):
    from survey_mass.testing import read_catalog

    return read_catalog(catalog, ["id", "log10_m500"]).set_index("id")["log10_m500"]


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
        results["run_precision"] = s.get("precision")
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
                "--precision",
                "fp32",
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
    if store.exists() and left() > 20:
        t0 = time.perf_counter()
        try:
            results["autocast"] = autocast_check(store, args.device)
            results["steps"]["autocast"] = {"seconds": round(time.perf_counter() - t0, 1), "ok": True}
        except Exception as exc:  # noqa: BLE001 - recorded, the kit goes on
            results["failed"].append(f"autocast: {exc}")
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
