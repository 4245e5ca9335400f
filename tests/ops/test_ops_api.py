"""Dispatch decisions, backend() text, argument validation and the reference path (no extension needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from gnvideo.ops import ACTIVATIONS, backend, group_norm, kernel_supports


def test_import_and_cpu_calls_never_build_or_load():
    code = (
        "import torch, gnvideo.ops as o\n"
        "from gnvideo.ops import _extension as e\n"
        "assert e.loaded_variant() is None\n"
        "y = o.group_norm(torch.randn(2, 4, 3, 3, 3), 2, activation='relu')\n"
        "assert e.loaded_variant() is None, 'a CPU call loaded the extension'\n"
        "print(o.backend())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "reference path" in out.stdout


def test_cli_info_prints_backend():
    out = subprocess.run(
        [sys.executable, "-m", "gnvideo.ops", "info"], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "gnvideo.ops: CUDA kernel" in out.stdout


@pytest.mark.parametrize(
    ("x", "use_kernel", "expected"),
    [
        (torch.randn(2, 4, 3, 3, 3), False, "use_kernel=False"),
        (torch.randn(2, 4, 3, 3, 3), True, "not a CUDA tensor"),
        (torch.ones(2, 4, 3, 3, 3, dtype=torch.int64), True, "dtype torch.int64"),
        (torch.randn(2, 4, 3, 3, 3).to(torch.float8_e4m3fn), True, "float8"),
        (torch.randn(2, 4), True, "x.dim()=2 < 3"),
    ],
)
def test_kernel_supports_reasons(x, use_kernel, expected):
    ok, reason = kernel_supports(x, use_kernel=use_kernel)
    assert not ok
    assert expected in reason


def test_backend_text():
    general = backend()
    assert general.startswith("gnvideo.ops: CUDA kernel")
    assert "reference path (F.group_norm + activation)" in general
    text = backend(torch.randn(2, 4, 3, 3, 3))
    assert text.startswith("reference: F.group_norm + activation")
    assert "not a CUDA tensor" in text


def test_num_groups_must_divide_channels():
    with pytest.raises(ValueError, match=r"num_groups=4 .*C=6"):
        group_norm(torch.randn(2, 6, 3, 3, 3), 4)
    with pytest.raises(ValueError, match="num_groups must be a positive integer, got 0"):
        group_norm(torch.randn(2, 6, 3, 3, 3), 0)


def test_bad_activation_and_rank():
    with pytest.raises(ValueError, match=r"activation must be one of \('none', 'relu', 'silu'\), got 'gelu'"):
        group_norm(torch.randn(2, 4, 3, 3, 3), 2, activation="gelu")
    with pytest.raises(ValueError, match=r"shape \(N, C, \*spatial\), got shape \(4,\)"):
        group_norm(torch.randn(4), 2)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("use_kernel", [True, False])
def test_cpu_uses_reference_path(activation, use_kernel):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 3, 4, 5)
    w, b = torch.randn(8), torch.randn(8)
    y = group_norm(x, 4, w, b, eps=1e-3, activation=activation, use_kernel=use_kernel)
    ref = F.group_norm(x, 4, w, b, 1e-3)
    ref = {"none": ref, "relu": F.relu(ref), "silu": F.silu(ref)}[activation]
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
