"""Fixtures of the ops tests: the extension, built once per session (CUDA part when nvcc exists)."""

from __future__ import annotations

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
