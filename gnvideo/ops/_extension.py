"""Just-in-time build and loading of the GroupNorm extension (``gnvideo::group_norm_fwd`` / ``group_norm_bwd``).

Nothing here runs at import time. :func:`load` compiles ``csrc/group_norm.cpp`` (schema + CPU) and, when a CUDA
toolkit is found and torch has CUDA, ``csrc/group_norm_cuda.cu`` into the same library (CPU and CUDA parts load
together), with ``torch.utils.cpp_extension.load`` into a cache directory named after the sources' hash, then
registers the fake (meta) kernels and the autograd formula from Python. :func:`prebuilt` tells whether a build of the
current sources exists, so that callers on a training path can load it without ever compiling
(``python -m gnvideo.ops build`` compiles ahead).

Environment variables:
    GNVIDEO_CACHE_DIR: build directory root (default ``$TORCH_EXTENSIONS_DIR/gnvideo`` if set, else
        ``~/.cache/gnvideo``); one subdirectory per torch/CUDA/Python version and variant.
    TORCH_CUDA_ARCH_LIST: CUDA architectures to compile for (default: the visible GPUs; without a visible GPU
        ``8.0;9.0+PTX``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import threading
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
DEFAULT_ARCH_LIST_WITHOUT_GPU = "8.0;9.0+PTX"

_lock = threading.Lock()
_state: dict[str, object] = {"variant": None, "path": None}


def cuda_home() -> str | None:
    """CUDA toolkit root with an ``nvcc`` (CUDA_HOME / CUDA_PATH, /usr/local/cuda, or nvcc on PATH), else None."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    roots = [r for r in candidates if r and (Path(r) / "bin" / "nvcc").exists()]
    # Prefer a full toolkit (headers next to nvcc) over a directory that only holds an nvcc wrapper.
    full = [r for r in roots if (Path(r) / "include" / "cuda_runtime.h").exists()]
    return (full or roots or [None])[0]


def can_build_cuda() -> tuple[bool, str]:
    """Whether the CUDA part can be compiled here, and why not (no import-time side effects)."""
    if torch.version.cuda is None:
        return False, "torch was built without CUDA"
    if cuda_home() is None:
        return False, "no CUDA toolkit (nvcc) found; set CUDA_HOME"
    return True, f"nvcc in {cuda_home()}"


def loaded_variant() -> str | None:
    """``"cuda"`` or ``"cpu"`` once the extension is loaded in this process, else None."""
    return _state["variant"]  # type: ignore[return-value]


def cache_root() -> Path:
    """Root directory of the JIT build cache."""
    if os.environ.get("GNVIDEO_CACHE_DIR"):
        return Path(os.environ["GNVIDEO_CACHE_DIR"]).expanduser()
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"]).expanduser() / "gnvideo"
    return Path("~/.cache/gnvideo").expanduser()


def _include_dirs() -> list[str]:
    dirs = [str(CSRC)]
    # pip CUDA wheels (torch cu13x) ship headers such as cusparse.h under site-packages/nvidia/cu<major>/include,
    # next to torch itself.
    if torch.version.cuda:
        major = torch.version.cuda.split(".")[0]
        inc = Path(torch.__file__).resolve().parent.parent / "nvidia" / f"cu{major}" / "include"
        if inc.is_dir():
            dirs.append(str(inc))
    return dirs


def _sources(cuda: bool) -> list[Path]:
    return [CSRC / "group_norm.cpp"] + ([CSRC / "group_norm_cuda.cu"] if cuda else [])


def _build_dir(variant: str) -> Path:
    """Cache directory of a build: torch/CUDA/Python versions, the variant and a hash of every csrc file."""
    digest = hashlib.sha256()
    for p in sorted(CSRC.iterdir()):
        if p.suffix in (".cpp", ".cu", ".h"):
            digest.update(p.name.encode() + b"\0" + p.read_bytes())
    py = f"{sys.version_info[0]}{sys.version_info[1]}"
    tag = f"torch{torch.__version__.split('+')[0]}_cu{torch.version.cuda or 'none'}_py{py}"
    return cache_root() / tag / f"{variant}-{digest.hexdigest()[:16]}"


def _library(variant: str) -> Path:
    return _build_dir(variant) / f"gnvideo_ops_{variant}.so"


def default_variant() -> str:
    """``"cuda"`` where the CUDA part can be compiled here, else ``"cpu"``."""
    return "cuda" if can_build_cuda()[0] else "cpu"


def prebuilt(variant: str | None = None) -> bool:
    """Whether a build of the current sources exists in the cache (loading it compiles nothing)."""
    return _library(variant or default_variant()).exists()


