// upfirdn2d on CUDA. Default for NCHW with a 4x4 filter and up 1/2 or down 2 (StyleGAN2's uses), on
// output planes larger than 16x16: a tiled kernel (input tile and filter in shared memory, 8 outputs per
// thread, flip and gain applied while staging the filter). channels_last x and y with C a multiple of the
// 16-byte pack (8 half/bfloat16, 4 float, 2 double), both 16-byte aligned: the packed kernel, one thread per
// pack of channels of an output pixel (one 16-byte load per tap, one store). Everything else, and all of it
// under GANINV_CUDA_SIMPLE=1: the simple kernel, one thread per output element in y's memory order (NCHW and
// channels_last both coalesced on writes). Both visit only the taps whose upsampled position holds an input
// sample, with compile-time specialisations for the same 4x4 modes.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>

#include "cuda_common.h"
#include "ganinv_ops.h"

namespace ganinv {
namespace {

template <typename index_t>
__device__ __forceinline__ index_t floor_mod(index_t a, index_t m) {
  const index_t r = a % m;
  return r < 0 ? r + m : r;
}

// Threads t < n of the block write tap t of the flipped (unless p.flip), gain-scaled n-tap filter f into taps:
// tap (ky, kx) = f[ky][kx] (flip) or f[fh-1-ky][fw-1-kx] (convolution), i.e. index n - 1 - t; the product is taken
// in double, as prepare_filter rounds it. The caller synchronises before reading taps.
template <typename acc_t, typename f_t>
__device__ __forceinline__ void stage_taps(acc_t* taps, const f_t* __restrict__ f, int n, const UpfirdnParams& p) {
  const int t = int(threadIdx.x);
  if (t < n) taps[t] = acc_t(double(f[p.flip ? t : n - 1 - t]) * p.gain);
}

// The IH x IW input tile whose corner is input row iy0, column ix0 of the H x W plane xp, into sx (row-major),
// zero outside the plane (so pads and crops need no tests later); by the block's `threads` threads.
template <typename acc_t, typename scalar_t>
__device__ __forceinline__ void stage_tile(acc_t* sx, int IH, int IW, const scalar_t* __restrict__ xp, int iy0,
                                           int ix0, int H, int W, int threads) {
  for (int i = int(threadIdx.x); i < IH * IW; i += threads) {
    const int iy = iy0 + i / IW, ix = ix0 + i % IW;
    sx[i] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? acc_t(xp[int64_t(iy) * W + ix]) : acc_t(0);
  }
}

// UP, DOWN, FH, FW: compile-time factors / filter size (both axes), 0 = read from p. With FH and FW
// given, f is the raw [FH, FW] filter (in acc_t) and the block stages its flipped, gain-scaled taps in
// shared memory (rounded as prepare_filter rounds them: the product in double); else f is prepared.
// V: channels per thread. V = 1 is the simple kernel; V > 1 (channels_last x and y, C a multiple of V, packs
// 16-byte aligned) the packed one: thread i computes channels [c, c + V) of one output pixel, c = V (i mod C/V),
// the pixels in y's order (so consecutive threads read and write consecutive packs, a warp's accesses contiguous).
template <typename scalar_t, typename index_t, bool CL, int V, int UP, int DOWN, int FH, int FW>
__global__ void upfirdn_kernel(const scalar_t* __restrict__ x, const at::opmath_type<scalar_t>* __restrict__ f_in,
                               scalar_t* __restrict__ y, UpfirdnParams p, index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  using P = Pack<scalar_t, V>;
  static_assert(CL || V == 1, "packs need channels_last");
  constexpr bool kStage = FH > 0 && FW > 0;
  __shared__ acc_t staged[kStage ? FH * FW : 1];
  if constexpr (kStage) {
    stage_taps(staged, f_in, FH * FW, p);
    __syncthreads();
  }
  const acc_t* __restrict__ f = kStage ? staged : f_in;
  const index_t upx = UP ? UP : p.upx, upy = UP ? UP : p.upy;
  const index_t downx = DOWN ? DOWN : p.downx, downy = DOWN ? DOWN : p.downy;
  const int fh = FH ? FH : p.fh, fw = FW ? FW : p.fw;
  const index_t G = index_t(p.c) / V, H = index_t(p.in_h), W = index_t(p.in_w);  // G: channel groups
  const index_t OH = index_t(p.out_h), OW = index_t(p.out_w);
  const index_t stride = index_t(blockDim.x) * index_t(gridDim.x);
  for (index_t i = index_t(blockIdx.x) * index_t(blockDim.x) + index_t(threadIdx.x); i < total; i += stride) {
    index_t n, c, oy, ox, t = i;
    if (CL) {
      c = t % G * V; t /= G; ox = t % OW; t /= OW; oy = t % OH; n = t / OH;
    } else {
      ox = t % OW; t /= OW; oy = t % OH; t /= OH; c = t % G; n = t / G;
    }
    // Upsampled, padded position of tap 0; the first tap landing on an input sample and that sample.
    const index_t py = oy * downy - index_t(p.pady0), px = ox * downx - index_t(p.padx0);
    const int ky0 = int(floor_mod<index_t>(-py, upy)), kx0 = int(floor_mod<index_t>(-px, upx));
    const index_t iy0 = (py + ky0) / upy, ix0 = (px + kx0) / upx;
    const scalar_t* plane = x + n * index_t(p.sx[0]) + c * index_t(p.sx[1]);
    acc_t acc[V] = {};
#pragma unroll
    for (int ky = ky0; ky < fh; ky += int(upy)) {
      const index_t iy = iy0 + (ky - ky0) / int(upy);
      if (iy < 0 || iy >= H) continue;
      const scalar_t* row = plane + iy * index_t(p.sx[2]);
#pragma unroll
      for (int kx = kx0; kx < fw; kx += int(upx)) {
        const index_t ix = ix0 + (kx - kx0) / int(upx);
        if (ix < 0 || ix >= W) continue;
        const P v = *reinterpret_cast<const P*>(row + ix * index_t(p.sx[3]));
        const acc_t w = f[ky * fw + kx];
#pragma unroll
        for (int k = 0; k < V; ++k) acc[k] += w * acc_t(v.v[k]);
      }
    }
    P out;
#pragma unroll
    for (int k = 0; k < V; ++k) out.v[k] = scalar_t(acc[k]);
    *reinterpret_cast<P*>(y + i * V) = out;
  }
}

template <typename scalar_t, typename index_t, bool CL, int V, int UP, int DOWN, int FH, int FW>
void launch(const at::Tensor& x, const at::Tensor& fk, at::Tensor& y, const UpfirdnParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int threads = 256;
  const int64_t total = y.numel() / V;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, int64_t(1) << 22);
  upfirdn_kernel<scalar_t, index_t, CL, V, UP, DOWN, FH, FW>
      <<<unsigned(blocks), threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          x.const_data_ptr<scalar_t>(), fk.const_data_ptr<acc_t>(), y.mutable_data_ptr<scalar_t>(), p,
          index_t(total));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

bool simple_fixed(const at::Tensor& x, const at::Tensor& y, const UpfirdnParams& p);
bool int32_ok(const at::Tensor& x, const at::Tensor& y);

// fk: the raw filter when simple_fixed(x, y, p), else the prepared one.
template <typename scalar_t, bool CL, int V>
void choose(const at::Tensor& x, const at::Tensor& fk, at::Tensor& y, const UpfirdnParams& p) {
  if (simple_fixed(x, y, p)) {
    if (p.upx == 2) return launch<scalar_t, int32_t, CL, V, 2, 1, 4, 4>(x, fk, y, p);
    if (p.downx == 2) return launch<scalar_t, int32_t, CL, V, 1, 2, 4, 4>(x, fk, y, p);
    return launch<scalar_t, int32_t, CL, V, 1, 1, 4, 4>(x, fk, y, p);
  }
  if (int32_ok(x, y)) return launch<scalar_t, int32_t, CL, V, 0, 0, 0, 0>(x, fk, y, p);
  return launch<scalar_t, int64_t, CL, V, 0, 0, 0, 0>(x, fk, y, p);
}

// The 4x4 modes that `choose` specialises (their kernels flip and scale the raw filter themselves).
// int32 indexing: the grid-stride index reaches total + stride (stride <= 2^30, see `launch`) without overflow.
bool int32_ok(const at::Tensor& x, const at::Tensor& y) {
  const int64_t lim = INT32_MAX - (int64_t(1) << 30);
  return y.numel() <= lim && x.numel() <= INT32_MAX;
}

bool simple_fixed(const at::Tensor& x, const at::Tensor& y, const UpfirdnParams& p) {
  const bool small = int32_ok(x, y);
  const bool mode = (p.upx == 2 && p.downx == 1) || (p.upx == 1 && p.downx == 1) || (p.upx == 1 && p.downx == 2);
  return small && p.fw == 4 && p.fh == 4 && p.upx == p.upy && p.downx == p.downy && mode;
}

// Whether the packed kernel takes a pass of `vn`-element packs: x and y channels_last (not also contiguous),
// C a multiple of vn, both 16-byte aligned (then so is every pack), and not GANINV_CUDA_SIMPLE=1.
bool packed_applies(const at::Tensor& x, const at::Tensor& y, int64_t vn) {
  return !cuda_simple() && is_channels_last(x) && is_channels_last(y) && x.size(1) % vn == 0 &&
         aligned16({x.const_data_ptr(), y.const_data_ptr()});
}

// The simple and packed paths: one thread per output, or per pack of channels. The specialised 4x4 modes take the
// raw filter (no tensor op in the float32 case: one launch); the generic one a flipped, scaled copy made by small
// tensor ops.
void simple_pass(const at::Tensor& x, const at::Tensor& f, at::Tensor& y, const UpfirdnParams& p) {
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor fk = simple_fixed(x, y, p) ? f.to(acc).contiguous() : prepare_filter(f, p.flip, p.gain, acc);
  // y is channels_last-contiguous or contiguous; when it is both, the two index orders coincide.
  const bool cl = !y.is_contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ganinv_upfirdn2d_cuda", [&] {
    constexpr int VN = 16 / int(sizeof(scalar_t));
    if (packed_applies(x, y, VN)) choose<scalar_t, true, VN>(x, fk, y, p);
    else if (cl) choose<scalar_t, true, 1>(x, fk, y, p);
    else choose<scalar_t, false, 1>(x, fk, y, p);
  });
}

