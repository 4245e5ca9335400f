// GroupNorm ops: schema (TORCH_LIBRARY), argument checks, and the CPU implementation written with ATen ops.
// The CUDA implementation lives in group_norm_cuda.cu and registers itself for the CUDA dispatch key.
#include "group_norm.h"

#include <torch/library.h>

#include <vector>

namespace gnvideo {

namespace {

void check_param(const std::optional<at::Tensor>& p, const char* name, const at::Tensor& x) {
  if (!p.has_value() || !p->defined()) return;
  TORCH_CHECK(p->dim() == 1 && p->numel() == x.size(1), "gnvideo group_norm: ", name, " must have shape (C,) = (",
              x.size(1), ",), got ", p->sizes());
  TORCH_CHECK(p->device() == x.device(), "gnvideo group_norm: ", name, " is on ", p->device(), " but x is on ",
              x.device());
  TORCH_CHECK(at::isFloatingType(p->scalar_type()), "gnvideo group_norm: ", name, " must be floating point, got ",
              p->scalar_type());
}

bool has(const std::optional<at::Tensor>& p) { return p.has_value() && p->defined(); }

int64_t spatial_size(const at::Tensor& x) {
  int64_t s = 1;
  for (int64_t d = 2; d < x.dim(); ++d) s *= x.size(d);
  return s;
}

at::Tensor activation_forward(const at::Tensor& z, int activation) {
  if (activation == kActRelu) return at::relu(z);
  if (activation == kActSilu) return at::silu(z);
  return z;
}

at::Tensor activation_backward(const at::Tensor& grad, const at::Tensor& z, int activation) {
  if (activation == kActRelu) return at::threshold_backward(grad, z, 0);
  if (activation == kActSilu) return at::silu_backward(grad, z);
  return grad;
}

}  // namespace

int activation_code(c10::string_view activation) {
  if (activation == "none") return kActNone;
  if (activation == "relu") return kActRelu;
  if (activation == "silu") return kActSilu;
  TORCH_CHECK(false, "gnvideo group_norm: activation must be 'none', 'relu' or 'silu', got '", activation, "'");
  return kActNone;  // not reached
}

int check_group_norm_args(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                          const std::optional<at::Tensor>& bias, int64_t num_groups, c10::string_view activation) {
  TORCH_CHECK(x.dim() >= 2, "gnvideo group_norm: x must be (N, C, *spatial), got ", x.dim(), " dims");
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16,
              "gnvideo group_norm: x dtype must be float16, bfloat16, float32 or float64, got ", t);
  TORCH_CHECK(num_groups > 0, "gnvideo group_norm: num_groups must be positive, got ", num_groups);
  TORCH_CHECK(x.size(1) % num_groups == 0, "gnvideo group_norm: num_groups=", num_groups,
              " must divide the channel count C=", x.size(1));
  const int act = activation_code(activation);
  check_param(weight, "weight", x);
  check_param(bias, "bias", x);
  return act;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_fwd_composite(const at::Tensor& x,
                                                                         const std::optional<at::Tensor>& weight,
                                                                         const std::optional<at::Tensor>& bias,
                                                                         int64_t num_groups, double eps,
                                                                         c10::string_view activation) {
  const int act = check_group_norm_args(x, weight, bias, num_groups, activation);
  const auto acc = stat_dtype(x.scalar_type());
  const int64_t N = x.size(0), C = x.size(1), G = num_groups, S = spatial_size(x);
  auto xg = x.to(acc).reshape({N, G, (C / G) * S});
  auto mean = xg.mean(-1);
  auto centered = xg - mean.unsqueeze(-1);
  auto rstd = (centered.square().mean(-1) + eps).rsqrt();
  auto z = (centered * rstd.unsqueeze(-1)).reshape(x.sizes());
  std::vector<int64_t> pshape(x.dim(), 1);
  pshape[1] = C;
  if (has(weight)) z = z * weight->to(acc).reshape(pshape);
  if (has(bias)) z = z + bias->to(acc).reshape(pshape);
  z = activation_forward(z, act);
  auto y = at::empty_like(x);
  y.copy_(z);
  return {y, mean.contiguous(), rstd.contiguous()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_bwd_composite(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, int64_t num_groups,
    c10::string_view activation) {
  const int act = check_group_norm_args(x, weight, bias, num_groups, activation);
  TORCH_CHECK(grad_y.sizes() == x.sizes() && grad_y.scalar_type() == x.scalar_type(),
              "gnvideo group_norm_bwd: grad_y must match x in shape and dtype, got ", grad_y.sizes(), " ",
              grad_y.scalar_type(), " vs ", x.sizes(), " ", x.scalar_type());
  const auto acc = stat_dtype(x.scalar_type());
  const int64_t N = x.size(0), C = x.size(1), G = num_groups, D = C / G, S = spatial_size(x);
  TORCH_CHECK(mean.numel() == N * G && rstd.numel() == N * G, "gnvideo group_norm_bwd: mean/rstd must be (N, G) = (",
              N, ", ", G, ")");
  auto mu = mean.to(acc).reshape({N, G, 1});
  auto r = rstd.to(acc).reshape({N, G, 1});
  auto xhat = ((x.to(acc).reshape({N, G, D * S}) - mu) * r).reshape({N, C, S});
  auto dy = grad_y.to(acc).reshape({N, C, S});
  at::Tensor w = has(weight) ? weight->to(acc).reshape({1, C, 1}) : at::ones({1, C, 1}, xhat.options());
  auto z = xhat * w;
  if (has(bias)) z = z + bias->to(acc).reshape({1, C, 1});
  auto gz = activation_backward(dy, z, act);
  auto sum_g = gz.sum(-1);             // (N, C)
  auto sum_gx = (gz * xhat).sum(-1);   // (N, C)
  const double inv_m = (D * S) > 0 ? 1.0 / static_cast<double>(D * S) : 0.0;
  auto wv = w.reshape({1, C});
  auto k1 = ((sum_g * wv).reshape({N, G, D}).sum(-1) * inv_m).unsqueeze(-1);
  auto k2 = ((sum_gx * wv).reshape({N, G, D}).sum(-1) * inv_m).unsqueeze(-1);
  auto dxhat = (gz * w).reshape({N, G, D * S});
  auto dxg = r * (dxhat - k1 - xhat.reshape({N, G, D * S}) * k2);
  auto dx = at::empty_like(x);
  dx.copy_(dxg.reshape(x.sizes()));
  auto dweight = sum_gx.sum(0).to(has(weight) ? weight->scalar_type() : x.scalar_type());
  auto dbias = sum_g.sum(0).to(has(bias) ? bias->scalar_type() : x.scalar_type());
  return {dx, dweight, dbias};
}

}  // namespace gnvideo

TORCH_LIBRARY(gnvideo, m) {
  m.def(
      "group_norm_fwd(Tensor x, Tensor? weight, Tensor? bias, int num_groups, float eps, str activation) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "group_norm_bwd(Tensor grad_y, Tensor x, Tensor mean, Tensor rstd, Tensor? weight, Tensor? bias, "
      "int num_groups, str activation) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(gnvideo, CPU, m) {
  m.impl("group_norm_fwd", &gnvideo::group_norm_fwd_composite);
  m.impl("group_norm_bwd", &gnvideo::group_norm_bwd_composite);
}
