"""GroupNorm over (N, C, *spatial) with an optional fused activation, backed by a CUDA kernel.

``group_norm`` is the single entry point of every GN-family layer. It runs the gnvideo CUDA kernel
(``torch.ops.gnvideo.group_norm_fwd``) when :func:`kernel_supports` says so, and the reference path
(``F.group_norm`` + activation) otherwise. The choice is an explicit check, never a caught exception.

Importing this package never builds or loads anything; the extension is compiled just in time on the first CUDA
call (or by ``python -m gnvideo.ops build``) and cached, see :mod:`gnvideo.ops._extension`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gnvideo.ops import _extension

ACTIVATIONS = ("none", "relu", "silu")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

__all__ = [
    "ACTIVATIONS",
    "KERNEL_DTYPES",
    "backend",
    "group_norm",
    "kernel_group_norm",
    "kernel_supports",
    "load_extension",
    "reference_group_norm",
]


def _validate(x: torch.Tensor, num_groups: int, activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (N, C, *spatial), got shape {tuple(x.shape)}")
    if num_groups <= 0:
        raise ValueError(f"num_groups must be a positive integer, got {num_groups}")
    if x.shape[1] % num_groups != 0:
        raise ValueError(f"num_groups={num_groups} must divide the number of channels C={x.shape[1]}")


def _eligible(x: torch.Tensor, use_kernel: bool) -> bool:
    """Cheap tensor-level part of :func:`kernel_supports` (traceable by torch.compile)."""
    return bool(use_kernel) and x.dtype in KERNEL_DTYPES and x.dim() >= 3 and x.device.type == "cuda"


@torch.compiler.assume_constant_result
def _cuda_extension_ready() -> bool:
    """Loads (building on first use) the CUDA extension; False when no toolkit or a CPU-only build is loaded."""
    variant = _extension.loaded_variant()
    if variant is None and _extension.can_build_cuda()[0]:
        variant = _extension.load()
    return variant == "cuda"


def _layout(x: torch.Tensor) -> str:
    if x.is_contiguous():
        return "contiguous"
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return "channels_last_3d"
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "strided (computed on a contiguous copy)"


def kernel_supports(x: torch.Tensor, use_kernel: bool = True) -> tuple[bool, str]:
    """Whether :func:`group_norm` runs the CUDA kernel for ``x``, and why. Never builds anything.

    Args:
        x: input (N, C, *spatial).
        use_kernel: the ``use_kernel`` argument of :func:`group_norm`.

    Returns:
        (True, description) when the kernel runs, else (False, reason the reference path runs).
    """
    if not use_kernel:
        return False, "use_kernel=False forces the reference path"
    if x.dtype not in KERNEL_DTYPES:
        return False, f"dtype {x.dtype} is not supported by the kernel (float32, float16, bfloat16, float64)"
    if x.dim() < 3:
        return False, f"x.dim()={x.dim()} < 3: the kernel needs (N, C, *spatial) with a spatial dimension"
    if x.device.type != "cuda":
        return False, f"x is on {x.device}, not a CUDA tensor"
    variant = _extension.loaded_variant()
    if variant == "cpu":
        return False, "the extension was loaded without its CUDA part in this process"
    if variant is None:
        ok, why = _extension.can_build_cuda()
        if not ok:
            return False, f"CUDA extension unavailable: {why}"
        return True, f"CUDA kernel, {_layout(x)}, {x.dtype} (extension is compiled on first use)"
    return True, f"CUDA kernel, {_layout(x)}, {x.dtype}"


def backend(x: torch.Tensor | None = None) -> str:
    """Which implementation :func:`group_norm` uses for ``x`` (or in general) and why."""
    if x is not None:
        ok, why = kernel_supports(x)
        return f"kernel: gnvideo CUDA GroupNorm ({why})" if ok else f"reference: F.group_norm + activation ({why})"
    variant = _extension.loaded_variant()
    if variant == "cuda":
        status = f"loaded from {_extension.build_dir()}"
    elif variant == "cpu":
        status = "unavailable: the extension was loaded without CUDA in this process"
    else:
        ok, why = _extension.can_build_cuda()
        status = f"not loaded yet, compiled on the first CUDA call ({why})" if ok else f"unavailable: {why}"
    gpu = "a CUDA device is visible" if torch.cuda.is_available() else "no CUDA device visible"
    return (
        f"gnvideo.ops: CUDA kernel {status}; {gpu}. CPU tensors and inputs the kernel does not support use the "
        "reference path (F.group_norm + activation)."
    )


def load_extension(cuda: bool | None = None, verbose: bool = False) -> str:
    """Build (if needed) and load the extension now; returns ``"cuda"`` or ``"cpu"``. See ``_extension.load``."""
    return _extension.load(cuda=cuda, verbose=verbose)


def reference_group_norm(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    activation: str = "none",
) -> torch.Tensor:
    """``F.group_norm`` followed by ``activation`` (the fallback path); shapes as :func:`group_norm`."""
    y = F.group_norm(x, num_groups, weight, bias, eps)
    if activation == "relu":
        return F.relu(y)
    if activation == "silu":
        return F.silu(y)
    return y


def kernel_group_norm(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    activation: str = "none",
) -> torch.Tensor:
    """The extension op on any device (CPU uses the .cpp implementation); the extension must be loaded.

    Returns y with x's shape, dtype and memory format (statistics are float32, float64 for float64 x).
    """
    _validate(x, num_groups, activation)
    y, _mean, _rstd = torch.ops.gnvideo.group_norm_fwd(
        x, weight, bias, num_groups, float(eps), _extension.ACTIVATION_CODES[activation]
    )
    return y


def group_norm(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    activation: str = "none",
    use_kernel: bool = True,
) -> torch.Tensor:
    """Group-normalize ``x`` and apply ``activation`` after the affine.

    Args:
        x: input (N, C, *spatial), e.g. (N, C, T, H, W); contiguous or channels_last(_3d).
        num_groups: G, must divide C.
        weight: optional scale (C,).
        bias: optional shift (C,).
        eps: added to the variance.
        activation: one of ``ACTIVATIONS`` ("none", "relu", "silu").
        use_kernel: False forces the reference path (F.group_norm + activation).

    Returns:
        y (N, C, *spatial) in x's dtype and memory format (the reference path follows F.group_norm's rules).

    Raises:
        ValueError: num_groups does not divide C, bad activation, or x has fewer than 2 dims.
        RuntimeError: the first CUDA call compiles the extension and that compilation failed (the compiler log is
            in the message; ``use_kernel=False`` bypasses the kernel).
    """
    _validate(x, num_groups, activation)
    if _eligible(x, use_kernel) and _cuda_extension_ready():
        y, _mean, _rstd = torch.ops.gnvideo.group_norm_fwd(
            x, weight, bias, num_groups, float(eps), _extension.ACTIVATION_CODES[activation]
        )
        return y
    return reference_group_norm(x, num_groups, weight, bias, eps, activation)
