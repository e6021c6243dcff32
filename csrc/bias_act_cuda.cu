// bias_act on CUDA: grid-stride elementwise kernels per (dtype, activation), computing in float
// (double for double) over x's memory order; the bias index is (i / step_b) % size_b. The packed
// kernel (16-byte loads, several elements per thread) runs by default; GANINV_CUDA_SIMPLE=1 selects
// the simple one-element-per-thread kernel, also used for unaligned or huge tensors.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "ganinv_ops.h"

namespace ganinv {
namespace {

template <typename scalar_t, typename index_t, int A>
__global__ void bias_act_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                                const scalar_t* __restrict__ g, scalar_t* __restrict__ y, BiasActParams p) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t alpha = acc_t(p.alpha), gain = acc_t(p.gain), clamp = acc_t(p.clamp);
  const bool clamped = p.clamp >= 0;
  const index_t n = index_t(p.numel), step = index_t(p.step_b), size = index_t(p.size_b);
  const index_t stride = index_t(blockDim.x) * index_t(gridDim.x);
  for (index_t i = index_t(blockIdx.x) * index_t(blockDim.x) + index_t(threadIdx.x); i < n; i += stride) {
    const acc_t s = acc_t(x[i]) + (size ? acc_t(b[(i / step) % size]) : acc_t(0));
    const acc_t v = act_eval<acc_t>(A, 0, s, alpha) * gain;
    if (p.order == 0) {
      y[i] = scalar_t(clamped ? (v < -clamp ? -clamp : v > clamp ? clamp : v) : v);
    } else {
      const bool pass = !clamped || (v <= clamp && v >= -clamp);
      y[i] = scalar_t(pass ? acc_t(g[i]) * act_eval<acc_t>(A, p.order, s, alpha) * gain : acc_t(0));
    }
  }
}

template <typename scalar_t, typename index_t>
void launch(const at::Tensor& x, const at::Tensor& b, const at::Tensor& g, at::Tensor& y, const BiasActParams& p) {
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((p.numel + threads * 4 - 1) / (threads * 4), int64_t(1) << 20);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* bp = p.size_b ? b.const_data_ptr<scalar_t>() : nullptr;
  const scalar_t* gp = g.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  with_act(p.act, [&](auto a) {
    bias_act_kernel<scalar_t, index_t, decltype(a)::value><<<unsigned(blocks), threads, 0, stream>>>(xp, bp, gp, yp, p);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---------------------------------------------------------------------------------------------------------
// The packed path: each thread handles 16-byte packs (4 float, 8 half/bfloat16, 2 double) with one
// vector load per operand; when a pack cannot straddle two bias runs (no bias, or step_b a multiple of
// the pack: NCHW planes of H*W % N == 0) the bias index is computed once per pack. Needs 16-byte
// aligned x, g, y and int32 sizes; the last numel % N elements are done one per thread.

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <int A, typename acc_t>
__device__ __forceinline__ acc_t ba_element(acc_t s, acc_t gv, int order, acc_t alpha, acc_t gain, acc_t clamp,
                                            bool clamped) {
  const acc_t v = act_eval<acc_t>(A, 0, s, alpha) * gain;
  if (order == 0) return clamped ? (v < -clamp ? -clamp : v > clamp ? clamp : v) : v;
  const bool pass = !clamped || (v <= clamp && v >= -clamp);
  return pass ? gv * act_eval<acc_t>(A, order, s, alpha) * gain : acc_t(0);
}

template <typename scalar_t, int A>
__global__ void __launch_bounds__(256)
    bias_act_packed_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                           const scalar_t* __restrict__ g, scalar_t* __restrict__ y, BiasActParams p) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int N = 16 / int(sizeof(scalar_t));
  using P = Pack<scalar_t, N>;
  const acc_t alpha = acc_t(p.alpha), gain = acc_t(p.gain), clamp = acc_t(p.clamp);
  const bool clamped = p.clamp >= 0;
  const int order = p.order;
  const int n = int(p.numel), step = int(p.step_b), size = int(p.size_b), packs = n / N;
  const bool one_bias = size == 0 || step % N == 0;  // a pack starts at i = N q: [i, i + N) in one run
  const int stride = int(blockDim.x * gridDim.x), first = int(blockIdx.x * blockDim.x + threadIdx.x);
  for (int q = first; q < packs; q += stride) {
    const int i = q * N;
    const P xv = reinterpret_cast<const P*>(x)[q];
    P gv = xv;
    if (order != 0) gv = reinterpret_cast<const P*>(g)[q];
    const acc_t b0 = size && one_bias ? acc_t(b[(i / step) % size]) : acc_t(0);
    P out;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const acc_t bk = one_bias ? b0 : acc_t(b[((i + k) / step) % size]);  // size > 0 here
      out.v[k] = scalar_t(ba_element<A>(acc_t(xv.v[k]) + bk, acc_t(gv.v[k]), order, alpha, gain, clamp, clamped));
    }
    reinterpret_cast<P*>(y)[q] = out;
  }
  const int i = packs * N + first;  // the tail, shorter than one pack
  if (i < n) {
    const acc_t bi = size ? acc_t(b[(i / step) % size]) : acc_t(0);
    const acc_t gi = order != 0 ? acc_t(g[i]) : acc_t(0);
    y[i] = scalar_t(ba_element<A>(acc_t(x[i]) + bi, gi, order, alpha, gain, clamp, clamped));
  }
}

