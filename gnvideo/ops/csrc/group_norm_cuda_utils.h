// Device helpers of the CUDA GroupNorm: accumulation types, 16-byte packs, activations, Welford/sum reductions,
// the unrolled strided loop and the NCHW plane partition. Included by group_norm_cuda_launch.h (and so by
// group_norm_cuda.cu and by the CPU emulation in tests/ops/emu); no ATen, no CUDA runtime API.
#pragma once

#include <cstdint>

#include "group_norm_common.h"

namespace gnvideo {
namespace cuda_detail {

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccType<T>::type;

constexpr int kWarp = 32;
constexpr int kBlock = 256;         // threads of the streaming kernels (channels-last: up to max_cl_lanes(V))
constexpr int kUnroll = 4;          // loads in flight per thread
constexpr int kBlocksPerSm = 8;

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
struct Pack2 {
  Pack<T, V> x;
  Pack<T, V> g;
};

template <typename A>
struct Welford {
  A n;
  A mean;
  A m2;
};

template <typename A>
struct Pair {
  A a;
  A b;
};

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
// Quotient and remainder of 0 <= a, b < 2^31 (block, plane, channel and chunk indices and the spatial size S, which
// the launch plan checks) in 32-bit arithmetic: a 64-bit division is a called subroutine on the GPU.
__device__ __forceinline__ int64_t div31(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint32_t>(a) / static_cast<uint32_t>(b));
}
__device__ __forceinline__ int64_t mod31(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint32_t>(a) % static_cast<uint32_t>(b));
}
__device__ __forceinline__ float exp_acc(float v) { return expf(v); }
__device__ __forceinline__ double exp_acc(double v) { return ::exp(v); }
__device__ __forceinline__ float sqrt_acc(float v) { return sqrtf(v); }
__device__ __forceinline__ double sqrt_acc(double v) { return ::sqrt(v); }
// a / b without the IEEE division, whose slow path is a called subroutine: its ABI register saves are what ptxas
// reports as spills in the streaming kernels. float: __fdividef (<= 2 ulp; 0 once |b| > 2^126, as for 1 + exp(-z)
// of a very negative z). double: a float reciprocal refined by two Newton steps (about 1 ulp).
__device__ __forceinline__ float div_acc(float a, float b) { return __fdividef(a, b); }
__device__ __forceinline__ double div_acc(double a, double b) {
  double r = static_cast<double>(__fdividef(1.0f, static_cast<float>(b)));
  r = ::fma(r, ::fma(-b, r, 1.0), r);
  r = ::fma(r, ::fma(-b, r, 1.0), r);
  return a * r;
}

template <typename A>
__device__ __forceinline__ A act_forward(A z, int act) {
  if (act == kActRelu) return z < A(0) ? A(0) : z;
  if (act == kActSilu) return div_acc(z, A(1) + exp_acc(-z));
  return z;
}

// dL/dz from dL/dy = g for y = act(z).
template <typename A>
__device__ __forceinline__ A act_backward(A z, A g, int act) {
  if (act == kActRelu) return z > A(0) ? g : A(0);
  if (act == kActSilu) {
    const A s = div_acc(A(1), A(1) + exp_acc(-z));
    return g * s * (A(1) + z * (A(1) - s));
  }
  return g;
}

// Chan et al. merge of two (count, mean, M2) states; exact when one side is empty.
template <typename A>
__device__ __forceinline__ Welford<A> combine(const Welford<A>& a, const Welford<A>& b) {
  const A n = a.n + b.n;
  if (n == A(0)) return a;
  const A f = div_acc(b.n, n);
  const A d = b.mean - a.mean;
  return {n, a.mean + d * f, a.m2 + b.m2 + d * d * a.n * f};
}

template <typename A>
__device__ __forceinline__ Pair<A> combine(const Pair<A>& a, const Pair<A>& b) {
  return {a.a + b.a, a.b + b.b};
}

template <typename A>
__device__ __forceinline__ Welford<A> shfl_down(const Welford<A>& v, int off) {
  return {__shfl_down_sync(0xffffffffu, v.n, off), __shfl_down_sync(0xffffffffu, v.mean, off),
          __shfl_down_sync(0xffffffffu, v.m2, off)};
}

