// noise_autocorr on CUDA (maths in csrc/ganinv_ops.h). Forward: grid (planes, blocks per plane); each thread sums
// its positions' two lag-1 products, the block reduces them (warp shuffles, then shared memory) and adds them to
// the plane's double accumulators (one atomicAdd each per block); a last small op divides by H W. Backward: one
// thread per element, a 5-point stencil (neighbours mostly served by L1/L2).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "cuda_common.h"
#include "ganinv_ops.h"

namespace ganinv {
namespace {

constexpr int kThreads = 256;


template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    autocorr_forward_kernel(const scalar_t* __restrict__ x, double* __restrict__ sums, int64_t H, int64_t W) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ double warp_sums[kThreads / 32];
  const int64_t q = blockIdx.x, hw = H * W;
  const scalar_t* xq = x + q * hw;
  acc_t ax = 0, ay = 0;
  for (int64_t i = int64_t(blockIdx.y) * kThreads + threadIdx.x; i < hw; i += int64_t(gridDim.y) * kThreads) {
    const int64_t h = i / W, w = i - h * W;
    const acc_t v = acc_t(xq[i]);
    ax += v * acc_t(xq[h * W + (w == 0 ? W - 1 : w - 1)]);
    ay += v * acc_t(xq[(h == 0 ? H - 1 : h - 1) * W + w]);
  }
  const double sx = block_sum(double(ax), warp_sums), sy = block_sum(double(ay), warp_sums);
  if (threadIdx.x == 0) {
    atomicAdd(sums + 2 * q, sx);
    atomicAdd(sums + 2 * q + 1, sy);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    autocorr_backward_kernel(const at::opmath_type<scalar_t>* __restrict__ ga, const scalar_t* __restrict__ x,
                             scalar_t* __restrict__ gx, int64_t n, int64_t H, int64_t W) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t inv = acc_t(1) / acc_t(H * W);
  const int64_t hw = H * W, stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t q = i / hw, p = i - q * hw, h = p / W, w = p - h * W;
    const scalar_t* xq = x + q * hw;
    const acc_t l = acc_t(xq[h * W + (w == 0 ? W - 1 : w - 1)]), r = acc_t(xq[h * W + (w + 1 == W ? 0 : w + 1)]);
    const acc_t u = acc_t(xq[(h == 0 ? H - 1 : h - 1) * W + w]), d = acc_t(xq[(h + 1 == H ? 0 : h + 1) * W + w]);
    gx[i] = scalar_t((acc_t(ga[2 * q]) * (l + r) + acc_t(ga[2 * q + 1]) * (u + d)) * inv);
  }
}

at::Tensor forward_cuda(const at::Tensor& x_in) {
  const char* op = "noise_autocorr";
  TORCH_CHECK_VALUE(x_in.is_cuda(), op, ": x must be a CUDA tensor, got one on ", x_in.device());
  check_autocorr_args(x_in, at::Tensor(), op);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const int64_t planes = x.size(0) * x.size(1), H = x.size(2), W = x.size(3);
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor sums = at::zeros({x.size(0), x.size(1), 2}, x.options().dtype(at::kDouble));
  if (planes == 0 || H * W == 0) return sums.to(acc);
  TORCH_CHECK_VALUE(planes < (int64_t(1) << 31), op, ": too many planes (", planes, ")");
  const int64_t per_plane = std::min<int64_t>(std::max<int64_t>((H * W + kThreads * 8 - 1) / (kThreads * 8), 1),
                                              65535);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ganinv_noise_autocorr_cuda", [&] {
    autocorr_forward_kernel<scalar_t><<<dim3(unsigned(planes), unsigned(per_plane)), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), sums.mutable_data_ptr<double>(), H, W);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return sums.div_(double(H * W)).to(acc);
}

at::Tensor backward_cuda(const at::Tensor& ga_in, const at::Tensor& x_in) {
  const char* op = "noise_autocorr_backward";
  TORCH_CHECK_VALUE(x_in.is_cuda(), op, ": x must be a CUDA tensor, got one on ", x_in.device());
  check_autocorr_args(x_in, ga_in, op);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), ga = ga_in.contiguous();
  at::Tensor gx = maybe_poison(at::empty_like(x));
  const int64_t n = x.numel();
  if (n == 0) return gx;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 20);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ganinv_noise_autocorr_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    autocorr_backward_kernel<scalar_t><<<unsigned(blocks), kThreads, 0, stream>>>(
        ga.const_data_ptr<acc_t>(), x.const_data_ptr<scalar_t>(), gx.mutable_data_ptr<scalar_t>(), n, x.size(2),
        x.size(3));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(ganinv, CUDA, m) {
  m.impl("noise_autocorr", &forward_cuda);
  m.impl("noise_autocorr_backward", &backward_cuda);
}

}  // namespace ganinv
