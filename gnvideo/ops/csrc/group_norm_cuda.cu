// CUDA GroupNorm with fused activation, registered for the CUDA dispatch key of gnvideo::group_norm_{fwd,bwd}.
//
// Notation: x (N, C, *spatial), S = prod(spatial), G groups of D = C / G channels, M = D * S.
// Two layouts are handled natively (no layout copy):
//   NCHW  (torch.contiguous_format):        element (n, c, s) at (n * C + c) * S + s  -> "planes" of S elements.
//   CL    (channels_last / channels_last_3d): element (n, s, c) at (n * S + s) * C + c -> "rows" of C elements.
// Forward:  stats kernel (per-(n, c, chunk) Welford partials) -> finalize (per (n, g): mean, rstd) -> apply.
// Backward: reduce kernel (per-(n, c, chunk) sums of g and g * xhat, g = dL/dz) -> finalize (per (n, c) and per
//           (n, g) coefficients) -> dweight/dbias (fixed-order sum over n) -> apply (dx).
// Every reduction has a fixed order (no float atomics), so results are bit-identical run to run.
// Accumulation is float (double for double inputs); indexing is 64-bit.
// Traffic for E elements of b bytes with P bytes of partials: forward reads x twice (stats, apply), writes y, and
// writes and reads the partials once: 3Eb + 2P (floor 2Eb); backward reads x and dy twice and writes dx: 5Eb + 2P
// (floor 3Eb). The plans keep P <= Eb / 8 (channels-last: at least min_cl_rows_per_chunk positions per chunk; NCHW:
// >= 4 packs per thread per chunk, P < 1 % of Eb), so forward moves <= 3.25Eb (1.6x the floor) and backward
// <= 5.25Eb (1.75x). The activation is fused (no extra pass) and channels-last input is read in place (no layout
// copy); channels-last with C / V > max_cl_lanes(V) is computed on an NCHW copy.
// Launch plans and the kernel sequences: group_norm_cuda_launch.h (shared with the CPU emulation in tests/ops/emu);
// kernels: group_norm_cuda_fwd.h, group_norm_cuda_bwd.h; helpers: group_norm_cuda_utils.h. This file: tensors,
// layouts, the launcher and the op registration.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "group_norm.h"
#include "group_norm_cuda_launch.h"

