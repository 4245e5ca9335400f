// Forward kernels of the CUDA GroupNorm (see group_norm_cuda.cu for the overall scheme). Included by
// group_norm_cuda_launch.h.
#pragma once

#include "group_norm_cuda_utils.h"

namespace gnvideo {
namespace cuda_detail {

// grid: N * C * nchunks blocks; part[(n * C + c) * nchunks + chunk].
template <typename T, int V>
__global__ void __launch_bounds__(kBlock) gnk_stats_nchw(const T* __restrict__ x, int64_t S, int64_t nchunks,
                                                          Welford<acc_t<T>>* __restrict__ part) {
  using A = acc_t<T>;
  __shared__ Welford<A> smem[kWarp];
  const int64_t plane = div31(blockIdx.x, nchunks), chunk = mod31(blockIdx.x, nchunks);
  const int64_t p0 = plane * S, p1 = p0 + S;
  const PlaneRange r = plane_range<V>(p0, p1, chunk, nchunks);
  const Pack<T, V>* xp = reinterpret_cast<const Pack<T, V>*>(x + r.a0);
  Welford<A> st{A(0), A(0), A(0)};
  strided_loop(
      r.k0 + threadIdx.x, r.k1, blockDim.x, [&](int64_t k) { return xp[k]; },
      [&](int64_t, const Pack<T, V>& p) { welford_add_pack(st, p); });
  plane_edges(p0, p1, r, chunk, [&](int64_t e) { st = combine(st, Welford<A>{A(1), static_cast<A>(x[e]), A(0)}); });
  st = block_reduce(st, smem);
  if (threadIdx.x == 0) part[blockIdx.x] = st;
}

// grid: N * nchunks blocks of blockDim.x = rows * L (+ idle) threads, L = C / V; part[(n * nchunks + chunk) * C + c].
template <typename T, int V, int kThreads>
__global__ void __launch_bounds__(kThreads) gnk_stats_cl(const T* __restrict__ x, int64_t S, int64_t C,
                                                             int64_t nchunks, Welford<acc_t<T>>* __restrict__ part) {
  using A = acc_t<T>;
  __shared__ Welford<A> smem[kBlock * V];  // only used when rows > 1, which implies blockDim.x == kBlock
  const int64_t n = div31(blockIdx.x, nchunks), chunk = mod31(blockIdx.x, nchunks);
  const int L = static_cast<int>(C / V);
  const int rows = blockDim.x / L;
  const int lane = threadIdx.x % L, row = threadIdx.x / L;
  const bool active = row < rows;
  const int64_t per = div31(S + nchunks - 1, nchunks);
  const int64_t s0 = imin(S, chunk * per), s1 = imin(S, s0 + per);
  A cnt = A(0);
  A mean[V], m2[V];
#pragma unroll
  for (int v = 0; v < V; ++v) mean[v] = m2[v] = A(0);
  if (active) {
    const Pack<T, V>* xp = reinterpret_cast<const Pack<T, V>*>(x + n * S * C) + lane;
    strided_loop(
        s0 + row, s1, rows, [&](int64_t s) { return xp[s * L]; },
        [&](int64_t, const Pack<T, V>& p) {
          cnt += A(1);
          const A inv = div_acc(A(1), cnt);
#pragma unroll
          for (int v = 0; v < V; ++v) {
            const A xv = static_cast<A>(p.v[v]);
            const A d = xv - mean[v];
            mean[v] += d * inv;
            m2[v] += d * (xv - mean[v]);
          }
        });
  }
  Welford<A>* out = part + (n * nchunks + chunk) * C;
  if (rows == 1) {
    if (active) {
#pragma unroll
      for (int v = 0; v < V; ++v) out[lane * V + v] = Welford<A>{cnt, mean[v], m2[v]};
    }
    return;
  }
  if (active) {
#pragma unroll
    for (int v = 0; v < V; ++v) smem[row * C + lane * V + v] = Welford<A>{cnt, mean[v], m2[v]};
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    Welford<A> st{A(0), A(0), A(0)};
    for (int r = 0; r < rows; ++r) st = combine(st, smem[r * C + c]);
    out[c] = st;
  }
}

// One warp per (n, g): merges the D * nchunks partials of the group in a fixed order.
template <typename A>
__global__ void gnk_stats_finalize(const Welford<A>* __restrict__ part, int64_t NG, int64_t G, int64_t D,
                                   int64_t nchunks, int64_t sN, int64_t sC, int64_t sB, A eps, A* __restrict__ mean,
                                   A* __restrict__ rstd) {
  const int64_t ng = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (ng >= NG) return;  // uniform over the warp
  const int64_t n = ng / G, g = ng % G;
  Welford<A> st{A(0), A(0), A(0)};
  const int64_t items = D * nchunks;
#pragma unroll 4
  for (int64_t k = lane; k < items; k += kWarp) {
    const int64_t c = g * D + k / nchunks, b = k % nchunks;
    st = combine(st, part[n * sN + c * sC + b * sB]);
  }
  st = warp_reduce(st);
  if (lane == 0) {
    A var = st.n > A(0) ? st.m2 / st.n : A(0);
    if (var < A(0)) var = A(0);
    mean[ng] = st.mean;
    rstd[ng] = A(1) / sqrt_acc(var + eps);
  }
}

// y = act((x - mean) * rstd * w + b). grid: N * C * nchunks blocks.
template <typename T, int V>
__global__ void __launch_bounds__(kBlock) gnk_apply_nchw(const T* __restrict__ x, T* __restrict__ y,
                                                          const acc_t<T>* __restrict__ mean,
                                                          const acc_t<T>* __restrict__ rstd,
                                                          const acc_t<T>* __restrict__ w,
                                                          const acc_t<T>* __restrict__ b, int64_t C, int64_t D,
                                                          int64_t S, int64_t nchunks, int act) {
  using A = acc_t<T>;
  const int64_t plane = div31(blockIdx.x, nchunks), chunk = mod31(blockIdx.x, nchunks);
  const int64_t n = div31(plane, C), c = mod31(plane, C), ng = n * div31(C, D) + div31(c, D);
  const A mu = mean[ng];
  const A a = rstd[ng] * (w != nullptr ? w[c] : A(1));
  const A bb = b != nullptr ? b[c] : A(0);
  const int64_t p0 = plane * S, p1 = p0 + S;
  const PlaneRange r = plane_range<V>(p0, p1, chunk, nchunks);
  const Pack<T, V>* xp = reinterpret_cast<const Pack<T, V>*>(x + r.a0);
  Pack<T, V>* yp = reinterpret_cast<Pack<T, V>*>(y + r.a0);
  strided_loop(
      r.k0 + threadIdx.x, r.k1, blockDim.x, [&](int64_t k) { return xp[k]; },
      [&](int64_t k, const Pack<T, V>& p) {
        Pack<T, V> o;
#pragma unroll
        for (int v = 0; v < V; ++v) o.v[v] = static_cast<T>(act_forward((static_cast<A>(p.v[v]) - mu) * a + bb, act));
        yp[k] = o;
      });
  plane_edges(p0, p1, r, chunk, [&](int64_t e) {
    y[e] = static_cast<T>(act_forward((static_cast<A>(x[e]) - mu) * a + bb, act));
  });
}

// grid: N * nchunks blocks (as gnk_stats_cl).
template <typename T, int V, int kThreads>
__global__ void __launch_bounds__(kThreads) gnk_apply_cl(const T* __restrict__ x, T* __restrict__ y,
                                                             const acc_t<T>* __restrict__ mean,
                                                             const acc_t<T>* __restrict__ rstd,
                                                             const acc_t<T>* __restrict__ w,
                                                             const acc_t<T>* __restrict__ b, int64_t C, int64_t D,
                                                             int64_t S, int64_t nchunks, int act) {
  using A = acc_t<T>;
  const int64_t n = div31(blockIdx.x, nchunks), chunk = mod31(blockIdx.x, nchunks);
  const int L = static_cast<int>(C / V);
  const int rows = blockDim.x / L;
  const int lane = threadIdx.x % L, row = threadIdx.x / L;
  if (row >= rows) return;  // no block-level synchronization in this kernel
  const int64_t per = div31(S + nchunks - 1, nchunks);
  const int64_t s0 = imin(S, chunk * per), s1 = imin(S, s0 + per);
  const int64_t G = div31(C, D);
  A mu[V], a[V], bb[V];
#pragma unroll
  for (int v = 0; v < V; ++v) {
    const int64_t c = static_cast<int64_t>(lane) * V + v, ng = n * G + div31(c, D);
    mu[v] = mean[ng];
    a[v] = rstd[ng] * (w != nullptr ? w[c] : A(1));
    bb[v] = b != nullptr ? b[c] : A(0);
  }
  const Pack<T, V>* xp = reinterpret_cast<const Pack<T, V>*>(x + n * S * C) + lane;
  Pack<T, V>* yp = reinterpret_cast<Pack<T, V>*>(y + n * S * C) + lane;
  strided_loop(
      s0 + row, s1, rows, [&](int64_t s) { return xp[s * L]; },
      [&](int64_t s, const Pack<T, V>& p) {
        Pack<T, V> o;
#pragma unroll
        for (int v = 0; v < V; ++v) o.v[v] = static_cast<T>(act_forward((static_cast<A>(p.v[v]) - mu[v]) * a[v] + bb[v], act));
        yp[s * L] = o;
      });
}

}  // namespace cuda_detail
}  // namespace gnvideo
