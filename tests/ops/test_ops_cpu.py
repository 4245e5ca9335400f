"""The extension's CPU registration: opcheck, gradcheck, agreement with F.group_norm, numerics, torch.compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gnvideo.ops import ACTIVATIONS, kernel_group_norm

CL3D = torch.channels_last_3d


def _reference(x, g, w, b, eps, activation):
    y = F.group_norm(x, g, w, b, eps)
    return {"none": y, "relu": F.relu(y), "silu": F.silu(y)}[activation]


def _inputs(shape, dtype=torch.float64, layout=torch.contiguous_format, affine=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).contiguous(memory_format=layout)
    c = shape[1]
    w = (torch.rand(c, generator=gen, dtype=torch.float64) + 0.5).to(dtype) if affine else None
    b = torch.randn(c, generator=gen, dtype=torch.float64).to(dtype) if affine else None
    return x, w, b


@pytest.mark.parametrize(
    ("dtype", "layout", "affine", "activation"),
    [
        (torch.float32, torch.contiguous_format, True, "none"),
        (torch.float32, CL3D, True, "relu"),
        (torch.float64, torch.contiguous_format, False, "silu"),
        (torch.float64, CL3D, False, "none"),
        (torch.bfloat16, torch.contiguous_format, True, "silu"),
    ],
)
def test_opcheck_cpu(ext, dtype, layout, affine, activation):
    x, w, b = _inputs((2, 6, 3, 4, 5), dtype, layout, affine)
    x.requires_grad_(True)
    if affine:
        w.requires_grad_(True)
        b.requires_grad_(True)
    code = activation
    torch.library.opcheck(torch.ops.gnvideo.group_norm_fwd.default, (x, w, b, 3, 1e-5, code))
    wd, bd = (w.detach(), b.detach()) if affine else (None, None)
    y, mean, rstd = torch.ops.gnvideo.group_norm_fwd(x.detach(), wd, bd, 3, 1e-5, code)
    dy = torch.randn_like(y)
    torch.library.opcheck(
        torch.ops.gnvideo.group_norm_bwd.default,
        (dy, x.detach(), mean, rstd, wd, bd, 3, code),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL3D])
@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck_cpu_fp64(ext, activation, layout, affine):
    x, w, b = _inputs((2, 4, 3, 2, 3), torch.float64, layout, affine, seed=1)
    inputs = [x.requires_grad_(True)] + ([w.requires_grad_(True), b.requires_grad_(True)] if affine else [])

    def fn(x, w=None, b=None):
        return kernel_group_norm(x, 2, w, b, 1e-5, activation)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL3D])
@pytest.mark.parametrize("affine", [True, False])
def test_matches_functional_fp64(ext, activation, layout, affine):
    x, w, b = _inputs((3, 8, 3, 5, 7), torch.float64, layout, affine, seed=2)
    leaves = [x] + ([w, b] if affine else [])
    for t in leaves:
        t.requires_grad_(True)
    y = kernel_group_norm(x, 4, w, b, 1e-4, activation)
    ref = _reference(x, 4, w, b, 1e-4, activation)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    assert y.is_contiguous(memory_format=layout)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, dy)
    ref_grads = torch.autograd.grad(ref, leaves, dy)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    assert grads[0].is_contiguous(memory_format=layout)


def test_stats_shapes_and_dtypes(ext):
    x, w, b = _inputs((2, 6, 3, 3, 3), torch.bfloat16)
    y, mean, rstd = torch.ops.gnvideo.group_norm_fwd(x, w.float(), b.float(), 3, 1e-5, "none")
    assert y.dtype == torch.bfloat16 and mean.dtype == rstd.dtype == torch.float32
    assert mean.shape == rstd.shape == (2, 3)
    dx, dw, db = torch.ops.gnvideo.group_norm_bwd(torch.ones_like(y), x, mean, rstd, w.float(), None, 3, "none")
    assert dx.dtype == torch.bfloat16 and dw.dtype == torch.float32 and db.dtype == torch.bfloat16
    _, mean64, _ = torch.ops.gnvideo.group_norm_fwd(x.double(), None, None, 3, 1e-5, "none")
    assert mean64.dtype == torch.float64
    xr = x.double().reshape(2, 3, -1)
    torch.testing.assert_close(mean.double(), xr.mean(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rstd.double(), (xr.var(-1, unbiased=False) + 1e-5).rsqrt(), rtol=1e-4, atol=1e-4)


def test_large_mean_and_constant_group(ext):
    gen = torch.Generator().manual_seed(3)
    x = 1e4 + torch.randn(2, 4, 4, 8, 8, generator=gen)
    x[1, 2:] = 7.0  # group (1, 1) is constant
    y, mean, rstd = torch.ops.gnvideo.group_norm_fwd(x, None, torch.full((4,), 0.25), 2, 1e-5, "none")
    xr = x.double().reshape(2, 2, -1)
    ref_rstd = (xr.var(-1, unbiased=False) + 1e-5).rsqrt()
    torch.testing.assert_close(rstd[0].double(), ref_rstd[0], rtol=1e-3, atol=0)
    assert rstd[1, 1].item() == pytest.approx(1e-5**-0.5, rel=1e-6)
    assert torch.all(y[1, 2:] == 0.25)


def test_fullgraph_compile_cpu(ext):
    x, w, b = _inputs((2, 4, 3, 4, 4), torch.float32, CL3D)
    fn = torch.compile(lambda x, w, b: kernel_group_norm(x, 2, w, b, 1e-5, "silu"), fullgraph=True, backend="aot_eager")
    leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]
    y = fn(*leaves)
    y_eager = kernel_group_norm(x, 2, w, b, 1e-5, "silu")
    torch.testing.assert_close(y, y_eager)
    grads = torch.autograd.grad(y.square().sum(), leaves)
    leaves2 = [t.clone().requires_grad_(True) for t in (x, w, b)]
    grads2 = torch.autograd.grad(kernel_group_norm(*leaves2[:1], 2, *leaves2[1:], 1e-5, "silu").square().sum(), leaves2)
    for g1, g2 in zip(grads, grads2):
        torch.testing.assert_close(g1, g2)


def test_op_rejects_bad_arguments(ext):
    x = torch.randn(2, 6, 3, 3, 3)
    with pytest.raises(RuntimeError, match="num_groups=4 must divide the channel count C=6"):
        torch.ops.gnvideo.group_norm_fwd(x, None, None, 4, 1e-5, "none")
    with pytest.raises(RuntimeError, match=r"weight must have shape \(C,\)"):
        torch.ops.gnvideo.group_norm_fwd(x, torch.ones(5), None, 3, 1e-5, "none")
    with pytest.raises(RuntimeError, match="activation must be 'none', 'relu' or 'silu', got 'gelu'"):
        torch.ops.gnvideo.group_norm_fwd(x, None, None, 3, 1e-5, "gelu")
