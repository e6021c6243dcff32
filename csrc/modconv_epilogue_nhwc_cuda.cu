// modconv_epilogue on CUDA for channels_last c [N, H, W, C] (see csrc/ganinv_ops.h for the maths; the NCHW kernels
// are in modconv_epilogue_cuda.cu, which routes here). Taken when C is a multiple of VN = 16 / sizeof(scalar_t),
// C / VN <= 256 and every operand is 16-byte aligned (epilogue_nhwc_covered); other channels_last calls run the NCHW
// kernels on a contiguous copy. A thread owns VN consecutive channels (a pack) of one position: d, b, e and wr are
// rows of C, loaded as packs too.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "cuda_common.h"
#include "ganinv_ops.h"

namespace ganinv {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t, int A, int VN>
__global__ void __launch_bounds__(kThreads)
    epilogue_forward_nhwc_kernel(const scalar_t* __restrict__ c, const scalar_t* __restrict__ d,
                                 const scalar_t* __restrict__ nz, const scalar_t* __restrict__ b,
                                 const scalar_t* __restrict__ e, scalar_t* __restrict__ y, EpilogueParams p) {
  using acc_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VN>;
  const acc_t alpha = acc_t(p.alpha), gain = acc_t(p.gain), cl = acc_t(p.clamp);
  const bool clamped = p.clamp >= 0;
  const int64_t G = p.c / VN, total = p.n * p.hw * G, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < total; j += stride) {
    const int64_t r = j / G, g = j - r * G, img = r / p.hw;  // r = image * hw + position
    const P cv = reinterpret_cast<const P*>(c)[j], dv = reinterpret_cast<const P*>(d + img * p.c)[g];
    P bv = cv, ev = cv;
    if (b) bv = reinterpret_cast<const P*>(b)[g];
    if (e) ev = reinterpret_cast<const P*>(e + img * p.c)[g];
    const acc_t nv = nz ? acc_t(nz[(p.noise_n == 1 ? 0 : img) * p.hw + r - img * p.hw]) : acc_t(0);
    P out;
#pragma unroll
    for (int k = 0; k < VN; ++k) {
      const acc_t s = acc_t(cv.v[k]) * acc_t(dv.v[k]) + nv + (b ? acc_t(bv.v[k]) : acc_t(0));
      out.v[k] = scalar_t(ba_element<A>(s, acc_t(0), 0, alpha, gain, cl, clamped) * (e ? acc_t(ev.v[k]) : acc_t(1)));
    }
    reinterpret_cast<P*>(y)[j] = out;
  }
}

