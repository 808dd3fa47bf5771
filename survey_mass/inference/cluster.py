"""Which Dask cluster runs the inference.

1. ``--scheduler ADDRESS``: connect to a running cluster (dask-jobqueue, dask-kubernetes, ...).
2. Otherwise, when a CUDA GPU and the ``gpu`` extra (dask-cuda) are present: ``LocalCUDACluster``, one worker
   per GPU with one thread each.
3. Otherwise a ``LocalCluster`` of ``workers`` processes with one thread each (torch then uses
   cores / workers threads per worker).
"""

from __future__ import annotations

# the cluster-starting code lives in survey_mass.engine (the mock and ingest use it without importing inference)
from ..dask_env import WORKER_ENVIRON, worker_environment
from ..engine import ClusterChoice, gpu_available, start_cluster

__all__ = ["WORKER_ENVIRON", "ClusterChoice", "gpu_available", "start_cluster", "worker_environment"]