// ---------------------------------------------------------------------------------------------------------
// The tiled path (NCHW, 4x4 filter, up 1 or 2 with down 1, or down 2 with up 1, the same on both axes).
// A block of 256 threads owns a TOH x TOW output tile of one plane: it stages the input rows and
// columns the tile reads, and the flipped, gain-scaled filter, in shared memory (zero outside the
// image, so pads and crops need no tests in the inner loop); each thread then computes RY x RX outputs
// at (ty + 8 u, tx + 32 v), u < RY, v < RX, so a warp writes 32 consecutive columns.

constexpr int kTaps = 4, kThreadsX = 32, kThreadsY = 8, kRX = 2;

template <int UP, int DOWN>
struct Tile {
  static constexpr int RY = DOWN == 2 ? 2 : 4;  // down 2 reads a 4x larger input tile: fewer rows
  static constexpr int OW = kThreadsX * kRX, OH = kThreadsY * RY;
  // Input rows/columns read by O consecutive outputs: floor_div(a + L, UP) - floor_div(a, UP) + 1
  // <= L / UP + 2, L = (O - 1) DOWN + taps - 1 (the span of upsampled positions).
  static constexpr int IW = ((OW - 1) * DOWN + kTaps - 1) / UP + 2;
  static constexpr int IH = ((OH - 1) * DOWN + kTaps - 1) / UP + 2;
};

