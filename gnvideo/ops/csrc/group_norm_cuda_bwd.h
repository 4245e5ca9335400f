// Backward kernels of the CUDA GroupNorm. Included by group_norm_cuda_launch.h.
#pragma once

#include "group_norm_cuda_utils.h"

namespace gnvideo {
namespace cuda_detail {

// ---------------------------------------------------------------------------------------------------------------
// Backward. With xhat = (x - mean) * rstd, z = xhat * w + b, gz = dL/dz:
//   dbias_c = sum_{n,s} gz, dweight_c = sum_{n,s} gz * xhat,
//   dx = rstd * (w_c * gz - k1 - xhat * k2), k1 = sum_group(w * gz) / M, k2 = sum_group(w * gz * xhat) / M.
// Sums use centered xhat, so they do not cancel when |mean| >> std.
// ---------------------------------------------------------------------------------------------------------------

template <typename T, int V>
__global__ void __launch_bounds__(kBlock) gnk_bwd_reduce_nchw(
    const T* __restrict__ dy, const T* __restrict__ x, const acc_t<T>* __restrict__ mean,
    const acc_t<T>* __restrict__ rstd, const acc_t<T>* __restrict__ w, const acc_t<T>* __restrict__ b, int64_t C,
    int64_t D, int64_t S, int64_t nchunks, int act, Pair<acc_t<T>>* __restrict__ part) {
  using A = acc_t<T>;
  __shared__ Pair<A> smem[kWarp];
  const int64_t plane = div31(blockIdx.x, nchunks), chunk = mod31(blockIdx.x, nchunks);
  const int64_t n = div31(plane, C), c = mod31(plane, C), ng = n * div31(C, D) + div31(c, D);
  const A mu = mean[ng], rs = rstd[ng];
  const A wc = w != nullptr ? w[c] : A(1);
  const A bc = b != nullptr ? b[c] : A(0);
  const int64_t p0 = plane * S, p1 = p0 + S;
  const PlaneRange r = plane_range<V>(p0, p1, chunk, nchunks);
  const Pack<T, V>* xp = reinterpret_cast<const Pack<T, V>*>(x + r.a0);
  const Pack<T, V>* gp = reinterpret_cast<const Pack<T, V>*>(dy + r.a0);
  Pair<A> acc{A(0), A(0)};
  auto add = [&](A xv, A gv) {
    const A xh = (xv - mu) * rs;
    const A gz = act_backward(xh * wc + bc, gv, act);
    acc.a += gz;
    acc.b += gz * xh;
  };
  strided_loop(
      r.k0 + threadIdx.x, r.k1, blockDim.x, [&](int64_t k) { return Pack2<T, V>{xp[k], gp[k]}; },
      [&](int64_t, const Pack2<T, V>& p) {
#pragma unroll
        for (int v = 0; v < V; ++v) add(static_cast<A>(p.x.v[v]), static_cast<A>(p.g.v[v]));
      });
  plane_edges(p0, p1, r, chunk, [&](int64_t e) { add(static_cast<A>(x[e]), static_cast<A>(dy[e])); });
  acc = block_reduce(acc, smem);
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

template <typename T, int V, int kThreads>
__global__ void __launch_bounds__(kThreads) gnk_bwd_reduce_cl(
    const T* __restrict__ dy, const T* __restrict__ x, const acc_t<T>* __restrict__ mean,
    const acc_t<T>* __restrict__ rstd, const acc_t<T>* __restrict__ w, const acc_t<T>* __restrict__ b, int64_t C,
    int64_t D, int64_t S, int64_t nchunks, int act, Pair<acc_t<T>>* __restrict__ part) {
  using A = acc_t<T>;
  __shared__ Pair<A> smem[kBlock * V];  // only used when rows > 1, which implies blockDim.x == kBlock
  const int64_t n = div31(blockIdx.x, nchunks), chunk = mod31(blockIdx.x, nchunks);
  const int L = static_cast<int>(C / V);
  const int rows = blockDim.x / L;
  const int lane = threadIdx.x % L, row = threadIdx.x / L;
  const bool active = row < rows;
  const int64_t per = div31(S + nchunks - 1, nchunks);
  const int64_t s0 = imin(S, chunk * per), s1 = imin(S, s0 + per);
  const int64_t G = div31(C, D);
  A sa[V], sb[V];
#pragma unroll
  for (int v = 0; v < V; ++v) sa[v] = sb[v] = A(0);
  if (active) {
    A mu[V], rs[V], wc[V], bc[V];
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const int64_t c = static_cast<int64_t>(lane) * V + v, ng = n * G + div31(c, D);
      mu[v] = mean[ng];
      rs[v] = rstd[ng];
      wc[v] = w != nullptr ? w[c] : A(1);
      bc[v] = b != nullptr ? b[c] : A(0);
    }
    const Pack<T, V>* xp = reinterpret_cast<const Pack<T, V>*>(x + n * S * C) + lane;
    const Pack<T, V>* gp = reinterpret_cast<const Pack<T, V>*>(dy + n * S * C) + lane;
    strided_loop(
        s0 + row, s1, rows, [&](int64_t s) { return Pack2<T, V>{xp[s * L], gp[s * L]}; },
        [&](int64_t, const Pack2<T, V>& p) {
#pragma unroll
          for (int v = 0; v < V; ++v) {
            const A xh = (static_cast<A>(p.x.v[v]) - mu[v]) * rs[v];
            const A gz = act_backward(xh * wc[v] + bc[v], static_cast<A>(p.g.v[v]), act);
            sa[v] += gz;
            sb[v] += gz * xh;
          }
        });
  }
  Pair<A>* out = part + (n * nchunks + chunk) * C;
  if (rows == 1) {
    if (active) {
#pragma unroll
      for (int v = 0; v < V; ++v) out[lane * V + v] = Pair<A>{sa[v], sb[v]};
    }
    return;
  }
  if (active) {
#pragma unroll
    for (int v = 0; v < V; ++v) smem[row * C + lane * V + v] = Pair<A>{sa[v], sb[v]};
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    Pair<A> s{A(0), A(0)};
    for (int r = 0; r < rows; ++r) s = combine(s, smem[r * C + c]);
    out[c] = s;
  }
}

// One warp per (n, g): per-channel totals over chunks (-> per_nc[n * C + c]) and the group coefficients
// coef[n * G + g] = (k1, k2).
template <typename A>
__global__ void gnk_bwd_finalize(const Pair<A>* __restrict__ part, const A* __restrict__ w, int64_t NG, int64_t G,
                                 int64_t D, int64_t nchunks, int64_t sN, int64_t sC, int64_t sB, A inv_m,
                                 Pair<A>* __restrict__ per_nc, Pair<A>* __restrict__ coef) {
  const int64_t ng = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (ng >= NG) return;  // uniform over the warp
  const int64_t n = ng / G, g = ng % G, C = G * D;
  Pair<A> t{A(0), A(0)};
  for (int64_t k = lane; k < D; k += kWarp) {
    const int64_t c = g * D + k;
    const Pair<A>* p = part + n * sN + c * sC;
    Pair<A> s{A(0), A(0)};
#pragma unroll 8
    for (int64_t bi = 0; bi < nchunks; ++bi) s = combine(s, p[bi * sB]);
    per_nc[n * C + c] = s;
    const A wc = w != nullptr ? w[c] : A(1);
    t.a += wc * s.a;
    t.b += wc * s.b;
  }
  t = warp_reduce(t);
  if (lane == 0) coef[ng] = Pair<A>{t.a * inv_m, t.b * inv_m};
}

// dbias[c] = sum_n per_nc[n, c].a, dweight[c] = sum_n per_nc[n, c].b (fixed order over n).
template <typename A>
__global__ void gnk_dweight_dbias(const Pair<A>* __restrict__ per_nc, int64_t N, int64_t C, A* __restrict__ dweight,
                                  A* __restrict__ dbias) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  Pair<A> s{A(0), A(0)};
  for (int64_t n = 0; n < N; ++n) s = combine(s, per_nc[n * C + c]);
  dbias[c] = s.a;
  dweight[c] = s.b;
}

template <typename T, int V>
__global__ void __launch_bounds__(kBlock) gnk_bwd_apply_nchw(
    const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx, const acc_t<T>* __restrict__ mean,
    const acc_t<T>* __restrict__ rstd, const acc_t<T>* __restrict__ w, const acc_t<T>* __restrict__ b,
    const Pair<acc_t<T>>* __restrict__ coef, int64_t C, int64_t D, int64_t S, int64_t nchunks, int act) {
  using A = acc_t<T>;
  const int64_t plane = div31(blockIdx.x, nchunks), chunk = mod31(blockIdx.x, nchunks);
  const int64_t n = div31(plane, C), c = mod31(plane, C), ng = n * div31(C, D) + div31(c, D);
  const A mu = mean[ng], rs = rstd[ng], k1 = coef[ng].a, k2 = coef[ng].b;
  const A wc = w != nullptr ? w[c] : A(1);
  const A bc = b != nullptr ? b[c] : A(0);
  auto grad = [&](A xv, A gv) {
    const A xh = (xv - mu) * rs;
    const A gz = act_backward(xh * wc + bc, gv, act);
    return rs * (wc * gz - k1 - xh * k2);
  };
  const int64_t p0 = plane * S, p1 = p0 + S;
  const PlaneRange r = plane_range<V>(p0, p1, chunk, nchunks);
  const Pack<T, V>* xp = reinterpret_cast<const Pack<T, V>*>(x + r.a0);
  const Pack<T, V>* gp = reinterpret_cast<const Pack<T, V>*>(dy + r.a0);
  Pack<T, V>* op = reinterpret_cast<Pack<T, V>*>(dx + r.a0);
  strided_loop(
      r.k0 + threadIdx.x, r.k1, blockDim.x, [&](int64_t k) { return Pack2<T, V>{xp[k], gp[k]}; },
      [&](int64_t k, const Pack2<T, V>& p) {
        Pack<T, V> o;
#pragma unroll
        for (int v = 0; v < V; ++v) o.v[v] = static_cast<T>(grad(static_cast<A>(p.x.v[v]), static_cast<A>(p.g.v[v])));
        op[k] = o;
      });
  plane_edges(p0, p1, r, chunk,
              [&](int64_t e) { dx[e] = static_cast<T>(grad(static_cast<A>(x[e]), static_cast<A>(dy[e]))); });
}

template <typename T, int V, int kThreads>
__global__ void __launch_bounds__(kThreads) gnk_bwd_apply_cl(
    const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx, const acc_t<T>* __restrict__ mean,
    const acc_t<T>* __restrict__ rstd, const acc_t<T>* __restrict__ w, const acc_t<T>* __restrict__ b,
    const Pair<acc_t<T>>* __restrict__ coef, int64_t C, int64_t D, int64_t S, int64_t nchunks, int act) {
  using A = acc_t<T>;
  const int64_t n = div31(blockIdx.x, nchunks), chunk = mod31(blockIdx.x, nchunks);
  const int L = static_cast<int>(C / V);
  const int rows = blockDim.x / L;
  const int lane = threadIdx.x % L, row = threadIdx.x / L;
  if (row >= rows) return;  // no block-level synchronization in this kernel
  const int64_t per = div31(S + nchunks - 1, nchunks);
  const int64_t s0 = imin(S, chunk * per), s1 = imin(S, s0 + per);
  const int64_t G = div31(C, D);
  A mu[V], rs[V], wc[V], bc[V], k1[V], k2[V];
#pragma unroll
  for (int v = 0; v < V; ++v) {
    const int64_t c = static_cast<int64_t>(lane) * V + v, ng = n * G + div31(c, D);
    mu[v] = mean[ng];
    rs[v] = rstd[ng];
    wc[v] = w != nullptr ? w[c] : A(1);
    bc[v] = b != nullptr ? b[c] : A(0);
    k1[v] = coef[ng].a;
    k2[v] = coef[ng].b;
  }
  const Pack<T, V>* xp = reinterpret_cast<const Pack<T, V>*>(x + n * S * C) + lane;
  const Pack<T, V>* gp = reinterpret_cast<const Pack<T, V>*>(dy + n * S * C) + lane;
  Pack<T, V>* op = reinterpret_cast<Pack<T, V>*>(dx + n * S * C) + lane;
  strided_loop(
      s0 + row, s1, rows, [&](int64_t s) { return Pack2<T, V>{xp[s * L], gp[s * L]}; },
      [&](int64_t s, const Pack2<T, V>& p) {
        Pack<T, V> o;
#pragma unroll
        for (int v = 0; v < V; ++v) {
          const A xh = (static_cast<A>(p.x.v[v]) - mu[v]) * rs[v];
          const A gz = act_backward(xh * wc[v] + bc[v], static_cast<A>(p.g.v[v]), act);
          o.v[v] = static_cast<T>(rs[v] * (wc[v] * gz - k1[v] - xh * k2[v]));
        }
        op[s * L] = o;
      });
}

}  // namespace cuda_detail
}  // namespace gnvideo
