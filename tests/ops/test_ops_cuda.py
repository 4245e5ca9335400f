"""CUDA kernel tests (skipped without CUDA): numerics vs a float64 reference, gradcheck, opcheck, torch.compile,
determinism, layout, and a tensor past 2**31 elements."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from gnvideo.ops import ACTIVATIONS, backend, group_norm, kernel_supports, testing

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

CL3D = torch.channels_last_3d
CL = torch.channels_last
CONTIG = torch.contiguous_format
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
# Max error relative to max |reference| (the reference sees the same quantized inputs).
TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}

# (shape, num_groups): odd sizes, N = 1, one group, one channel per group, C not a multiple of the vector width,
# several chunks per plane / per sample, 4D and 3D inputs.
SHAPES = [
    ((2, 8, 3, 5, 7), 4),
    ((1, 32, 4, 8, 8), 32),
    ((2, 16, 2, 6, 6), 1),
    ((3, 64, 2, 9, 11), 8),
    ((2, 12, 3, 4, 5), 3),
    ((2, 6, 1, 1, 1), 3),
    ((2, 16, 8, 56, 56), 2),
    ((2, 32, 17, 19), 8),
    ((2, 8, 37), 2),
    # wide C: channels-last lanes = C / V of 256 (bf16), 512 (fp32, 512-thread blocks) and 1024 (fp64: computed on a
    # contiguous copy); 1536 leaves idle threads in the 256-thread channels-last block (bf16).
    ((2, 2048, 2, 3, 3), 32),
    ((1, 1536, 2, 2, 3), 32),
    # several chunks per plane with a plane size that is no multiple of the pack width (contiguous), and several
    # chunks with an idle thread in channels-last (24 channels = 3 bf16 packs of 8 per row).
    ((1, 4, 9, 61, 67), 2),
    ((2, 24, 4, 32, 32), 4),
]


def _layouts(ndim):
    return {5: [CONTIG, CL3D], 4: [CONTIG, CL]}.get(ndim, [CONTIG])


GRID = [
    (shape, g, dtype, layout)
    for (shape, g), dtype in itertools.product(SHAPES, DTYPES)
    for layout in _layouts(len(shape))
]


def _make(shape, dtype, layout, affine=True, param_dtype=None, seed=0, offset=0.0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    x = (torch.randn(shape, generator=gen, device="cuda", dtype=torch.float64) + offset).to(dtype)
    x = x.contiguous(memory_format=layout)
    c = shape[1]
    pd = param_dtype or dtype
    w = (torch.rand(c, generator=gen, device="cuda", dtype=torch.float64) + 0.5).to(pd) if affine else None
    b = torch.randn(c, generator=gen, device="cuda", dtype=torch.float64).to(pd) if affine else None
    dy = torch.randn(shape, generator=gen, device="cuda", dtype=torch.float64).to(dtype)
    dy = dy.contiguous(memory_format=layout)
    return x, w, b, dy


def _away_from_relu_kink(x, g, w, b, eps, dy, thr=1e-3):
    """dy with zeros where the float64 pre-activation |z| < thr, so that a ReLU mask that differs from the reference
    by rounding (z within ~1e-6 of 0) cannot change any gradient."""
    wd = w.double() if w is not None else None
    bd = b.double() if b is not None else None
    z = F.group_norm(x.double(), g, wd, bd, eps)
    return dy.masked_fill(z.abs() < thr, 0).contiguous(memory_format=_layout(dy))


def _layout(t):
    if t.is_contiguous():
        return CONTIG
    return CL3D if t.dim() == 5 else CL


def _reference(x, g, w, b, eps, activation, dy):
    """float64 y, mean, rstd and grads (dx, then dw and db where given) from the same (quantized) inputs: the
    reference of the CPU tests (``testing.reference``, which runs on every supported torch)."""
    ref = testing.reference(testing.Sample("reference", x, w, b, dy, g, eps, activation))
    grads = tuple(t for t in (ref.dx, ref.dweight, ref.dbias) if t is not None)
    return ref.y, ref.mean, ref.rstd, grads


def _ours(x, g, w, b, eps, activation, dy):
    # detach() keeps x's storage (layout, alignment) and makes fresh leaves.
    xl, wl, bl = [t.detach().requires_grad_(True) if t is not None else None for t in (x, w, b)]
    y, mean, rstd = torch.ops.gnvideo.group_norm_fwd(xl, wl, bl, g, eps, activation)
    grads = torch.autograd.grad(y, [t for t in (xl, wl, bl) if t is not None], dy)
    return y, mean, rstd, grads


def _rel_err(got, want, floor=1e-12):
    """Max |got - want| relative to max |want| (or to ``floor`` when that is larger)."""
    return ((got.double() - want).abs().max() / max(want.abs().max().item(), floor)).item()


def _dx_floor(rstd, w, dy):
    """1% of the scale of the terms that cancel in dx (rstd * w * dy): tiny groups can have dx ~ 0."""
    wmax = w.abs().max().item() if w is not None else 1.0
    return 1e-2 * rstd.abs().max().item() * wmax * dy.abs().max().item()


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize(("shape", "g", "dtype", "layout"), GRID)
def test_numerics_vs_float64(cuda_ext, shape, g, dtype, layout, affine, activation):
    x, w, b, dy = _make(shape, dtype, layout, affine)
    if activation == "relu":
        dy = _away_from_relu_kink(x, g, w, b, 1e-5, dy)
    y, mean, rstd, grads = _ours(x, g, w, b, 1e-5, activation, dy)
    ry, rmean, rrstd, rgrads = _reference(x, g, w, b, 1e-5, activation, dy)
    tol = TOL[dtype]
    stat_tol = 1e-9 if dtype == torch.float64 else 1e-5
    assert y.dtype == dtype and y.shape == x.shape
    assert y.is_contiguous(memory_format=layout)
    assert mean.dtype == rstd.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert _rel_err(mean, rmean, floor=1e-2) < stat_tol * 10
    assert _rel_err(rstd, rrstd) < stat_tol * 10
    assert _rel_err(y, ry) < tol, "y"
    names = ["dx", "dweight", "dbias"][: len(grads)]
    floors = [_dx_floor(rrstd, w, dy), 1e-12, 1e-12]
    for name, got, want, floor in zip(names, grads, rgrads, floors):
        assert torch.isfinite(got).all(), name
        assert _rel_err(got, want, floor) < tol * (4 if name == "dx" else 1), name
    assert grads[0].is_contiguous(memory_format=layout)


@pytest.mark.parametrize("layout", [CONTIG, CL3D])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_params(cuda_ext, layout, dtype):
    """Low-precision x with float32 weight/bias (autocast-style parameters)."""
    x, w, b, dy = _make((2, 32, 4, 10, 10), dtype, layout, param_dtype=torch.float32)
    dy = _away_from_relu_kink(x, 8, w, b, 1e-5, dy)
    y, _, _, (dx, dw, db) = _ours(x, 8, w, b, 1e-5, "relu", dy)
    ry, _, _, (rdx, rdw, rdb) = _reference(x, 8, w, b, 1e-5, "relu", dy)
    assert y.dtype == dtype and dw.dtype == db.dtype == torch.float32
    assert _rel_err(y, ry) < TOL[dtype]
    assert _rel_err(dx, rdx) < 4 * TOL[dtype]
    assert _rel_err(dw, rdw) < 1e-4 and _rel_err(db, rdb) < 1e-4


@pytest.mark.parametrize("shape", [(2, 16, 3, 5, 8), (1, 8, 9, 61, 67)])  # the second has several chunks per plane
@pytest.mark.parametrize("layout", [CONTIG, CL3D])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_unaligned_storage_offset(cuda_ext, layout, dtype, shape):
    """A view starting one element into its storage cannot use 16-byte packs (scalar path)."""
    g = 4
    x0, w, b, dy = _make(shape, dtype, layout)
    storage = torch.empty(x0.numel() + 1, device="cuda", dtype=dtype)
    x = storage[1:].as_strided(x0.shape, x0.stride())
    x.copy_(x0)
    assert x.data_ptr() % 16 != 0 and x.is_contiguous(memory_format=layout)
    y, mean, rstd, grads = _ours(x, g, w, b, 1e-5, "silu", dy)
    ry, _, rrstd, rgrads = _reference(x, g, w, b, 1e-5, "silu", dy)
    assert _rel_err(y, ry) < TOL[dtype] and _rel_err(rstd, rrstd) < 1e-4
    assert _rel_err(grads[0], rgrads[0], _dx_floor(rrstd, w, dy)) < 4 * TOL[dtype]


@pytest.mark.parametrize("layout", [CONTIG, CL3D])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_mean_small_std(cuda_ext, layout, dtype):
    """1e4 + N(0, 1): a naive E[x^2] - E[x]^2 in fp32 would lose the variance entirely."""
    x, w, b, dy = _make((2, 32, 4, 28, 28), dtype, layout, offset=1e4)
    y, mean, rstd, grads = _ours(x, 8, w, b, 1e-5, "none", dy)
    ry, rmean, rrstd, rgrads = _reference(x, 8, w, b, 1e-5, "none", dy)
    tight = dtype == torch.float64
    assert _rel_err(rstd, rrstd) < (1e-9 if tight else 1e-3)  # the robustness check proper
    # In fp32 the stored mean itself is only exact to ~ulp(1e4) = 1e-3, which bounds y / dx / dweight accuracy.
    assert (y.double() - ry).abs().max().item() < (1e-8 if tight else 1e-2)
    assert _rel_err(grads[0], rgrads[0]) < (1e-8 if tight else 1e-2)
    assert _rel_err(grads[1], rgrads[1]) < (1e-8 if tight else 1e-2)


@pytest.mark.parametrize("layout", [CONTIG, CL3D])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_constant_groups(cuda_ext, layout, dtype):
    n, c, g = 2, 16, 4
    levels = torch.arange(n * c, device="cuda", dtype=torch.float32).reshape(n, c) // (c // g) * 1.5 - 3.0
    x = levels[:, :, None, None, None].expand(n, c, 3, 7, 9).to(dtype).contiguous(memory_format=layout)
    b = torch.randn(c, device="cuda").to(dtype)
    w = torch.rand(c, device="cuda").to(dtype) + 0.5
    y, mean, rstd = torch.ops.gnvideo.group_norm_fwd(x, w, b, g, 1e-5, "none")
    torch.testing.assert_close(rstd, torch.full_like(rstd, 1e-5**-0.5), rtol=1e-6, atol=0)
    torch.testing.assert_close(mean, levels.to(dtype).float()[:, :: c // g], rtol=0, atol=0)
    assert torch.equal(y, b.view(1, c, 1, 1, 1).expand_as(y).to(dtype))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(("shape", "layout"), [((2, 6, 3, 4, 5), CONTIG), ((2, 6, 3, 4, 5), CL3D), ((2, 8, 5, 3), CL)])
@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck_fp64_through_kernel(cuda_ext, shape, layout, activation, affine):
    x, w, b, _ = _make(shape, torch.float64, layout, affine, seed=4)
    leaves = [x.requires_grad_(True)] + ([w.requires_grad_(True), b.requires_grad_(True)] if affine else [])

    def fn(x, w=None, b=None):
        return torch.ops.gnvideo.group_norm_fwd(x, w, b, 2, 1e-5, activation)[0]

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("dtype", "layout", "activation"),
    [
        (torch.float32, CONTIG, "none"),
        (torch.float32, CL3D, "relu"),
        (torch.bfloat16, CL3D, "silu"),
        (torch.float64, CONTIG, "silu"),
    ],
)
def test_opcheck_cuda(cuda_ext, dtype, layout, activation):
    x, w, b, dy = _make((2, 16, 3, 6, 6), dtype, layout)
    code = activation
    args = (x.requires_grad_(True), w.requires_grad_(True), b.requires_grad_(True), 4, 1e-5, code)
    torch.library.opcheck(torch.ops.gnvideo.group_norm_fwd.default, args)
    _, mean, rstd = torch.ops.gnvideo.group_norm_fwd(x.detach(), w.detach(), b.detach(), 4, 1e-5, code)
    torch.library.opcheck(
        torch.ops.gnvideo.group_norm_bwd.default,
        (dy, x.detach(), mean, rstd, w.detach(), b.detach(), 4, code),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


@pytest.mark.parametrize("layout", [CONTIG, CL3D])
def test_torch_compile_fullgraph(cuda_ext, layout):
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    x, w, b, dy = _make((2, 32, 4, 8, 8), torch.bfloat16, layout, param_dtype=torch.float32)

    def block(x, w, b):
        return group_norm(x * 2.0, 8, w, b, activation="relu") + 1.0

    compiled = torch.compile(block, fullgraph=True, backend=counter)
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, w, b)]
    y = compiled(*leaves)
    grads = torch.autograd.grad(y, leaves, dy)
    assert counter.frame_count == 1
    eager_leaves = [t.detach().clone().requires_grad_(True) for t in (x, w, b)]
    y_eager = block(*eager_leaves)
    eager_grads = torch.autograd.grad(y_eager, eager_leaves, dy)
    torch.testing.assert_close(y, y_eager, rtol=2e-2, atol=2e-2)
    for got, want in zip(grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("layout", [CONTIG, CL3D])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_deterministic(cuda_ext, layout, dtype):
    x, w, b, dy = _make((4, 64, 8, 28, 28), dtype, layout, param_dtype=torch.float32)
    runs = [_ours(x, 32, w, b, 1e-5, "relu", dy) for _ in range(4)]
    for y, mean, rstd, grads in runs[1:]:
        assert torch.equal(y, runs[0][0]) and torch.equal(mean, runs[0][1]) and torch.equal(rstd, runs[0][2])
        for got, first in zip(grads, runs[0][3]):
            assert torch.equal(got, first)


@pytest.mark.parametrize(
    ("layout", "shape"), [(CL3D, (2, 64, 4, 14, 14)), (CL, (2, 64, 14, 14)), (CONTIG, (2, 64, 4, 14, 14))]
)
def test_layout_preserved_without_copies(cuda_ext, layout, shape):
    """Output and dx keep the input's layout, and only our kernels run (no layout copy)."""
    x, w, b, dy = _make(shape, torch.bfloat16, layout, param_dtype=torch.float32)
    x.requires_grad_(True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        y = group_norm(x, 32, w, b, activation="silu")
        (dx,) = torch.autograd.grad(y, [x], dy)
        torch.cuda.synchronize()
    assert y.is_contiguous(memory_format=layout) and dx.is_contiguous(memory_format=layout)
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert names, "profiler saw no CUDA kernels"
    assert all("gnk_" in n for n in names), names


def test_dispatch_on_cuda(cuda_ext):
    x = torch.randn(2, 8, 3, 4, 4, device="cuda")
    ok, reason = kernel_supports(x)
    assert ok and "CUDA kernel" in reason
    assert backend(x).startswith("kernel:")
    assert not kernel_supports(x, use_kernel=False)[0]
    assert not kernel_supports(torch.randn(2, 8, device="cuda"))[0]
    y = group_norm(x, 4, use_kernel=False)
    torch.testing.assert_close(group_norm(x, 4), y, rtol=1e-5, atol=1e-5)


def test_empty_and_non_dense_inputs(cuda_ext):
    empty = torch.randn(0, 8, 3, 4, 4, device="cuda")
    assert group_norm(empty, 4).shape == empty.shape
    base = torch.randn(2, 8, 3, 4, 10, device="cuda")
    x = base[..., ::2]  # non-dense: computed on a contiguous copy, result matches the reference
    torch.testing.assert_close(group_norm(x, 4, activation="relu"), F.relu(F.group_norm(x, 4)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", [CONTIG, CL3D])
def test_tensor_past_2_31_elements(cuda_ext, layout):
    shape = (2, 64, 16, 1024, 1040)  # 2,181,038,080 elements > 2**31
    numel = 2 * 64 * 16 * 1024 * 1040
    free, _ = torch.cuda.mem_get_info()
    if free < 6 * numel * 2 + (4 << 30):
        pytest.skip(f"needs ~{(6 * numel * 2 + (4 << 30)) / 2**30:.0f} GiB free GPU memory, have {free / 2**30:.0f}")
    torch.manual_seed(0)
    x = torch.randn(shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=layout)
    w = torch.rand(64, device="cuda") + 0.5
    b = torch.randn(64, device="cuda")
    y, mean, rstd = torch.ops.gnvideo.group_norm_fwd(x, w, b, 32, 1e-5, "relu")
    dy = torch.randn_like(x)
    for n, g in ((0, 0), (1, 31)):  # the checked groups: keep ReLU-kink rounding out of their gradients
        sl = (n, slice(2 * g, 2 * g + 2))
        z = F.group_norm(x[sl].double().unsqueeze(0), 1, w[2 * g : 2 * g + 2].double(), b[2 * g : 2 * g + 2].double())
        dy[sl].masked_fill_(z.squeeze(0).abs() < 1e-3, 0)
        del z
    dx, dw, db = torch.ops.gnvideo.group_norm_bwd(dy, x, mean, rstd, w, b, 32, "relu")
    assert torch.isfinite(dw).all() and torch.isfinite(db).all()
    # Check the first and the last group (the last lies past element 2**31) against float64.
    for n, g in ((0, 0), (1, 31)):
        sl = (n, slice(2 * g, 2 * g + 2))
        xs = x[sl].double().unsqueeze(0).requires_grad_(True)
        ws, bs = w[2 * g : 2 * g + 2].double(), b[2 * g : 2 * g + 2].double()
        ref = F.relu(F.group_norm(xs, 1, ws, bs, 1e-5))
        (rdx,) = torch.autograd.grad(ref, [xs], dy[sl].double().unsqueeze(0))
        assert _rel_err(y[sl].unsqueeze(0), ref.detach()) < TOL[torch.bfloat16]
        assert _rel_err(dx[sl].unsqueeze(0), rdx) < 4 * TOL[torch.bfloat16]
        xr = xs.detach().reshape(-1)
        assert abs(mean[n, g].item() - xr.mean().item()) < 1e-4
        assert rstd[n, g].item() == pytest.approx((xr.var(unbiased=False) + 1e-5).rsqrt().item(), rel=1e-4)
        del xs, ref, rdx


@pytest.mark.parametrize("which", ["weight_only", "bias_only"])
@pytest.mark.parametrize("layout", [CONTIG, CL3D])
def test_weight_or_bias_alone(cuda_ext, which, layout):
    x, w, b, dy = _make((2, 16, 3, 9, 10), torch.float32, layout)
    w, b = (w, None) if which == "weight_only" else (None, b)
    y, _, _, grads = _ours(x, 4, w, b, 1e-5, "silu", dy)
    ry, _, rrstd, rgrads = _reference(x, 4, w, b, 1e-5, "silu", dy)
    assert _rel_err(y, ry) < TOL[torch.float32]
    assert len(grads) == 2
    assert _rel_err(grads[0], rgrads[0], _dx_floor(rrstd, w, dy)) < 4 * TOL[torch.float32]
    assert _rel_err(grads[1], rgrads[1]) < TOL[torch.float32]


@pytest.mark.parametrize(("x_layout", "dy_layout"), [(CL3D, CONTIG), (CONTIG, CL3D)])
def test_grad_in_other_layout(cuda_ext, x_layout, dy_layout):
    """The incoming gradient may come in another memory format than x (e.g. from a following contiguous op)."""
    x, w, b, dy = _make((2, 32, 4, 12, 12), torch.float32, x_layout)
    dy = dy.contiguous(memory_format=dy_layout)
    y, _, _, grads = _ours(x, 8, w, b, 1e-5, "none", dy)
    ry, _, rrstd, rgrads = _reference(x, 8, w, b, 1e-5, "none", dy)
    assert _rel_err(y, ry) < TOL[torch.float32]
    for got, want in zip(grads, rgrads):
        assert _rel_err(got, want, _dx_floor(rrstd, w, dy)) < 4 * TOL[torch.float32]


@pytest.mark.parametrize("name", [s.name for s in testing.SPECS])
def test_shared_samples_on_cuda(cuda_ext, name):
    """The cases the CPU emulation runs (gnvideo.ops.testing), here through the real kernels."""
    s = testing.sample_inputs("cuda", [name])[0]
    bad = testing.compare(s, testing.run_group_norm(s, "kernel"))
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize("layout", [CONTIG, CL3D])
def test_autocast_bf16_both_paths_return_input_dtype(cuda_ext, layout):
    x, w, b, _ = _make((2, 32, 4, 8, 8), torch.bfloat16, layout, param_dtype=torch.float32)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y_kernel = group_norm(x, 8, w, b, activation="relu", backend="kernel")
        y_ref = group_norm(x, 8, w, b, activation="relu", backend="reference")
    assert y_kernel.dtype == y_ref.dtype == torch.bfloat16
    assert _rel_err(y_kernel, y_ref.double()) < TOL[torch.bfloat16]
