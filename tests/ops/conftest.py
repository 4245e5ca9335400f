"""Fixtures of the ops tests: the extension, built once per session (CUDA part when nvcc exists); and a stop time
for benchmarks/gpu_check.sh."""

from __future__ import annotations

import os
import time

import pytest

from gnvideo.ops import _extension


@pytest.fixture(scope="session")
def ext() -> str:
    """Loads the extension (compiling it on the first run; cached afterwards) and returns its variant."""
    return _extension.load()


@pytest.fixture(scope="session")
def cuda_ext(ext: str) -> str:
    """The extension with its CUDA part; skips when it was built without CUDA."""
    if ext != "cuda":
        pytest.skip(f"extension built without CUDA: {_extension.can_build_cuda()[1]}")
    return ext


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """GNVIDEO_TESTS_STOP_AT (Unix time, set by benchmarks/gpu_check.sh near a stage's limit): once it has passed, the
    session stops after this test, as ``-x`` would, so that the report and the JUnit file still list every result
    (a kill at the limit would lose them)."""
    stop_at = os.environ.get("GNVIDEO_TESTS_STOP_AT")
    if stop_at and nextitem is not None and time.time() >= float(stop_at):
        item.session.shouldstop = f"GNVIDEO_TESTS_STOP_AT ({stop_at}) passed; the tests after {item.nodeid} did not run"
