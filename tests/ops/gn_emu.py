"""Build and run the CPU emulation of the CUDA GroupNorm kernels (tests/ops/emu) on :mod:`gnvideo.ops.testing` cases.

The harness binary is compiled with g++ from ``emu/harness.cpp``, ``emu/cuda_emu.h`` and the kernel headers of
``gnvideo/ops/csrc`` (or of a patched copy, for the mutant self-test) and cached per hash of its sources and flags
under ``$GNVIDEO_EMU_CACHE`` (default: ``<tmp>/gnvideo-emu-cache``), so reruns skip the compile.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from gnvideo.ops.testing import Result, Sample, channels_last_format, stat_dtype

EMU_DIR = Path(__file__).resolve().parent / "emu"
CSRC = Path(__file__).resolve().parents[2] / "gnvideo" / "ops" / "csrc"
SMS = 132  # H100/H200 multiprocessors: the launch plans are those of that GPU
DTYPE_TAGS = {torch.float64: "f64", torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
FLAGS = {
    "release": ["-O1", "-fsanitize=bounds", "-fno-sanitize-recover=all"],
    "mutant": ["-O0", "-fsanitize=bounds", "-fno-sanitize-recover=all"],  # half the compile time of -O1
    "sanitize": ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"],
}


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def cache_dir() -> Path:
    root = os.environ.get("GNVIDEO_EMU_CACHE") or os.path.join(tempfile.gettempdir(), "gnvideo-emu-cache")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _torch_include() -> str:
    return str(Path(torch.__file__).resolve().parent / "include")


def build(variant: str = "release", csrc: Path = CSRC, source: str = "harness.cpp") -> Path:
    """Compile (or reuse) ``emu/<source>`` against the kernel headers in ``csrc``; returns the binary's path.

    Raises:
        RuntimeError: the compile failed (the compiler's output is in the message).
    """
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++) found")
    flags = ["-std=c++17", "-fdata-sections", "-Wall", "-Wno-unknown-pragmas", "-Wno-unused-parameter",
             *FLAGS[variant]]
    inputs = [EMU_DIR / source, EMU_DIR / "cuda_emu.h", EMU_DIR / "shared.ld", *sorted(Path(csrc).glob("*.h"))]
    digest = hashlib.sha256()
    for p in inputs:
        digest.update(p.name.encode() + b"\0" + p.read_bytes())
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    digest.update(" ".join(flags + [version, torch.__version__]).encode())
    out = cache_dir() / f"{Path(source).stem}-{variant}-{digest.hexdigest()[:20]}"
    if out.exists():
        return out
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    cmd = [cxx, *flags, "-I", str(csrc), "-isystem", _torch_include(), str(EMU_DIR / source),
           f"-Wl,-T,{EMU_DIR / 'shared.ld'}", "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{source} compile failed ({' '.join(cmd)}):\n{proc.stderr[-6000:]}")
    os.replace(tmp, out)
    return out


def _storage_order(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(N, C, *spatial) -> the elements in memory order of the layout: (N, C, S) or (N, S, C)."""
    n, c = t.shape[0], t.shape[1]
    flat = t.reshape(n, c, -1)
    return (flat.transpose(1, 2) if channels_last else flat).contiguous()


def _bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""


def write_case(s: Sample, path: Path) -> None:
    n, c = s.x.shape[0], s.x.shape[1]
    spatial = s.x.numel() // (n * c)
    acc = stat_dtype(s.dtype)
    x_off = (s.x.data_ptr() - s.x.untyped_storage().data_ptr()) // s.x.element_size()
    header = (
        f"dtype={DTYPE_TAGS[s.dtype]} N={n} C={c} S={spatial} G={s.num_groups} eps={s.eps!r} act={s.activation} "
        f"cl={int(s.channels_last)} w={int(s.weight is not None)} b={int(s.bias is not None)} x_off={x_off} dy_off=0\n"
    )
    parts = [header.encode(), _bytes(_storage_order(s.x.cpu(), s.channels_last))]
    for p in (s.weight, s.bias):
        if p is not None:
            parts.append(_bytes(p.cpu().to(acc)))
    parts.append(_bytes(_storage_order(s.dy.cpu(), s.channels_last)))
    path.write_bytes(b"".join(parts))


def read_result(s: Sample, path: Path) -> tuple[Result, dict[str, str]]:
    """The harness's outputs for ``s`` as tensors in x's shape and layout, and its plan line as a dict."""
    raw = path.read_bytes()
    nl = raw.index(b"\n")
    fields = raw[:nl].decode().split()
    assert fields[0] == "ok", fields
    plan = dict(f.split("=", 1) for f in fields[1:])
    data = memoryview(raw)[nl + 1 :]
    n, c, g = s.x.shape[0], s.x.shape[1], s.num_groups
    e, acc = s.x.numel(), stat_dtype(s.dtype)
    pos = 0

    def take(count: int, dtype: torch.dtype) -> torch.Tensor:
        nonlocal pos
        size = count * torch.empty((), dtype=dtype).element_size()
        t = torch.frombuffer(bytearray(data[pos : pos + size]), dtype=dtype) if count else torch.empty(0, dtype=dtype)
        pos += size
        return t

    def like_x(flat: torch.Tensor) -> torch.Tensor:
        spatial = s.x.shape[2:]
        if s.channels_last:
            t = flat.reshape(n, -1, c).transpose(1, 2).reshape(s.x.shape)
            return t.contiguous(memory_format=channels_last_format(s.x.dim()))
        return flat.reshape(n, c, *spatial)

    y = like_x(take(e, s.dtype))
    mean, rstd = take(n * g, acc).reshape(n, g), take(n * g, acc).reshape(n, g)
    dx = like_x(take(e, s.dtype))
    dw, db = take(c, acc), take(c, acc)
    assert pos == len(data), f"{path}: {len(data) - pos} trailing bytes"
    return Result(y, mean, rstd, dx, dw if s.weight is not None else None, db if s.bias is not None else None), plan


class HarnessError(RuntimeError):
    """The harness exited with an error (an emulation check, a fault, a sanitizer report)."""


def run(binary: Path, samples: list[Sample], workdir: Path, schedule: int = 0, jobs: int = 2,
        timeout: float = 600) -> dict[str, tuple[Result, dict[str, str]]]:
    """Runs every sample through the harness (``jobs`` processes in parallel); returns name -> (result, plan).

    Raises:
        HarnessError: a harness process failed; its stderr is in the message.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    files = []
    for s in samples:
        case, out = workdir / f"{s.name}.case", workdir / f"{s.name}.s{schedule}.out"
        write_case(s, case)
        files.append((s, case, out))
    # Balance by elements: big cases first, round-robin over the processes.
    order = sorted(files, key=lambda f: -f[0].x.numel())
    groups = [order[i::jobs] for i in range(jobs) if order[i::jobs]]

    def go(group):
        args = [str(binary), "--sms", str(SMS), "--schedule", str(schedule)]
        for _, case, out in group:
            args += [str(case), str(out)]
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if proc.returncode != 0:
            names = ", ".join(s.name for s, _, _ in group)
            raise HarnessError(f"harness exit {proc.returncode} on [{names}]:\n{proc.stderr[-4000:]}")
        return proc.stdout

    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        list(pool.map(go, groups))
    return {s.name: read_result(s, out) for s, _, out in files}