__device__ __forceinline__ int floor_div(int a, int m) { return a >= 0 ? a / m : -((-a + m - 1) / m); }

template <typename scalar_t, int UP, int DOWN>
__global__ void __launch_bounds__(kThreadsX * kThreadsY)
    upfirdn_tiled_kernel(const scalar_t* __restrict__ x, const float* __restrict__ f, scalar_t* __restrict__ y,
                         UpfirdnParams p, int tiles_x, int planes) {
  using acc_t = at::opmath_type<scalar_t>;
  using T = Tile<UP, DOWN>;
  __shared__ acc_t sx[T::IH][T::IW];
  __shared__ acc_t sf[kTaps][kTaps];
  const int tid = int(threadIdx.x), tx = tid % kThreadsX, ty = tid / kThreadsX;
  const int H = int(p.in_h), W = int(p.in_w), OH = int(p.out_h), OW = int(p.out_w);
  stage_taps(&sf[0][0], f, kTaps * kTaps, p);
  const int oy0 = int(blockIdx.x) / tiles_x * T::OH, ox0 = int(blockIdx.x) % tiles_x * T::OW;
  // Upsampled, padded position of tap 0 for the tile's first output; the first input row / column.
  const int ay = oy0 * DOWN - p.pady0, ax = ox0 * DOWN - p.padx0;
  const int iy0 = floor_div(ay, UP), ix0 = floor_div(ax, UP);
  for (int plane = int(blockIdx.y); plane < planes; plane += int(gridDim.y)) {
    const scalar_t* xp = x + int64_t(plane) * H * W;
    scalar_t* yp = y + int64_t(plane) * OH * OW;
    __syncthreads();  // the previous plane's reads of sx are done (and sf is written, first time)
    stage_tile(&sx[0][0], T::IH, T::IW, xp, iy0, ix0, H, W, kThreadsX * kThreadsY);
    __syncthreads();
#pragma unroll
    for (int u = 0; u < T::RY; ++u) {
      const int ly = ty + kThreadsY * u, oy = oy0 + ly;
      // Output row oy: taps ky = ky0 + UP t (those on an input row), reading tile row ry + t.
      const int py = ay + ly * DOWN, ky0 = (UP - py % UP) % UP, ry = (py + ky0) / UP - iy0;
#pragma unroll
      for (int v = 0; v < kRX; ++v) {
        const int lx = tx + kThreadsX * v, ox = ox0 + lx;
        const int px = ax + lx * DOWN, kx0 = (UP - px % UP) % UP, rx = (px + kx0) / UP - ix0;
        acc_t acc = acc_t(0);
#pragma unroll
        for (int t = 0; t < kTaps / UP; ++t)
#pragma unroll
          for (int s = 0; s < kTaps / UP; ++s) acc += sf[ky0 + UP * t][kx0 + UP * s] * sx[ry + t][rx + s];
        if (oy < OH && ox < OW) yp[int64_t(oy) * OW + ox] = scalar_t(acc);
      }
    }
  }
}