// Block (chunk of positions, image); blockDim.x = G * rows with G = C / VN, so thread t always owns channel pack
// t % G and steps through positions by `rows`. Each thread sums its channels' (gs, gs c, gyt z, gr[k] y) in
// registers, the block adds them up in shared memory (`ssum`, C * (3 + K) values, dynamic), then into `sums` with
// one global atomic each. The noise gradient (sum over the C channels of a position) is reduced over the G lanes
// of the position by shuffles when G is a power of two (all warps full: blockDim.x = 256), else added per thread.
template <typename scalar_t, int A, int VN, bool PROJ>
__global__ void __launch_bounds__(kThreads)
    epilogue_backward_nhwc_kernel(const scalar_t* __restrict__ gy, const scalar_t* __restrict__ c,
                                  const scalar_t* __restrict__ d, const scalar_t* __restrict__ nz,
                                  const scalar_t* __restrict__ b, const scalar_t* __restrict__ e,
                                  const scalar_t* __restrict__ gr, const scalar_t* __restrict__ wr,
                                  scalar_t* __restrict__ gc, at::opmath_type<scalar_t>* __restrict__ sums,
                                  at::opmath_type<scalar_t>* __restrict__ gnoise, EpilogueParams p, int per_block) {
  using acc_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, VN>;
  constexpr int MK = PROJ ? GANINV_EPILOGUE_MAX_K : 1;
  extern __shared__ unsigned char smem_raw[];
  acc_t* ssum = reinterpret_cast<acc_t*>(smem_raw);
  const acc_t alpha = acc_t(p.alpha), gain = acc_t(p.gain), cl = acc_t(p.clamp);
  const bool clamped = p.clamp >= 0;
  const int G = int(p.c / VN), rows = int(blockDim.x) / G, g = int(threadIdx.x) % G, row = int(threadIdx.x) / G;
  const int K = PROJ ? int(p.k) : 0, S = 3 + K;
  const int64_t img = blockIdx.y, hw = p.hw, C = p.c, ch0 = int64_t(g) * VN;
  const int64_t pos0 = int64_t(blockIdx.x) * per_block, pos1 = min(hw, pos0 + per_block);
  const int64_t noff = p.noise_n ? (p.noise_n == 1 ? 0 : img) * hw : 0;
  const bool pow2 = (G & (G - 1)) == 0;
  for (int i = threadIdx.x; i < C * S; i += blockDim.x) ssum[i] = acc_t(0);
  const P dv = reinterpret_cast<const P*>(d + img * C)[g];
  P bv = dv, ev = dv;
  if (b) bv = reinterpret_cast<const P*>(b)[g];
  if (e) ev = reinterpret_cast<const P*>(e + img * C)[g];
  acc_t sg[VN] = {}, sgc[VN] = {}, sgz[VN] = {}, sr[MK][VN] = {};
  const int iters = int((pos1 - pos0 + rows - 1) / rows);  // the same for every thread of the block
  for (int it = 0; it < iters; ++it) {
    const int64_t pos = pos0 + int64_t(it) * rows + row;
    const bool live = pos < pos1;
    acc_t ns = 0;
    if (live) {
      const int64_t j = (img * hw + pos) * G + g;  // this pack's index in c, gy, gc
      const P cv = reinterpret_cast<const P*>(c)[j];
      P gv = cv;
      if (gy) gv = reinterpret_cast<const P*>(gy)[j];
      const acc_t nv = nz ? acc_t(nz[noff + pos]) : acc_t(0);
      acc_t gyt[VN];
#pragma unroll
      for (int u = 0; u < VN; ++u) gyt[u] = gy ? acc_t(gv.v[u]) : acc_t(0);
      acc_t grk[MK];
#pragma unroll
      for (int k = 0; k < MK; ++k) {
        grk[k] = acc_t(0);
        if (PROJ && k < K) {
          grk[k] = acc_t(gr[(img * K + k) * hw + pos]);
          const P wv = reinterpret_cast<const P*>(wr + (img * K + k) * C)[g];
#pragma unroll
          for (int u = 0; u < VN; ++u) gyt[u] += acc_t(wv.v[u]) * grk[k];
        }
      }
      P out;
#pragma unroll
      for (int u = 0; u < VN; ++u) {
        const acc_t ci = acc_t(cv.v[u]), eu = e ? acc_t(ev.v[u]) : acc_t(1);
        const acc_t s = ci * acc_t(dv.v[u]) + nv + (b ? acc_t(bv.v[u]) : acc_t(0));
        const acc_t gs = ba_element<A>(s, gyt[u] * eu, 1, alpha, gain, cl, clamped);
        const acc_t z = ba_element<A>(s, acc_t(0), 0, alpha, gain, cl, clamped);
        out.v[u] = scalar_t(gs * acc_t(dv.v[u]));
        sg[u] += gs;
        sgc[u] += gs * ci;
        sgz[u] += gyt[u] * z;
#pragma unroll
        for (int k = 0; k < MK; ++k) sr[k][u] += grk[k] * z * eu;
        ns += gs;
      }
      reinterpret_cast<P*>(gc)[j] = out;
    }
    if (nz) {
      if (pow2) {  // blockDim.x = 256: every warp is full, every lane here
        for (int o = min(G, 32) / 2; o > 0; o >>= 1) ns += __shfl_xor_sync(0xffffffffu, ns, o);
        if (live && g % 32 == 0) atomicAdd(gnoise + noff + pos, ns);
      } else if (live) {
        atomicAdd(gnoise + noff + pos, ns);
      }
    }
  }
  __syncthreads();  // ssum zeroed
#pragma unroll
  for (int u = 0; u < VN; ++u) {
    acc_t* o = ssum + (ch0 + u) * S;
    atomicAdd(o, sg[u]);
    atomicAdd(o + 1, sgc[u]);
    atomicAdd(o + 2, sgz[u]);
#pragma unroll
    for (int k = 0; k < MK; ++k)
      if (PROJ && k < K) atomicAdd(o + 3 + k, sr[k][u]);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < C * S; i += blockDim.x) atomicAdd(sums + img * C * S + i, ssum[i]);
}

