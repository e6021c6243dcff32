// lpips_distance on CUDA (maths in csrc/ganinv_ops.h). Block = 32 pixels (threadIdx.x, consecutive: each warp
// reads 32 consecutive values of one channel) x 8 channel lanes (threadIdx.y: channels y, y + 8, ...); grid =
// (pixel blocks, images). Forward: the lanes' partial sums of f^2 meet in shared memory for the norm, then those
// of r^2 and g r f for the distance and s (f's second read is served by L1/L2: 32 pixels x C values per block).
// Backward: no reduction, each thread writes its pixel's channels.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>

#include "ganinv_ops.h"

namespace ganinv {
namespace {

constexpr int kPix = 32, kLanes = 8;

template <typename scalar_t>
__global__ void __launch_bounds__(kPix * kLanes)
    lpips_forward_kernel(const scalar_t* __restrict__ f, const at::opmath_type<scalar_t>* __restrict__ t,
                         const at::opmath_type<scalar_t>* __restrict__ g, at::opmath_type<scalar_t>* __restrict__ dist,
                         at::opmath_type<scalar_t>* __restrict__ norm, at::opmath_type<scalar_t>* __restrict__ sp,
                         LpipsParams p) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t red[2][kLanes][kPix];
  __shared__ acc_t den_s[kPix];
  const int x = threadIdx.x, y = threadIdx.y;
  const int64_t img = blockIdx.y, i = int64_t(blockIdx.x) * kPix + x, hw = p.hw, C = p.c;
  const bool live = i < hw;
  const scalar_t* fi = f + img * C * hw + i;
  const acc_t* ti = t + img * p.t_sn + i;
  acc_t ss = 0;
  if (live)
    for (int64_t c = y; c < C; c += kLanes) {
      const acc_t v = acc_t(fi[c * hw]);
      ss += v * v;
    }
  red[0][y][x] = ss;
  __syncthreads();
  if (y == 0) {
    acc_t tot = 0;
    for (int k = 0; k < kLanes; ++k) tot += red[0][k][x];
    const acc_t nf = sqrt(tot);
    den_s[x] = nf + acc_t(p.eps);
    if (live) norm[img * hw + i] = nf;
  }
  __syncthreads();
  const acc_t den = den_s[x];
  acc_t d = 0, s = 0;
  if (live)
    for (int64_t c = y; c < C; c += kLanes) {
      const acc_t v = acc_t(fi[c * hw]), gc = g[c];
      const acc_t r = v / den * gc - ti[c * hw];  // as the reference rounds: (f / |f|) g
      d += r * r;
      s += gc * r * v;
    }
  red[0][y][x] = d;
  red[1][y][x] = s;
  __syncthreads();
  if (y == 0 && live) {
    acc_t dt = 0, st = 0;
    for (int k = 0; k < kLanes; ++k) {
      dt += red[0][k][x];
      st += red[1][k][x];
    }
    dist[img * hw + i] = dt;
    sp[img * hw + i] = st;
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kPix * kLanes)
    lpips_backward_kernel(const at::opmath_type<scalar_t>* __restrict__ gd, const scalar_t* __restrict__ f,
                          const at::opmath_type<scalar_t>* __restrict__ t,
                          const at::opmath_type<scalar_t>* __restrict__ g,
                          const at::opmath_type<scalar_t>* __restrict__ norm,
                          const at::opmath_type<scalar_t>* __restrict__ sp, scalar_t* __restrict__ gf, LpipsParams p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int x = threadIdx.x, y = threadIdx.y;
  const int64_t img = blockIdx.y, i = int64_t(blockIdx.x) * kPix + x, hw = p.hw, C = p.c;
  if (i >= hw) return;
  const int64_t o = img * hw + i;
  const acc_t nf = norm[o], den = nf + acc_t(p.eps);
  const acc_t k2 = acc_t(2) * gd[o] / den, coef = nf > acc_t(0) ? sp[o] / (den * nf) : acc_t(0);
  const scalar_t* fi = f + img * C * hw + i;
  const acc_t* ti = t + img * p.t_sn + i;
  scalar_t* oi = gf + img * C * hw + i;
  for (int64_t c = y; c < C; c += kLanes) {
    const acc_t v = acc_t(fi[c * hw]), gc = g[c];
    const acc_t r = v / den * gc - ti[c * hw];  // as the reference rounds: (f / |f|) g
    oi[c * hw] = scalar_t(k2 * (gc * r - v * coef));
  }
}

dim3 grid_for(const LpipsParams& p, const char* op) {
  const int64_t blocks = (p.hw + kPix - 1) / kPix;
  TORCH_CHECK_VALUE(blocks < (int64_t(1) << 31) && p.n <= 65535, op, ": too many pixels or images (", p.n, " x ",
                    p.hw, ")");
  return dim3(unsigned(blocks), unsigned(p.n));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cuda(const at::Tensor& f, const at::Tensor& t,
                                                            const at::Tensor& g, double eps) {
  const char* op = "lpips_distance";
  TORCH_CHECK_VALUE(f.is_cuda(), op, ": f must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(f.device());
  const LpipsParams p = lpips_params(f, t, g, eps, op);
  at::Tensor dist = maybe_poison(at::empty({p.n, f.size(2), f.size(3)}, t.options()));
  at::Tensor norm = maybe_poison(at::empty_like(dist)), s = maybe_poison(at::empty_like(dist));
  if (dist.numel() == 0) return {dist, norm, s};
  if (p.c == 0) return {dist.zero_(), norm.zero_(), s.zero_()};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "ganinv_lpips_distance_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    lpips_forward_kernel<scalar_t><<<grid_for(p, op), dim3(kPix, kLanes), 0, stream>>>(
        f.const_data_ptr<scalar_t>(), t.const_data_ptr<acc_t>(), g.const_data_ptr<acc_t>(),
        dist.mutable_data_ptr<acc_t>(), norm.mutable_data_ptr<acc_t>(), s.mutable_data_ptr<acc_t>(), p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dist, norm, s};
}

at::Tensor backward_cuda(const at::Tensor& gd_in, const at::Tensor& f, const at::Tensor& t, const at::Tensor& g,
                         const at::Tensor& norm_in, const at::Tensor& s_in, double eps) {
  const char* op = "lpips_distance_backward";
  TORCH_CHECK_VALUE(f.is_cuda(), op, ": f must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(f.device());
  const LpipsParams p = lpips_params(f, t, g, eps, op);
  const auto saved = [&](const at::Tensor& x, const char* name) {
    check_lpips_saved(x, f, t, name, op);
    return x.contiguous();
  };
  const at::Tensor gd = saved(gd_in, "gdist"), norm = saved(norm_in, "norm"), s = saved(s_in, "s");
  at::Tensor gf = maybe_poison(at::empty_like(f));
  if (gf.numel() == 0) return gf;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f.scalar_type(), "ganinv_lpips_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    lpips_backward_kernel<scalar_t><<<grid_for(p, op), dim3(kPix, kLanes), 0, stream>>>(
        gd.const_data_ptr<acc_t>(), f.const_data_ptr<scalar_t>(), t.const_data_ptr<acc_t>(), g.const_data_ptr<acc_t>(),
        norm.const_data_ptr<acc_t>(), s.const_data_ptr<acc_t>(), gf.mutable_data_ptr<scalar_t>(), p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return gf;
}

}  // namespace

TORCH_LIBRARY_IMPL(ganinv, CUDA, m) {
  m.impl("lpips_distance", &forward_cuda);
  m.impl("lpips_distance_backward", &backward_cuda);
}

}  // namespace ganinv
