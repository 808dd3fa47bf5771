"""Run HERE, before a device call: gather the wheels the GPU run needs and the H200 image lacks, into ``.whl/``.

    python benchmarks/gpu/prepare.py            # downloads wheels.txt's pins into .whl/ (git-ignored), checks the
                                                # 64 MiB, prints carry
    python benchmarks/gpu/prepare.py --resolve  # resolves the list again and rewrites wheels.txt

The device machine reaches no registry, so packages travel as wheels (the device tool's README, "Notes"). Its
image already holds torch, numpy, scipy, pandas, pyarrow, matplotlib, cupy and many more (:data:`DEVICE_HAS`, from
the tool's KINDS.md, read 2026-11-17); what the run imports beyond them is resolved here from each wheel's own
``Requires-Dist`` (markers evaluated for CPython 3.12 on Linux), at the versions this venv runs where it has them.
Left out on purpose: what the GPU run never imports (duckdb, lsdb: the ``query`` command; captum: the tests).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / ".whl"
#: the pinned list (name==version, one a line) the kit carries; written by --resolve, read otherwise
LOCK = Path(__file__).resolve().with_name("wheels.txt")
#: what one device call may carry: the working tree and the wheels together
CALL_LIMIT = 64 * 2**20
WHEEL_BUDGET = 50 * 10**6  # of the 64 MiB a call carries; the working tree takes about 13
#: the H200 image's Python packages (KINDS.md, "Python packages already there")
DEVICE_HAS = set(
    """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
    charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
    cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
    flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
    huggingface-hub humanize hypothesis idna imageio interface-meta iniconfig jax jax-cuda13-pjrt jax-cuda13-plugin
    jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
    llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
    multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
    nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
    nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
    nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
    opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
    patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
    py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
    pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
    safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
    setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
    tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
    torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
    typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
    zipp""".split()
)
#: what the GPU run imports that the image lacks (the project's dependencies and the gpu extra's dask-cuda)
ROOTS = (
    "dask",
    "distributed",
    "dask-cuda",
    "zarr",
    "numcodecs",
    "astropy",
    "healpy",
    "hats",
    "mocpy",
    "sep",
    "colossus",
    "pydantic",
    "jsonschema",
    # local clusters speak TLS with temporary credentials (distributed's Security.temporary needs it)
    "cryptography",
)
#: never carried: not imported by `bench` or `run` (duckdb, lsdb: `query`; captum: the tests; bokeh and
#: xyzservices: the Dask dashboard, which runs without them), or already in the image under another name
SKIP = {"duckdb", "lsdb", "captum", "torch", "cuda-python", "pynvml", "bokeh", "xyzservices"}
#: versions fixed for the device: dask-cuda 26.10 (through rapids-dask-dependency) wants dask and distributed
#: 2026.7.1, not this venv's
PINS = {"dask": "2026.7.1", "distributed": "2026.7.1"}
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "extra": "",
}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _have(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def download(name: str, version: str | None = None) -> Path:
    """One wheel for CPython 3.12 manylinux x86-64: ``version``, else a pin, else this venv's version."""
    v = version or PINS.get(norm(name)) or _have(name)
    spec = f"{name}=={v}" if v else name
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        "-d",
        str(WHEELS),
    ]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    before = set(WHEELS.glob("*.whl"))
    subprocess.run([*cmd, spec], check=True)
    new = set(WHEELS.glob("*.whl")) - before
    mine = [w for w in (new or WHEELS.glob("*.whl")) if norm(w.name.split("-")[0]) == norm(name)]
    if not mine:
        raise SystemExit(f"prepare: no wheel for {spec} in {WHEELS}")
    return mine[0]


def requirements(wheel: Path) -> list[str]:
    """Names a wheel requires on CPython 3.12 Linux, extras left out."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    out = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is None or req.marker.evaluate(ENV):
            out.append(req.name)
    return out


def resolve() -> list[Path]:
    WHEELS.mkdir(exist_ok=True)
    have = {norm(h) for h in DEVICE_HAS}
    todo, seen, wheels = list(ROOTS), set(), []
    while todo:
        name = norm(todo.pop())
        if name in seen or name in have or name in SKIP:
            continue
        seen.add(name)
        w = download(name)
        wheels.append(w)
        todo += requirements(w)
    return wheels


def tree_bytes() -> int:
    """Bytes of what a device call sends besides the carried paths: tracked and untracked-not-ignored files."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    return sum((ROOT / f).stat().st_size for f in out.decode().split("\0") if f and (ROOT / f).is_file())


def wheel_version(w: Path) -> tuple[str, str]:
    """(name, version) of a wheel file."""
    name, version = w.name.split("-")[:2]
    return norm(name), version


def pinned() -> list[Path]:
    """The wheels of :data:`LOCK`, exactly."""
    WHEELS.mkdir(exist_ok=True)
    out = []
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out.append(download(name, version))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", action="store_true", help="empty .whl/ first")
    ap.add_argument("--resolve", action="store_true", help="resolve the list again and rewrite wheels.txt")
    args = ap.parse_args()
    if args.clean and WHEELS.exists():
        for w in WHEELS.glob("*.whl"):
            w.unlink()
    if args.resolve or not LOCK.exists():
        wheels = resolve()
        LOCK.write_text(
            "# the wheels the GPU kit carries (benchmarks/gpu/prepare.py --resolve writes this list)\n"
            + "".join(f"{n}=={v}\n" for n, v in sorted(wheel_version(w) for w in wheels))
        )
    else:
        wheels = pinned()
    whl = sum(w.stat().st_size for w in WHEELS.glob("*.whl"))
    tree = tree_bytes()
    for w in sorted(WHEELS.glob("*.whl")):
        print(f"  {w.stat().st_size / 1e6:6.2f} MB  {w.name}")
    print(
        f"{len(wheels)} wheels resolved; .whl/ {whl / 1e6:.1f} MB (budget {WHEEL_BUDGET / 1e6:.0f} MB); "
        f"working tree {tree / 1e6:.1f} MB; together {(whl + tree) / 2**20:.1f} MiB of {CALL_LIMIT / 2**20:.0f}"
    )
    ok = whl <= WHEEL_BUDGET and whl + tree <= CALL_LIMIT
    print('carry: [".whl"]' if ok else "prepare: over the limit; see the list above")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
