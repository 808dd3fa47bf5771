"""Run THERE (the device machine), after the wheels are installed: the GPU survey run, measured, in one short call.

    python3 benchmarks/gpu/run_kit.py --out "$OUT"                         # on a lent GPU (H100 or H200)
    python benchmarks/gpu/run_kit.py --out /tmp/kit --device cpu --budget-s 900 \\
        --box box:150,160,0,12 --dr12 box:140,170,-5,20                     # here, every step on a small sky

Each step is one command with its own cap (seconds); a step the remaining budget cannot cover is skipped and
recorded, never started. A step that runs past its cap is killed with its whole process group, and what it
printed is kept. ``OUT/results-<device>.json`` is rewritten after every step, so a call that is cut off still
leaves every figure it reached; agreements are computed only between steps that succeeded. Stores and
catalogues live in ``--work`` (not in ``$OUT``, which returns at most 8 files).

Steps (default caps; ``--budget-s`` 300 for the whole, which leaves a 360 s call room to return):

1. ``preflight`` (20): imports (dask_cuda, hats, zarr, astropy, survey_mass.cli), ``torch.cuda.is_available()``,
   the device's name, TF32 flags once a bundle is on the device; ``pip list`` and ``nvidia-smi -L`` to ``$OUT``.
   The kit stops at once if it fails.
2. ``mock_dr12`` (60): the ``dr12`` mock (26,338 real redMaPPer clusters) on every core, ``--codec none``.
3. ``mock_box`` (20): a box of about 1,800 clusters, for the attribution run and the CPU reference.
4. ``throughput`` (75): :func:`throughput` on the dr12 store: the bare model, and both paths end to end (the
   run's own read and device stages, every core reading): ``--device-prep`` (the sky on the device) and the
   default (the sky on the CPU); each figure over at least ``--min-s`` (10) seconds of repeated passes.
5. ``run_dr12_fast`` (45): ``survey-mass run --device-prep`` on every dr12 cluster (no attribution).
6. ``run_box_attribution`` (90): the box with every row's attribution map, on the device.
7. ``cpu_reference`` (60): the box on the CPU in exact fp32, no attribution.
8. ``precision`` (40): the CNN masses of up to 4,096 cutouts in fp32, bf16 and fp16 on the device (each warmed
   up before it is timed), against fp32; non-finite masses counted.
9. ``bench`` (90): ``survey-mass bench --device D`` on its default 2,464-cutout store (repeated passes).
10. ``run_dr12`` (60): ``survey-mass run`` on every dr12 cluster, the default path (no attribution).

The order is the acceptance's: what the issue asks of a GPU comes first, so a budget cut short loses the least.

``results-<device>.json`` holds every step's seconds and state, ``throughput`` (with
``end_to_end_cutouts_per_s``, ``end_to_end_over_bare_model``), the bench's rates, the runs' summaries,
``attribution_cutouts_per_s``, ``agreement_with_cpu`` (the device's masses in its precision against the CPU's
exact fp32: max and 99th-percentile |difference|, share within 0.005 dex, non-finite counts), ``precision``,
``tf32`` and what failed. CUDA's atomic adds make the last bits of attribution maps and of the batched
detection vary from run to run on a GPU: compare those with a tolerance, never bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: each step's cap (seconds): the issue's budget for one call of at most 360 s
CAPS = {
    "preflight": 20,
    "mock_dr12": 60,
    "mock_box": 20,
    "throughput": 75,
    "run_dr12_fast": 45,
    "run_box_attribution": 90,
    "cpu_reference": 60,
    "precision": 40,
    "bench": 90,
    "run_dr12": 60,
}
#: the attribution box (about 1,800 real redMaPPer clusters)
BOX = "box:140,180,0,30"

PREFLIGHT = """
import json, sys, time
t0 = time.perf_counter()
import dask_cuda, hats, zarr, astropy, survey_mass.cli  # noqa: F401 - the imports a run needs
import torch
from survey_mass.models.bundle import load_bundle, tf32_flags
from survey_mass.resources import model_dir
out = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
if sys.argv[1] == "cuda":
    if not torch.cuda.is_available():
        raise SystemExit("preflight: torch.cuda.is_available() is False")
    out["device_name"] = torch.cuda.get_device_name(0)
    load_bundle(model_dir()).to("cuda")
    out["tf32"] = tf32_flags()