def build_plan(cuda: bool | None = None) -> dict[str, object]:
    """What :func:`load` would compile, compiling nothing: the variant and why, the sources (and which are missing),
    the include directories, the CUDA architectures, the build directory, whether that build exists, and whether
    ninja (which ``torch.utils.cpp_extension`` needs) is installed.

    Args:
        cuda: the CUDA part; None = when :func:`can_build_cuda` says so.
    """
    from torch.utils.cpp_extension import is_ninja_available

    ok, why = can_build_cuda()
    cuda = ok if cuda is None else cuda
    variant = "cuda" if cuda else "cpu"
    sources = _sources(cuda)
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST") or (
        "the visible GPUs" if torch.cuda.device_count() else DEFAULT_ARCH_LIST_WITHOUT_GPU
    )
    return {
        "variant": variant,
        "why": why,
        "sources": [str(s) for s in sources],
        "missing_sources": [str(s) for s in sources if not s.is_file()],
        "include_dirs": _include_dirs(),
        "cuda_arch_list": arch if cuda else None,
        "build_dir": str(_build_dir(variant)),
        "prebuilt": _library(variant).exists(),
        "ninja": is_ninja_available(),
    }


def load(cuda: bool | None = None, verbose: bool = False) -> str:
    """Build (if needed) and load the extension; returns the loaded variant, ``"cuda"`` or ``"cpu"``.

    Args:
        cuda: compile the CUDA part; None = when :func:`can_build_cuda` says so.
        verbose: print the compiler commands.

    Raises:
        RuntimeError: compilation failed, or ``cuda=True`` without a CUDA toolkit.
    """
    with _lock:
        if _state["variant"] is not None:
            return _state["variant"]  # type: ignore[return-value]
        ok, why = can_build_cuda()
        if cuda is None:
            cuda = ok
        if cuda and not ok:
            raise RuntimeError(f"gnvideo.ops: cannot build the CUDA extension: {why}")
        from torch.utils import cpp_extension

        variant = "cuda" if cuda else "cpu"
        sources = [str(p) for p in _sources(cuda)]
        build_dir = _build_dir(variant)
        build_dir.mkdir(parents=True, exist_ok=True)
        env_backup = {k: os.environ.get(k) for k in ("TORCH_CUDA_ARCH_LIST", "CUDA_HOME")}
        try:
            if cuda:
                os.environ.setdefault("CUDA_HOME", cuda_home() or "")
                current = cpp_extension.CUDA_HOME
                if current is None or not (Path(current) / "include" / "cuda_runtime.h").exists():
                    # torch guessed CUDA_HOME from an nvcc wrapper script (e.g. /usr/local/bin/nvcc -> /usr/local).
                    cpp_extension.CUDA_HOME = cuda_home()
                if not os.environ.get("TORCH_CUDA_ARCH_LIST") and torch.cuda.device_count() == 0:
                    os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST_WITHOUT_GPU
            cpp_extension.load(
                name=f"gnvideo_ops_{variant}",
                sources=sources,
                extra_include_paths=_include_dirs(),
                extra_cflags=["-O3"],
                extra_cuda_cflags=["-O3"] if cuda else None,
                build_directory=str(build_dir),
                is_python_module=False,
                verbose=verbose,
            )
        finally:
            for k, v in env_backup.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        _register_python_side()
        _state["variant"] = variant
        _state["path"] = str(build_dir)
        return variant


def build_dir() -> str | None:
    """Directory of the loaded build, or None."""
    return _state["path"]  # type: ignore[return-value]


def _register_python_side() -> None:
    """Fake kernels (device from the input, fp32/fp64 stats) and the autograd formula of the forward op."""

    def stat_dtype(x: torch.Tensor) -> torch.dtype:
        return torch.float64 if x.dtype == torch.float64 else torch.float32

    @torch.library.register_fake("gnvideo::group_norm_fwd")
    def _fwd_fake(x, weight, bias, num_groups, eps, activation):
        stats = x.new_empty((x.shape[0], num_groups), dtype=stat_dtype(x))
        return torch.empty_like(x), stats, torch.empty_like(stats)

    @torch.library.register_fake("gnvideo::group_norm_bwd")
    def _bwd_fake(grad_y, x, mean, rstd, weight, bias, num_groups, activation):
        c = x.shape[1]
        dw = x.new_empty((c,), dtype=weight.dtype if weight is not None else x.dtype)
        db = x.new_empty((c,), dtype=bias.dtype if bias is not None else x.dtype)
        return torch.empty_like(x), dw, db

    def setup_context(ctx, inputs, output):
        x, weight, bias, num_groups, _eps, activation = inputs
        _y, mean, rstd = output
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.num_groups = num_groups
        ctx.activation = activation
        ctx.mark_non_differentiable(mean, rstd)
        ctx.set_materialize_grads(False)  # no zero-filled grads for mean/rstd

    def backward(ctx, grad_y, _grad_mean, _grad_rstd):
        if grad_y is None:
            return None, None, None, None, None, None
        x, weight, bias, mean, rstd = ctx.saved_tensors
        dx, dw, db = torch.ops.gnvideo.group_norm_bwd(
            grad_y, x, mean, rstd, weight, bias, ctx.num_groups, ctx.activation
        )
        need = ctx.needs_input_grad
        return (
            dx if need[0] else None,
            dw if weight is not None and need[1] else None,
            db if bias is not None and need[2] else None,
            None,
            None,
            None,
        )

    torch.library.register_autograd("gnvideo::group_norm_fwd", backward, setup_context=setup_context)
