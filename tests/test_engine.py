"""The partition fan-out engine, in-process (the Dask path is exercised by the mock, run and fault tests)."""

from __future__ import annotations

import pytest

from survey_mass.engine import Task, fan_out


def _double(x, k=1):
    return 2 * x * k


def test_skips_finished_partitions_and_keeps_plan_order():
    tasks = [Task(p, size, (p,)) for p, size in ((3, 1), (1, 9), (2, 5))]
    res = fan_out(tasks, _double, is_done=lambda p: p == 1, progress=False)
    assert res == [6, 4]
    assert res.skipped == [1] and res.computed == [3, 2]
    assert res.kind == "in-process" and res.dashboard is None


def test_shared_args_follow_the_task_args_with_one_worker_in_process():
    seen = []
    res = fan_out([Task(5, 1, (5,))], _double, shared_args=lambda n: seen.append(n) or (10,), progress=False)
    assert res == [100] and seen == [1]


def test_cleanup_runs_before_and_after_even_when_interrupted():
    calls = []

    def boom(x):
        calls.append(f"task {x}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fan_out(
            [Task(1, 1, (1,)), Task(2, 1, (2,))],
            boom,
            cleanup=lambda: calls.append("cleanup"),
            progress=False,
        )
    assert calls == ["cleanup", "task 1", "cleanup"]


def test_nothing_to_do_starts_no_cluster():
    res = fan_out([Task(1, 1, (1,))], _double, is_done=lambda p: True, workers=4, progress=False)
    assert res == [] and res.kind == "in-process" and res.skipped == [1]


def _where(prev=None):
    """A stage that appends the resources of the worker it ran on."""
    from distributed import get_worker

    return [*(prev or []), dict(get_worker().state.total_resources)]


def _first(x):
    return _where()


def test_split_plan_sends_each_stage_to_workers_with_its_resource():
    from survey_mass.engine import Stage

    stages = (Stage(_first, "CPU"), Stage(_where, "GPU"), Stage(_where, "CPU"))
    res = fan_out([Task(p, 1, (p,)) for p in range(3)], stages, workers=2, split=True, progress=False)
    assert res.kind.startswith("LocalCluster (1 GPU-tagged worker")
    assert res == [[{"CPU": 1}, {"GPU": 1}, {"CPU": 1}]] * 3
