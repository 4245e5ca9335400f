"""Shared inputs, float64 reference and tolerances for testing ``gnvideo.ops.group_norm`` on any device.

One list of cases (:func:`sample_inputs`) serves the CPU tests (extension CPU op and reference path), the emulated
CUDA kernels (``tests/ops/emu``, which feed the same tensors to the kernels running on the CPU) and the CUDA tests on
a GPU. :func:`reference` computes y, the statistics and the gradients in float64 from the same (already quantized)
inputs; :func:`compare` applies the dtype-aware tolerances and returns the failures as text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

CONTIG = torch.contiguous_format
#: Max error relative to max |reference| (the reference sees the same quantized inputs).
TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}
#: Relative tolerance of the statistics (mean, rstd); they accumulate in float32 (float64 for float64 x).
STAT_TOL = {torch.float64: 1e-8, torch.float32: 1e-4, torch.float16: 1e-4, torch.bfloat16: 1e-4}


def stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of mean/rstd (and of the weights inside the kernel) for an input dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def channels_last_format(ndim: int) -> torch.memory_format:
    return torch.channels_last_3d if ndim == 5 else torch.channels_last


@dataclass
class Sample:
    """One GroupNorm call: x (N, C, *spatial) with its layout, weight/bias (C,) or None, dy like x."""

    name: str
    x: torch.Tensor
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    dy: torch.Tensor
    num_groups: int
    eps: float = 1e-5
    activation: str = "none"
    channels_last: bool = False
    checks: tuple[str, ...] = field(default=())  # extra exact checks: "constant"

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype


@dataclass(frozen=True)
class Spec:
    """Recipe of a :class:`Sample`; ``x_offset`` starts x that many elements into its storage (breaks alignment)."""

    name: str
    shape: tuple[int, ...]
    num_groups: int
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    activation: str = "none"
    affine: str = "both"  # both | weight | bias | none
    x_offset: int = 0
    mean: float = 0.0
    constant: bool = False
    seed: int = 0

    def make(self, device: str | torch.device = "cpu") -> Sample:
        gen = torch.Generator().manual_seed(self.seed)
        n, c = self.shape[0], self.shape[1]
        if self.constant:
            g = self.num_groups
            levels = (torch.arange(n * c, dtype=torch.float64).reshape(n, c) // (c // g)) * 1.5 - 3.0
            x = levels.reshape(n, c, *([1] * (len(self.shape) - 2))).expand(self.shape).clone()
        else:
            x = torch.randn(self.shape, generator=gen, dtype=torch.float64) + self.mean
        w = torch.rand(c, generator=gen, dtype=torch.float64) + 0.5
        b = torch.randn(c, generator=gen, dtype=torch.float64)
        dy = torch.randn(self.shape, generator=gen, dtype=torch.float64)
        fmt = channels_last_format(len(self.shape)) if self.channels_last else CONTIG
        x = _place(x.to(self.dtype), fmt, self.x_offset, device)
        dy = dy.to(self.dtype).to(device).contiguous(memory_format=fmt)
        weight = w.to(self.dtype).to(device) if self.affine in ("both", "weight") else None
        bias = b.to(self.dtype).to(device) if self.affine in ("both", "bias") else None
        sample = Sample(self.name, x, weight, bias, dy, self.num_groups, 1e-5, self.activation, self.channels_last,
                        ("constant",) if self.constant else ())
        if self.activation == "relu":
            sample.dy = away_from_relu_kink(sample)
        return sample


def _place(x: torch.Tensor, fmt: torch.memory_format, offset: int, device) -> torch.Tensor:
    dense = x.to(device).contiguous(memory_format=fmt)
    if offset == 0:
        return dense
    storage = torch.empty(dense.numel() + offset, dtype=dense.dtype, device=device)
    view = storage[offset:].as_strided(dense.shape, dense.stride())
    view.copy_(dense)
    return view


F32, F64, F16, BF16 = torch.float32, torch.float64, torch.float16, torch.bfloat16

#: Every case the emulated, CPU and CUDA tests share. Shapes stay small enough for the CPU emulation.
SPECS: tuple[Spec, ...] = (
    Spec("basic_f32", (2, 8, 3, 5, 7), 4, F32),
    Spec("basic_f32_cl", (2, 8, 3, 5, 7), 4, F32, True, "relu"),
    Spec("basic_f64", (2, 8, 3, 5, 7), 4, F64, activation="silu"),
    Spec("basic_f64_cl", (2, 8, 3, 5, 7), 4, F64, True),
    Spec("basic_f16", (2, 16, 2, 6, 6), 4, F16, activation="silu"),
    Spec("basic_f16_cl", (2, 16, 2, 6, 6), 4, F16, True, "relu"),
    Spec("basic_bf16", (2, 16, 2, 6, 6), 8, BF16, activation="relu"),
    Spec("basic_bf16_cl", (2, 16, 2, 6, 6), 8, BF16, True, "silu"),
    Spec("large_mean_f32", (2, 16, 4, 12, 12), 4, F32, mean=1e4),
    Spec("large_mean_f32_cl", (2, 16, 4, 12, 12), 4, F32, True, mean=1e4),
    Spec("large_mean_f64", (2, 16, 4, 12, 12), 4, F64, mean=1e4),
    Spec("large_mean_f64_cl", (2, 16, 4, 12, 12), 4, F64, True, mean=1e4),
    Spec("constant_f32", (2, 16, 3, 7, 9), 4, F32, constant=True),
    Spec("constant_bf16_cl", (2, 16, 3, 7, 9), 4, BF16, True, constant=True),
    Spec("n1_g_eq_c_f32", (1, 32, 4, 8, 8), 32, F32, activation="silu"),
    Spec("n1_g_eq_c_bf16_cl", (1, 32, 4, 8, 8), 32, BF16, True, "relu"),
    Spec("g1_f32", (2, 16, 2, 6, 6), 1, F32, activation="relu"),
    Spec("g1_f16_cl", (2, 16, 2, 6, 6), 1, F16, True),
    Spec("c_not_pack_multiple_bf16", (2, 12, 3, 4, 5), 3, BF16, activation="silu"),
    Spec("c_not_pack_multiple_bf16_cl", (2, 12, 3, 4, 5), 3, BF16, True, "silu"),
    Spec("c6_f32_cl", (2, 6, 1, 1, 1), 3, F32, True),
    Spec("odd_4d_f32_cl", (2, 32, 17, 19), 8, F32, True, "relu"),
    Spec("odd_3d_f32", (2, 8, 37), 2, F32, activation="silu"),
    Spec("unaligned_f32", (2, 16, 3, 5, 8), 4, F32, activation="silu", x_offset=1),
    Spec("unaligned_bf16_cl", (2, 16, 3, 5, 8), 4, BF16, True, "silu", x_offset=1),
    Spec("chunks_per_plane_f32", (1, 4, 9, 61, 67), 2, F32, activation="silu"),
    Spec("chunks_per_plane_unaligned_bf16", (1, 4, 9, 61, 67), 2, BF16, x_offset=3),
    Spec("chunks_idle_lane_bf16_cl", (2, 24, 4, 32, 32), 4, BF16, True, "relu"),
    Spec("wide_512_lanes_f64_cl", (2, 1024, 2, 3, 3), 32, F64, True, "silu"),
    Spec("wide_copy_path_f32_cl", (1, 2048, 2, 1, 3), 32, F32, True),
    Spec("wide_idle_threads_bf16_cl", (1, 1536, 2, 2, 3), 32, BF16, True),
    Spec("wide_copy_path_f64_cl", (1, 1040, 2, 1, 3), 8, F64, True, "relu"),
    Spec("wide_copy_path_bf16_cl", (1, 2080, 1, 2, 2), 40, BF16, True, "silu"),
    Spec("weight_only_f32", (2, 16, 3, 9, 10), 4, F32, activation="silu", affine="weight"),
    Spec("bias_only_f32_cl", (2, 16, 3, 9, 10), 4, F32, True, "silu", affine="bias"),
    Spec("no_affine_f64_cl", (2, 16, 3, 4, 5), 4, F64, True, "relu", affine="none"),
    Spec("no_affine_f16", (2, 16, 3, 4, 5), 4, F16, activation="silu", affine="none"),
    Spec("i3d_res4_bf16_cl", (1, 1024, 4, 14, 14), 32, BF16, True, "relu"),
    Spec("i3d_res4_f32", (1, 1024, 2, 14, 14), 32, F32, activation="relu"),
    Spec("i3d_res5_bf16_cl", (4, 2048, 8, 7, 7), 32, BF16, True, "relu"),
    Spec("i3d_res5_f16", (1, 2048, 2, 7, 7), 32, F16),
)


def sample_inputs(device: str | torch.device = "cpu", names: list[str] | None = None) -> list[Sample]:
    """The shared GroupNorm cases as tensors on ``device`` (all of :data:`SPECS`, or those named)."""
    specs = SPECS if names is None else [s for s in SPECS if s.name in names]
    return [s.make(device) for s in specs]


def _act(y: torch.Tensor, activation: str) -> torch.Tensor:
    return {"none": y, "relu": F.relu(y), "silu": F.silu(y)}[activation]


def away_from_relu_kink(s: Sample, thr: float = 1e-3) -> torch.Tensor:
    """dy with zeros where the float64 pre-activation |z| < thr, so a ReLU mask that differs from the reference by
    rounding (z within ~1e-6 of 0) cannot change any gradient."""
    wd = s.weight.double() if s.weight is not None else None
    bd = s.bias.double() if s.bias is not None else None
    z = F.group_norm(s.x.double(), s.num_groups, wd, bd, s.eps)
    fmt = channels_last_format(s.x.dim()) if s.channels_last else CONTIG
    return s.dy.masked_fill(z.abs() < thr, 0).contiguous(memory_format=fmt)


@dataclass
class Result:
    """Outputs of one forward + backward: y (like x), mean/rstd (N, G), dx (like x), dweight/dbias (C,) or None."""

    y: torch.Tensor
    mean: torch.Tensor | None
    rstd: torch.Tensor | None
    dx: torch.Tensor
    dweight: torch.Tensor | None
    dbias: torch.Tensor | None


def reference(s: Sample) -> Result:
    """float64 forward and backward of ``s`` (F.group_norm + activation, autograd), from the same inputs.

    Computed on contiguous copies: PyTorch's channels-last CPU GroupNorm loses about 1e-7 relative in float64 when
    |mean| >> std, which would hide the kernels' own float64 accuracy. A bias without a weight gets a ones weight
    (exact): torch 2.11's backward of ``F.group_norm(x, G, None, bias)`` raises "tensor does not have a device".
    """
    xd = s.x.detach().double().contiguous().requires_grad_(True)
    wd = s.weight.detach().double().requires_grad_(True) if s.weight is not None else None
    bd = s.bias.detach().double().requires_grad_(True) if s.bias is not None else None
    w_or_ones = torch.ones_like(bd) if wd is None and bd is not None else wd
    y = _act(F.group_norm(xd, s.num_groups, w_or_ones, bd, s.eps), s.activation)
    leaves = [t for t in (xd, wd, bd) if t is not None]
    grads = list(torch.autograd.grad(y, leaves, s.dy.double().contiguous()))
    dx = grads.pop(0)
    dw = grads.pop(0) if wd is not None else None
    db = grads.pop(0) if bd is not None else None
    xr = xd.detach().reshape(s.x.shape[0], s.num_groups, -1)
    mean, rstd = xr.mean(-1), (xr.var(-1, unbiased=False) + s.eps).rsqrt()
    return Result(y.detach(), mean, rstd, dx, dw, db)


def rel_err(got: torch.Tensor, want: torch.Tensor, floor: float = 1e-12) -> float:
    """Max |got - want| relative to max |want| (or to ``floor`` when that is larger)."""
    return ((got.double() - want).abs().max() / max(want.abs().max().item(), floor)).item()


def dx_floor(s: Sample, ref: Result) -> float:
    """1 % of the scale of the terms that cancel in dx (rstd * w * dy): tiny groups can have dx ~ 0."""
    wmax = s.weight.abs().max().item() if s.weight is not None else 1.0
    return 1e-2 * ref.rstd.abs().max().item() * wmax * s.dy.abs().max().item()


def compare(s: Sample, got: Result, ref: Result | None = None, *, stats: bool = True) -> list[str]:
    """Failures of ``got`` against the float64 reference at the tolerances of ``s.dtype`` (empty list: pass)."""
    ref = reference(s) if ref is None else ref
    tol, bad = TOL[s.dtype], []
    large_mean = s.x.double().mean().abs().item() > 1e3
    fmt = channels_last_format(s.x.dim()) if s.channels_last else CONTIG

    def check(name: str, g: torch.Tensor | None, w: torch.Tensor | None, limit: float, floor: float = 1e-12) -> None:
        if (g is None) != (w is None):
            bad.append(f"{name}: got {'None' if g is None else 'a tensor'}, want {'None' if w is None else 'a tensor'}")
            return
        if g is None:
            return
        if tuple(g.shape) != tuple(w.shape):
            bad.append(f"{name}: shape {tuple(g.shape)} != {tuple(w.shape)}")
            return
        if not torch.isfinite(g).all():
            bad.append(f"{name}: {int((~torch.isfinite(g)).sum())} non-finite values")
            return
        err = rel_err(g, w, floor)
        if not err < limit:
            bad.append(f"{name}: relative error {err:.3g} >= {limit:.3g}")

    if got.y.dtype != s.dtype or got.dx.dtype != s.dtype:
        bad.append(f"dtype: y {got.y.dtype}, dx {got.dx.dtype}, want {s.dtype}")
    for name, t in (("y", got.y), ("dx", got.dx)):
        if not t.is_contiguous(memory_format=fmt):
            bad.append(f"{name} lost the layout of x ({fmt})")
    if large_mean and s.dtype != torch.float64:
        # The stored fp32 mean is only exact to ~ulp(1e4) = 1e-3, which bounds y / dx / dweight accuracy.
        check("y", got.y, ref.y, 1e-2 / max(ref.y.abs().max().item(), 1.0) + tol)
        tol_dx, tol_p = 1e-2, 1e-2
    else:
        check("y", got.y, ref.y, tol)
        tol_dx, tol_p = 4 * tol, tol
    if stats and got.mean is not None:
        st = STAT_TOL[s.dtype] * (10 if large_mean else 1)
        check("mean", got.mean, ref.mean, st, floor=1e-2)
        check("rstd", got.rstd, ref.rstd, st)
    check("dx", got.dx, ref.dx, tol_dx, dx_floor(s, ref))
    check("dweight", got.dweight, ref.dweight, tol_p)
    check("dbias", got.dbias, ref.dbias, tol_p)
    if "constant" in s.checks and got.rstd is not None:
        eps = torch.tensor(s.eps, dtype=got.rstd.dtype)
        exact = 1.0 / torch.sqrt(eps)
        if not torch.equal(got.rstd, exact.expand_as(got.rstd)):
            bad.append(f"constant groups: rstd {got.rstd.flatten()[:4].tolist()} != 1/sqrt(eps) = {exact.item()!r}")
        if s.bias is not None:
            want_y = s.bias.reshape(1, -1, *([1] * (s.x.dim() - 2))).expand_as(s.x).to(s.dtype)
            if not torch.equal(got.y, want_y):
                bad.append("constant groups: y != bias exactly")
    return bad


def run_group_norm(s: Sample, backend: str) -> Result:
    """Forward and backward of ``s`` through ``gnvideo.ops.group_norm(..., backend=backend)``; statistics from the
    extension op when ``backend == "kernel"`` (None otherwise). x keeps its storage (layout and alignment)."""
    from gnvideo.ops import group_norm

    leaves = [t.detach().requires_grad_(True) if t is not None else None for t in (s.x, s.weight, s.bias)]
    y = group_norm(leaves[0], s.num_groups, leaves[1], leaves[2], s.eps, s.activation, backend=backend)
    grads = list(torch.autograd.grad(y, [t for t in leaves if t is not None], s.dy))
    dx = grads.pop(0)
    dw = grads.pop(0) if s.weight is not None else None
    db = grads.pop(0) if s.bias is not None else None
    mean = rstd = None
    if backend == "kernel":
        _, mean, rstd = torch.ops.gnvideo.group_norm_fwd(s.x, s.weight, s.bias, s.num_groups, s.eps, s.activation)
    return Result(y.detach(), mean, rstd, dx, dw, db)
