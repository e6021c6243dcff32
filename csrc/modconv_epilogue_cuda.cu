// modconv_epilogue on CUDA (see csrc/ganinv_ops.h for the maths). Grid: blockIdx.x = one (image, channel)
// plane, blockIdx.y strides over its positions, so d, b, e and the plane's sums are per block. Forward: one
// element per thread per step. Backward: each thread sums gs, gs c and gy z over its positions; the block
// reduces them (warp shuffles, then shared memory) and adds them to float (double for double) per-plane
// accumulators with one atomicAdd per block; the noise gradient (a sum over channels) is accumulated with one
// atomicAdd per element.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>

#include "ganinv_ops.h"

namespace ganinv {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t, int A>
__global__ void __launch_bounds__(kThreads)
    epilogue_forward_kernel(const scalar_t* __restrict__ c, const scalar_t* __restrict__ d,
                            const scalar_t* __restrict__ nz, const scalar_t* __restrict__ b,
                            const scalar_t* __restrict__ e, scalar_t* __restrict__ y, EpilogueParams p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t q = blockIdx.x, hw = p.hw;  // q = image * C + channel
  const acc_t alpha = acc_t(p.alpha), gain = acc_t(p.gain), cl = acc_t(p.clamp);
  const bool clamped = p.clamp >= 0;
  const acc_t dv = acc_t(d[q]), bv = p.bias ? acc_t(b[q % p.c]) : acc_t(0), ev = p.scale ? acc_t(e[q]) : acc_t(1);
  const scalar_t* nq = p.noise_n ? nz + (p.noise_n == 1 ? 0 : q / p.c) * hw : nullptr;
  const scalar_t* cq = c + q * hw;
  scalar_t* yq = y + q * hw;
  for (int64_t i = int64_t(blockIdx.y) * kThreads + threadIdx.x; i < hw; i += int64_t(gridDim.y) * kThreads) {
    const acc_t s = acc_t(cq[i]) * dv + (nq ? acc_t(nq[i]) : acc_t(0)) + bv;
    const acc_t v = act_eval<acc_t>(A, 0, s, alpha) * gain;
    yq[i] = scalar_t((clamped ? (v < -cl ? -cl : v > cl ? cl : v) : v) * ev);
  }
}

// Sum of v over the block; the result is valid in thread 0. `smem` holds kThreads / 32 values.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* smem) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / 32 ? smem[threadIdx.x] : T(0);
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// sums: [planes][3 + K] = (sum gs, sum gs c, sum gyt z, sum gr[k] y for k < K), gnoise: [noise_n * hw]; both zeroed
// by the caller, in acc_t. gyt = gy (if any) + sum_k wr[n, k, c] gr[n, k]: the gradient reaching y, also through the
// projection r = wr y when K > 0 (ToRGB, fused here: its own backward would write and re-read a y-sized gradient).
template <typename scalar_t, int A>
__global__ void __launch_bounds__(kThreads)
    epilogue_backward_kernel(const scalar_t* __restrict__ gy, const scalar_t* __restrict__ c,
                             const scalar_t* __restrict__ d, const scalar_t* __restrict__ nz,
                             const scalar_t* __restrict__ b, const scalar_t* __restrict__ e,
                             const scalar_t* __restrict__ gr, const scalar_t* __restrict__ wr,
                             scalar_t* __restrict__ gc,
                             at::opmath_type<scalar_t>* __restrict__ sums,
                             at::opmath_type<scalar_t>* __restrict__ gnoise, EpilogueParams p) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int MK = GANINV_EPILOGUE_MAX_K;
  __shared__ acc_t smem_g[kThreads / 32], smem_gc[kThreads / 32], smem_gz[kThreads / 32], smem_r[MK][kThreads / 32];
  const int64_t q = blockIdx.x, hw = p.hw;
  const acc_t alpha = acc_t(p.alpha), gain = acc_t(p.gain), cl = acc_t(p.clamp);
  const bool clamped = p.clamp >= 0;
  const acc_t dv = acc_t(d[q]), bv = p.bias ? acc_t(b[q % p.c]) : acc_t(0), ev = p.scale ? acc_t(e[q]) : acc_t(1);
  const int64_t noff = p.noise_n ? (p.noise_n == 1 ? 0 : q / p.c) * hw : 0;
  const int K = int(p.k);
  const int64_t img = q / p.c, ch = q - img * p.c;
  acc_t wk[MK];
  const scalar_t* grk[MK];
#pragma unroll
  for (int k = 0; k < MK; ++k) {
    wk[k] = k < K ? acc_t(wr[(img * K + k) * p.c + ch]) : acc_t(0);
    grk[k] = k < K ? gr + (img * K + k) * hw : nullptr;
  }
  const scalar_t* cq = c + q * hw;
  const scalar_t* gq = p.grad ? gy + q * hw : nullptr;
  scalar_t* oq = gc + q * hw;
  acc_t sg = 0, sgc = 0, sgz = 0, sr[MK] = {};
  for (int64_t i = int64_t(blockIdx.y) * kThreads + threadIdx.x; i < hw; i += int64_t(gridDim.y) * kThreads) {
    const acc_t ci = acc_t(cq[i]);
    acc_t gyi = gq ? acc_t(gq[i]) : acc_t(0), grv[MK];
#pragma unroll
    for (int k = 0; k < MK; ++k) {
      grv[k] = k < K ? acc_t(grk[k][i]) : acc_t(0);
      gyi += wk[k] * grv[k];
    }
    const acc_t s = ci * dv + (p.noise_n ? acc_t(nz[noff + i]) : acc_t(0)) + bv;
    const acc_t v = act_eval<acc_t>(A, 0, s, alpha) * gain;
    const bool pass = !clamped || (v <= cl && v >= -cl);        // torch.clamp's gradient mask
    const acc_t g = pass ? gyi * ev * act_eval<acc_t>(A, 1, s, alpha) * gain : acc_t(0);
    const acc_t z = clamped ? (v < -cl ? -cl : v > cl ? cl : v) : v;
    oq[i] = scalar_t(g * dv);
    sg += g;
    sgc += g * ci;
    sgz += gyi * z;  // e's gradient (unused without e)
#pragma unroll
    for (int k = 0; k < MK; ++k) sr[k] += grv[k] * z * ev;  // the projection's weight gradient: sum gr[k] y
    if (p.noise_n) atomicAdd(gnoise + noff + i, g);
  }
  sg = block_sum(sg, smem_g);
  sgc = block_sum(sgc, smem_gc);
  sgz = block_sum(sgz, smem_gz);
#pragma unroll
  for (int k = 0; k < MK; ++k)
    if (k < K) sr[k] = block_sum(sr[k], smem_r[k]);  // K is the same for the whole block: no divergent barrier
  if (threadIdx.x == 0) {
    acc_t* out = sums + (3 + K) * q;
    atomicAdd(out, sg);
    atomicAdd(out + 1, sgc);
    atomicAdd(out + 2, sgz);
    for (int k = 0; k < K; ++k) atomicAdd(out + 3 + k, sr[k]);
  }
}

