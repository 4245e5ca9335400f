// GroupNorm with fused activation: declarations shared by group_norm.cpp (schema, CPU) and group_norm_cuda.cu.
//
// Shapes: x (N, C, *spatial), S = prod(spatial), G groups of D = C / G channels, M = D * S elements per group.
// Activation codes: 0 = none, 1 = relu, 2 = silu (applied after the affine).
// Statistics (mean, rstd) are (N, G) in float32, or float64 when x is float64.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace gnvideo {

constexpr int64_t kActNone = 0;
constexpr int64_t kActRelu = 1;
constexpr int64_t kActSilu = 2;

// Validates arguments shared by both ops; throws c10::Error with a message naming the offending value.
void check_group_norm_args(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                           const std::optional<at::Tensor>& bias, int64_t num_groups, int64_t activation);

// Accumulation / statistics dtype for an input dtype.
inline at::ScalarType stat_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Device-agnostic implementations written with ATen ops (used for CPU and for CUDA edge cases).
std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_fwd_composite(const at::Tensor& x,
                                                                         const std::optional<at::Tensor>& weight,
                                                                         const std::optional<at::Tensor>& bias,
                                                                         int64_t num_groups, double eps,
                                                                         int64_t activation);

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_bwd_composite(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, int64_t num_groups,
    int64_t activation);

}  // namespace gnvideo