template <typename A>
__device__ __forceinline__ Pair<A> shfl_down(const Pair<A>& v, int off) {
  return {__shfl_down_sync(0xffffffffu, v.a, off), __shfl_down_sync(0xffffffffu, v.b, off)};
}

// Fixed-order tree over the 32 lanes; the result is valid in lane 0. All 32 lanes must call it.
template <typename R>
__device__ __forceinline__ R warp_reduce(R v) {
#pragma unroll
  for (int off = kWarp / 2; off > 0; off >>= 1) v = combine(v, shfl_down(v, off));
  return v;
}

// Result valid in thread 0. Every thread of the block must call it (blockDim.x is a multiple of 32). Called at most
// once per kernel, so `smem` (>= 32 entries) is never reused.
template <typename R>
__device__ __forceinline__ R block_reduce(R v, R* smem) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int nwarps = blockDim.x / kWarp;
  v = warp_reduce(v);
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nwarps ? smem[lane] : R{};
    v = warp_reduce(v);
  }
  return v;
}

// Adds the V values of a pack (one channel, NCHW) as one batch: exact two-pass mean/M2 in registers, then a merge.
template <typename A, typename T, int V>
__device__ __forceinline__ void welford_add_pack(Welford<A>& st, const Pack<T, V>& p) {
  A t[V];
  A s[V];
#pragma unroll
  for (int v = 0; v < V; ++v) t[v] = s[v] = static_cast<A>(p.v[v]);
#pragma unroll
  for (int w = V / 2; w >= 1; w /= 2) {
#pragma unroll
    for (int v = 0; v < w; ++v) s[v] += s[v + w];
  }
  const A m = s[0] / A(V);
  A m2 = A(0);
#pragma unroll
  for (int v = 0; v < V; ++v) {
    const A d = t[v] - m;
    m2 += d * d;
  }
  st = combine(st, Welford<A>{A(V), m, m2});
}

// Loop k = begin, begin + stride, ... < end with kUnroll loads issued before they are used.
template <typename LoadF, typename UseF>
__device__ __forceinline__ void strided_loop(int64_t begin, int64_t end, int64_t stride, LoadF load, UseF use) {
  using L = decltype(load(begin));
  for (int64_t k = begin; k < end; k += kUnroll * stride) {
    L buf[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t kk = k + u * stride;
      if (kk < end) buf[u] = load(kk);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t kk = k + u * stride;
      if (kk < end) use(kk, buf[u]);
    }
  }
}

// NCHW: the part of plane [p0, p1) (element offsets) owned by `chunk` of `nchunks`: packs [k0, k1) counted from the
// V-aligned start a0, plus the unaligned head [p0, a0) and tail [a1, p1) (< V elements each) owned by chunk 0.
struct PlaneRange {
  int64_t a0, a1, k0, k1;
};

template <int V>
__device__ __forceinline__ PlaneRange plane_range(int64_t p0, int64_t p1, int64_t chunk, int64_t nchunks) {
  int64_t a0 = (p0 + V - 1) / V * V;
  if (a0 > p1) a0 = p1;
  int64_t a1 = p1 / V * V;
  if (a1 < a0) a1 = a0;
  const int64_t npacks = (a1 - a0) / V;
  const int64_t per = div31(npacks + nchunks - 1, nchunks);
  const int64_t k0 = imin(npacks, chunk * per);
  return {a0, a1, k0, imin(npacks, k0 + per)};
}

// Calls f(e) for the scalar head and tail elements of a plane (chunk 0 only).
template <typename F>
__device__ __forceinline__ void plane_edges(int64_t p0, int64_t p1, const PlaneRange& r, int64_t chunk, F f) {
  if (chunk != 0) return;
  for (int64_t e = p0 + threadIdx.x; e < r.a0; e += blockDim.x) f(e);
  for (int64_t e = r.a1 + threadIdx.x; e < p1; e += blockDim.x) f(e);
}

}  // namespace cuda_detail
}  // namespace gnvideo
