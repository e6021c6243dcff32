// Shared declarations for the ganinv kernels (CPU and CUDA).
#define GANINV_EPILOGUE_MAX_K 4  // most channels of the projection fused into modconv_epilogue_backward
//
// Operators (schemas in registration.cpp):
//   ganinv::bias_act(x, b, dim, act, alpha, gain, clamp) -> y
//       y = clamp(gain * act(x + b), +-clamp); b broadcast along `dim`, empty b = no bias, clamp < 0 = none.
//   ganinv::bias_act_grad(g, x, b, order, dim, act, alpha, gain, clamp) -> g * gain * act^(order)(x + b) * m
//       m = 1 where |gain * act(x + b)| <= clamp (torch.clamp's gradient), order 1 or 2.
//   ganinv::bias_act_backward(g, x, b, dim, act, alpha, gain, clamp) -> (dx, db)
//       first order with the bias gradient in the same pass: dx = bias_act_grad(g, order 1), db = sum of dx over
//       every axis but `dim` (accumulated from the unrounded per-element values; b non-empty). Not differentiable:
//       the autograd of bias_act calls it only when no graph of the backward is being built.
//   ganinv::upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain) -> y
//       zero-insert upsample, pad (negative = crop), FIR with f (a true convolution unless flip),
//       decimate; f is [fh, fw] (2-D) or [k] (separable: a k-tap pass along x, then along y).
//   ganinv::modconv_epilogue(c, d, noise, b, e, act, alpha, gain, clamp) -> y
//       the non-fused modulated convolution's tail in one pass: y = clamp(gain * act(c d + noise + b)) e,
//       c [N,C,H,W] (contiguous or channels_last; y in c's layout), d and e [N,C] (per image and channel; e: the
//       next layer's modulation, or empty for none),
//       noise [Nn,1,H,W] (Nn = 1 or N) or empty, b [C] or empty.
//   ganinv::modconv_epilogue_backward(gy, c, d, noise, b, e, gr, wr, act, alpha, gain, clamp)
//           -> (gc, gd, gnoise, gb, ge, gwr)
//       with z = clamp(gain * act(s)), s = c d + noise + b, y = z e, and gy the gradient reaching y (empty: none)
//       plus, when gr [N,K,H,W] and wr [N,K,C] are given (K <= 4), the gradient through r = wr y (a per-image 1x1
//       projection of y, ToRGB's): gyt = gy + sum_k wr[n,k,c] gr[n,k]. With gs = dL/ds (from gyt e): gc = gs d,
//       gd = sum_hw gs c, gnoise = sum_c gs (and over n when Nn = 1), gb = sum_{n,hw} gs, ge = sum_hw gyt z,
//       gwr[n,k,c] = sum_hw gr[n,k] y[n,c]; one pass over gy, gr and c (empty outputs for absent inputs).
//   ganinv::lpips_distance(f, t, g, eps) -> (dist, norm, s)
//       one LPIPS level per pixel: with |f| the channel norm of f [N,C,H,W] at each pixel and
//       r_c = g_c f_c / (|f| + eps) - t_c:  dist = sum_c r_c^2, norm = |f|, s = sum_c g_c r_c f_c, each [N,H,W] in
//       the compute type (float32; float64 for float64 f); t [N,C,H,W] (any batch stride) and g [C] in that type.
//   ganinv::lpips_distance_backward(gdist, f, t, g, norm, s, eps) -> gf
//       gf_c = 2 gdist (g_c r_c - f_c s / ((|f| + eps) |f|)) / (|f| + eps)  (the second term 0 where |f| = 0),
//       in f's dtype; norm and s are the forward's, so one pass over f and t.
//   ganinv::noise_autocorr(x) -> a
//       lag-1 circular autocorrelations of each [H, W] plane of x [N, C, H, W]: a[n, c, 0] = mean_hw x x[w - 1],
//       a[n, c, 1] = mean_hw x x[h - 1] (indices mod W, H), in the compute type (float32; float64 for float64 x).
//   ganinv::noise_autocorr_backward(ga, x) -> gx
//       gx = (ga[.., 0] (x[w - 1] + x[w + 1]) + ga[.., 1] (x[h - 1] + x[h + 1])) / (H W), in x's dtype.
#pragma once

