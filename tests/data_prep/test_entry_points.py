"""data_prep as a package: the three installed commands, ``python data_prep/<tool>.py`` and ``python -m``."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMANDS = {
    "gnvideo-prepare-kinetics": "data_prep.prepare_kinetics:main",
    "gnvideo-check-videos": "data_prep.check_videos:main",
    "gnvideo-make-synthetic": "data_prep.make_synthetic:main",
}


def _help(argv: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package, not the checkout path
    done = subprocess.run(argv + ["--help"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_entry_points_are_installed_and_load():
    installed = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name in COMMANDS}
    assert {name: ep.value for name, ep in installed.items()} == COMMANDS
    assert all(callable(ep.load()) for ep in installed.values())


def test_installed_command_runs(tmp_path):
    script = Path(sys.executable).parent / "gnvideo-check-videos"
    if not script.is_file():
        pytest.skip(f"no console script next to {sys.executable} (package not installed into this environment)")
    assert "usage: gnvideo-check-videos" in _help([str(script)], tmp_path)


@pytest.mark.parametrize("how", ["path", "module"])
def test_script_by_path_and_as_module(tmp_path, how):
    argv = [sys.executable, str(REPO / "data_prep" / "make_synthetic.py")] if how == "path" else [
        sys.executable, "-m", "data_prep.make_synthetic"]
    assert "--videos-per-class" in _help(argv, tmp_path if how == "path" else REPO)
