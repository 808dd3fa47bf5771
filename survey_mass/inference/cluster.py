"""Which Dask cluster runs the inference.

1. ``--scheduler ADDRESS``: connect to a running cluster (dask-jobqueue, dask-kubernetes, ...).
2. Otherwise, when a CUDA GPU and the ``gpu`` extra (dask-cuda) are present: ``LocalCUDACluster``, one worker
   per GPU with one thread each.
3. Otherwise a ``LocalCluster`` of ``workers`` processes with one thread each (torch then uses
   cores / workers threads per worker).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

#: environment for worker processes we start. distributed's default also sets MALLOC_TRIM_THRESHOLD_=65536,
#: which turns off glibc's adaptive mmap threshold: every array over 128 kB (a 5-band float64 cutout is 160 kB)
#: is then mmap'ed and page-faulted afresh. Measured here, that made source detection 2-5x and the CNN 1.5x
#: slower in Dask workers than in a plain process, and two workers slower than one. We keep the thread pins.
WORKER_ENVIRON = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}


@contextlib.contextmanager
def worker_environment():
    """Dask config under which local worker processes are spawned (see :data:`WORKER_ENVIRON`)."""
    import dask

    with dask.config.set({"distributed.nanny.pre-spawn-environ": dict(WORKER_ENVIRON)}):
        yield


@dataclass
class ClusterChoice:
    client: object
    kind: str
    owned: object | None  # the cluster object we started (closed at the end), None for --scheduler
    dashboard: str | None


def gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def start_cluster(
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    device: str = "auto",
    local_directory: str | None = None,
) -> ClusterChoice:
    """Connect to ``scheduler`` or start a local cluster whose workers keep scratch files in ``local_directory``."""
    from distributed import Client

    from ..errors import SurveyMassError

    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except Exception as exc:
            raise SurveyMassError(
                f"--scheduler {scheduler}: cannot connect ({str(exc).splitlines()[0]})"
            ) from None
        return ClusterChoice(client, f"scheduler at {scheduler}", None, client.dashboard_link)
    if device in ("auto", "cuda") and gpu_available():
        try:
            from dask_cuda import LocalCUDACluster  # lazily: the optional 'gpu' extra
        except ImportError:
            if device == "cuda":
                raise SurveyMassError(
                    "--device cuda needs the gpu extra: pip install 'survey-mass[gpu]'"
                ) from None
        else:
            with worker_environment():
                cluster = LocalCUDACluster(threads_per_worker=1, local_directory=local_directory)
            client = Client(cluster)
            return ClusterChoice(
                client,
                f"LocalCUDACluster ({len(cluster.workers)} GPU workers)",
                cluster,
                client.dashboard_link,
            )
    n = workers or min(2, os.cpu_count() or 1)
    from distributed import LocalCluster

    with worker_environment():
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=50,
            local_directory=local_directory,
        )
    client = Client(cluster)
    return ClusterChoice(client, f"LocalCluster ({n} workers x 1 thread)", cluster, client.dashboard_link)
