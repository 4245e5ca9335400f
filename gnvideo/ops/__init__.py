"""GroupNorm over (N, C, *spatial) with an optional fused activation, backed by a CUDA kernel.

:func:`group_norm` is the single entry point of every GN-family layer, with ``backend``:

- ``"auto"`` (default): the extension op ``torch.ops.gnvideo.group_norm_fwd`` (the CUDA kernel) when
  :func:`kernel_supports` says so, else the reference path. :func:`kernel_supports` is the only dispatch predicate:
  an explicit check, never a caught exception.
- ``"kernel"``: the extension op on any device (CUDA kernel, or the C++ CPU implementation for CPU tensors); raises
  when the extension is not built.
- ``"reference"``: ``F.group_norm`` + activation.

Validation happens once, in :func:`validate`, before either path. The activation is a string in the op schema.

Autocast policy: under autocast (e.g. Lightning ``bf16-mixed``) both paths return x's dtype, with statistics and
affine in float32 (float64 for float64 x): the kernel does so natively, and the reference path computes in float32
with autocast off and casts the result back. A GN after a bf16 convolution therefore stays bf16 on either path.

Build policy: nothing is ever compiled inside a call. Importing this package builds and loads nothing; ``auto`` loads
an already compiled extension of the current sources (``python -m gnvideo.ops build``, or :func:`load_extension` once
at setup) and otherwise runs the reference path, saying why in :func:`kernel_supports`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gnvideo.ops import _extension

ACTIVATIONS = ("none", "relu", "silu")
BACKENDS = ("auto", "kernel", "reference")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "KERNEL_DTYPES",
    "backend",
    "group_norm",
    "kernel_group_norm",
    "kernel_supports",
    "load_extension",
    "reference_group_norm",
    "validate",
]


def validate(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    activation: str = "none",
) -> None:
    """The argument rules of :func:`group_norm` (both paths); raises ValueError naming the offending argument."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (N, C, *spatial), got shape {tuple(x.shape)}")
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups <= 0:
        raise ValueError(f"num_groups must be a positive integer, got {num_groups}")
    if x.shape[1] % num_groups != 0:
        raise ValueError(f"num_groups={num_groups} must divide the number of channels C={x.shape[1]}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (p.dim() != 1 or p.shape[0] != x.shape[1]):
            raise ValueError(f"{name} must have shape (C,) = ({x.shape[1]},), got {tuple(p.shape)}")


def _eligible(x: torch.Tensor) -> bool:
    """Cheap tensor-level part of :func:`kernel_supports` (traceable by torch.compile)."""
    return x.dtype in KERNEL_DTYPES and x.dim() >= 3 and x.device.type == "cuda"


@torch.compiler.assume_constant_result
def _cuda_extension_ready() -> bool:
    """True when the CUDA extension is loaded, loading an existing build of the current sources; never compiles."""
    if _extension.loaded_variant() is None and _extension.can_build_cuda()[0] and _extension.prebuilt("cuda"):
        _extension.load()
    return _extension.loaded_variant() == "cuda"


def _layout(x: torch.Tensor) -> str:
    if x.is_contiguous():
        return "contiguous"
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return "channels_last_3d"
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "strided (computed on a contiguous copy)"


def kernel_supports(x: torch.Tensor, use_kernel: bool = True) -> tuple[bool, str]:
    """Whether ``backend="auto"`` runs the CUDA kernel for ``x``, and why. Never builds anything.

    Args:
        x: input (N, C, *spatial).
        use_kernel: the ``use_kernel`` argument of :func:`group_norm` (False: never).

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
        return False, "the extension in this process was built without its CUDA part (no CUDA toolkit at build time)"
    if variant is None:
        ok, why = _extension.can_build_cuda()
        if not ok:
            return False, f"CUDA extension unavailable: {why}"
        if not _extension.prebuilt("cuda"):
            return False, "the CUDA extension is not built: run `python -m gnvideo.ops build` (a call never builds)"
        return True, f"CUDA kernel, {_layout(x)}, {x.dtype} (prebuilt extension, loaded on first use)"
    return True, f"CUDA kernel, {_layout(x)}, {x.dtype}"


def backend(x: torch.Tensor | None = None) -> str:
    """Which implementation ``group_norm(x)`` (backend="auto") uses (or in general), and why."""
    if x is not None:
        ok, why = kernel_supports(x)
        return f"kernel: gnvideo CUDA GroupNorm ({why})" if ok else f"reference: F.group_norm + activation ({why})"
    variant = _extension.loaded_variant()
    if variant == "cuda":
        status = f"loaded from {_extension.build_dir()}"
    elif variant == "cpu":
        status = "unavailable: the extension in this process was built without CUDA"
    else:
        ok, why = _extension.can_build_cuda()
        if not ok:
            status = f"unavailable: {why}"
        elif _extension.prebuilt("cuda"):
            status = "built, loaded on the first CUDA call"
        else:
            status = "not built (run `python -m gnvideo.ops build`)"
    gpu = "a CUDA device is visible" if torch.cuda.is_available() else "no CUDA device visible"
    return (
        f"gnvideo.ops: CUDA kernel {status}; {gpu}. CPU tensors and inputs the kernel does not support use the "
        "reference path (F.group_norm + activation)."
    )


def load_extension(cuda: bool | None = None, verbose: bool = False) -> str:
    """Build (if needed) and load the extension now; returns ``"cuda"`` or ``"cpu"``. See ``_extension.load``.

    Call it once at setup (e.g. on rank 0, then a barrier) or run ``python -m gnvideo.ops build`` beforehand.
    """
    return _extension.load(cuda=cuda, verbose=verbose)


def reference_group_norm(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    activation: str = "none",
) -> torch.Tensor:
    """``F.group_norm`` followed by ``activation`` (the reference path); shapes as :func:`group_norm`.

    Under autocast the computation runs in float32 with autocast off and y is cast back to x's dtype. A bias without
    a weight gets a ones weight (exact): torch 2.11's backward of ``F.group_norm(x, G, None, bias)`` raises
    "tensor does not have a device".
    """
    if weight is None and bias is not None:
        weight = torch.ones_like(bias)
    if torch.is_autocast_enabled(x.device.type) and x.dtype != torch.float64:
        with torch.autocast(x.device.type, enabled=False):
            w32 = None if weight is None else weight.float()
            b32 = None if bias is None else bias.float()
            y = F.group_norm(x.float(), num_groups, w32, b32, eps)
            y = F.relu(y) if activation == "relu" else F.silu(y) if activation == "silu" else y
            return y.to(x.dtype)
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
    """``group_norm(..., backend="kernel")``: the extension op on any device (CPU uses the .cpp implementation)."""
    return group_norm(x, num_groups, weight, bias, eps, activation, backend="kernel")


def group_norm(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    activation: str = "none",
    use_kernel: bool = True,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Group-normalize ``x`` and apply ``activation`` after the affine.

    Args:
        x: input (N, C, *spatial), e.g. (N, C, T, H, W); contiguous or channels_last(_3d).
        num_groups: G, must divide C.
        weight: optional scale (C,).
        bias: optional shift (C,).
        eps: added to the variance.
        activation: one of ``ACTIVATIONS`` ("none", "relu", "silu").
        use_kernel: False is ``backend="reference"`` (kept for existing callers).
        backend: "auto" | "kernel" | "reference", see the module docstring.

    Returns:
        y (N, C, *spatial) in x's dtype and memory format.

    Raises:
        ValueError: bad arguments (see :func:`validate`) or an unknown backend.
        RuntimeError: ``backend="kernel"`` and the extension is not built (``python -m gnvideo.ops build``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    validate(x, num_groups, weight, bias, activation)
    if backend == "kernel":
        if _extension.loaded_variant() is None:
            if not _extension.prebuilt():
                raise RuntimeError("gnvideo.ops: backend='kernel' needs the built extension: run "
                                   "`python -m gnvideo.ops build` (or gnvideo.ops.load_extension() at setup)")
            _extension.load()
        run_kernel = True
    else:
        run_kernel = backend == "auto" and use_kernel and _eligible(x) and _cuda_extension_ready()
    if run_kernel:
        y, _mean, _rstd = torch.ops.gnvideo.group_norm_fwd(x, weight, bias, num_groups, float(eps), activation)
        return y
    return reference_group_norm(x, num_groups, weight, bias, eps, activation)