dim3 grid_for(const EpilogueParams& p) {
  // Enough blocks per plane for ~4 elements per thread, at most 65535 (gridDim.y's limit).
  const int64_t per_plane = std::min<int64_t>(std::max<int64_t>((p.hw + kThreads * 4 - 1) / (kThreads * 4), 1),
                                              65535);
  return dim3(unsigned(p.n * p.c), unsigned(per_plane));
}

void check_cuda(const at::Tensor& c, const EpilogueParams& p, const char* op) {
  TORCH_CHECK_VALUE(c.is_cuda(), op, ": c must be a CUDA tensor");
  TORCH_CHECK_VALUE(p.n * p.c < (int64_t(1) << 31), op, ": too many (image, channel) planes (", p.n * p.c, ")");
}

at::Tensor forward_cuda(const at::Tensor& c, const at::Tensor& d, const at::Tensor& noise, const at::Tensor& b,
                        const at::Tensor& e, int64_t act, double alpha, double gain, double clamp) {
  const char* op = "modconv_epilogue";
  const c10::cuda::CUDAGuard guard(c.device());
  const EpilogueParams p = epilogue_params(c, d, noise, b, e, act, alpha, gain, clamp, op);
  check_cuda(c, p, op);
  at::Tensor y = maybe_poison(at::empty_like(c));
  if (y.numel() == 0) return y;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.scalar_type(), "ganinv_modconv_epilogue_cuda", [&] {
    const scalar_t* nz = p.noise_n ? noise.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* bp = p.bias ? b.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* ep = p.scale ? e.const_data_ptr<scalar_t>() : nullptr;
    with_act(p.act, [&](auto a) {
      epilogue_forward_kernel<scalar_t, decltype(a)::value><<<grid_for(p), kThreads, 0, stream>>>(
          c.const_data_ptr<scalar_t>(), d.const_data_ptr<scalar_t>(), nz, bp, ep, y.mutable_data_ptr<scalar_t>(), p);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& gy_in, const at::Tensor& c, const at::Tensor& d, const at::Tensor& noise, const at::Tensor& b,
    const at::Tensor& e, const at::Tensor& gr, const at::Tensor& wr, int64_t act, double alpha, double gain,
    double clamp) {
  const char* op = "modconv_epilogue_backward";
  const c10::cuda::CUDAGuard guard(c.device());
  EpilogueParams p = epilogue_params(c, d, noise, b, e, act, alpha, gain, clamp, op);
  check_cuda(c, p, op);
  epilogue_backward_params(p, c, gy_in, gr, wr, op);
  const at::Tensor gy = p.grad ? gy_in.contiguous() : gy_in;
  const auto acc = c.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor gc = maybe_poison(at::empty_like(c));
  at::Tensor sums = at::zeros({p.n, p.c, 3 + p.k}, c.options().dtype(acc));
  at::Tensor gnoise = at::zeros({p.noise_n, p.hw}, c.options().dtype(acc));
  if (c.numel() > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.scalar_type(), "ganinv_modconv_epilogue_bwd_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* nz = p.noise_n ? noise.const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* bp = p.bias ? b.const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* ep = p.scale ? e.const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* gyp = p.grad ? gy.const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* grp = p.k ? gr.const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* wrp = p.k ? wr.const_data_ptr<scalar_t>() : nullptr;
      with_act(p.act, [&](auto a) {
        epilogue_backward_kernel<scalar_t, decltype(a)::value><<<grid_for(p), kThreads, 0, stream>>>(
            gyp, c.const_data_ptr<scalar_t>(), d.const_data_ptr<scalar_t>(), nz, bp, ep, grp, wrp,
            gc.mutable_data_ptr<scalar_t>(), sums.mutable_data_ptr<acc_t>(),
            p.noise_n ? gnoise.mutable_data_ptr<acc_t>() : nullptr, p);
      });
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  // Each sum in a tensor of its own (copy=true: a float32 `.to`, or `.contiguous()` of a [1, 1] column, would
  // return a view of `sums`, and outputs must not alias).
  const auto column = [&](int64_t k, at::IntArrayRef sizes) {
    return sums.select(2, k).to(c.scalar_type(), false, true, at::MemoryFormat::Contiguous).reshape(sizes);
  };
  const at::Tensor gd = column(1, d.sizes());
  const at::Tensor gn = p.noise_n ? gnoise.reshape(noise.sizes()).to(c.scalar_type()) : at::empty({0}, c.options());
  const at::Tensor gb = p.bias ? sums.select(2, 0).sum(0).to(c.scalar_type()) : at::empty({0}, c.options());
  const at::Tensor ge = p.scale ? column(2, e.sizes()) : at::empty({0}, c.options());
  // [N, C, K] -> [N, K, C], wr's layout (a fresh tensor: .contiguous() of the transposed copy)
  const at::Tensor gw = p.k ? sums.narrow(2, 3, p.k).transpose(1, 2).to(c.scalar_type()).contiguous().clone()
                            : at::empty({0}, c.options());
  return {gc, gd, gn, gb, ge, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(ganinv, CUDA, m) {
  m.impl("modconv_epilogue", &forward_cuda);
  m.impl("modconv_epilogue_backward", &backward_cuda);
}

}  // namespace ganinv
