"""benchmarks/gpu_check.sh on a CPU machine: valid bash, a clear exit without CUDA, and its stages and summary in a
dry run (the GPU itself is exercised only where one is lent)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash")


def _run(out: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, PYTHON=sys.executable, **env))


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_exits_clearly_without_cuda(tmp_path):
    proc = _run(tmp_path)
    assert proc.returncode == 2
    assert "no CUDA device visible to torch" in proc.stdout and "nothing run" in proc.stdout
    assert (tmp_path / "gpu_check.log").exists()


def test_dry_run_lists_the_stages_and_writes_the_summary(tmp_path):
    proc = _run(tmp_path, GPU_CHECK_DRY_RUN="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["build", "cuda_tests", "bench_group_norm", "bench_train_step"]
    log = (tmp_path / "gpu_check.log").read_text()
    assert "-m gnvideo.ops build" in log and "-m gpu tests/ops" in log
    assert f"--json {tmp_path}/bench_group_norm.json" in log and f"--json {tmp_path}/bench_train_step.json" in log
