"""Session-wide test setup: a stop time for benchmarks/gpu_check.sh (any test path), and a checkpoint whose pickle
would run code (for the safe-loading tests)."""

from __future__ import annotations

import os
import time
from pathlib import Path

# Lightning adds a StreamHandler bound to the sys.stderr of the moment it is first imported. Imported inside a test
# that uses capsys, that is the test's own capture stream, closed when the test ends, and every later Lightning log
# line prints "--- Logging error ---" with a traceback into other tests' output. Importing it here binds the handler
# to pytest's session-wide stream instead.
import lightning.pytorch  # noqa: F401
import pytest


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """GNVIDEO_TESTS_STOP_AT (Unix time, set by benchmarks/gpu_check.sh near a stage's limit): once it has passed, the
    session stops after this test, as ``-x`` would, so that the report and the JUnit file still list every result
    (a kill at the limit would lose them)."""
    stop_at = os.environ.get("GNVIDEO_TESTS_STOP_AT")
    if stop_at and nextitem is not None and time.time() >= float(stop_at):
        item.session.shouldstop = f"GNVIDEO_TESTS_STOP_AT ({stop_at}) passed; the tests after {item.nodeid} did not run"


class _CreatesFile:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for a pickle that runs a command when it is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture
def code_running_checkpoint(tmp_path):
    """``make(name, legacy=False) -> path``: a checkpoint whose pickle creates ``tmp_path / "MARKER"`` when it is
    loaded in full; tensors in ``state_dict`` as a Lightning checkpoint has them, so only its payload is wrong."""
    marker = tmp_path / "MARKER"

    def make(name: str = "evil.ckpt", legacy: bool = False) -> Path:
        import torch

        path = tmp_path / name
        torch.save({"state_dict": {"model.conv1.weight": torch.zeros(1)}, "pytorch-lightning_version": "2.6.6",
                    "hyper_parameters": {"payload": _CreatesFile(marker)}}, path,
                   _use_new_zipfile_serialization=not legacy)
        return path

    make.marker = marker
    return make
