"""The one slow test: the extension compiles (with nvcc when a CUDA toolkit exists) and registers its kernels."""

from __future__ import annotations

import subprocess
import sys

import torch

from gnvideo.ops import _extension, backend, load_extension


def test_extension_compiles_and_registers_kernels():
    variant = load_extension()
    can_cuda, why = _extension.can_build_cuda()
    assert variant == ("cuda" if can_cuda else "cpu"), why
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key
    for op in ("gnvideo::group_norm_fwd", "gnvideo::group_norm_bwd"):
        assert has_kernel(op, "CPU")
        assert has_kernel(op, "CUDA") == (variant == "cuda")
    if variant == "cuda":
        assert "loaded from" in backend()
    # The command-line build reuses the cache and reports the same variant.
    out = subprocess.run(
        [sys.executable, "-m", "gnvideo.ops", "build"], capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"loaded {variant} extension" in out.stdout
