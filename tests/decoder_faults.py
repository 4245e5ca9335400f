"""Fault injection at the decoder's ``open()``, without a bad file: builds ``decoder_faults.c`` (an LD_PRELOAD shim)
and gives the environment that makes chosen files crash (SIGSEGV) or hang the process that opens them.

The shim acts in every process started with that environment (DataLoader workers, decode children, tool workers),
so the tests run the commands in a subprocess. Opens of the chosen files are appended to a log, one line per open.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent / "decoder_faults.c"
REPO = Path(__file__).resolve().parents[1]


def build_shim() -> Path:
    """Compile the shim once per source version (cached in the temp folder); skips the test without gcc."""
    cc = shutil.which(os.environ.get("CC", "gcc"))
    if cc is None or not sys.platform.startswith("linux"):
        pytest.skip("fault injection needs gcc on Linux (an LD_PRELOAD shim over open)")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"gnvideo-decoder-faults-{digest}.so"
    if not out.exists():
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        proc = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-Wall", "-o", str(tmp), str(SOURCE), "-ldl"],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"building the fault shim failed:\n{proc.stderr[-4000:]}")
        os.replace(tmp, out)
    return out


def fault_env(crash: Iterable[str | os.PathLike] = (), hang: Iterable[str | os.PathLike] = (),
              watch: Iterable[str | os.PathLike] = (), log: str | os.PathLike | None = None) -> dict[str, str]:
    """``os.environ`` plus the shim: opening a path that ends with an entry of ``crash`` raises SIGSEGV, of ``hang``
    blocks forever; opens of those and of ``watch`` are logged to ``log``. Entries are file names or paths."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(filter(None, [str(build_shim()), env.get("LD_PRELOAD", "")]))
    env["GNVIDEO_FAULT_CRASH"] = ":".join(map(str, crash))
    env["GNVIDEO_FAULT_HANG"] = ":".join(map(str, hang))
    env["GNVIDEO_FAULT_WATCH"] = ":".join(map(str, watch))
    env["GNVIDEO_FAULT_LOG"] = str(log or "")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def opens(log: str | os.PathLike, name: str) -> int:
    """How many times a file whose path ends with ``name`` was opened, per the shim's log (0 without a log)."""
    if not os.path.isfile(log):
        return 0
    return sum(line.rstrip("\n").endswith(name) for line in Path(log).read_text().splitlines())


def run(args: list[str], env: dict[str, str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``python args...`` in the repository with ``env``; text output captured."""
    return subprocess.run([sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False, **kwargs)
