// bias_act on CUDA: grid-stride elementwise kernels per (dtype, activation), computing in float
// (double for double) over x's memory order; the bias index is (i / step_b) % size_b. The packed
// kernel (16-byte loads, several elements per thread) runs by default; GANINV_CUDA_SIMPLE=1 selects
// the simple one-element-per-thread kernel, also used for unaligned or huge tensors.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <tuple>

#include "cuda_common.h"
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
// aligned x, g, y and int32 sizes; the last numel % N elements are done one per thread. (Pack: cuda_common.h.)

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
  if (first < n - packs * N) {  // the tail, shorter than one pack (packs * N + first could pass INT32_MAX)
    const int i = packs * N + first;
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

at::Tensor run(const at::Tensor& g_in, const at::Tensor& x_in, const at::Tensor& b, int64_t order, int64_t dim,
               int64_t act, double alpha, double gain, double clamp, const char* op) {
  TORCH_CHECK_VALUE(x_in.is_cuda(), op, ": x must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = dense_4d_or_contiguous(x_in) ? x_in : x_in.contiguous();
  const BiasActParams p = bias_act_params(x, b, dim, act, order, alpha, gain, clamp, op);
  TORCH_CHECK_VALUE(order == 0 || (g_in.scalar_type() == x.scalar_type() && g_in.device() == x.device()), op,
                    ": the gradient must match x in dtype and device");
  const at::Tensor g = order > 0 ? like_x(g_in, x) : x;
  at::Tensor y = maybe_poison(at::empty_like(x));
  if (p.numel == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ganinv_bias_act_cuda", [&] {
    const bool packed = !cuda_simple() && p.numel <= INT32_MAX - 64 && p.step_b <= INT32_MAX &&
                        aligned16({x.const_data_ptr(), g.const_data_ptr(), y.const_data_ptr()});
    if (packed) launch_packed<scalar_t>(x, b, g, y, p);
    else if (p.numel <= INT32_MAX - (int64_t(1) << 28)) launch<scalar_t, int32_t>(x, b, g, y, p);  // i + stride fits
    else launch<scalar_t, int64_t>(x, b, g, y, p);
  });
  return y;
}

// ---------------------------------------------------------------------------------------------------------
// bias_act_backward: dx and the bias gradient in one pass. Where each bias value covers runs of at least
// kBiasMinRun consecutive elements (NCHW planes, dim 1), channel c's runs in every image form one index space of
// 16-byte packs (t = image * packs-per-run + pack); block (k, c) takes chunk k of it, writes dx and sums its unrounded
// values (warp shuffles, then one value per warp in shared memory). With one chunk per channel that sum is db[c],
// written in b's dtype: no second kernel; with several, partial[c][k], added per channel by a second small kernel
// (a warp per channel; not ATen's sum, whose setup costs several launches' worth of host time at batch 1, and whose
// 16-bit result would take one more kernel to round). Fixed order either way (deterministic, no atomics). VN
// elements per pack (16 bytes when x, g, dx are aligned and a run is a whole number of packs, else 1). Shorter runs
// (channels_last, [N, C]): dx by `run`, then a reduction of it.

constexpr int kPacksPerBlock = 2048;  // at most: 256 threads x 8 packs


// Channel c's run in image o: flat elements [(o size + c) step, + step). total = images * units packs per channel
// (< INT32_MAX - 256, checked by the host), chunk = packs per block.
template <typename scalar_t, int A, int VN>
__global__ void __launch_bounds__(256)
    bias_act_backward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                             const scalar_t* __restrict__ g, scalar_t* __restrict__ dx, scalar_t* __restrict__ db,
                             at::opmath_type<scalar_t>* __restrict__ partial, BiasActParams p, int chunk, int total) {
  using acc_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VN>;
  __shared__ acc_t warp_sums[8];
  const acc_t alpha = acc_t(p.alpha), gain = acc_t(p.gain), clamp = acc_t(p.clamp);
  const bool clamped = p.clamp >= 0;
  const int64_t step = p.step_b, size = p.size_b;
  const int units = int(step / VN);
  const int begin = int(blockIdx.x) * chunk;                                   // < total
  const int end = int(min(int64_t(begin) + chunk, int64_t(total)));            // begin + chunk may pass INT32_MAX
  for (int64_t c = blockIdx.y; c < size; c += gridDim.y) {
    const acc_t bias = acc_t(b[c]);
    acc_t sum = acc_t(0);
    for (int t = begin + int(threadIdx.x); t < end; t += int(blockDim.x)) {
      const int o = t / units, q = t - o * units;  // image, pack within its run
      const int64_t i = (int64_t(o) * size + c) * step + int64_t(q) * VN;
      const P xv = *reinterpret_cast<const P*>(x + i);
      const P gv = *reinterpret_cast<const P*>(g + i);
      P out;
#pragma unroll
      for (int k = 0; k < VN; ++k) {
        const acc_t v = ba_element<A>(acc_t(xv.v[k]) + bias, acc_t(gv.v[k]), 1, alpha, gain, clamp, clamped);
        out.v[k] = scalar_t(v);
        sum += v;
      }
      *reinterpret_cast<P*>(dx + i) = out;
    }
    sum = block_sum(sum, warp_sums);
    if (threadIdx.x == 0) {
      if (gridDim.x == 1) db[c] = scalar_t(sum);
      else partial[c * gridDim.x + blockIdx.x] = sum;
    }
  }
}