template <typename scalar_t, int UP, int DOWN>
void launch_tiled(const at::Tensor& x, const at::Tensor& f, at::Tensor& y, const UpfirdnParams& p) {
  using T = Tile<UP, DOWN>;
  const int tiles_x = int((p.out_w + T::OW - 1) / T::OW), tiles_y = int((p.out_h + T::OH - 1) / T::OH);
  const int planes = int(p.n * p.c);
  const dim3 grid(unsigned(tiles_x * tiles_y), unsigned(std::min(planes, 65535)));
  upfirdn_tiled_kernel<scalar_t, UP, DOWN><<<grid, kThreadsX * kThreadsY, 0, c10::cuda::getCurrentCUDAStream()>>>(
      x.const_data_ptr<scalar_t>(), f.const_data_ptr<float>(), y.mutable_data_ptr<scalar_t>(), p, tiles_x, planes);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---------------------------------------------------------------------------------------------------------
// The register-blocked FIR (experimental, GANINV_UPFIRDN_RB=1, read per call; up = down = 1, 4x4, NCHW): the
// tiled kernel reads 16 shared-memory values per output, which bounds it by shared-memory bandwidth (4x the FMA
// rate's need) rather than by DRAM: its bfloat16 version moved 15 % of the bandwidth. Here a thread computes 8
// consecutive rows of one column: it reads each of the 11 input rows' 4 taps once (44 reads for 8 outputs) and
// adds them into the rows they reach, so the loop is fully unrolled and the accumulators stay in registers. A warp
// spans 32 consecutive columns (conflict-free reads, coalesced writes); a 256-thread block a 32 x 64 output tile.

constexpr int kRbW = 32, kRbRows = 8, kRbH = kRbRows * 8;  // 8 warps of 32 threads, 8 rows each

template <typename scalar_t>
__global__ void __launch_bounds__(256)
    upfirdn_fir_rb_kernel(const scalar_t* __restrict__ x, const float* __restrict__ f, scalar_t* __restrict__ y,
                          UpfirdnParams p, int tiles_x, int planes) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int IW = kRbW + kTaps - 1, IH = kRbH + kTaps - 1;
  __shared__ acc_t sx[IH][IW];
  __shared__ acc_t sf[kTaps][kTaps];
  const int tid = int(threadIdx.x), tx = tid % kRbW, ty = tid / kRbW;
  const int H = int(p.in_h), W = int(p.in_w), OH = int(p.out_h), OW = int(p.out_w);
  stage_taps(&sf[0][0], f, kTaps * kTaps, p);
  __syncthreads();
  acc_t k[kTaps][kTaps];  // the taps in registers, once per block
#pragma unroll
  for (int t = 0; t < kTaps; ++t)
#pragma unroll
    for (int s = 0; s < kTaps; ++s) k[t][s] = sf[t][s];
  const int oy0 = int(blockIdx.x) / tiles_x * kRbH, ox0 = int(blockIdx.x) % tiles_x * kRbW;
  const int iy0 = oy0 - p.pady0, ix0 = ox0 - p.padx0;  // input row / column of tap (0, 0) of the first output
  for (int plane = int(blockIdx.y); plane < planes; plane += int(gridDim.y)) {
    const scalar_t* xp = x + int64_t(plane) * H * W;
    scalar_t* yp = y + int64_t(plane) * OH * OW;
    __syncthreads();  // the previous plane's reads of sx are done
    stage_tile(&sx[0][0], IH, IW, xp, iy0, ix0, H, W, 256);
    __syncthreads();
    acc_t acc[kRbRows];
#pragma unroll
    for (int u = 0; u < kRbRows; ++u) acc[u] = acc_t(0);
    // Output row u of this thread reads tile rows ty * 8 + u + t, t < 4: tile row r feeds rows u = r - t.
#pragma unroll
    for (int r = 0; r < kRbRows + kTaps - 1; ++r) {
      const acc_t* row = &sx[ty * kRbRows + r][tx];
      const acc_t w0 = row[0], w1 = row[1], w2 = row[2], w3 = row[3];
#pragma unroll
      for (int t = 0; t < kTaps; ++t) {
        const int u = r - t;
        if (u >= 0 && u < kRbRows) acc[u] += k[t][0] * w0 + k[t][1] * w1 + k[t][2] * w2 + k[t][3] * w3;
      }
    }
    const int ox = ox0 + tx;
#pragma unroll
    for (int u = 0; u < kRbRows; ++u) {
      const int oy = oy0 + ty * kRbRows + u;
      if (oy < OH && ox < OW) yp[int64_t(oy) * OW + ox] = scalar_t(acc[u]);
    }
  }
}

