"""The environment of the Dask worker processes survey-mass starts (no other import than dask's config)."""

from __future__ import annotations

import contextlib

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