// db[c] = sum_k partial[c][k] in a fixed order (lane l adds k = l, l + 32, ...; then a shuffle tree), rounded once
// to b's dtype. A warp per channel: c is the same for all 32 lanes, so a warp past the last channel leaves whole.
template <typename scalar_t>
__global__ void __launch_bounds__(256)
    bias_partials_kernel(const at::opmath_type<scalar_t>* __restrict__ partial, scalar_t* __restrict__ db,
                         int64_t size, int chunks) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = int(threadIdx.x) % 32;
  const int64_t c = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (c >= size) return;
  acc_t s = acc_t(0);
  for (int k = lane; k < chunks; k += 32) s += partial[c * chunks + k];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  if (lane == 0) db[c] = scalar_t(s);
}

// Streaming multiprocessors of the current device (queried once per device).
int sm_count() {
  static std::atomic<int> cache[64];
  const int dev = c10::cuda::current_device();
  int n = dev >= 0 && dev < 64 ? cache[dev].load(std::memory_order_relaxed) : 0;
  if (n == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    if (dev >= 0 && dev < 64) cache[dev].store(n, std::memory_order_relaxed);
  }
  return n;
}

// Launches the kernel; returns db (in b's dtype).
template <typename scalar_t, int VN>
at::Tensor launch_backward(const at::Tensor& x, const at::Tensor& b, const at::Tensor& g, at::Tensor& dx,
                           const BiasActParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t size = p.size_b, total = p.numel / size / VN;  // packs per channel
  // Chunks: at most kPacksPerBlock packs per block, at least one pack per thread, and, where the work allows,
  // about two blocks per SM over all channels.
  const int64_t sms = sm_count();
  const int64_t fewest = (total + kPacksPerBlock - 1) / kPacksPerBlock, most = std::max<int64_t>(1, (total + 255) / 256);
  const int64_t want = std::max(fewest, std::min(most, (2 * sms + size - 1) / size));
  const int64_t chunk = std::max<int64_t>(1, (total + want - 1) / want);
  const int64_t chunks = std::max<int64_t>(1, (total + chunk - 1) / chunk);
  const int threads = int(std::min<int64_t>(256, std::max<int64_t>(32, (std::min(total, chunk) + 31) / 32 * 32)));
  at::Tensor db = maybe_poison(at::empty_like(b)), partial;
  if (chunks > 1)
    partial = maybe_poison(at::empty({size, chunks}, x.options().dtype(c10::CppTypeToScalarType<acc_t>::value)));
  const dim3 grid(unsigned(chunks), unsigned(std::min<int64_t>(size, 65535)));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  with_act(p.act, [&](auto a) {
    bias_act_backward_kernel<scalar_t, decltype(a)::value, VN><<<grid, threads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
        dx.mutable_data_ptr<scalar_t>(), chunks == 1 ? db.mutable_data_ptr<scalar_t>() : nullptr,
        chunks == 1 ? nullptr : partial.mutable_data_ptr<acc_t>(), p, int(chunk), int(total));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (chunks > 1) {
    const int64_t blocks = (size * 32 + 255) / 256;  // eight channels per block
    bias_partials_kernel<scalar_t><<<unsigned(blocks), 256, 0, stream>>>(partial.const_data_ptr<acc_t>(),
                                                                         db.mutable_data_ptr<scalar_t>(), size,
                                                                         int(chunks));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return db;
}

std::tuple<at::Tensor, at::Tensor> bias_act_backward_cuda(const at::Tensor& g_in, const at::Tensor& x_in,
                                                          const at::Tensor& b, int64_t dim, int64_t act, double alpha,
                                                          double gain, double clamp) {
  const char* op = "bias_act_backward";
  TORCH_CHECK_VALUE(x_in.is_cuda(), op, ": x must be a CUDA tensor");
  TORCH_CHECK_VALUE(b.numel() > 0, op, ": b must be a non-empty bias (without one, call bias_act_grad)");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = dense_4d_or_contiguous(x_in) ? x_in : x_in.contiguous();
  const BiasActParams p = bias_act_params(x, b, dim, act, 1, alpha, gain, clamp, op);
  TORCH_CHECK_VALUE(g_in.scalar_type() == x.scalar_type() && g_in.device() == x.device(), op,
                    ": the gradient must match x in dtype and device");
  const bool fused = p.step_b >= kBiasMinRun && p.numel / p.size_b <= INT32_MAX - 256;  // int32 packs per channel
  if (!fused) {  // dx, then its sum; 16-bit: both from the float32 values, dx rounded once
    if (is_16bit(x)) {
      const at::Tensor dx = run(g_in.to(at::kFloat), x.to(at::kFloat), b.to(at::kFloat), 1, dim, act, alpha, gain,
                                clamp, op);
      return {dx.to(x.scalar_type()), bias_grad_by_sum(dx, b, dim)};
    }
    const at::Tensor dx = run(g_in, x, b, 1, dim, act, alpha, gain, clamp, op);
    return {dx, bias_grad_by_sum(dx, b, dim)};
  }
  const at::Tensor g = like_x(g_in, x);
  at::Tensor dx = maybe_poison(at::empty_like(x));
  at::Tensor db;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ganinv_bias_act_backward_cuda", [&] {
    constexpr int N = 16 / int(sizeof(scalar_t));
    const bool packed = !cuda_simple() && p.step_b % N == 0 &&
                        aligned16({x.const_data_ptr(), g.const_data_ptr(), dx.const_data_ptr()});
    db = packed ? launch_backward<scalar_t, N>(x, b, g, dx, p) : launch_backward<scalar_t, 1>(x, b, g, dx, p);
  });
  return {dx, db};
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
  m.impl("bias_act_backward", &bias_act_backward_cuda);
}

}  // namespace ganinv
