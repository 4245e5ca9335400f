// Instantiates every kernel the launch plans of group_norm_cuda_launch.h can launch (the same template arguments as
// group_norm_cuda.cu, with c10::Half / c10::BFloat16), so `nvcc -Xptxas -v` reports registers and spills for each.
// Compiled by tests/ops/test_kernels_ptxas.py; never linked or run.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "group_norm_cuda_launch.h"

namespace {

using namespace gnvideo::cuda_detail;  // NOLINT

struct NoLaunch {
  template <typename... P, typename... Args>
  void operator()(void (*)(P...), int64_t, int, int, Args...) const {}
};

template <typename T, int V>
void instantiate(const Plan& p) {
  using A = acc_t<T>;
  run_fwd<T, V>(NoLaunch{}, p, 1, 1, 1, 1, A(0), 0, static_cast<const T*>(nullptr), static_cast<T*>(nullptr),
                static_cast<const A*>(nullptr), static_cast<const A*>(nullptr), static_cast<A*>(nullptr),
                static_cast<A*>(nullptr), static_cast<Welford<A>*>(nullptr));
  run_bwd<T, V>(NoLaunch{}, p, 1, 1, 1, 1, 0, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr),
                static_cast<T*>(nullptr), static_cast<const A*>(nullptr), static_cast<const A*>(nullptr),
                static_cast<const A*>(nullptr), static_cast<const A*>(nullptr), static_cast<A*>(nullptr),
                static_cast<A*>(nullptr), static_cast<Pair<A>*>(nullptr), static_cast<Pair<A>*>(nullptr),
                static_cast<Pair<A>*>(nullptr));
}

template <typename T>
void both(const Plan& p) {
  instantiate<T, 16 / sizeof(T)>(p);
  instantiate<T, 1>(p);
}

}  // namespace

void gnvideo_ptxas_probe(const Plan& p) {
  both<double>(p);
  both<float>(p);
  both<c10::Half>(p);
  both<c10::BFloat16>(p);
}
