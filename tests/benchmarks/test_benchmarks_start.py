"""Every benchmark script starts: its imports (of gnvideo and of its neighbours in benchmarks/) resolve and
``--help`` exits 0, so a rename elsewhere in the package cannot leave a benchmark broken until someone runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.name for p in (REPO / "benchmarks").glob("*.py") if p.name.startswith(("bench_", "profile_"))
                 and p.name not in ("bench_videos.py", "cpu_time.py"))  # libraries of the others, not commands


def test_every_benchmark_is_listed():
    assert {"bench_loader.py", "bench_sandbox.py", "bench_keyint.py", "profile_demo.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_help(script):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--help"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in proc.stdout.lower()