template <typename scalar_t>
void launch_fir_rb(const at::Tensor& x, const at::Tensor& f, at::Tensor& y, const UpfirdnParams& p) {
  const int tiles_x = int((p.out_w + kRbW - 1) / kRbW), tiles_y = int((p.out_h + kRbH - 1) / kRbH);
  const int planes = int(p.n * p.c);
  const dim3 grid(unsigned(tiles_x * tiles_y), unsigned(std::min(planes, 65535)));
  upfirdn_fir_rb_kernel<scalar_t><<<grid, 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
      x.const_data_ptr<scalar_t>(), f.const_data_ptr<float>(), y.mutable_data_ptr<scalar_t>(), p, tiles_x, planes);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

bool fir_rb_requested() {
  const char* v = std::getenv("GANINV_UPFIRDN_RB");  // per call: the tests and benchmarks switch it
  return v != nullptr && v[0] == '1';
}

// Whether the tiled kernel takes this pass: NCHW-contiguous x and y, a 4x4 filter, (up, down) in
// {(1, 1), (2, 1), (1, 2)} on both axes, and int32 sizes (planes, tiles, positions).
bool tiled_applies(const at::Tensor& x, const at::Tensor& y, const UpfirdnParams& p) {
  const bool same = p.upx == p.upy && p.downx == p.downy;
  const bool mode = (p.upx == 1 || p.upx == 2) && (p.downx == 1 || (p.downx == 2 && p.upx == 1));
  const int64_t lim = int64_t(1) << 30;
  return x.is_contiguous() && y.is_contiguous() && p.fw == kTaps && p.fh == kTaps && same && mode &&
         p.n * p.c < lim && p.in_h * p.in_w < lim && p.out_h * p.out_w < lim && p.out_h * 2 + p.pady0 < lim &&
         p.out_w * 2 + p.padx0 < lim && std::abs(p.padx0) < lim && std::abs(p.pady0) < lim;
}

// Output planes that would fill at most 1/8 of a tile (16x16 and smaller: the 4x4 to 16x16 layers) go to the
// simple kernel: the tiled one would stage and compute the whole tile for each (3 % of it used at 8x8).
bool tiny_planes(const UpfirdnParams& p) {
  const int tile = p.downx == 2 ? Tile<1, 2>::OH * Tile<1, 2>::OW : Tile<1, 1>::OH * Tile<1, 1>::OW;
  return p.out_h * p.out_w * 8 <= tile;
}

void upfirdn_pass_cuda(const at::Tensor& x, const at::Tensor& f_in, at::Tensor& y, const UpfirdnParams& p) {
  if (cuda_simple() || !tiled_applies(x, y, p) || tiny_planes(p)) return simple_pass(x, f_in, y, p);
  const at::Tensor f = f_in.contiguous();  // raw float32 [4, 4]: flip and gain are applied in the kernel
  const bool rb = p.upx == 1 && p.downx == 1 && fir_rb_requested();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ganinv_upfirdn2d_tiled", [&] {
    if (rb) launch_fir_rb<scalar_t>(x, f, y, p);
    else if (p.upx == 2) launch_tiled<scalar_t, 2, 1>(x, f, y, p);
    else if (p.downx == 2) launch_tiled<scalar_t, 1, 2>(x, f, y, p);
    else launch_tiled<scalar_t, 1, 1>(x, f, y, p);
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