template <typename scalar_t>
void launch_packed(const at::Tensor& x, const at::Tensor& b, const at::Tensor& g, at::Tensor& y,
                   const BiasActParams& p) {
  constexpr int N = 16 / int(sizeof(scalar_t)), threads = 256;
  const int64_t packs = p.numel / N;
  // At least one thread per tail element; a grid-stride loop beyond 2^16 blocks.
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((packs + threads - 1) / threads, 65536));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* bp = p.size_b ? b.const_data_ptr<scalar_t>() : nullptr;
  const scalar_t* gp = g.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  with_act(p.act, [&](auto a) {
    bias_act_packed_kernel<scalar_t, decltype(a)::value><<<unsigned(blocks), threads, 0, stream>>>(xp, bp, gp, yp, p);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

at::Tensor run(const at::Tensor& g_in, const at::Tensor& x_in, const at::Tensor& b, int64_t order, int64_t dim,
               int64_t act, double alpha, double gain, double clamp, const char* op) {
  TORCH_CHECK_VALUE(x_in.is_cuda(), op, ": x must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = dense_4d_or_contiguous(x_in) ? x_in : x_in.contiguous();
  const BiasActParams p = bias_act_params(x, b, dim, act, order, alpha, gain, clamp, op);
  const at::Tensor g = order > 0 ? like_x(g_in, x) : x;
  TORCH_CHECK_VALUE(g.scalar_type() == x.scalar_type() && g.device() == x.device(), op,
                    ": the gradient must match x in dtype and device");
  at::Tensor y = maybe_poison(at::empty_like(x));
  if (p.numel == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ganinv_bias_act_cuda", [&] {
    const bool packed = !cuda_simple() && p.numel <= INT32_MAX - 64 && p.step_b <= INT32_MAX &&
                        aligned16(x.const_data_ptr()) && aligned16(g.const_data_ptr()) && aligned16(y.const_data_ptr());
    if (packed) launch_packed<scalar_t>(x, b, g, y, p);
    else if (p.numel <= INT32_MAX) launch<scalar_t, int32_t>(x, b, g, y, p);
    else launch<scalar_t, int64_t>(x, b, g, y, p);
  });
  return y;
}

at::Tensor bias_act_cuda(const at::Tensor& x, const at::Tensor& b, int64_t dim, int64_t act, double alpha,
                         double gain, double clamp) {
  return run(x, x, b, 0, dim, act, alpha, gain, clamp, "bias_act");
}

at::Tensor bias_act_grad_cuda(const at::Tensor& g, const at::Tensor& x, const at::Tensor& b, int64_t order,
                              int64_t dim, int64_t act, double alpha, double gain, double clamp) {
  TORCH_CHECK_VALUE(order == 1 || order == 2, "bias_act_grad: order must be 1 or 2, got ", order);
  return run(g, x, b, order, dim, act, alpha, gain, clamp, "bias_act_grad");
}

}  // namespace

TORCH_LIBRARY_IMPL(ganinv, CUDA, m) {
  m.impl("bias_act", &bias_act_cuda);
  m.impl("bias_act_grad", &bias_act_grad_cuda);
}

}  // namespace ganinv
