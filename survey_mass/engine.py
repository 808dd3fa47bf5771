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
    "Stage",
    "Task",
    "fan_out",
    "gpu_available",
    "start_cluster",
    "worker_environment",
]


@dataclass(frozen=True)
class Stage:
    """One step of a partition's work. The first stage is called as ``fn(*task.args, *shared)``, each later one
    as ``fn(previous_result)``; the last one's result is the partition's.

    ``resource`` names the worker resource the stage needs (``"GPU"`` for the device, ``"CPU"`` for the rest).
    On a cluster whose workers offer it, the stage is its own Dask task, sent only to such workers; otherwise
    (in-process, untagged clusters) the stages of a partition run one after the other in one task.
    """

    fn: Callable[..., Any]
    resource: str | None = None


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


def run_stages(fns: tuple[Callable[..., Any], ...], *args):
    """``fns[-1](...fns[1](fns[0](*args)))``: a partition's stages in one task (picklable: a top-level function)."""
    out = fns[0](*args)
    for fn in fns[1:]:
        out = fn(out)
    return out


def _stages(fn) -> tuple[Stage, ...]:
    return tuple(fn) if isinstance(fn, (list, tuple)) else (Stage(fn),)


def split_on(stages: tuple[Stage, ...], offered: set[str]) -> bool:
    """Whether a partition's stages run as separate tasks: there is more than one, some name a resource, and the
    cluster's workers offer every resource named."""
    named = {st.resource for st in stages if st.resource}
    return len(stages) > 1 and bool(named) and named <= offered


def _submit(
    client,
    stages: tuple[Stage, ...],
    args: tuple,
    key: str,
    retries: int,
    offered: set[str],
    options_name: str | None = None,
):
    """The future of one partition's result: its stages as a chain of tasks, each on workers offering its
    resource, or as one task. With ``options_name``, the first stage's paths are bound to the run's storage
    options (:func:`with_storage_options`); later stages get the paths it hands on."""

    def first(fn, *a):
        return (with_storage_options, options_name, fn, *a) if options_name else (fn, *a)

    if not split_on(stages, offered):
        if len(stages) == 1:
            return client.submit(*first(stages[0].fn, *args), pure=False, retries=retries, key=key)
        fns = tuple(st.fn for st in stages)
        return client.submit(*first(run_stages, fns, *args), pure=False, retries=retries, key=key)
    fut = None
    for k, st in enumerate(stages):
        fut = client.submit(
            *(first(st.fn, *args) if k == 0 else (st.fn, fut)),
            pure=False,
            retries=retries,
            resources={st.resource: 1} if st.resource else None,
            key=f"{key}-{k}" if k < len(stages) - 1 else key,
        )
    return fut


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


def share_storage_options(client) -> str | None:
    """Give every worker of ``client``, present and future, this process's fsspec configuration (endpoints and
    credentials of ``s3://`` stores and catalogs, :mod:`survey_mass.storage`) under a name of this run's own.
    Nothing global changes on the workers: each task of the run binds its paths to the options registered under
    that name (:func:`with_storage_options`), so two runs on one shared scheduler never see each other's keys.
    Returns the plugin's name, to unregister when the partitions are done (None when there is nothing to
    share)."""
    from .storage import fsspec_config

    conf = fsspec_config()
    if not conf:
        return None
    plugin = fsspec_config_plugin(conf, name=f"survey-mass-fsspec-{uuid.uuid4().hex[:12]}")
    client.register_plugin(plugin)
    return plugin.name


