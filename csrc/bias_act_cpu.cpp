// bias_act on the CPU: y = clamp(gain * act(x + b)) and its derivatives, over x's memory order.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "ganinv_ops.h"

namespace ganinv {
namespace {

template <typename T, int A>
void bias_act_loop(const T* x, const T* b, const T* g, T* y, const BiasActParams& p) {
  const T alpha = T(p.alpha), gain = T(p.gain), clamp = T(p.clamp);
  const bool clamped = p.clamp >= 0;
  at::parallel_for(0, p.numel, 32768, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      // [i, run_end) shares one bias value.
      const int64_t run_end = std::min(end, (i / p.step_b + 1) * p.step_b);
      const T bias = p.size_b ? b[(i / p.step_b) % p.size_b] : T(0);
      for (; i < run_end; ++i) {
        const T s = x[i] + bias;
        if (p.order == 0) {
          const T v = act_eval<T>(A, 0, s, alpha) * gain;
          y[i] = clamped ? std::min(std::max(v, -clamp), clamp) : v;
        } else {
          const bool pass = !clamped || std::abs(act_eval<T>(A, 0, s, alpha) * gain) <= clamp;
          y[i] = pass ? g[i] * act_eval<T>(A, p.order, s, alpha) * gain : T(0);
        }
      }
    }
  });
}

template <typename T>
void bias_act_dispatch(const T* x, const T* b, const T* g, T* y, const BiasActParams& p) {
  switch (p.act) {
    case kRelu: return bias_act_loop<T, kRelu>(x, b, g, y, p);
    case kLrelu: return bias_act_loop<T, kLrelu>(x, b, g, y, p);
    case kTanh: return bias_act_loop<T, kTanh>(x, b, g, y, p);
    case kSigmoid: return bias_act_loop<T, kSigmoid>(x, b, g, y, p);
    case kElu: return bias_act_loop<T, kElu>(x, b, g, y, p);
    case kSelu: return bias_act_loop<T, kSelu>(x, b, g, y, p);
    case kSoftplus: return bias_act_loop<T, kSoftplus>(x, b, g, y, p);
    case kSwish: return bias_act_loop<T, kSwish>(x, b, g, y, p);
    default: return bias_act_loop<T, kLinear>(x, b, g, y, p);
  }
}

at::Tensor run(const at::Tensor& g_in, const at::Tensor& x_in, const at::Tensor& b, int64_t order, int64_t dim,
               int64_t act, double alpha, double gain, double clamp, const char* op) {
  TORCH_CHECK_VALUE(x_in.device().is_cpu(), op, ": x must be a CPU tensor");
  const at::Tensor x = dense_4d_or_contiguous(x_in) ? x_in : x_in.contiguous();
  const BiasActParams p = bias_act_params(x, b, dim, act, order, alpha, gain, clamp, op);
  const at::Tensor g = order > 0 ? like_x(g_in, x) : x;
  TORCH_CHECK_VALUE(g.scalar_type() == x.scalar_type(), op, ": the gradient must match x in dtype");
  at::Tensor y = maybe_poison(at::empty_like(x));
  if (p.numel == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ganinv_bias_act_cpu", [&] {
    bias_act_dispatch<scalar_t>(x.const_data_ptr<scalar_t>(), p.size_b ? b.const_data_ptr<scalar_t>() : nullptr,
                                g.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), p);
  });
  return y;
}

at::Tensor bias_act_cpu(const at::Tensor& x, const at::Tensor& b, int64_t dim, int64_t act, double alpha,
                        double gain, double clamp) {
  return run(x, x, b, 0, dim, act, alpha, gain, clamp, "bias_act");
}

at::Tensor bias_act_grad_cpu(const at::Tensor& g, const at::Tensor& x, const at::Tensor& b, int64_t order,
                             int64_t dim, int64_t act, double alpha, double gain, double clamp) {
  TORCH_CHECK_VALUE(order == 1 || order == 2, "bias_act_grad: order must be 1 or 2, got ", order);
  return run(g, x, b, order, dim, act, alpha, gain, clamp, "bias_act_grad");
}

}  // namespace

TORCH_LIBRARY_IMPL(ganinv, CPU, m) {
  m.impl("bias_act", &bias_act_cpu);
  m.impl("bias_act_grad", &bias_act_grad_cpu);
}

}  // namespace ganinv
