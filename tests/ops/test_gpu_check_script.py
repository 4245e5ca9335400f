"""benchmarks/gpu_check.sh on a CPU machine: valid bash, a clear exit without CUDA, and its dry run against the
installed torch without the packages the GPU machine lacks (every stage's dry form: the build plan, the collection of
each test stage, the benchmarks' argument checks and CPU model builds), so that a change that would break the check
fails here rather than on a GPU. The GPU itself is exercised only where one is lent."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STAGES = ["build", "cuda_tests", "bench_group_norm", "bench_train_step", "bench_nonlocal", "cuda_tests_rest"]
TEST_STAGES = ["cuda_tests", "cuda_tests_rest"]
GPU_TEST_PATHS = ["tests/ops", "tests/models/test_nonlocal.py"]  # the check runs every CUDA test of these
NOT_ON_GPU_MACHINE = ["decord", "av", "jsonargparse", "pytorchvideo"]
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash")


def _stubs(root: Path, missing: list[str]) -> Path:
    """A directory of modules that fail to import, first on PYTHONPATH: the GPU machine's missing packages."""
    root.mkdir()
    for name in missing:
        (root / f"{name}.py").write_text(f"raise ImportError('{name} is not installed on the GPU machine')\n")
    return root


def _run(out: Path, missing: list[str] | None = None, **env) -> subprocess.CompletedProcess:
    path = [str(_stubs(out.parent / "stubs", missing))] if missing else []
    path += [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    return subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=600, check=False,
                          env=dict(os.environ, PYTHON=sys.executable, PYTHONPATH=os.pathsep.join(path), **env))


def _collected(text: str) -> int:
    """Tests counted by `pytest --collect-only -qq` ("path/test_x.py: N" lines)."""
    return sum(int(n) for n in re.findall(r"^tests/\S+\.py: (\d+)$", text, flags=re.M))


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_exits_clearly_without_cuda(tmp_path):
    proc = _run(tmp_path / "out")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "nothing run: no CUDA device visible to torch" in proc.stdout
    assert (tmp_path / "out" / "gpu_check.log").exists() and not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.slow
def test_dry_run_runs_every_stage_against_the_installed_torch(tmp_path):
    out = tmp_path / "out"
    proc = _run(out, NOT_ON_GPU_MACHINE, GPU_CHECK_DRY_RUN="1")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True and summary["torch"] == torch.__version__
    assert [s["stage"] for s in summary["stages"]] == STAGES
    assert all(s["status"] == "passed" and s["exit"] == 0 for s in summary["stages"]), summary["stages"]
    assert sum(s["limit"] for s in summary["stages"]) <= 450  # the stage budget: the check ends within 8 minutes
    for s in summary["stages"]:
        if s["stage"] in TEST_STAGES:  # the JUnit file of a collection: read, nothing ran
            assert s["tests"] == {"ran": 0, "passed": 0, "failed": 0, "skipped": 0} and s["failed_tests"] == []
    log = (out / "gpu_check.log").read_text()
    assert "-m gnvideo.ops build --dry-run" in log and "build_dir: " in log and "ninja: True" in log
    assert f"--json {out}/bench_group_norm.json --dry-run" in log and "dry run: would make " in log
    assert f"--json {out}/bench_train_step.json --dry-run" in log and "M parameters" in log
    assert f"--model-memory --json {out}/bench_nonlocal.json --dry-run" in log
    assert "dry run: would time 10 forward + backward steps after 3 warm-up steps per variant on cuda (bf16)" in log
    assert "model memory: i3d_r50_nl5 (efficient), 35.40 M parameters" in log
    # The two test stages together select every CUDA test of tests/ops and of the non-local blocks, each once, and
    # none is left out; the non-local ones run in the first.
    outputs = dict(re.findall(r"stage (\w+) \(limit \d+s\): [^\n]*\n(.*?)\n\[gpu_check", log, flags=re.S))
    per_stage = [_collected(outputs[name]) for name in TEST_STAGES]
    everything = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-qq", "-m", "gpu",
         *GPU_TEST_PATHS], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True).stdout
    assert min(per_stage) > 0 and sum(per_stage) == _collected(everything) > 600, (per_stage, everything[-500:])
    assert re.search(r"^tests/models/test_nonlocal\.py: [1-9]", outputs["cuda_tests"], flags=re.M), outputs


@pytest.mark.slow
def test_missing_pytest_fails_the_test_stages_and_the_benchmarks_still_run(tmp_path):
    out = tmp_path / "out"
    proc = _run(out, ["pytest", *NOT_ON_GPU_MACHINE], GPU_CHECK_DRY_RUN="1")
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-2000:]
    stages = {s["stage"]: s for s in json.loads((out / "summary.json").read_text())["stages"]}
    for name in TEST_STAGES:
        assert stages[name]["status"] == "failed" and "pytest is not installed" in stages[name]["reason"]
    assert all(stages[name]["status"] == "passed" for name in stages if name not in TEST_STAGES), stages


@pytest.mark.parametrize("first", ["tests/ops/test_ops_samples.py::test_backend_argument",
                                   "tests/models/test_nonlocal.py::test_cli_names_the_blocks"])
def test_stop_time_ends_the_session_after_the_running_test(tmp_path, first):
    """GNVIDEO_TESTS_STOP_AT (tests/conftest.py, so for any test path): past it, pytest stops after the running test
    and still writes its report and JUnit file (the check's test stages set it 10 s before their limit)."""
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={junit}", first,
         "tests/ops/test_ops_samples.py::test_sample_inputs_cover_the_issue_cases"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ, GNVIDEO_TESTS_STOP_AT=str(time.time() - 1)))
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert "Interrupted: GNVIDEO_TESTS_STOP_AT" in proc.stdout and "1 passed" in proc.stdout
    assert junit.read_text().count("<testcase ") == 1


def test_summary_lists_every_failed_test(tmp_path):
    (tmp_path / "cuda_tests.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="4">'
        '<testcase classname="tests.ops.test_ops_cuda" name="test_a[x]" />'
        '<testcase classname="tests.ops.test_ops_cuda" name="test_b[y]"><failure message="AssertionError: dx&#10;'
        'assert 0.1 &lt; 0.0001">...</failure></testcase>'
        '<testcase classname="tests.ops.test_ops_cuda" name="test_c"><error message="RuntimeError: boom" /></testcase>'
        '<testcase classname="tests.ops.test_ops_cuda" name="test_d"><skipped message="needs 30 GiB" /></testcase>'
        "</testsuite></testsuites>")
    stages = [{"stage": "build", "status": "passed"}, {"stage": "cuda_tests", "status": "failed"}]
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check_summary.py"), str(tmp_path), "7",
                    *map(json.dumps, stages)], capture_output=True, text=True, timeout=300, check=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["seconds"] == 7 and summary["dry_run"] is False
    build, tests = summary["stages"]
    assert build == {"stage": "build", "status": "passed"}
    assert tests["tests"] == {"ran": 4, "passed": 1, "failed": 2, "skipped": 1}
    assert tests["failed_tests"] == ["tests.ops.test_ops_cuda::test_b[y]: AssertionError: dx",
                                     "tests.ops.test_ops_cuda::test_c: RuntimeError: boom"]
