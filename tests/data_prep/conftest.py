"""Fixtures for the data_prep script tests (helpers live in prep_helpers.py, a name unique across tests/)."""

from __future__ import annotations

import pytest
from prep_helpers import load_script


@pytest.fixture(scope="session")
def scripts():
    return {name: load_script(name) for name in ("prepare_kinetics", "check_videos", "make_synthetic")}
