"""The GPU kit's own logic (#28): a step past its cap is killed with its whole process group and recorded, a step
the budget cannot cover is skipped, and the results file is whole after every step. The kit's measurements need
a GPU; this needs none."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

KIT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "run_kit.py"


@pytest.fixture
def run_kit(monkeypatch):
    spec = importlib.util.spec_from_file_location("run_kit", KIT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "CAPS", dict(module.CAPS))
    return module


def test_a_step_past_its_cap_is_killed_with_its_children_and_recorded(run_kit, tmp_path):
    (tmp_path / "out").mkdir()
    kit = run_kit.Kit(tmp_path / "out", tmp_path, "cpu", budget_s=60, name="cpu")
    run_kit.CAPS["bench"] = 1.5
    marker = tmp_path / "child.pid"
    # the step starts a grandchild that would outlive a plain kill of the step
    code = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(marker)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(60)"
    )
    t0 = time.perf_counter()
    assert kit.step("bench", [sys.executable, "-c", code], min_s=0) is None
    assert time.perf_counter() - t0 < 10
    step = json.loads(kit.file().read_text())["steps"]["bench"]
    assert step["state"] == "timed out" and step["cap_s"] == 2
    assert "started" in kit.log.read_text()  # what it printed before it was killed is kept
    pid = int(marker.read_text())
    time.sleep(0.5)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_a_step_the_budget_cannot_cover_is_skipped_and_the_file_stays_whole(run_kit, tmp_path):
    (tmp_path / "out").mkdir()
    kit = run_kit.Kit(tmp_path / "out", tmp_path, "cpu", budget_s=5, name="cpu")
    assert kit.step("preflight", [sys.executable, "-c", "print('ok')"], min_s=0) == "ok\n"
    assert kit.step("run_dr12", [sys.executable, "-c", "print('never')"]) is None  # cap 90, 5 s of budget
    doc = json.loads(kit.file().read_text())
    assert doc["steps"]["preflight"]["state"] == "ok"
    assert doc["steps"]["run_dr12"]["state"] == "skipped" and "never" not in kit.log.read_text()
    assert doc["failed"] == []


@pytest.mark.parametrize(
    "name, want",
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-40GB", "a100"),
        ("", "cpu"),
    ],
)
def test_the_results_file_is_named_from_the_card(run_kit, name, want):
    assert run_kit.slug(name) == want


def test_throughput_measures_both_paths_on_a_simulated_device(run_kit, small_store, tmp_path):
    """The kit's throughput step on the simulated CUDA device (its first run must not be on the GPU): the bare
    model and both paths are timed, a line of figures is emitted after each leg, and the two paths agree."""
    from survey_mass.testing import biggest_partition, make_tiny_store, simulated_cuda

    store = make_tiny_store(tmp_path / "tiny.zarr", biggest_partition(small_store), 12)
    lines = []
    with simulated_cuda():
        t = run_kit.throughput(store, "cuda", min_s=0.0, threads=2, emit=lambda d: lines.append(dict(d)))
    assert t["store_cutouts"] == 12 and t["precision"] == "fp16"
    for leg in ("bare_model", "device_prep", "default"):
        assert t[leg]["cutouts"] >= 12 and t[leg]["cutouts_per_s"] > 0, leg
    assert [set(d) & {"bare_model", "device_prep", "default"} for d in lines[:3]] == [
        {"bare_model"},
        {"bare_model", "device_prep"},
        {"bare_model", "device_prep", "default"},
    ]
    # the simulated device computes in fp32, so the paths differ only by the sky's float32 rounding
    assert t["device_prep_vs_default_same_nan"] and t["device_prep_vs_default_max_abs_dex"] < 1e-4
    assert t["device_prep_vs_default_sky_max_rel"] < 1e-5


def test_the_last_whole_json_line_is_read_from_a_step_cut_off(run_kit):
    text = '{"a": 1}\n{"a": 1, "b": 2}\n{"a": 1, "b": 2, "c"'
    assert run_kit.last_json_line(text) == {"a": 1, "b": 2}
    assert run_kit.last_json_line("") is None and run_kit.last_json_line(None) is None
