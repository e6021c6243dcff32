// modconv_epilogue on CUDA (see csrc/ganinv_ops.h for the maths). Grid: blockIdx.x = one (image, channel)
// plane, blockIdx.y strides over its positions, so d, b, e and the plane's sums are per block. Each thread moves
// VN elements per step: 16-byte packs (8 bfloat16/half, 4 float, 2 double) when the plane is a whole number of
// packs and every operand is 16-byte aligned, else one (also under GANINV_CUDA_SIMPLE=1). Blocks have 32-256
// threads, fewer for small planes (a 4x4 bfloat16 plane is 2 packs). Backward: each thread sums gs, gs c and
// gy z over its positions; the block reduces them and adds them to float (double for double) per-plane
// accumulators with one atomicAdd per block; the noise gradient (a sum over channels) is accumulated with
// atomicAdds per element (on sm_90, one 4-float vector atomic per 4 elements). channels_last c: the kernels of
// modconv_epilogue_nhwc_cuda.cu (a separate file: it compiles in parallel).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <tuple>
#include <utility>

#include "cuda_common.h"
#include "ganinv_ops.h"

namespace ganinv {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t, int A, int VN>
__global__ void __launch_bounds__(kThreads)
    epilogue_forward_kernel(const scalar_t* __restrict__ c, const scalar_t* __restrict__ d,
                            const scalar_t* __restrict__ nz, const scalar_t* __restrict__ b,
                            const scalar_t* __restrict__ e, scalar_t* __restrict__ y, EpilogueParams p) {
  using acc_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VN>;
  const int64_t q = blockIdx.x, hw = p.hw, packs = hw / VN;  // q = image * C + channel
  const acc_t alpha = acc_t(p.alpha), gain = acc_t(p.gain), cl = acc_t(p.clamp);
  const bool clamped = p.clamp >= 0;
  const acc_t dv = acc_t(d[q]), bv = p.bias ? acc_t(b[q % p.c]) : acc_t(0), ev = p.scale ? acc_t(e[q]) : acc_t(1);
  const P* nq = p.noise_n ? reinterpret_cast<const P*>(nz + (p.noise_n == 1 ? 0 : q / p.c) * hw) : nullptr;
  const P* cq = reinterpret_cast<const P*>(c + q * hw);
  P* yq = reinterpret_cast<P*>(y + q * hw);
  const int64_t stride = int64_t(gridDim.y) * blockDim.x;
  for (int64_t j = int64_t(blockIdx.y) * blockDim.x + threadIdx.x; j < packs; j += stride) {
    const P cv = cq[j];
    P nv = cv;
    if (nq) nv = nq[j];
    P out;
#pragma unroll
    for (int k = 0; k < VN; ++k) {
      const acc_t s = acc_t(cv.v[k]) * dv + (nq ? acc_t(nv.v[k]) : acc_t(0)) + bv;
      out.v[k] = scalar_t(ba_element<A>(s, acc_t(0), 0, alpha, gain, cl, clamped) * ev);
    }
    yq[j] = out;
  }
}

// sums: [planes][3 + K] = (sum gs, sum gs c, sum gyt z, sum gr[k] y for k < K), gnoise: [noise_n * hw]; both zeroed
// by the caller, in acc_t. gyt = gy (if any) + sum_k wr[n, k, c] gr[n, k]: the gradient reaching y, also through the
// projection r = wr y when K > 0 (ToRGB, fused here: its own backward would write and re-read a y-sized gradient).
template <typename scalar_t, int A, int VN>
__global__ void __launch_bounds__(kThreads)
    epilogue_backward_kernel(const scalar_t* __restrict__ gy, const scalar_t* __restrict__ c,
                             const scalar_t* __restrict__ d, const scalar_t* __restrict__ nz,
                             const scalar_t* __restrict__ b, const scalar_t* __restrict__ e,
                             const scalar_t* __restrict__ gr, const scalar_t* __restrict__ wr,
                             scalar_t* __restrict__ gc,
                             at::opmath_type<scalar_t>* __restrict__ sums,
                             at::opmath_type<scalar_t>* __restrict__ gnoise, EpilogueParams p) {
  using acc_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VN>;
  constexpr int MK = GANINV_EPILOGUE_MAX_K;
  __shared__ acc_t warp_sums[kThreads / 32];
  const int64_t q = blockIdx.x, hw = p.hw, packs = hw / VN;
  const acc_t alpha = acc_t(p.alpha), gain = acc_t(p.gain), cl = acc_t(p.clamp);
  const bool clamped = p.clamp >= 0;
  const acc_t dv = acc_t(d[q]), bv = p.bias ? acc_t(b[q % p.c]) : acc_t(0), ev = p.scale ? acc_t(e[q]) : acc_t(1);
  const int64_t img = q / p.c, ch = q - img * p.c;
  const int64_t noff = p.noise_n ? (p.noise_n == 1 ? 0 : img) * hw : 0;
  const int K = int(p.k);
  acc_t wk[MK];
  const P* grk[MK];
#pragma unroll
  for (int k = 0; k < MK; ++k) {
    wk[k] = k < K ? acc_t(wr[(img * K + k) * p.c + ch]) : acc_t(0);
    grk[k] = k < K ? reinterpret_cast<const P*>(gr + (img * K + k) * hw) : nullptr;
  }
  const P* cq = reinterpret_cast<const P*>(c + q * hw);
  const P* gq = p.grad ? reinterpret_cast<const P*>(gy + q * hw) : nullptr;
  const P* nq = p.noise_n ? reinterpret_cast<const P*>(nz + noff) : nullptr;
  P* oq = reinterpret_cast<P*>(gc + q * hw);
  acc_t sg = 0, sgc = 0, sgz = 0, sr[MK] = {};
  const int64_t stride = int64_t(gridDim.y) * blockDim.x;
  for (int64_t j = int64_t(blockIdx.y) * blockDim.x + threadIdx.x; j < packs; j += stride) {
    const P cv = cq[j];
    P gv = cv, nv = cv, rv[MK];
    if (gq) gv = gq[j];
    if (nq) nv = nq[j];
#pragma unroll
    for (int k = 0; k < MK; ++k) rv[k] = k < K ? grk[k][j] : cv;
    P out;
    acc_t gs[VN];
#pragma unroll
    for (int u = 0; u < VN; ++u) {
      const acc_t ci = acc_t(cv.v[u]);
      acc_t gyi = gq ? acc_t(gv.v[u]) : acc_t(0), grv[MK];
#pragma unroll
      for (int k = 0; k < MK; ++k) {
        grv[k] = k < K ? acc_t(rv[k].v[u]) : acc_t(0);
        gyi += wk[k] * grv[k];
      }
      const acc_t s = ci * dv + (nq ? acc_t(nv.v[u]) : acc_t(0)) + bv;
      const acc_t g = ba_element<A>(s, gyi * ev, 1, alpha, gain, cl, clamped);
      const acc_t z = ba_element<A>(s, acc_t(0), 0, alpha, gain, cl, clamped);
      out.v[u] = scalar_t(g * dv);
      gs[u] = g;
      sg += g;
      sgc += g * ci;
      sgz += gyi * z;  // e's gradient (unused without e)
#pragma unroll
      for (int k = 0; k < MK; ++k) sr[k] += grv[k] * z * ev;  // the projection's weight gradient: sum gr[k] y
    }
    oq[j] = out;
    if (nq) atomic_add_n<VN>(gnoise + noff + j * VN, gs);
  }
  sg = block_sum(sg, warp_sums);
  sgc = block_sum(sgc, warp_sums);
  sgz = block_sum(sgz, warp_sums);
#pragma unroll
  for (int k = 0; k < MK; ++k)
    if (k < K) sr[k] = block_sum(sr[k], warp_sums);  // K is the same for the whole block: no divergent barrier
  if (threadIdx.x == 0) {
    acc_t* out = sums + (3 + K) * q;
    atomicAdd(out, sg);
    atomicAdd(out + 1, sgc);
    atomicAdd(out + 2, sgz);
#pragma unroll
    for (int k = 0; k < MK; ++k)
      if (k < K) atomicAdd(out + 3 + k, sr[k]);   // a compile-time index: sr stays in registers
  }
}

// The backward with channels grouped (experimental, GANINV_EPILOGUE_GROUPED=1, read per call; NCHW, 16-byte packs,
// lrelu and linear). In the kernel above each (image, channel) block adds its share of the noise gradient (a sum over
// channels) into the image's noise row with atomics, and the blocks that run together are neighbouring channels at the
// same positions: C-way contention on the same addresses (32-512). Here a block takes CG channels of one image at
// the same positions, sums their shares in registers (noise and the projection's gr are read once for the CG), and
// makes one atomic per position per CG channels; consecutive blocks take consecutive position chunks, so blocks
// that run together touch different addresses. Grid: one dimension, ((image * groups + group) * chunks + chunk).
constexpr int kEpilogueGroup = 4;

template <typename scalar_t, int A, int VN, int CG, bool PROJ>
__global__ void __launch_bounds__(kThreads)
    epilogue_backward_grouped_kernel(const scalar_t* __restrict__ gy, const scalar_t* __restrict__ c,
                                     const scalar_t* __restrict__ d, const scalar_t* __restrict__ nz,
                                     const scalar_t* __restrict__ b, const scalar_t* __restrict__ e,
                                     const scalar_t* __restrict__ gr, const scalar_t* __restrict__ wr,
                                     scalar_t* __restrict__ gc, at::opmath_type<scalar_t>* __restrict__ sums,
                                     at::opmath_type<scalar_t>* __restrict__ gnoise, EpilogueParams p,
                                     int64_t chunks) {
  using acc_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VN>;
  constexpr int MK = PROJ ? GANINV_EPILOGUE_MAX_K : 1;
  __shared__ acc_t warp_sums[kThreads / 32];
  const int64_t groups = (p.c + CG - 1) / CG, hw = p.hw, packs = hw / VN;
  const int64_t chunk = int64_t(blockIdx.x) % chunks, ig = int64_t(blockIdx.x) / chunks;
  const int64_t img = ig / groups, c0 = (ig - img * groups) * CG;
  const int cn = int(min(int64_t(CG), p.c - c0));  // channels in this group (the last may have fewer)
  const acc_t alpha = acc_t(p.alpha), gain = acc_t(p.gain), cl = acc_t(p.clamp);
  const bool clamped = p.clamp >= 0;
  const int K = PROJ ? int(p.k) : 0;
  acc_t dv[CG], bv[CG], ev[CG], wk[CG][MK];
#pragma unroll
  for (int i = 0; i < CG; ++i) {
    const int64_t q = img * p.c + c0 + i;
    dv[i] = i < cn ? acc_t(d[q]) : acc_t(0);
    bv[i] = i < cn && p.bias ? acc_t(b[c0 + i]) : acc_t(0);
    ev[i] = i < cn && p.scale ? acc_t(e[q]) : acc_t(1);
#pragma unroll
    for (int k = 0; k < MK; ++k) wk[i][k] = i < cn && k < K ? acc_t(wr[(img * K + k) * p.c + c0 + i]) : acc_t(0);
  }
  const int64_t noff = p.noise_n ? (p.noise_n == 1 ? 0 : img) * hw : 0;
  const P* nq = p.noise_n ? reinterpret_cast<const P*>(nz + noff) : nullptr;
  const P* cq = reinterpret_cast<const P*>(c + (img * p.c + c0) * hw);        // plane i at cq + i * packs
  const P* gq = p.grad ? reinterpret_cast<const P*>(gy + (img * p.c + c0) * hw) : nullptr;
  P* oq = reinterpret_cast<P*>(gc + (img * p.c + c0) * hw);
  const P* grq = PROJ && K > 0 ? reinterpret_cast<const P*>(gr + img * K * hw) : nullptr;  // row k at + k * packs
  acc_t sg[CG] = {}, sgc[CG] = {}, sgz[CG] = {}, sr[CG][MK] = {};
  const int64_t stride = chunks * blockDim.x;
  for (int64_t j = chunk * blockDim.x + threadIdx.x; j < packs; j += stride) {
    P nv, rv[MK];
    if (nq) nv = nq[j];
#pragma unroll
    for (int k = 0; k < MK; ++k)
      if (k < K) rv[k] = grq[k * packs + j];
    acc_t gsum[VN] = {};
#pragma unroll
    for (int i = 0; i < CG; ++i) {
      if (i >= cn) break;  // the same for the whole block
      const P cv = cq[i * packs + j];
      P gv, out;
      if (gq) gv = gq[i * packs + j];
#pragma unroll
      for (int u = 0; u < VN; ++u) {
        const acc_t ci = acc_t(cv.v[u]);
        acc_t gyi = gq ? acc_t(gv.v[u]) : acc_t(0);
#pragma unroll
        for (int k = 0; k < MK; ++k)
          if (k < K) gyi += wk[i][k] * acc_t(rv[k].v[u]);
        const acc_t s = ci * dv[i] + (nq ? acc_t(nv.v[u]) : acc_t(0)) + bv[i];
        const acc_t g = ba_element<A>(s, gyi * ev[i], 1, alpha, gain, cl, clamped);
        const acc_t z = ba_element<A>(s, acc_t(0), 0, alpha, gain, cl, clamped);
        out.v[u] = scalar_t(g * dv[i]);
        gsum[u] += g;
        sg[i] += g;
        sgc[i] += g * ci;
        sgz[i] += gyi * z;
#pragma unroll
        for (int k = 0; k < MK; ++k)
          if (k < K) sr[i][k] += acc_t(rv[k].v[u]) * z * ev[i];
      }
      oq[i * packs + j] = out;
    }
    if (nq) atomic_add_n<VN>(gnoise + noff + j * VN, gsum);
  }
#pragma unroll
  for (int i = 0; i < CG; ++i) {
    if (i >= cn) break;  // uniform: no divergent barrier in block_sum
    sg[i] = block_sum(sg[i], warp_sums);
    sgc[i] = block_sum(sgc[i], warp_sums);
    sgz[i] = block_sum(sgz[i], warp_sums);
#pragma unroll
    for (int k = 0; k < MK; ++k)
      if (k < K) sr[i][k] = block_sum(sr[i][k], warp_sums);
    if (threadIdx.x == 0) {
      acc_t* o = sums + (3 + K) * (img * p.c + c0 + i);
      atomicAdd(o, sg[i]);
      atomicAdd(o + 1, sgc[i]);
      atomicAdd(o + 2, sgz[i]);
#pragma unroll
      for (int k = 0; k < MK; ++k)
        if (k < K) atomicAdd(o + 3 + k, sr[i][k]);   // a compile-time index: sr stays in registers
    }
  }
}

// Whether the grouped backward runs this call: asked for (GANINV_EPILOGUE_GROUPED=1, read per call: the tests and
// benchmarks switch it), 16-byte packs, and an activation it is compiled for.
bool epilogue_grouped(int vn, int64_t act) {
  const char* v = std::getenv("GANINV_EPILOGUE_GROUPED");
  return v != nullptr && v[0] == '1' && vn > 1 && (act == kLrelu || act == kLinear);
}

// Elements per thread step: 16 / sizeof(scalar_t) when every plane is a whole number of such packs and every
// operand (null: absent) is 16-byte aligned, else 1.
template <typename scalar_t>
int pack_width(const EpilogueParams& p, std::initializer_list<const void*> operands) {
  constexpr int N = 16 / int(sizeof(scalar_t));
  return cuda_simple() || p.hw % N != 0 || !aligned16(operands) ? 1 : N;
}

// Threads per block: the plane's packs rounded up to a warp, 32 to 256. Blocks per plane: enough for ~4 elements
// (1-wide) or ~2 packs per thread, at most 65535 (gridDim.y's limit).
std::pair<dim3, dim3> launch_shape(const EpilogueParams& p, int vn) {
  const int64_t packs = p.hw / vn, per_thread = vn == 1 ? 4 : 2;
  const int64_t threads = std::clamp<int64_t>((packs + 31) / 32 * 32, 32, kThreads);
  const int64_t per_plane = std::clamp<int64_t>((packs + threads * per_thread - 1) / (threads * per_thread), 1, 65535);
  return {dim3(unsigned(p.n * p.c), unsigned(per_plane)), dim3(unsigned(threads))};
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
  if (p.nhwc && c.numel() > 0 && !epilogue_nhwc_covered(p, c, d, b, e, at::Tensor(), at::Tensor()))
    return forward_cuda(c.contiguous(), d, noise, b, e, act, alpha, gain, clamp)   // the NCHW kernels on a copy
        .contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y = maybe_poison(at::empty_like(c));
  if (y.numel() == 0) return y;
  if (p.nhwc) {
    epilogue_nhwc_forward(c, d, noise, b, e, y, p);
    return y;
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.scalar_type(), "ganinv_modconv_epilogue_cuda", [&] {
    const scalar_t* nz = p.noise_n ? noise.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* bp = p.bias ? b.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* ep = p.scale ? e.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* cp = c.const_data_ptr<scalar_t>();
    const scalar_t* dp = d.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const int vn = pack_width<scalar_t>(p, {cp, nz, yp});
    const std::pair<dim3, dim3> shape = launch_shape(p, vn);
    const dim3 grid = shape.first, block = shape.second;
    with_act(p.act, [&](auto a) {
      constexpr int A = decltype(a)::value, N = 16 / int(sizeof(scalar_t));
      if (vn == 1)
        epilogue_forward_kernel<scalar_t, A, 1><<<grid, block, 0, stream>>>(cp, dp, nz, bp, ep, yp, p);
      else
        epilogue_forward_kernel<scalar_t, A, N><<<grid, block, 0, stream>>>(cp, dp, nz, bp, ep, yp, p);
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
  const at::Tensor gy = p.grad ? gy_in.contiguous(epilogue_format(p)) : gy_in;
  const auto acc = c.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  if (p.nhwc && c.numel() > 0 && !epilogue_nhwc_covered(p, c, d, b, e, gy, wr)) {  // NCHW kernels on copies
    auto out = backward_cuda(p.grad ? gy.contiguous() : gy, c.contiguous(), d, noise, b, e, gr, wr, act, alpha, gain,
                             clamp);
    std::get<0>(out) = std::get<0>(out).contiguous(at::MemoryFormat::ChannelsLast);
    return out;
  }
  at::Tensor gc = maybe_poison(at::empty_like(c));
  at::Tensor sums = at::zeros({p.n, p.c, 3 + p.k}, c.options().dtype(acc));
  at::Tensor gnoise = at::zeros({p.noise_n, p.hw}, c.options().dtype(acc));
  if (c.numel() > 0 && p.nhwc) {
    epilogue_nhwc_backward(gy, c, d, noise, b, e, gr, wr, gc, sums, gnoise, p);
  } else if (c.numel() > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.scalar_type(), "ganinv_modconv_epilogue_bwd_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* nz = p.noise_n ? noise.const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* bp = p.bias ? b.const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* ep = p.scale ? e.const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* gyp = p.grad ? gy.const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* grp = p.k ? gr.const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* wrp = p.k ? wr.const_data_ptr<scalar_t>() : nullptr;
      const scalar_t* cp = c.const_data_ptr<scalar_t>();
      scalar_t* gcp = gc.mutable_data_ptr<scalar_t>();
      acc_t* gnp = p.noise_n ? gnoise.mutable_data_ptr<acc_t>() : nullptr;
      const scalar_t* dp = d.const_data_ptr<scalar_t>();
      acc_t* sp = sums.mutable_data_ptr<acc_t>();
      // gnoise too: its vector atomics need 16-byte aligned runs
      const int vn = pack_width<scalar_t>(p, {cp, gyp, nz, grp, gcp, gnp});
      const std::pair<dim3, dim3> shape = launch_shape(p, vn);
      const dim3 grid = shape.first, block = shape.second;
      if (epilogue_grouped(vn, p.act)) {  // grid: (image, group) planes x position chunks, chunks fastest
        constexpr int N = 16 / int(sizeof(scalar_t)), CG = kEpilogueGroup;
        const int64_t chunks = grid.y, blocks = p.n * ((p.c + CG - 1) / CG) * chunks;
        TORCH_CHECK(blocks <= INT32_MAX, op, ": too many blocks for the grouped kernel (", blocks, ")");
        const auto run = [&](auto kernel) {
          kernel<<<unsigned(blocks), block, 0, stream>>>(gyp, cp, dp, nz, bp, ep, grp, wrp, gcp, sp, gnp, p, chunks);
        };
        if (p.act == kLrelu)
          p.k ? run(epilogue_backward_grouped_kernel<scalar_t, kLrelu, N, CG, true>)
              : run(epilogue_backward_grouped_kernel<scalar_t, kLrelu, N, CG, false>);
        else
          p.k ? run(epilogue_backward_grouped_kernel<scalar_t, kLinear, N, CG, true>)
              : run(epilogue_backward_grouped_kernel<scalar_t, kLinear, N, CG, false>);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
      with_act(p.act, [&](auto a) {
        constexpr int A = decltype(a)::value, N = 16 / int(sizeof(scalar_t));
        if (vn == 1)
          epilogue_backward_kernel<scalar_t, A, 1><<<grid, block, 0, stream>>>(gyp, cp, dp, nz, bp, ep, grp, wrp, gcp,
                                                                               sp, gnp, p);
        else
          epilogue_backward_kernel<scalar_t, A, N><<<grid, block, 0, stream>>>(gyp, cp, dp, nz, bp, ep, grp, wrp, gcp,
                                                                               sp, gnp, p);
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