#include <ATen/ATen.h>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

namespace ganinv {

// Activation codes, shared with ganinv_core/ops/_ext.py (_ACT_CODES).
enum Act : int { kLinear = 0, kRelu, kLrelu, kTanh, kSigmoid, kElu, kSelu, kSoftplus, kSwish, kNumActs };

// Always inlined: callers pass a compile-time `act`/`order`, and the switch below must fold away
// (an out-of-line call per element made the CPU loops 10x slower).
#if defined(__CUDACC__)
#define GANINV_HD __host__ __device__ __forceinline__
#elif defined(_MSC_VER)
#define GANINV_HD __forceinline
#else
#define GANINV_HD inline __attribute__((always_inline))
#endif

// The activation (order 0) or its derivatives (order 1, 2) at s, in the compute type T (float or double).
template <typename T>
GANINV_HD T act_eval(int act, int order, T s, T alpha) {
  using std::exp; using std::expm1; using std::log1p; using std::tanh;
  const T one = T(1), zero = T(0);
  switch (act) {
    // relu/lrelu as max/min and 0/1 products, not selects: loops over them vectorise (no branches).
    case kRelu:
      return order == 0 ? (s > zero ? s : zero) : order == 1 ? (s > zero ? one : zero) : zero;
    case kLrelu:
      return order == 0 ? (s > zero ? s : zero) + alpha * (s < zero ? s : zero)
           : order == 1 ? (s > zero ? one : zero) * (one - alpha) + alpha : zero;
    case kTanh: {  // tanh' = 1 - t^2, tanh'' = -2 t (1 - t^2)
#if defined(__CUDA_ARCH__)
      // nvcc's --use_fast_math turns tanhf into the hardware approximation (relative error ~1e-5, then amplified
      // by 1 - t^2 near |t| = 1: 7e-5 on an H200). From e = exp(-2|s|) instead: t = sign(s) (1 - e) / (1 + e),
      // with 1 - e as -expm1(-2|s|) (no cancellation at small s), and 1 - t^2 = 4 e / (1 + e)^2 (none near |t| = 1).
      const T a = s < zero ? -s : s, e = exp(T(-2) * a), em = -expm1(T(-2) * a);
      const T t = (s < zero ? -em : em) / (one + e), d = T(4) * e / ((one + e) * (one + e));
#else
      const T t = tanh(s), d = one - t * t;
#endif
      return order == 0 ? t : order == 1 ? d : T(-2) * t * d;
    }
    case kSigmoid: {
      const T g = one / (one + exp(-s));  // g' = g (1 - g), g'' = g (1 - g)(1 - 2g)
      return order == 0 ? g : order == 1 ? g * (one - g) : g * (one - g) * (one - T(2) * g);
    }
    case kElu: {  // alpha 1, as torch.nn.functional.elu's default
      const T e = exp(s);
      return order == 0 ? (s > zero ? s : e - one) : order == 1 ? (s > zero ? one : e) : (s > zero ? zero : e);
    }
    case kSelu: {
      const T la = T(1.0507009873554804934193349852946), a = T(1.6732632423543772848170429916717);
      const T e = exp(s);
      return order == 0 ? la * (s > zero ? s : a * (e - one))
           : order == 1 ? (s > zero ? la : la * a * e)
                        : (s > zero ? zero : la * a * e);
    }
    case kSoftplus: {  // torch's threshold: linear above 20
      if (s > T(20)) return order == 0 ? s : order == 1 ? one : zero;
      const T g = one / (one + exp(-s));
      return order == 0 ? log1p(exp(s)) : order == 1 ? g : g * (one - g);
    }
    case kSwish: {  // s g(s): ' = g (1 + s (1 - g)), '' = g (1 - g)(2 + s (1 - 2g))
      const T g = one / (one + exp(-s));
      return order == 0 ? s * g : order == 1 ? g * (one + s * (one - g)) : g * (one - g) * (T(2) + s * (one - T(2) * g));
    }
    default:  // linear
      return order == 0 ? s : order == 1 ? one : zero;
  }
}

// Calls f(std::integral_constant<int, A>{}) for the runtime activation code `act`, so that kernels can be
// specialised per activation at compile time (host code; unknown codes run `linear`).
template <typename F>
inline void with_act(int act, F&& f) {
  switch (act) {
    case kRelu: return f(std::integral_constant<int, kRelu>{});
    case kLrelu: return f(std::integral_constant<int, kLrelu>{});
    case kTanh: return f(std::integral_constant<int, kTanh>{});
    case kSigmoid: return f(std::integral_constant<int, kSigmoid>{});
    case kElu: return f(std::integral_constant<int, kElu>{});
    case kSelu: return f(std::integral_constant<int, kSelu>{});
    case kSoftplus: return f(std::integral_constant<int, kSoftplus>{});
    case kSwish: return f(std::integral_constant<int, kSwish>{});
    default: return f(std::integral_constant<int, kLinear>{});
  }
}

// bias_act_backward sums dx per run of one bias value in the same pass where the runs are at least this long
// (NCHW planes of 4x4 and up); shorter runs (channels_last, [N, C]) reduce dx afterwards. CPU and CUDA alike.
constexpr int64_t kBiasMinRun = 16;

// bfloat16 or float16: the CPU kernels compute these in float32.
inline bool is_16bit(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf; }

// Plain-data view of one bias_act call: x, g, y share x's dense layout; b is contiguous.
struct BiasActParams {
  int act, order;       // order 0 = forward, 1/2 = derivative times g
  double alpha, gain, clamp;  // clamp < 0: none
  int64_t numel, step_b, size_b;  // bias index of flat element i = (i / step_b) % size_b; size_b 0: no bias
};

// Plain-data view of one upfirdn2d pass over a 4-D tensor, in element strides.
struct UpfirdnParams {
  int64_t n, c, in_h, in_w, out_h, out_w;
  int64_t sx[4], sy[4];  // strides of x and y, (N, C, H, W)
  int upx, upy, downx, downy, padx0, pady0, fw, fh;
  bool flip;    // false: convolve, tap (ky, kx) reads f[fh-1-ky][fw-1-kx]; true: f[ky][kx]
  double gain;  // scales every tap
};

// Plain-data view of one modconv_epilogue call (checked by epilogue_params): c and gy contiguous [n, c, hw], or
// channels_last [n, hw, c] (nhwc); d, e [n, c], b [c], noise [noise_n, hw], gr [n, k, hw] and wr [n, k, c] contiguous.
struct EpilogueParams {
  int64_t n, c, hw;
  bool nhwc;            // c (and gy, gc) channels_last
  int64_t noise_n;      // 0: no noise; 1: one noise map for the batch; n: one per image
  bool bias, scale;     // b given; e given
  bool grad;            // (backward) gy given; without it only gr reaches y
  int64_t k;            // (backward) channels of the 1x1 projection r = wr y whose gradient gr also reaches y; 0: none
  int act;
  double alpha, gain, clamp;  // clamp < 0: none
};

// The memory format of c, y, gy and gc.
inline at::MemoryFormat epilogue_format(const EpilogueParams& p) {
  return p.nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// modconv_epilogue's channels_last CUDA kernels (modconv_epilogue_nhwc_cuda.cu; CUDA builds only): whether they take
// the call (gy, wr: the backward's operands, else undefined tensors), and the launches into preallocated outputs
// (sums [N, C, 3 + K] and gnoise [noise_n, H*W] zeroed, in the compute type).
bool epilogue_nhwc_covered(const EpilogueParams& p, const at::Tensor& c, const at::Tensor& d, const at::Tensor& b,
                           const at::Tensor& e, const at::Tensor& gy, const at::Tensor& wr);
void epilogue_nhwc_forward(const at::Tensor& c, const at::Tensor& d, const at::Tensor& noise, const at::Tensor& b,
                           const at::Tensor& e, at::Tensor& y, const EpilogueParams& p);
void epilogue_nhwc_backward(const at::Tensor& gy, const at::Tensor& c, const at::Tensor& d, const at::Tensor& noise,
                            const at::Tensor& b, const at::Tensor& e, const at::Tensor& gr, const at::Tensor& wr,
                            at::Tensor& gc, at::Tensor& sums, at::Tensor& gnoise, const EpilogueParams& p);

// Plain-data view of one lpips_distance call: f contiguous [n, c, hw], t [n, c, hw] with batch stride t_sn.
struct LpipsParams {
  int64_t n, c, hw, t_sn;
  double eps;
};

// Validation and layout helpers (host, ops_common.cpp).
LpipsParams lpips_params(const at::Tensor& f, const at::Tensor& t, const at::Tensor& g, double eps, const char* op);
// lpips_distance_backward's per-pixel operands (gdist, norm, s): [N, H, W] of t's dtype on f's device.
void check_lpips_saved(const at::Tensor& x, const at::Tensor& f, const at::Tensor& t, const char* name, const char* op);
// noise_autocorr(_backward): x [N, C, H, W]; with ga defined, ga [N, C, 2] in x's compute type on x's device.
void check_autocorr_args(const at::Tensor& x, const at::Tensor& ga, const char* op);
EpilogueParams epilogue_params(const at::Tensor& c, const at::Tensor& d, const at::Tensor& noise, const at::Tensor& b,
                               const at::Tensor& e, int64_t act, double alpha, double gain, double clamp,
                               const char* op);
// The backward's extra operands: sets p.grad (gy non-empty) and p.k (gr [N,K,H,W], wr [N,K,C], K <= 4, or both empty).
void epilogue_backward_params(EpilogueParams& p, const at::Tensor& c, const at::Tensor& gy, const at::Tensor& gr,
                              const at::Tensor& wr, const char* op);
bool dense_4d_or_contiguous(const at::Tensor& x);
bool is_channels_last(const at::Tensor& x);
// NaN-fills a fresh output when GANINV_DEBUG_POISON=1 (tests: unwritten elements show).
at::Tensor maybe_poison(at::Tensor t);
BiasActParams bias_act_params(const at::Tensor& x, const at::Tensor& b, int64_t dim, int64_t act, int64_t order,
                              double alpha, double gain, double clamp, const char* op);
at::Tensor like_x(const at::Tensor& t, const at::Tensor& x);
// db of bias_act_backward by a reduction of dx (x layouts whose bias runs are short: channels_last, [N, C]).
at::Tensor bias_grad_by_sum(const at::Tensor& dx, const at::Tensor& b, int64_t dim);
// Flipped (unless flip) and gain-scaled [fh, fw] filter of dtype `dtype`; sets p.fw, p.fh.
at::Tensor prepare_filter(const at::Tensor& f2d, bool flip, double gain, at::ScalarType dtype);
UpfirdnParams upfirdn_params(const at::Tensor& x, const at::Tensor& y, int upx, int upy, int downx, int downy,
                             int padx0, int pady0, int fw, int fh);
void check_upfirdn_args(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                        int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1);
int64_t upfirdn_out_size(int64_t in, int64_t up, int64_t pad0, int64_t pad1, int64_t taps, int64_t down);

// GANINV_CUDA_SIMPLE=1 (read once per process): the CUDA ops use their simple one-element-per-thread
// kernels instead of the tiled upfirdn2d and packed bias_act / modconv_epilogue kernels (to compare, or to rule
// them out).
inline bool cuda_simple() {
  static const bool on = [] {
    const char* v = std::getenv("GANINV_CUDA_SIMPLE");
    return v != nullptr && v[0] == '1';
  }();
  return on;
}

// Non-negative remainder (a mod m, m > 0).
GANINV_HD int64_t pos_mod(int64_t a, int64_t m) { const int64_t r = a % m; return r < 0 ? r + m : r; }

}  // namespace ganinv

namespace ganinv {

// One upfirdn2d pass with the raw float32 [fh, fw] filter `f` (flip and gain in p) into the
// preallocated y (device-specific; prepare_filter makes the flipped, scaled copy where one is wanted).
using UpfirdnPass = void (*)(const at::Tensor& x, const at::Tensor& f, at::Tensor& y, const UpfirdnParams& p);

// The full op (checks, layout, separable split) around a device-specific pass; ops_common.cpp.
at::Tensor upfirdn2d_run(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                         int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip,
                         double gain, UpfirdnPass pass);

}  // namespace ganinv
