// GroupNorm with fused activation: declarations shared by group_norm.cpp (schema, CPU) and group_norm_cuda.cu.
//
// Shapes: x (N, C, *spatial), S = prod(spatial), G groups of D = C / G channels, M = D * S elements per group.
// Activation (applied after the affine): "none", "relu" or "silu", a string in the op schema.
// Statistics (mean, rstd) are (N, G) in float32, or float64 when x is float64.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "group_norm_common.h"

namespace gnvideo {

// The kernels' activation code for the schema's string; throws c10::Error naming the allowed values.
int activation_code(c10::string_view activation);

// Safety checks of a direct op call (the Python entry point gnvideo.ops.group_norm validates first, with the same
// rules); throws c10::Error with a message naming the offending value. Returns the activation code.
int check_group_norm_args(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                          const std::optional<at::Tensor>& bias, int64_t num_groups, c10::string_view activation);

// Accumulation / statistics dtype for an input dtype.
inline at::ScalarType stat_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Device-agnostic implementations written with ATen ops (used for CPU and for CUDA edge cases).
std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_fwd_composite(const at::Tensor& x,
                                                                         const std::optional<at::Tensor>& weight,
                                                                         const std::optional<at::Tensor>& bias,
                                                                         int64_t num_groups, double eps,
                                                                         c10::string_view activation);

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_bwd_composite(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, int64_t num_groups,
    c10::string_view activation);

}  // namespace gnvideo
