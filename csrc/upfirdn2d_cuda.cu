// upfirdn2d on CUDA: one thread per output element, in y's memory order (so NCHW and channels_last
// are both coalesced on writes). Each thread visits only the taps whose upsampled position holds an
// input sample (fh/upy x fw/upx of them). Specialisations with compile-time factors and a 4x4 filter
// cover StyleGAN2's uses (up 2, plain FIR, down 2); everything else takes the generic kernel.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "ganinv_ops.h"

namespace ganinv {
namespace {

template <typename index_t>
__device__ __forceinline__ index_t floor_mod(index_t a, index_t m) {
  const index_t r = a % m;
  return r < 0 ? r + m : r;
}

// UP, DOWN, FH, FW: compile-time factors / filter size (both axes), 0 = read from p.
template <typename scalar_t, typename index_t, bool CL, int UP, int DOWN, int FH, int FW>
__global__ void upfirdn_kernel(const scalar_t* __restrict__ x, const at::opmath_type<scalar_t>* __restrict__ f,
                               scalar_t* __restrict__ y, UpfirdnParams p, index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t upx = UP ? UP : p.upx, upy = UP ? UP : p.upy;
  const index_t downx = DOWN ? DOWN : p.downx, downy = DOWN ? DOWN : p.downy;
  const int fh = FH ? FH : p.fh, fw = FW ? FW : p.fw;
  const index_t C = index_t(p.c), H = index_t(p.in_h), W = index_t(p.in_w);
  const index_t OH = index_t(p.out_h), OW = index_t(p.out_w);
  const index_t stride = index_t(blockDim.x) * index_t(gridDim.x);
  for (index_t i = index_t(blockIdx.x) * index_t(blockDim.x) + index_t(threadIdx.x); i < total; i += stride) {
    index_t n, c, oy, ox, t = i;
    if (CL) {
      c = t % C; t /= C; ox = t % OW; t /= OW; oy = t % OH; n = t / OH;
    } else {
      ox = t % OW; t /= OW; oy = t % OH; t /= OH; c = t % C; n = t / C;
    }
    // Upsampled, padded position of tap 0; the first tap landing on an input sample and that sample.
    const index_t py = oy * downy - index_t(p.pady0), px = ox * downx - index_t(p.padx0);
    const int ky0 = int(floor_mod<index_t>(-py, upy)), kx0 = int(floor_mod<index_t>(-px, upx));
    const index_t iy0 = (py + ky0) / upy, ix0 = (px + kx0) / upx;
    const scalar_t* plane = x + n * index_t(p.sx[0]) + c * index_t(p.sx[1]);
    acc_t acc = acc_t(0);
#pragma unroll
    for (int ky = ky0; ky < fh; ky += int(upy)) {
      const index_t iy = iy0 + (ky - ky0) / int(upy);
      if (iy < 0 || iy >= H) continue;
      const scalar_t* row = plane + iy * index_t(p.sx[2]);
#pragma unroll
      for (int kx = kx0; kx < fw; kx += int(upx)) {
        const index_t ix = ix0 + (kx - kx0) / int(upx);
        if (ix < 0 || ix >= W) continue;
        acc += f[ky * fw + kx] * acc_t(row[ix * index_t(p.sx[3])]);
      }
    }
    y[i] = scalar_t(acc);
  }
}

template <typename scalar_t, typename index_t, bool CL, int UP, int DOWN, int FH, int FW>
void launch(const at::Tensor& x, const at::Tensor& fk, at::Tensor& y, const UpfirdnParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int threads = 256;
  const int64_t total = y.numel();
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, int64_t(1) << 22);
  upfirdn_kernel<scalar_t, index_t, CL, UP, DOWN, FH, FW>
      <<<unsigned(blocks), threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          x.const_data_ptr<scalar_t>(), fk.const_data_ptr<acc_t>(), y.mutable_data_ptr<scalar_t>(), p,
          index_t(total));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, bool CL>
void choose(const at::Tensor& x, const at::Tensor& fk, at::Tensor& y, const UpfirdnParams& p) {
  const bool small = y.numel() <= INT32_MAX && x.numel() <= INT32_MAX;
  const bool square4 = p.fw == 4 && p.fh == 4;
  const bool same = p.upx == p.upy && p.downx == p.downy;
  if (small && square4 && same && p.upx == 2 && p.downx == 1) return launch<scalar_t, int32_t, CL, 2, 1, 4, 4>(x, fk, y, p);
  if (small && square4 && same && p.upx == 1 && p.downx == 1) return launch<scalar_t, int32_t, CL, 1, 1, 4, 4>(x, fk, y, p);
  if (small && square4 && same && p.upx == 1 && p.downx == 2) return launch<scalar_t, int32_t, CL, 1, 2, 4, 4>(x, fk, y, p);
  if (small) return launch<scalar_t, int32_t, CL, 0, 0, 0, 0>(x, fk, y, p);
  return launch<scalar_t, int64_t, CL, 0, 0, 0, 0>(x, fk, y, p);
}

void upfirdn_pass_cuda(const at::Tensor& x, const at::Tensor& fk, at::Tensor& y, const UpfirdnParams& p) {
  const at::Tensor fd = fk.to(y.device());
  // y is channels_last-contiguous or contiguous; when it is both, the two index orders coincide.
  const bool cl = !y.is_contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ganinv_upfirdn2d_cuda", [&] {
    if (cl) choose<scalar_t, true>(x, fd, y, p);
    else choose<scalar_t, false>(x, fd, y, p);
  });
}

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                          int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip,
                          double gain) {
  TORCH_CHECK_VALUE(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(x.device());
  return upfirdn2d_run(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain, &upfirdn_pass_cuda);
}

}  // namespace

TORCH_LIBRARY_IMPL(ganinv, CUDA, m) { m.impl("upfirdn2d", &upfirdn2d_cuda); }

}  // namespace ganinv
