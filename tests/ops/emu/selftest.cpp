// Checks of cuda_emu.h itself: `selftest MODE` runs one small kernel. "reduce" and "shared_nan" must succeed and
// print their results; every other mode is a planted fault that must end with "EMU ERROR" (exit code 86), not hang.
#include <cmath>
#include <cstdio>
#include <string>

#include "cuda_emu.h"

namespace gnvideo {
namespace cuda_detail {

// Block sum through shuffles and shared memory; out[blockIdx.x] = sum of threadIdx.x.
__global__ void k_reduce(float* out) {
  __shared__ float part[32];
  float v = static_cast<float>(threadIdx.x);
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) s += part[w];
    out[blockIdx.x] = s;
  }
}

// Reads shared memory before anything wrote it: must see NaN in every block.
__global__ void k_shared_nan(float* out) {
  __shared__ float buf[64];
  if (threadIdx.x == 0) out[blockIdx.x] = buf[5];
  __syncthreads();
  buf[threadIdx.x % 64] = 1.0f;
}

__global__ void k_barrier_exit(float* out) {
  if (threadIdx.x == 3) return;
  __syncthreads();
  out[0] = 1.0f;
}

__global__ void k_barrier_vs_shuffle(float* out) {
  if (threadIdx.x < 32) {
    out[0] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
    __syncthreads();
  } else {
    __syncthreads();
    __syncthreads();
  }
}

__global__ void k_shuffle(float* out) { out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1); }

__global__ void k_shuffle_exited(float* out) {
  if (threadIdx.x % 32 == 31) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
}

}  // namespace cuda_detail
}  // namespace gnvideo

int main(int argc, char** argv) {
  using namespace gnvideo::cuda_detail;
  const std::string mode = argc > 1 ? argv[1] : "";
  if (argc > 2) emu::config().schedule_seed = std::stoull(argv[2]);
  float out[512];
  for (float& v : out) v = -1.0f;
  if (mode == "reduce") {
    emu::launch(&k_reduce, 3, 256, 256, out);
    std::printf("%g %g %g\n", out[0], out[1], out[2]);  // 32640 each
  } else if (mode == "shared_nan") {
    emu::launch(&k_shared_nan, 2, 64, 64, out);
    std::printf("%d %d\n", std::isnan(out[0]) ? 1 : 0, std::isnan(out[1]) ? 1 : 0);
  } else if (mode == "barrier_exit") {
    emu::launch(&k_barrier_exit, 1, 64, 64, out);
  } else if (mode == "barrier_vs_shuffle") {
    emu::launch(&k_barrier_vs_shuffle, 1, 64, 64, out);
  } else if (mode == "shuffle_partial_warp") {
    emu::launch(&k_shuffle, 1, 40, 64, out);
  } else if (mode == "shuffle_exited_lane") {
    emu::launch(&k_shuffle_exited, 1, 64, 64, out);
  } else if (mode == "launch_bounds") {
    emu::launch(&k_reduce, 1, 512, 256, out);
  } else {
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  return 0;
}