// The NHWC backward's launch: blocks of G * rows threads (G = C / VN channel packs, rows = 256 / G positions per
// pass), ~16 positions per thread (fewer while that leaves under 256 blocks), C * (3 + K) sums in shared memory.
template <typename scalar_t, int A, int VN, bool PROJ>
void launch_backward_nhwc(const scalar_t* gy, const scalar_t* c, const scalar_t* d, const scalar_t* nz,
                          const scalar_t* b, const scalar_t* e, const scalar_t* gr, const scalar_t* wr, scalar_t* gc,
                          at::opmath_type<scalar_t>* sums, at::opmath_type<scalar_t>* gnoise, const EpilogueParams& p,
                          cudaStream_t stream) {
  const int G = int(p.c / VN), rows = kThreads / G;
  int64_t iters = 16;
  while (iters > 1 && p.n * ((p.hw + rows * iters - 1) / (rows * iters)) < 256) iters /= 2;
  const int per_block = int(rows * iters);
  const dim3 grid(unsigned((p.hw + per_block - 1) / per_block), unsigned(p.n));
  const size_t smem = size_t(p.c * (3 + p.k)) * sizeof(at::opmath_type<scalar_t>);
  epilogue_backward_nhwc_kernel<scalar_t, A, VN, PROJ><<<grid, G * rows, smem, stream>>>(gy, c, d, nz, b, e, gr, wr, gc,
                                                                                        sums, gnoise, p, per_block);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Whether a channels_last call runs the NHWC kernels: C a whole number of 16-byte packs, at most 256 packs (one
// block's threads span a position's channels), N <= 65535 (gridDim.y), the backward's per-channel sums within 48 KB
// of shared memory, every operand 16-byte aligned, and not GANINV_CUDA_SIMPLE=1.
template <typename scalar_t>
bool nhwc_packed(const EpilogueParams& p, std::initializer_list<const void*> operands) {
  constexpr int N = 16 / int(sizeof(scalar_t));
  constexpr int64_t acc_bytes = sizeof(at::opmath_type<scalar_t>);
  // (the backward's per-block sums in shared memory within 48 KB)
  return p.nhwc && !cuda_simple() && p.c % N == 0 && p.c / N <= kThreads && p.n <= 65535 &&
         p.c * (3 + GANINV_EPILOGUE_MAX_K) * acc_bytes <= 48 * 1024 && aligned16(operands);
}

}  // namespace

bool epilogue_nhwc_covered(const EpilogueParams& p, const at::Tensor& c, const at::Tensor& d, const at::Tensor& b,
                           const at::Tensor& e, const at::Tensor& gy, const at::Tensor& wr) {
  bool covered = false;
  const auto ptr = [](bool on, const at::Tensor& t) { return on ? t.const_data_ptr() : nullptr; };
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.scalar_type(), "ganinv_epilogue_nhwc_covered", [&] {
    // with the projection 16-bit types move 8-byte packs (epilogue_nhwc_backward), so C / 4 must fit a block too
    covered = (p.k == 0 || p.c / std::min<int64_t>(16 / sizeof(scalar_t), 4) <= kThreads) &&
              nhwc_packed<scalar_t>(p, {c.const_data_ptr(), d.const_data_ptr(), ptr(p.grad, gy), ptr(p.bias, b),
                                        ptr(p.scale, e), ptr(p.k > 0, wr)});
  });
  return covered;
}

void epilogue_nhwc_forward(const at::Tensor& c, const at::Tensor& d, const at::Tensor& noise, const at::Tensor& b,
                           const at::Tensor& e, at::Tensor& y, const EpilogueParams& p) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.scalar_type(), "ganinv_modconv_epilogue_nhwc", [&] {
    constexpr int N = 16 / int(sizeof(scalar_t));
    const int64_t total = p.n * p.hw * (p.c / N);
    const unsigned blocks = unsigned(std::min<int64_t>((total + 2 * kThreads - 1) / (2 * kThreads), 1 << 20));
    const scalar_t* nz = p.noise_n ? noise.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* bp = p.bias ? b.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* ep = p.scale ? e.const_data_ptr<scalar_t>() : nullptr;
    with_act(p.act, [&](auto a) {
      epilogue_forward_nhwc_kernel<scalar_t, decltype(a)::value, N><<<blocks, kThreads, 0, stream>>>(
          c.const_data_ptr<scalar_t>(), d.const_data_ptr<scalar_t>(), nz, bp, ep, y.mutable_data_ptr<scalar_t>(), p);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void epilogue_nhwc_backward(const at::Tensor& gy, const at::Tensor& c, const at::Tensor& d, const at::Tensor& noise,
                            const at::Tensor& b, const at::Tensor& e, const at::Tensor& gr, const at::Tensor& wr,
                            at::Tensor& gc, at::Tensor& sums, at::Tensor& gnoise, const EpilogueParams& p) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.scalar_type(), "ganinv_modconv_epilogue_nhwc_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* nz = p.noise_n ? noise.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* bp = p.bias ? b.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* ep = p.scale ? e.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* gyp = p.grad ? gy.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* grp = p.k ? gr.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* wrp = p.k ? wr.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* cp = c.const_data_ptr<scalar_t>();
    const scalar_t* dp = d.const_data_ptr<scalar_t>();
    scalar_t* gcp = gc.mutable_data_ptr<scalar_t>();
    acc_t* sp = sums.mutable_data_ptr<acc_t>();
    acc_t* gnp = p.noise_n ? gnoise.mutable_data_ptr<acc_t>() : nullptr;
    with_act(p.act, [&](auto a) {
      constexpr int A = decltype(a)::value, N = 16 / int(sizeof(scalar_t));
      // with the projection, 16-bit types move 8-byte packs: its sums would double the registers (216 on sm_90)
      if (p.k) launch_backward_nhwc<scalar_t, A, (N > 4 ? 4 : N), true>(gyp, cp, dp, nz, bp, ep, grp, wrp, gcp, sp, gnp,
                                                                        p, stream);
      else launch_backward_nhwc<scalar_t, A, N, false>(gyp, cp, dp, nz, bp, ep, grp, wrp, gcp, sp, gnp, p, stream);
    });
  });
}

}  // namespace ganinv