def fsspec_config_plugin(conf: dict, *, name: str):
    """A Dask worker plugin named ``name`` that registers ``conf`` on each worker under that name
    (:func:`survey_mass.storage.register_run_options`), and forgets it when unregistered."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class FsspecConfig(WorkerPlugin):
        def __init__(self, conf: dict, name: str):
            self.conf = conf
            self.name = name

        def setup(self, worker) -> None:
            from survey_mass.storage import register_run_options

            register_run_options(self.name, self.conf)

        def teardown(self, worker) -> None:
            from survey_mass.storage import forget_run_options

            forget_run_options(self.name)

    return FsspecConfig(conf, name)


def with_storage_options(options_name: str, fn: Callable[..., Any], *args):
    """``fn(*args)`` with every remote path among ``args`` bound to the storage options registered on this worker
    under ``options_name`` (a run's own; :func:`share_storage_options`)."""
    from .storage import bind_run_options

    return fn(*bind_run_options(args, options_name))


def local_security():
    """Temporary TLS credentials for a cluster started here: its scheduler and workers accept only clients that
    hold them (this process), not any local process that finds the port."""
    from distributed.security import Security

    return Security.temporary()


def start_cluster(
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    device: str = "auto",
    local_directory: str | None = None,
    split: bool = False,
) -> ClusterChoice:
    """Connect to ``scheduler`` or start a local cluster whose workers keep scratch files in ``local_directory``.

    1. ``scheduler``: connect to a running cluster (dask-jobqueue, dask-kubernetes, ...). Workers started with
       ``--resources GPU=1`` and ``--resources CPU=1`` get the device and the CPU stages of a partition
       (:class:`Stage`).
    2. Otherwise, when ``device`` is ``auto`` or ``cuda``, a CUDA GPU and the ``gpu`` extra (dask-cuda) are
       present: ``LocalCUDACluster``, one worker per GPU, each with the machine's cores divided among the GPUs as
       threads and the resources ``GPU=1`` and ``CPU=threads-1``: one device stage at a time, and the CPU stages
       (reading, sky, normalisation, writing) of the next partitions in its other threads, in the same process:
       with one GPU the cutouts never travel between processes (with several, a partition's stages may run on
       different GPUs' workers, and its pixels then travel once).
    3. Otherwise a ``LocalCluster`` of ``workers`` processes with one thread each. With ``split`` the first is
       tagged ``GPU=1`` and the others ``CPU=1``: the device plan of 2. on a CPU (tested against the plain run).
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
            import torch

            threads = max(2, (os.cpu_count() or 2) // max(torch.cuda.device_count(), 1))
            security = local_security()
            with worker_environment():
                cluster = LocalCUDACluster(
                    threads_per_worker=threads,
                    resources={"GPU": 1, "CPU": threads - 1},
                    local_directory=local_directory,
                    protocol="tls",
                    security=security,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                )
            client = Client(cluster, security=security)
            return ClusterChoice(
                client,
                f"LocalCUDACluster ({len(cluster.workers)} GPU workers x {threads} threads)",
                cluster,
                client.dashboard_link,
            )
    n = workers or min(2, os.cpu_count() or 1)
    check_workers(n)
    from distributed import LocalCluster

    split = split and n > 1
    # TLS with credentials made for this cluster alone, everything on the loopback interface: no other local
    # user can submit code to these workers or read the dashboard from the network
    security = local_security()
    with worker_environment():
        cluster = LocalCluster(
            n_workers=1 if split else n,
            threads_per_worker=1,
            processes=True,
            protocol="tls://",
            security=security,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=50,
            local_directory=local_directory,
            **({"resources": {"GPU": 1}} if split else {}),
        )
        if split:
            _add_cpu_workers(cluster, n - 1)
    client = Client(cluster, security=security)
    if split:
        client.wait_for_workers(n)
        kind = f"LocalCluster (1 GPU-tagged worker + {n - 1} CPU workers, 1 thread each)"
    else:
        kind = f"LocalCluster ({n} workers x 1 thread)"
    return ClusterChoice(client, kind, cluster, client.dashboard_link)


def check_workers(n: int) -> None:
    """Refuse, in one line, a local cluster of more worker processes than the machine has cores."""
    from .errors import SurveyMassError

    cores = os.cpu_count() or 1
    if not 1 <= int(n) <= cores:
        raise SurveyMassError(
            f"--workers {n}: this machine has {cores} core{'s' if cores > 1 else ''}; give 1 to {cores} (or "
            "--scheduler ADDRESS for a larger cluster)"
        )


def _add_cpu_workers(cluster, n: int) -> None:
    """Add ``n`` workers tagged ``CPU=1`` to a running ``LocalCluster`` (its worker spec, resources changed)."""
    import copy

    for k in range(n):
        spec = copy.copy(cluster.new_spec)
        spec["options"] = {**spec["options"], "resources": {"CPU": 1}}
        cluster.worker_spec[f"cpu-{k}"] = spec
    cluster.scale(len(cluster.worker_spec))


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
    split: bool = False,
) -> Results:
    """Run ``fn(*task.args, *shared_args(n_workers))`` for every task whose pixel ``is_done`` says is not done.

    ``fn`` must be a picklable top-level function when a cluster runs it. ``shared_args`` gets the number of
    worker processes (1 in-process) and returns arguments common to all tasks (e.g. options holding
    the threads each worker may use), passed after each task's own. ``cleanup`` is called before the plan is looked at (temporaries of a run
    that was killed) and after the fan-out, always. ``scratch`` is the local cluster's worker directory (a
    temporary directory when None); it is deleted at the end. ``announce`` prints the cluster and its
    dashboard. ``fn`` may be a sequence of :class:`Stage`; ``split`` tags a local CPU cluster's workers (one
    ``GPU``, the rest ``CPU``) so that the stages run apart, as on a GPU machine. Returns the results in plan
    order (see :class:`Results`).
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
                    split=split,
                )
            )
        else:
            shared = shared_args(1) if shared_args is not None else ()
            fns = tuple(st.fn for st in _stages(fn))
            for t in todo:
                results.append(run_stages(fns, *t.args, *shared))
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
    split,
) -> list:
    from distributed import as_completed

    choice = None
    own_scratch = scratch is None
    futures: list = []
    shared_plugin = None
    try:
        if client is None:
            if own_scratch:
                scratch = tempfile.mkdtemp(prefix="survey-mass-dask-")
            choice = start_cluster(
                scheduler=scheduler,
                workers=workers,
                device=device,
                local_directory=str(scratch),
                split=split,
            )
            client = choice.client
            results.kind, results.dashboard = choice.kind, choice.dashboard
        else:
            results.kind, results.dashboard = "given client", getattr(client, "dashboard_link", None)
        if announce:
            print(f"dask: {results.kind}; dashboard {results.dashboard}", flush=True)
        shared_plugin = share_storage_options(client)
        workers_info = client.scheduler_info().get("workers", {})
        n_workers = max(len(workers_info), 1)
        offered = {r for w in workers_info.values() for r in (w.get("resources") or {})}
        shared = shared_args(n_workers) if shared_args is not None else ()
        token = uuid.uuid4().hex[:8]
        stages = _stages(fn)
        order = sorted(range(len(todo)), key=lambda i: -todo[i].size)  # biggest first; stable for ties
        # a bounded number of partitions in flight, so that a survey's cutouts never all sit in memory at once
        threads = sum(int(w.get("nthreads", 1)) for w in workers_info.values()) or 1
        window = 2 * threads + 2
        pending = iter(order)
        index: dict[str, int] = {}

        def submit_next() -> None:
            i = next(pending, None)
            if i is None:
                return
            fut = _submit(
                client,
                stages,
                (*todo[i].args, *shared),
                f"{key_prefix}-{todo[i].pixel}-{token}",
                retries,
                offered,
                shared_plugin,
            )
            futures.append(fut)
            index[fut.key] = i
            queue.add(fut)

        queue = as_completed()
        for _ in range(window):
            submit_next()
        out: dict[int, Any] = {}
        for fut in queue:
            out[index[fut.key]] = fut.result()
            futures.remove(fut)  # its data is released once nothing holds the future
            bar.update(1)
            submit_next()
        return [out[i] for i in range(len(todo))]
    except BaseException:
        if choice is None or choice.owned is None:  # a cluster we do not own: stop our tasks on it
            try:
                client.cancel(futures)
            except Exception:
                pass
        raise
    finally:
        if shared_plugin is not None and (choice is None or choice.owned is None):  # workers that live on
            try:
                client.unregister_worker_plugin(shared_plugin)
            except Exception:
                pass
        if choice is not None:
            choice.client.close()
            if choice.owned is not None:
                choice.owned.close()
        if scratch is not None and (choice is not None and choice.owned is not None or own_scratch):
            shutil.rmtree(scratch, ignore_errors=True)
