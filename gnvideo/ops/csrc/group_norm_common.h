// Constants shared by the op (group_norm.cpp), the CUDA kernels (group_norm_cuda_*.h) and the CPU emulation of the
// kernels in tests/ops/emu. Plain C++: no ATen, no CUDA headers.
#pragma once

#include <cstdint>

namespace gnvideo {

// Activation applied after the affine. The op schema takes it as a string ("none" | "relu" | "silu"); these codes
// exist only inside C++ (activation_code() in group_norm.cpp maps the string once per call).
constexpr int kActNone = 0;
constexpr int kActRelu = 1;
constexpr int kActSilu = 2;

}  // namespace gnvideo