out["seconds"] = round(time.perf_counter() - t0, 1)
print(json.dumps(out))
"""
PREFLIGHT_CPU = PREFLIGHT.replace("import dask_cuda, ", "import ")


def slug(name: str) -> str:
    """A file-name part for a device: 'NVIDIA H100 80GB HBM3' -> 'h100', 'NVIDIA H200' -> 'h200'."""
    m = re.search(r"\b([A-Z]\d{2,4}[A-Z]?)\b", name or "")
    return m.group(1).lower() if m else re.sub(r"[^a-z0-9]+", "-", (name or "cpu").lower()).strip("-")


class Kit:
    """The steps, their caps and budget, and the results file rewritten after each."""

    def __init__(self, out: Path, work: Path, device: str, budget_s: float, name: str | None):
        self.out, self.work, self.device = out, work, device
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.name = name
        self.log = out / "kit.log"
        self.results: dict = {"device": device, "budget_s": budget_s, "caps": CAPS, "steps": {}, "failed": []}
        self.log.write_text(f"survey-mass GPU kit: {device}, budget {budget_s:.0f} s\n")
        self.last_output: str | None = None

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def file(self) -> Path:
        return self.out / f"results-{self.name or 'unknown'}.json"

    def save(self) -> None:
        """Write the results as they stand (atomically: a cut-off call still leaves a whole file)."""
        self.results["wall_s"] = round(time.perf_counter() - self.t0, 1)
        f = self.file()
        tmp = f.with_name(f".{f.name}.tmp")
        tmp.write_text(json.dumps(self.results, indent=1, default=str))
        os.replace(tmp, f)

    def step(self, name: str, cmd: list[str], *, min_s: float | None = None) -> str | None:
        """Run one step under its cap, in its own process group; its stdout, or None when it failed, timed out or
        was skipped for want of budget. The results are saved whatever happens."""
        cap = CAPS[name]
        self.last_output = None
        limit = min(cap, self.left())
        if limit < (min_s if min_s is not None else 0.5 * cap):
            self.results["steps"][name] = {
                "state": "skipped",
                "reason": f"{self.left():.0f} s of budget left",
            }
            self.save()
            return None
        t0 = time.perf_counter()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=self.work,
            start_new_session=True,
        )
        try:
            raw_out, raw_err = proc.communicate(timeout=limit)
            state = "ok" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the step and every worker it started
            raw_out, raw_err = proc.communicate()
            state = "timed out"
        out = (raw_out or b"").decode(errors="replace")
        err = (raw_err or b"").decode(errors="replace")
        dt = time.perf_counter() - t0
        with self.log.open("a") as f:
            f.write(f"\n### {name} ({dt:.1f} s of {limit:.0f}, {state})\n$ {' '.join(cmd)}\n{out}\n{err}\n")
        self.last_output = out  # a step cut off at its cap may still have printed figures
        self.results["steps"][name] = {"seconds": round(dt, 1), "cap_s": round(limit), "state": state}
        if state != "ok":
            last = (err or out).strip().splitlines()
            self.results["failed"].append(f"{name}: {state}: {last[-1][:300] if last else '?'}")
        self.save()
        return out if state == "ok" else None


def masses(catalog: Path):
    from survey_mass.testing import read_catalog

    return read_catalog(catalog, ["id", "log10_m500"]).set_index("id")["log10_m500"]


def agreement(device_cat: Path, cpu_cat: Path) -> dict:
    """The device run's masses against the CPU's exact fp32 ones, on the rows both have."""
    import numpy as np

    a, b = masses(device_cat), masses(cpu_cat)
    both = a.index.intersection(b.index)
    x, y = a.loc[both].to_numpy(float), b.loc[both].to_numpy(float)
    finite = np.isfinite(x) & np.isfinite(y)
    d = np.abs(x - y)[finite]
    return {
        "rows": int(len(both)),
        "nonfinite_device": int((~np.isfinite(x) & np.isfinite(y)).sum()),
        "nonfinite_cpu": int((np.isfinite(x) & ~np.isfinite(y)).sum()),
        "max_abs_dex": float(d.max()) if d.size else None,
        "p99_abs_dex": float(np.quantile(d, 0.99)) if d.size else None,
        "within_0.005_dex": float(np.mean(d <= 0.005)) if d.size else None,
    }


def precision_check(store: Path, device: str, n: int = 4096) -> dict:
    """Largest |change| in the CNN masses (dex) and cutouts/s, fp32 against bf16 and fp16 autocast; each
    precision warmed up once before it is timed; non-finite masses counted."""
    import numpy as np
    import torch

    from survey_mass.inference.predict import cnn_masses
    from survey_mass.models.bundle import load_bundle, tf32_flags
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
    batch = 64 if device == "cpu" else 2048

    def run(dtype):
        bundle.model.backbone_autocast = bundle.pixels.backbone_autocast = dtype
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        m = cnn_masses(bundle, images, z, lam, batch_size=batch, device=device)["log10_m500"]
        if device == "cuda":
            torch.cuda.synchronize()
        return np.asarray(m, float), len(z) / (time.perf_counter() - t0)

    out: dict = {"cutouts": int(len(z)), "tf32": tf32_flags()}
    run(None)  # warm-up
    ref, rate = run(None)
    out["fp32"] = {"cutouts_per_s": rate, "nonfinite": int((~np.isfinite(ref)).sum())}
    for name, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        try:
            run(dt)  # warm-up: this dtype's kernels are chosen here, not in the timed pass
            m, r = run(dt)
            ok = np.isfinite(ref) & np.isfinite(m)
            d = np.abs(m - ref)[ok]
            out[name] = {
                "max_abs_dex": float(d.max()) if d.size else None,
                "p99_abs_dex": float(np.quantile(d, 0.99)) if d.size else None,
                "nonfinite": int((~np.isfinite(m) & np.isfinite(ref)).sum()),
                "cutouts_per_s": r,
                "within_0.005_dex": bool(d.size and d.max() <= 0.005),
            }
        except Exception as exc:  # noqa: BLE001 - a dtype the device lacks is a result, not a failure
            out[name] = {"error": str(exc).splitlines()[0][:200]}
    return out


def _emit(figures: dict) -> None:
    """One JSON line of the figures so far: a step cut off at its cap still leaves what it measured."""
    print(json.dumps(figures), flush=True)


def last_json_line(text: str | None) -> dict | None:
    """The last line of ``text`` that is a whole JSON object (a killed step's last line may be cut)."""
    for line in reversed((text or "").strip().splitlines()):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            return doc
    return None


def throughput(store: Path, device: str, min_s: float = 10.0, threads: int | None = None, emit=_emit) -> dict:
    """Cutouts/s of the bare model and of both paths end to end, each timed over repeated passes of the store
    until at least ``min_s`` seconds of work (at 10^5/s the 26,338 dr12 cutouts take a quarter of a second).

    * ``bare_model``: the backbone and heads on cutouts already normalised and on the device, batches of 2,048
      (:meth:`~survey_mass.models.mass_model.MassModel.raw_inputs_prepared` and ``predict_raw``).
    * ``device_prep`` and ``default``: the run's own stages, ``read_stage`` (read, decode, quality bits; the
      sky and normalisation too on the default path) on ``threads`` CPU threads feeding ``device_stage`` (the
      masses of every estimator) in this thread, no attribution, no writes.

    The two paths' sky sigmas and masses are compared on the last pass. ``emit`` gets the figures after each
    leg (the kit reads the last complete line, so a leg cut off at the cap keeps the ones before it)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch

    from survey_mass.inference.run import RunOptions, _bundle, device_stage, read_stage
    from survey_mass.models.mass_model import DEVICE_PREP_BATCH, prepare_images_on_device, resolve_precision
    from survey_mass.resources import model_dir
    from survey_mass.store import open_store

    threads = threads or os.cpu_count() or 1
    st = open_store(store)
    parts = sorted(st.partitions, key=st.n_cutouts, reverse=True)
    n_store = sum(st.n_cutouts(p) for p in parts)
    precision = resolve_precision("auto", device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out: dict = {
        "store_cutouts": n_store,
        "store_codec": st.meta.codec or "zstd",  # both legs read this store (the kit's dr12 is codec none)
        "precision": precision,
        "threads": threads,
        "min_s": min_s,
    }

    def timed(one_pass) -> dict:
        one_pass()  # warm-up: kernels chosen, caches filled, outside the timing
        sync()
        t0, n, passes = time.perf_counter(), 0, 0
        while passes == 0 or time.perf_counter() - t0 < min_s:
            n += one_pass()
            passes += 1
        sync()
        dt = time.perf_counter() - t0
        return {"cutouts_per_s": n / dt, "seconds": round(dt, 2), "passes": passes, "cutouts": n}

    bundle = _bundle(str(model_dir()), device, precision)
    images = np.concatenate([st.images(p) for p in parts])
    z = np.concatenate([np.asarray(st.columns(p)["z"], float) for p in parts])
    on_device = prepare_images_on_device(images, device)[:2]  # normalised cutouts and log sky sigma
    del images
    pix = bundle.pixels

    def bare() -> int:
        raw = pix.raw_inputs_prepared(*on_device, z, batch_size=DEVICE_PREP_BATCH, device=device)
        pix.predict_raw(raw, z, device=device)
        return len(z)

    out["bare_model"] = timed(bare)
    emit(out)
    on_device = None  # the device's memory back for the two paths
    last: dict = {}
    for name, fast in (("device_prep", True), ("default", False)):
        opts = RunOptions(device=device, precision=precision, device_prep=fast, attribution="none")
        read_stage(str(store), str(model_dir()), parts[-1], "", opts)  # the workers' caches, filled once

        def one_pass(opts=opts, name=name) -> int:
            with ThreadPoolExecutor(threads) as pool:
                jobs = pool.map(lambda p: read_stage(str(store), str(model_dir()), p, "", opts), parts)
                done = [device_stage(j) for j in jobs]
            last[name] = {
                k: np.concatenate([j.predictions[k] for j in done]) for k in ("log10_m500", "sky_sigma_r")
            }
            return sum(len(j.predictions["log10_m500"]) for j in done)

        out[name] = timed(one_pass)
        out[name]["over_bare_model"] = out[name]["cutouts_per_s"] / out["bare_model"]["cutouts_per_s"]
        emit(out)
    a, b = last["device_prep"]["log10_m500"], last["default"]["log10_m500"]
    both = np.isfinite(a) & np.isfinite(b)
    out["device_prep_vs_default_max_abs_dex"] = float(np.abs(a - b)[both].max()) if both.any() else None
    out["device_prep_vs_default_same_nan"] = bool((np.isfinite(a) == np.isfinite(b)).all())
    sa, sb = last["device_prep"]["sky_sigma_r"], last["default"]["sky_sigma_r"]
    ok = np.isfinite(sa) & np.isfinite(sb) & (sb > 0)
    out["device_prep_vs_default_sky_max_rel"] = float(np.abs(sa / sb - 1)[ok].max()) if ok.any() else None
    emit(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="where results-<device>.json, kit.log, pip and GPU lists go")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="cores for the mocks and the CPU"
    )
    ap.add_argument("--name", help="results-NAME.json (default: from the device's name, e.g. h100, h200)")
    ap.add_argument("--work", default="/tmp/survey-mass-kit", help="stores and catalogues (not $OUT)")
    ap.add_argument("--budget-s", type=float, default=300.0, help="no step starts past this many seconds")
    ap.add_argument("--dr12", default="dr12", help="the footprint of the masses-only run")
    ap.add_argument("--box", default=BOX, help="the footprint of the attribution run and the CPU reference")
    ap.add_argument(
        "--bench-footprint",
        help="the bench's store footprint (default: its own, 2,464 cutouts; smaller on a CPU)",
    )
    ap.add_argument(
        "--min-s", type=float, default=10.0, help="seconds of work under each throughput figure (default 10)"
    )
    ap.add_argument("--cap", action="append", default=[], metavar="STEP=S", help="another cap for a step")
    args = ap.parse_args()
    for c in args.cap:
        k, _, v = c.partition("=")
        CAPS[k] = float(v)

    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    kit = Kit(out, work, args.device, args.budget_s, args.name)
    py = sys.executable
    cli = [py, "-m", "survey_mass.cli"]
    common = ["--no-progress"]

    # 1. preflight: everything the call needs answers within seconds, or the kit stops
    for name, cmd in (("pip_list.txt", [py, "-m", "pip", "list"]), ("nvidia_smi.txt", ["nvidia-smi", "-L"])):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
            (out / name).write_text(r.stdout + r.stderr)
        except (OSError, subprocess.TimeoutExpired) as exc:
            (out / name).write_text(f"{exc}\n")
    code = PREFLIGHT if args.device == "cuda" else PREFLIGHT_CPU
    pre = kit.step("preflight", [py, "-c", code, args.device], min_s=1)
    if pre is None:
        kit.name = kit.name or ("cpu" if args.device == "cpu" else "unknown")
        kit.save()
        print(json.dumps({"failed": kit.results["failed"]}))
        return 1
    info = json.loads(pre.strip().splitlines()[-1])
    kit.results.update(preflight=info, tf32=info.get("tf32"), gpu=info.get("device_name"))
    old = kit.file()
    kit.name = kit.name or (slug(info["device_name"]) if args.device == "cuda" else "cpu")
    if old != kit.file() and old.exists():
        old.unlink()
    kit.save()

    dr12_store, box_store = work / "dr12.zarr", work / "box.zarr"
    dev_dr12, dev_box, cpu_box = work / "dev_dr12", work / "dev_box", work / "cpu_box"
    dev_dr12_fast = work / "dev_dr12_fast"
    kit.step(
        "mock_dr12",
        [
            *cli,
            "mock",
            "--footprint",
            args.dr12,
            "--codec",
            "none",  # the store the device path wants: no decompression on the CPU
            "--out",
            str(dr12_store),
            "--workers",
            str(args.workers),
            *common,
        ],
    )
    kit.step(
        "mock_box",
        [
            *cli,
            "mock",
            "--footprint",
            args.box,
            "--out",
            str(box_store),
            "--workers",
            str(args.workers),
            *common,
        ],
    )
    run = [*cli, "run", "--overwrite", "--margin-arcsec", "0", *common]
    if dr12_store.exists():
        tp = kit.step(
            "throughput",
            [
                py,
                "-c",
                "import json, sys; sys.path.insert(0, sys.argv[1]); "
                "import run_kit; run_kit.throughput("
                "__import__('pathlib').Path(sys.argv[2]), sys.argv[3], float(sys.argv[4]))",
                str(Path(__file__).parent),
                str(dr12_store),
                args.device,
                str(args.min_s),
            ],
        )
        t = last_json_line(tp if tp is not None else kit.last_output)  # what it reached, even if cut off
        if t:
            kit.results["throughput"] = t
            kit.results["bare_model_cutouts_per_s"] = t.get("bare_model", {}).get("cutouts_per_s")
            kit.results["end_to_end_cutouts_per_s"] = t.get("device_prep", {}).get("cutouts_per_s")
            kit.results["end_to_end_over_bare_model"] = t.get("device_prep", {}).get("over_bare_model")
            kit.results["default_path_cutouts_per_s"] = t.get("default", {}).get("cutouts_per_s")
            kit.save()
    if dr12_store.exists() and kit.step(
        "run_dr12_fast",
        [
            *run,
            "--store",
            str(dr12_store),
            "--footprint",
            args.dr12,
            "--out",
            str(dev_dr12_fast),
            "--device",
            args.device,
            "--device-prep",
            "--attribution",
            "none",
        ],
    ):
        s = json.loads((dev_dr12_fast / "run.json").read_text())
        kit.results.update(run_dr12_fast=s, run_dr12_fast_cutouts_per_s=s["cutouts_per_s"])
        kit.save()
    if box_store.exists() and kit.step(
        "run_box_attribution",
        [
            *run,
            "--store",
            str(box_store),
            "--footprint",
            args.box,
            "--out",
            str(dev_box),
            "--device",
            args.device,
            "--attribution",
            "all",
        ],
    ):
        s = json.loads((dev_box / "run.json").read_text())
        kit.results["run_box_attribution"] = s
        kit.results["attribution_cutouts_per_s"] = s["attributed"] / s["wall_s"] if s["wall_s"] else None
        kit.save()
    cpu_ok = box_store.exists() and kit.step(
        "cpu_reference",
        [
            *run,
            "--store",
            str(box_store),
            "--footprint",
            args.box,
            "--out",
            str(cpu_box),
            "--device",
            "cpu",
            "--attribution",
            "none",
            "--precision",
            "fp32",
            "--workers",
            str(min(args.workers, os.cpu_count() or 1)),
        ],
    )
    if cpu_ok and kit.results["steps"].get("run_box_attribution", {}).get("state") == "ok":
        kit.results["agreement_with_cpu"] = agreement(dev_box, cpu_box)
        kit.save()
    if box_store.exists() and CAPS["precision"] <= kit.left():
        pc = kit.step(
            "precision",
            [
                py,
                "-c",
                "import json, sys; sys.path.insert(0, sys.argv[1]); "
                "import run_kit; print(json.dumps(run_kit.precision_check("
                "__import__('pathlib').Path(sys.argv[2]), sys.argv[3])))",
                str(Path(__file__).parent),
                str(box_store),
                args.device,
            ],
        )
        if pc:
            kit.results["precision"] = json.loads(pc.strip().splitlines()[-1])
            kit.save()
    else:
        kit.results["steps"].setdefault("precision", {"state": "skipped", "reason": "no store or no budget"})
        kit.save()
    bench = kit.step(
        "bench",
        [
            *cli,
            "bench",
            "--json",
            "--device",
            args.device,
            "--repeat",
            "2",
            "--workdir",
            str(work / "bench"),
            *(["--footprint", args.bench_footprint] if args.bench_footprint else []),
        ],
    )
    if bench:
        b = json.loads(bench.strip().splitlines()[-1])
        kit.results["bench"] = b
        for k in (
            "pipeline_cutouts_per_s",
            "model_cutouts_per_s",
            "io_cutouts_per_s",
            "cnn_cutouts_per_s",
            "naive_cutouts_per_s",
            "pipeline_over_model",
            "pipeline_over_naive",
        ):
            kit.results[k] = b.get(k)
        kit.save()
    if dr12_store.exists() and kit.step(
        "run_dr12",
        [
            *run,
            "--store",
            str(dr12_store),
            "--footprint",
            args.dr12,
            "--out",
            str(dev_dr12),
            "--device",
            args.device,
            "--attribution",
            "none",
        ],
    ):
        s = json.loads((dev_dr12 / "run.json").read_text())
        kit.results.update(
            run_dr12=s, run_dr12_cutouts_per_s=s["cutouts_per_s"], run_precision=s["precision"]
        )
        kit.save()
    print(
        json.dumps(
            {
                k: kit.results.get(k)
                for k in (
                    "gpu",
                    "end_to_end_cutouts_per_s",
                    "end_to_end_over_bare_model",
                    "bare_model_cutouts_per_s",
                    "pipeline_cutouts_per_s",
                    "model_cutouts_per_s",
                    "run_dr12_cutouts_per_s",
                    "attribution_cutouts_per_s",
                    "agreement_with_cpu",
                    "failed",
                    "wall_s",
                )
            }
        )
    )
    return 0 if not kit.results["failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
