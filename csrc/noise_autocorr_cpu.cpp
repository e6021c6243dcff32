// noise_autocorr on the CPU (maths in csrc/ganinv_ops.h): the forward sums each plane's two lag-1 products row by
// row (float per row, double across rows), the backward is a 5-point stencil per row with the wrap-around
// columns done apart from the vectorised interior. bfloat16/float16 x is computed in float32.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "ganinv_ops.h"

namespace ganinv {
namespace {

template <typename T, typename A>
void forward_loop(const T* x, A* a, int64_t planes, int64_t H, int64_t W) {
  at::parallel_for(0, planes, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const T* xq = x + q * H * W;
      double sx = 0, sy = 0;
      for (int64_t h = 0; h < H; ++h) {
        const T* row = xq + h * W;
        const T* up = xq + ((h + H - 1) % H) * W;
        T ax = row[0] * row[W - 1], ay = 0;
#pragma omp simd reduction(+ : ax)
        for (int64_t w = 1; w < W; ++w) ax += row[w] * row[w - 1];
#pragma omp simd reduction(+ : ay)
        for (int64_t w = 0; w < W; ++w) ay += row[w] * up[w];
        sx += double(ax);
        sy += double(ay);
      }
      const double hw = double(H * W);
      a[2 * q] = A(sx / hw);
      a[2 * q + 1] = A(sy / hw);
    }
  });
}

template <typename T, typename A>
void backward_loop(const A* ga, const T* x, T* gx, int64_t planes, int64_t H, int64_t W) {
  const T inv = T(1) / T(H * W);
  at::parallel_for(0, planes * H, std::max<int64_t>(1, 16384 / std::max<int64_t>(W, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t q = r / H, h = r % H;
      const T cx = T(ga[2 * q]) * inv, cy = T(ga[2 * q + 1]) * inv;
      const T* xq = x + q * H * W;
      const T* row = xq + h * W;
      const T* up = xq + ((h + H - 1) % H) * W;
      const T* dn = xq + ((h + 1) % H) * W;
      T* o = gx + q * H * W + h * W;
      for (int64_t w = 1; w + 1 < W; ++w) o[w] = cx * (row[w - 1] + row[w + 1]) + cy * (up[w] + dn[w]);
      for (int64_t w : {int64_t(0), W - 1})  // the wrap-around columns (one column when W == 1)
        o[w] = cx * (row[(w + W - 1) % W] + row[(w + 1) % W]) + cy * (up[w] + dn[w]);
    }
  });
}

void check(const at::Tensor& x, const at::Tensor& ga, const char* op) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), op, ": x must be a CPU tensor, got one on ", x.device());
  check_autocorr_args(x, ga, op);
}

at::Tensor forward_cpu(const at::Tensor& x_in) {
  check(x_in, at::Tensor(), "noise_autocorr");
  if (is_16bit(x_in)) return forward_cpu(x_in.to(at::kFloat));
  const at::Tensor x = x_in.contiguous();
  at::Tensor a = maybe_poison(at::empty({x.size(0), x.size(1), 2}, x.options()));
  if (a.numel() == 0) return a;
  if (x.numel() == 0) return a.zero_();  // H or W = 0: no products (mean of nothing taken as 0)
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ganinv_noise_autocorr_cpu", [&] {
    forward_loop<scalar_t, scalar_t>(x.const_data_ptr<scalar_t>(), a.mutable_data_ptr<scalar_t>(),
                                     x.size(0) * x.size(1), x.size(2), x.size(3));
  });
  return a;
}

at::Tensor backward_cpu(const at::Tensor& ga_in, const at::Tensor& x_in) {
  const char* op = "noise_autocorr_backward";
  check(x_in, ga_in, op);
  if (is_16bit(x_in)) return backward_cpu(ga_in, x_in.to(at::kFloat)).to(x_in.scalar_type());
  const at::Tensor x = x_in.contiguous(), ga = ga_in.contiguous();
  at::Tensor gx = maybe_poison(at::empty_like(x));
  if (gx.numel() == 0) return gx;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ganinv_noise_autocorr_backward_cpu", [&] {
    backward_loop<scalar_t, scalar_t>(ga.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                      gx.mutable_data_ptr<scalar_t>(), x.size(0) * x.size(1), x.size(2), x.size(3));
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(ganinv, CPU, m) {
  m.impl("noise_autocorr", &forward_cpu);
  m.impl("noise_autocorr_backward", &backward_cpu);
}

}  // namespace ganinv
