import subprocess
import sys
import time


def test_help_answers_fast():
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "survey_mass.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "footprint" in r.stdout and "mock" in r.stdout
    assert time.perf_counter() - t < 1.0


def test_user_error_is_one_line_without_traceback(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "survey_mass.cli",
            "mock",
            "--footprint",
            "atlantis",
            "--out",
            str(tmp_path / "x.zarr"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "atlantis" in lines[0]
