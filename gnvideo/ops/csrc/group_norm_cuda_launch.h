// Launch plans and kernel sequences of the CUDA GroupNorm, shared by group_norm_cuda.cu (which launches on the GPU)
// and by the CPU emulation in tests/ops/emu (which runs the same kernels on fibers). Plain C++ templates: the caller
// passes a `launch(kernel, blocks, threads, bound, args...)` functor and the buffers; nothing here allocates.
//
// Plan: ~kBlocksPerSm blocks per SM in total.
//   NCHW: blocks of <= kBlock threads over chunks of one (n, c) plane of S elements; a chunk holds >= kUnroll packs
//         per thread, so the per-(n, c, chunk) partials stay < 1 % of the tensor.
//   CL:   blocks of rows x L lanes (L = C / V packs of a row; kBlock threads, or up to max_cl_lanes(V) when L > kBlock)
//         over chunks of the S positions of one sample n. A chunk holds >= min_cl_rows_per_chunk positions, which caps
//         the N * nchunks * C partials at 1/8 of the tensor's bytes (forward and backward).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "group_norm_cuda_bwd.h"
#include "group_norm_cuda_fwd.h"

namespace gnvideo {
namespace cuda_detail {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Partials may take at most 1 / kPartialFraction of the tensor's bytes (channels-last; NCHW is far below).
constexpr int64_t kPartialFraction = 8;

// The most lanes (threads with one pack each) a channels-last row may use. Packs of 4 or 8 values need more than the
// 128 registers per thread that a 512-thread block allows (ptxas spills), so their kernels are built for kBlock
// threads (C <= 1024 float, <= 2048 half/bfloat16); float64 packs of 2 and unpacked rows get 2 * kBlock.
constexpr int max_cl_lanes(int V) { return V >= 4 ? kBlock : 2 * kBlock; }

// Channels-last positions per chunk so that C partials of `part_bytes` each are <= 1/kPartialFraction of the chunk's
// C * rows * elem_bytes input bytes.
inline int64_t min_cl_rows_per_chunk(int64_t part_bytes, int64_t elem_bytes) {
  return std::max<int64_t>(1, ceil_div(kPartialFraction * part_bytes, elem_bytes));
}

struct Plan {
  bool cl = false;
  bool vec = false;   // 16-byte packs (V = 16 / sizeof(T)); else V = 1
  bool fits = true;   // channels-last: C / V <= max_cl_lanes(V); else the caller computes on an NCHW copy
  int threads = kBlock;
  int bound = kBlock;  // __launch_bounds__ of the streaming kernels chosen for this plan (threads <= bound)
  int64_t nchunks = 1;
  int64_t blocks = 0;
};

// x is (N, C, S) in NCHW (cl = false) or (N, S, C) in channels-last; `aligned`: every pointer read or written with
// packs is 16-byte aligned; `pack` = 16 / sizeof(T); `part_bytes` = sizeof(Welford<acc_t<T>>).
inline Plan make_plan(int64_t N, int64_t C, int64_t S, bool cl, int pack, bool aligned, int64_t sm_count,
                      int64_t elem_bytes, int64_t part_bytes) {
  Plan p;
  p.cl = cl;
  const int64_t target = sm_count * kBlocksPerSm;
  if (cl) {
    p.vec = aligned && C % pack == 0;
    const int V = p.vec ? pack : 1;
    const int64_t lanes = C / V;
    if (lanes > max_cl_lanes(V)) {
      p.fits = false;
      return p;
    }
    p.threads = lanes <= kBlock ? kBlock : static_cast<int>(ceil_div(lanes, kWarp) * kWarp);
    p.bound = p.threads <= kBlock ? kBlock : max_cl_lanes(V);
    const int64_t rows = p.threads / lanes;
    const int64_t per_chunk = std::max<int64_t>(rows * kUnroll, min_cl_rows_per_chunk(part_bytes, elem_bytes));
    const int64_t max_chunks = std::max<int64_t>(1, S / per_chunk);
    p.nchunks = std::min<int64_t>(std::max<int64_t>(1, ceil_div(target, N)), max_chunks);
    p.blocks = N * p.nchunks;
  } else {
    p.vec = aligned;
    const int64_t packs = ceil_div(S, p.vec ? pack : 1);
    p.threads = static_cast<int>(std::min<int64_t>(kBlock, std::max<int64_t>(kWarp, ceil_div(packs, kWarp) * kWarp)));
    p.bound = kBlock;
    const int64_t max_chunks = std::max<int64_t>(1, packs / (static_cast<int64_t>(p.threads) * kUnroll));
    p.nchunks = std::min<int64_t>(std::max<int64_t>(1, ceil_div(target, N * C)), max_chunks);
    p.blocks = N * C * p.nchunks;
  }
  return p;
}

// Workspace, in elements of the accumulation type A: forward partials (Welford = 3 A), backward partials (Pair = 2 A),
// per-(n, c) sums and per-(n, g) coefficients of the backward.
inline int64_t fwd_part_elems(const Plan& p, int64_t N, int64_t C) { return N * C * p.nchunks * 3; }
inline int64_t bwd_part_elems(const Plan& p, int64_t N, int64_t C) { return N * C * p.nchunks * 2; }

// Strides (in partials) of part[n, c, chunk] for the finalize kernels.
struct PartStrides {
  int64_t sN, sC, sB;
};
inline PartStrides part_strides(const Plan& p, int64_t C) {
  return p.cl ? PartStrides{p.nchunks * C, 1, C} : PartStrides{C * p.nchunks, p.nchunks, 1};
}

// Calls f(std::integral_constant<int, B>) with B the launch bound of the channels-last kernels of plan p.
template <int V, typename F>
void with_cl_bound(const Plan& p, F&& f) {
  if constexpr (max_cl_lanes(V) > kBlock) {
    if (p.bound > kBlock) {
      f(std::integral_constant<int, max_cl_lanes(V)>{});
      return;
    }
  }
  f(std::integral_constant<int, kBlock>{});
}

// Forward: stats -> finalize (mean, rstd: N * G) -> apply. w, b may be null.
template <typename T, int V, typename Launch>
void run_fwd(Launch&& launch, const Plan& p, int64_t N, int64_t C, int64_t S, int64_t G, acc_t<T> eps, int act,
             const T* x, T* y, const acc_t<T>* w, const acc_t<T>* b, acc_t<T>* mean, acc_t<T>* rstd,
             Welford<acc_t<T>>* part) {
  using A = acc_t<T>;
  const int64_t D = C / G, NG = N * G;
  if (p.cl) {
    with_cl_bound<V>(p, [&](auto bound) {
      constexpr int B = decltype(bound)::value;
      launch(&gnk_stats_cl<T, V, B>, p.blocks, p.threads, B, x, S, C, p.nchunks, part);
    });
  } else {
    launch(&gnk_stats_nchw<T, V>, p.blocks, p.threads, kBlock, x, S, p.nchunks, part);
  }
  const PartStrides st = part_strides(p, C);
  launch(&gnk_stats_finalize<A>, ceil_div(NG * kWarp, kBlock), kBlock, kBlock, part, NG, G, D, p.nchunks, st.sN, st.sC,
         st.sB, eps, mean, rstd);
  if (p.cl) {
    with_cl_bound<V>(p, [&](auto bound) {
      constexpr int B = decltype(bound)::value;
      launch(&gnk_apply_cl<T, V, B>, p.blocks, p.threads, B, x, y, mean, rstd, w, b, C, D, S, p.nchunks, act);
    });
  } else {
    launch(&gnk_apply_nchw<T, V>, p.blocks, p.threads, kBlock, x, y, mean, rstd, w, b, C, D, S, p.nchunks, act);
  }
}

// Backward: reduce -> finalize (per_nc: N * C, coef: N * G) -> dweight/dbias (C each) -> apply (dx).
template <typename T, int V, typename Launch>
void run_bwd(Launch&& launch, const Plan& p, int64_t N, int64_t C, int64_t S, int64_t G, int act, const T* dy,
             const T* x, T* dx, const acc_t<T>* mean, const acc_t<T>* rstd, const acc_t<T>* w, const acc_t<T>* b,
             acc_t<T>* dweight, acc_t<T>* dbias, Pair<acc_t<T>>* part, Pair<acc_t<T>>* per_nc,
             Pair<acc_t<T>>* coef) {
  using A = acc_t<T>;
  const int64_t D = C / G, NG = N * G;
  if (p.cl) {
    with_cl_bound<V>(p, [&](auto bound) {
      constexpr int B = decltype(bound)::value;
      launch(&gnk_bwd_reduce_cl<T, V, B>, p.blocks, p.threads, B, dy, x, mean, rstd, w, b, C, D, S, p.nchunks, act,
             part);
    });
  } else {
    launch(&gnk_bwd_reduce_nchw<T, V>, p.blocks, p.threads, kBlock, dy, x, mean, rstd, w, b, C, D, S, p.nchunks, act,
           part);
  }
  const PartStrides st = part_strides(p, C);
  const A inv_m = A(1) / static_cast<A>(D * S);
  launch(&gnk_bwd_finalize<A>, ceil_div(NG * kWarp, kBlock), kBlock, kBlock, part, w, NG, G, D, p.nchunks, st.sN,
         st.sC, st.sB, inv_m, per_nc, coef);
  launch(&gnk_dweight_dbias<A>, ceil_div(C, kBlock), kBlock, kBlock, per_nc, N, C, dweight, dbias);
  if (p.cl) {
    with_cl_bound<V>(p, [&](auto bound) {
      constexpr int B = decltype(bound)::value;
      launch(&gnk_bwd_apply_cl<T, V, B>, p.blocks, p.threads, B, dy, x, dx, mean, rstd, w, b, coef, C, D, S,
             p.nchunks, act);
    });
  } else {
    launch(&gnk_bwd_apply_nchw<T, V>, p.blocks, p.threads, kBlock, dy, x, dx, mean, rstd, w, b, coef, C, D, S,
           p.nchunks, act);
  }
}

}  // namespace cuda_detail
}  // namespace gnvideo
