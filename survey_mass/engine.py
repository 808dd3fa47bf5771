"""The partition fan-out engine: one task per HEALPix partition, for mock builds, ingest and survey runs.

:func:`fan_out` takes a plan (one :class:`Task` per partition: its pixel, a size and the arguments of the
partition function), skips the partitions already finished, and runs the rest:

* on a Dask cluster (an existing ``client``, a ``scheduler`` address, or a local cluster of ``workers``
  processes started here, see :func:`start_cluster`), largest partition first so that the workers stay busy to
  the end, each task retried when a worker dies;
* or in this process, in plan order, when ``workers <= 1`` and there is neither a client nor a scheduler.

One progress bar counts finished partitions. Whatever happens (an error, Ctrl-C, SIGTERM turned into
KeyboardInterrupt), the cluster started here is closed, the ``cleanup`` callback removes the temporaries of
partitions stopped mid-write, and the workers' scratch directory is deleted. Partition functions must write
their partition atomically, so that a retried or interrupted task never leaves half a partition visible.

This module and :mod:`survey_mass.inference.cluster` (which re-exports :func:`start_cluster`) are the only
places that use Dask's ``distributed`` for fan-out.

Example (in-process)::

    >>> from survey_mass.engine import Task, fan_out
    >>> fan_out([Task(1, 1.0, (1,)), Task(2, 5.0, (2,))], lambda x: 10 * x, is_done=lambda p: p == 1,
    ...         progress=False)
    [20]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dask_env import WORKER_ENVIRON, worker_environment

__all__ = [
    "WORKER_ENVIRON",
    "ClusterChoice",
    "Results",
    "Task",
    "fan_out",
    "gpu_available",
    "start_cluster",
    "worker_environment",
]


@dataclass(frozen=True)
class Task:
    """One partition of a plan: ``fn(*args, *shared_args)`` computes and writes it."""

    pixel: int
    #: how big the partition is (cutouts, candidates, area): the largest are submitted first
    size: float = 0.0
    args: tuple = field(default=())


class Results(list):
    """The partition functions' results, in plan order, with where they ran.

    ``kind`` is the cluster (``"in-process"``, ``"LocalCluster (2 workers x 1 thread)"``, ...), ``dashboard``
    its dashboard link (None in-process), ``skipped`` the pixels that were already done and ``computed`` those
    run now.
    """

    kind: str = "in-process"
    dashboard: str | None = None
    skipped: list[int]
    computed: list[int]


# --- clusters ---------------------------------------------------------------------------------------------------


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
    """Connect to ``scheduler`` or start a local cluster whose workers keep scratch files in ``local_directory``.

    1. ``scheduler``: connect to a running cluster (dask-jobqueue, dask-kubernetes, ...).
    2. Otherwise, when ``device`` is ``auto`` or ``cuda``, a CUDA GPU and the ``gpu`` extra (dask-cuda) are
       present: ``LocalCUDACluster``, one worker per GPU with one thread each.
    3. Otherwise a ``LocalCluster`` of ``workers`` processes with one thread each.
    """
    from distributed import Client

    from .errors import SurveyMassError

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


# --- the fan-out ------------------------------------------------------------------------------------------------


def fan_out(
    tasks: Iterable[Task],
    fn: Callable[..., Any],
    *,
    is_done: Callable[[int], bool] | None = None,
    shared_args: Callable[[int], tuple] | None = None,
    workers: int | None = 1,
    scheduler: str | None = None,
    client=None,
    device: str = "cpu",
    progress: bool = True,
    desc: str = "partitions",
    unit: str = "part",
    scratch: str | Path | None = None,
    retries: int = 2,
    cleanup: Callable[[], None] | None = None,
    announce: bool = False,
    key_prefix: str = "partition",
) -> Results:
    """Run ``fn(*task.args, *shared_args(n_workers))`` for every task whose pixel ``is_done`` says is not done.

    ``fn`` must be a picklable top-level function when a cluster runs it. ``shared_args`` gets the number of
    worker processes (1 in-process) and returns arguments common to all tasks (e.g. options holding
    the threads each worker may use), passed after each task's own. ``cleanup`` is called before the plan is looked at (temporaries of a run
    that was killed) and after the fan-out, always. ``scratch`` is the local cluster's worker directory (a
    temporary directory when None); it is deleted at the end. ``announce`` prints the cluster and its
    dashboard. Returns the results in plan order (see :class:`Results`).
    """
    from .progress import bar as progress_bar

    if cleanup is not None:
        cleanup()
    tasks = list(tasks)
    done = [t.pixel for t in tasks if is_done is not None and is_done(t.pixel)]
    skip = set(done)
    todo = [t for t in tasks if t.pixel not in skip]
    results = Results()
    results.skipped, results.computed = done, [t.pixel for t in todo]
    distributed = bool(todo) and (client is not None or bool(scheduler) or workers is None or workers > 1)
    bar = progress_bar(len(todo), desc, enabled=progress, unit=unit)
    try:
        if distributed:
            results.extend(
                _on_cluster(
                    todo,
                    fn,
                    results,
                    bar,
                    shared_args=shared_args,
                    workers=workers,
                    scheduler=scheduler,
                    client=client,
                    device=device,
                    scratch=scratch,
                    retries=retries,
                    announce=announce,
                    key_prefix=key_prefix,
                )
            )
        else:
            shared = shared_args(1) if shared_args is not None else ()
            for t in todo:
                results.append(fn(*t.args, *shared))
                bar.update(1)
    finally:
        bar.close()
        if cleanup is not None:
            cleanup()
    return results


def _on_cluster(
    todo: list[Task],
    fn,
    results: Results,
    bar,
    *,
    shared_args,
    workers,
    scheduler,
    client,
    device,
    scratch,
    retries,
    announce,
    key_prefix,
) -> list:
    from distributed import as_completed

    choice = None
    own_scratch = scratch is None
    futures: list = []
    try:
        if client is None:
            if own_scratch:
                scratch = tempfile.mkdtemp(prefix="survey-mass-dask-")
            choice = start_cluster(
                scheduler=scheduler, workers=workers, device=device, local_directory=str(scratch)
            )
            client = choice.client
            results.kind, results.dashboard = choice.kind, choice.dashboard
        else:
            results.kind, results.dashboard = "given client", getattr(client, "dashboard_link", None)
        if announce:
            print(f"dask: {results.kind}; dashboard {results.dashboard}", flush=True)
        n_workers = max(len(client.scheduler_info().get("workers", {})), 1)
        shared = shared_args(n_workers) if shared_args is not None else ()
        token = uuid.uuid4().hex[:8]
        order = sorted(range(len(todo)), key=lambda i: -todo[i].size)  # biggest first; stable for ties
        futures = [
            client.submit(
                fn,
                *todo[i].args,
                *shared,
                pure=False,
                retries=retries,
                key=f"{key_prefix}-{todo[i].pixel}-{token}",
            )
            for i in order
        ]
        index = {f.key: i for f, i in zip(futures, order, strict=True)}
        out: dict[int, Any] = {}
        for fut in as_completed(futures):
            out[index[fut.key]] = fut.result()
            bar.update(1)
        return [out[i] for i in range(len(todo))]
    except BaseException:
        if choice is None or choice.owned is None:  # a cluster we do not own: stop our tasks on it
            try:
                client.cancel(futures)
            except Exception:
                pass
        raise
    finally:
        if choice is not None:
            choice.client.close()
            if choice.owned is not None:
                choice.owned.close()
        if scratch is not None and (choice is not None and choice.owned is not None or own_scratch):
            shutil.rmtree(scratch, ignore_errors=True)