namespace gnvideo {
namespace {

using namespace cuda_detail;  // NOLINT

bool has(const std::optional<at::Tensor>& p) { return p.has_value() && p->defined(); }

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int64_t spatial_size(const at::Tensor& x) {
  int64_t s = 1;
  for (int64_t d = 2; d < x.dim(); ++d) s *= x.size(d);
  return s;
}

at::MemoryFormat channels_last_format(const at::Tensor& x) {
  return x.dim() == 5 ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::ChannelsLast;
}

bool is_channels_last(const at::Tensor& x) {
  return (x.dim() == 4 || x.dim() == 5) && !x.is_contiguous() && x.is_contiguous(channels_last_format(x));
}

// `ptrs` are the tensors read/written with packs; `pack` = elements per 16 bytes.
template <typename T>
Plan plan_for(const at::Tensor& x, bool cl, std::initializer_list<const void*> ptrs) {
  bool ok = true;
  for (const void* q : ptrs) ok = ok && aligned16(q);
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  Plan p = make_plan(x.size(0), x.size(1), spatial_size(x), cl, 16 / sizeof(T), ok, sms, sizeof(T),
                     sizeof(Welford<acc_t<T>>));
  TORCH_CHECK(p.blocks <= INT32_MAX, "gnvideo group_norm: grid too large (", p.blocks, " blocks)");
  // The kernels divide indices and S in 32-bit arithmetic (div31 in group_norm_cuda_utils.h).
  TORCH_CHECK(spatial_size(x) + p.nchunks <= INT32_MAX && x.size(1) <= INT32_MAX,
              "gnvideo group_norm: the kernel needs prod(spatial) < 2^31 and C < 2^31, got ", spatial_size(x), " and ",
              x.size(1));
  return p;
}

template <typename A>
const A* opt_ptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<A>() : nullptr;
}

// Launches `kernel` on the current stream; `bound` is its __launch_bounds__ (checked by the emulation too).
struct CudaLaunch {
  cudaStream_t stream;
  template <typename... P, typename... Args>
  void operator()(void (*kernel)(P...), int64_t blocks, int threads, int bound, Args... args) const {
    TORCH_INTERNAL_ASSERT(threads <= bound && blocks <= INT32_MAX, "gnvideo group_norm: bad launch ", blocks, "x",
                          threads, " (bound ", bound, ")");
    kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(static_cast<P>(args)...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

template <typename T, int V>
void launch_fwd(const at::Tensor& x, at::Tensor& y, at::Tensor& mean, at::Tensor& rstd, const at::Tensor& w,
                const at::Tensor& b, int64_t G, double eps, int act, const Plan& p) {
  using A = acc_t<T>;
  const int64_t N = x.size(0), C = x.size(1), S = spatial_size(x);
  auto part_buf = at::empty({fwd_part_elems(p, N, C)}, x.options().dtype(mean.scalar_type()));
  run_fwd<T, V>(CudaLaunch{at::cuda::getCurrentCUDAStream()}, p, N, C, S, G, static_cast<A>(eps), act,
                x.data_ptr<T>(), y.data_ptr<T>(), opt_ptr<A>(w), opt_ptr<A>(b), mean.data_ptr<A>(),
                rstd.data_ptr<A>(), reinterpret_cast<Welford<A>*>(part_buf.data_ptr<A>()));
}

template <typename T, int V>
void launch_bwd(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dx, const at::Tensor& mean,
                const at::Tensor& rstd, const at::Tensor& w, const at::Tensor& b, at::Tensor& dw, at::Tensor& db,
                int64_t G, int act, const Plan& p) {
  using A = acc_t<T>;
  const int64_t N = x.size(0), C = x.size(1), S = spatial_size(x);
  auto opts = x.options().dtype(mean.scalar_type());
  auto part_buf = at::empty({bwd_part_elems(p, N, C)}, opts);
  auto per_nc_buf = at::empty({N * C * 2}, opts);
  auto coef_buf = at::empty({N * G * 2}, opts);
  run_bwd<T, V>(CudaLaunch{at::cuda::getCurrentCUDAStream()}, p, N, C, S, G, act, dy.data_ptr<T>(), x.data_ptr<T>(),
                dx.data_ptr<T>(), mean.data_ptr<A>(), rstd.data_ptr<A>(), opt_ptr<A>(w), opt_ptr<A>(b),
                dw.data_ptr<A>(), db.data_ptr<A>(), reinterpret_cast<Pair<A>*>(part_buf.data_ptr<A>()),
                reinterpret_cast<Pair<A>*>(per_nc_buf.data_ptr<A>()),
                reinterpret_cast<Pair<A>*>(coef_buf.data_ptr<A>()));
}

// Kernel layout for x: NCHW when x is contiguous, channels-last when x is dense channels-last and C / V fits one
// block; anything else is computed on a contiguous copy and copied back into the output's layout.
struct Layout {
  bool cl;
  bool copy;
};

Layout choose_layout(const at::Tensor& x) {
  if (x.is_contiguous()) return {false, false};
  if (is_channels_last(x)) return {true, false};
  return {false, true};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_fwd_cuda(const at::Tensor& x,
                                                                    const std::optional<at::Tensor>& weight,
                                                                    const std::optional<at::Tensor>& bias,
                                                                    int64_t num_groups, double eps,
                                                                    c10::string_view activation) {
  const int act = check_group_norm_args(x, weight, bias, num_groups, activation);
  TORCH_CHECK(x.is_cuda(), "gnvideo group_norm_fwd (CUDA): x must be a CUDA tensor");
  if (x.numel() == 0) return group_norm_fwd_composite(x, weight, bias, num_groups, eps, activation);
  c10::cuda::CUDAGuard guard(x.device());
  const auto acc = stat_dtype(x.scalar_type());
  const int64_t N = x.size(0);
  auto w = has(weight) ? weight->to(acc).contiguous() : at::Tensor();
  auto b = has(bias) ? bias->to(acc).contiguous() : at::Tensor();
  auto mean = at::empty({N, num_groups}, x.options().dtype(acc));
  auto rstd = at::empty({N, num_groups}, x.options().dtype(acc));
  auto y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gnvideo_group_norm_fwd", [&] {
    constexpr int kPack = 16 / sizeof(scalar_t);
    Layout lc = choose_layout(x);
    at::Tensor xk = lc.copy ? x.contiguous() : x;
    at::Tensor yk = lc.copy ? at::empty_like(xk) : y;
    Plan p = plan_for<scalar_t>(xk, lc.cl, {xk.data_ptr(), yk.data_ptr()});
    if (!p.fits) {
      lc = {false, true};
      xk = x.contiguous();
      yk = at::empty_like(xk);
      p = plan_for<scalar_t>(xk, false, {xk.data_ptr(), yk.data_ptr()});
    }
    if (p.vec) {
      launch_fwd<scalar_t, kPack>(xk, yk, mean, rstd, w, b, num_groups, eps, act, p);
    } else {
      launch_fwd<scalar_t, 1>(xk, yk, mean, rstd, w, b, num_groups, eps, act, p);
    }
    if (lc.copy) y.copy_(yk);
  });
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_bwd_cuda(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, int64_t num_groups,
    c10::string_view activation) {
  const int act = check_group_norm_args(x, weight, bias, num_groups, activation);
  TORCH_CHECK(x.is_cuda() && grad_y.is_cuda(), "gnvideo group_norm_bwd (CUDA): x and grad_y must be CUDA tensors");
  // The kernels dereference grad_y / mean / rstd raw pointers on x's device: a CPU (or other-GPU) mean/rstd from a
  // direct op call would otherwise be read as a device address (illegal access or silent garbage).
  TORCH_CHECK(grad_y.device() == x.device() && mean.device() == x.device() && rstd.device() == x.device(),
              "gnvideo group_norm_bwd (CUDA): grad_y, mean and rstd must be on x's device ", x.device(), ", got ",
              grad_y.device(), ", ", mean.device(), ", ", rstd.device());
  TORCH_CHECK(grad_y.sizes() == x.sizes() && grad_y.scalar_type() == x.scalar_type(),
              "gnvideo group_norm_bwd: grad_y must match x in shape and dtype, got ", grad_y.sizes(), " ",
              grad_y.scalar_type(), " vs ", x.sizes(), " ", x.scalar_type());
  const int64_t N = x.size(0), C = x.size(1);
  TORCH_CHECK(mean.numel() == N * num_groups && rstd.numel() == N * num_groups,
              "gnvideo group_norm_bwd: mean/rstd must be (N, G) = (", N, ", ", num_groups, ")");
  if (x.numel() == 0) {
    return group_norm_bwd_composite(grad_y, x, mean, rstd, weight, bias, num_groups, activation);
  }
  c10::cuda::CUDAGuard guard(x.device());
  const auto acc = stat_dtype(x.scalar_type());
  auto w = has(weight) ? weight->to(acc).contiguous() : at::Tensor();
  auto b = has(bias) ? bias->to(acc).contiguous() : at::Tensor();
  auto m = mean.to(acc).contiguous();
  auto r = rstd.to(acc).contiguous();
  auto dw = at::empty({C}, x.options().dtype(acc));
  auto db = at::empty({C}, x.options().dtype(acc));
  auto dx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gnvideo_group_norm_bwd", [&] {
    constexpr int kPack = 16 / sizeof(scalar_t);
    Layout lc = choose_layout(x);
    at::Tensor xk = lc.copy ? x.contiguous() : x;
    at::Tensor gk = lc.cl ? grad_y.contiguous(channels_last_format(x)) : grad_y.contiguous();
    at::Tensor dxk = lc.copy ? at::empty_like(xk) : dx;
    Plan p = plan_for<scalar_t>(xk, lc.cl, {xk.data_ptr(), gk.data_ptr(), dxk.data_ptr()});
    if (!p.fits) {
      lc = {false, true};
      xk = x.contiguous();
      gk = grad_y.contiguous();
      dxk = at::empty_like(xk);
      p = plan_for<scalar_t>(xk, false, {xk.data_ptr(), gk.data_ptr(), dxk.data_ptr()});
    }
    if (p.vec) {
      launch_bwd<scalar_t, kPack>(gk, xk, dxk, m, r, w, b, dw, db, num_groups, act, p);
    } else {
      launch_bwd<scalar_t, 1>(gk, xk, dxk, m, r, w, b, dw, db, num_groups, act, p);
    }
    if (lc.copy) dx.copy_(dxk);
  });
  return {dx, dw.to(has(weight) ? weight->scalar_type() : x.scalar_type()),
          db.to(has(bias) ? bias->scalar_type() : x.scalar_type())};
}

}  // namespace
}  // namespace gnvideo

TORCH_LIBRARY_IMPL(gnvideo, CUDA, m) {
  m.impl("group_norm_fwd", &gnvideo::group_norm_fwd_cuda);
  m.impl("group_norm_bwd", &gnvideo::group_norm_bwd_cuda);
}
