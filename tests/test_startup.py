"""``--help`` of the dispatcher, of the commands that need no Lightning and of the data tools answers without importing
torch or Lightning (importing those takes seconds; a help text must not)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import contextlib, io, sys
from {module} import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main({args!r})
    except SystemExit:
        pass
heavy = sorted(m for m in ("torch", "lightning", "torchvision", "timm", "decord") if m in sys.modules)
print("usage" in out.getvalue().lower(), heavy)
"""


@pytest.mark.parametrize("module, args", [
    ("gnvideo.cli", ["--help"]),
    ("gnvideo.cli", ["report", "--help"]),
    ("gnvideo.cli", ["demo", "--help"]),
    ("gnvideo.cli", ["convert-weights", "--help"]),
    ("data_prep.check_videos", ["--help"]),
    ("data_prep.prepare_kinetics", ["--help"]),
    ("data_prep.make_synthetic", ["--help"]),
])
def test_help_imports_nothing_heavy(module, args):
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module, args=args)], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["True", "[]"], out


def test_plain_gnvideo_prints_the_commands(capsys):
    from gnvideo.cli import main

    assert main([]) == 2
    assert "fit" in capsys.readouterr().out
