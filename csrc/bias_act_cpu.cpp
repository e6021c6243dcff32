// bias_act on the CPU: y = clamp(gain * act(x + b)) and its derivatives, over x's memory order.
// The inner loops are specialised at compile time on (activation, order, clamp on/off, bias per
// element or per run) and are branch-free selects, so the compiler vectorises them.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "ganinv_ops.h"

namespace ganinv {
namespace {

template <typename T>
struct Consts {
  T alpha, gain, clamp;
};

// y[i] for i in [0, n): s = x[i] + (BVEC ? bv[i] : bias). Order 0: the clamped output; order k > 0:
// g[i] * gain * act^(k)(s), zeroed where the order-0 output is clamped, and with ACC also added to acc[i].
template <typename T, int A, int ORDER, bool CLAMP, bool BVEC, bool ACC = false>
void span(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ y, const T* __restrict__ bv, T bias,
          int64_t n, Consts<T> k, T* __restrict__ acc = nullptr) {
  for (int64_t i = 0; i < n; ++i) {
    const T s = x[i] + (BVEC ? bv[i] : bias);
    if constexpr (ORDER == 0) {
      const T v = act_eval<T>(A, 0, s, k.alpha) * k.gain;
      y[i] = CLAMP ? std::min(std::max(v, -k.clamp), k.clamp) : v;
    } else {
      T d = g[i] * act_eval<T>(A, ORDER, s, k.alpha) * k.gain;
      if constexpr (CLAMP) {
        const T v = act_eval<T>(A, 0, s, k.alpha) * k.gain;
        // A product of 0/1 factors, not a select: GCC vectorises this form only.
        d *= (v <= k.clamp ? T(1) : T(0)) * (v >= -k.clamp ? T(1) : T(0));
      }
      y[i] = d;
      if constexpr (ACC) acc[i] += d;
    }
  }
}

// The piecewise-linear activations (linear, relu, lrelu), forward and first derivative, in the one
// branch-free form GCC vectorises (checked with -fopt-info-vec for every instance): the slope
// s > 0 ? gain : a gain (a = alpha for lrelu, 0 for relu, 1 for linear) and one select for the clamp
// mask. (A product of 0/1 mask factors, or relu as s > 0 ? s gain : 0, leaves the loop scalar.)
template <typename T, int A, int ORDER, bool CLAMP, bool BVEC, bool ACC = false>
void span_pl(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ y, const T* __restrict__ bv,
             T bias, int64_t n, Consts<T> k, T* __restrict__ acc = nullptr) {
  const T gain = k.gain, ag = (A == kLinear ? T(1) : A == kRelu ? T(0) : k.alpha) * k.gain, c = k.clamp;
  for (int64_t i = 0; i < n; ++i) {
    const T s = x[i] + (BVEC ? bv[i] : bias);
    const T slope = A == kLinear ? gain : s > T(0) ? gain : ag;
    if constexpr (ORDER == 0) {
      const T v = A == kRelu ? (s > T(0) ? s : T(0)) * gain : s * slope;  // relu(-inf) = 0, not -inf * 0
      if constexpr (CLAMP) {
        const T lo = v < -c ? -c : v;
        y[i] = lo > c ? c : lo;
      } else {
        y[i] = v;
      }
    } else {
      const T v = s * slope;  // = gain * act(s) (and NaN at s = -inf for relu, masked like an overflow)
      const T d = g[i] * (CLAMP ? ((v <= c) & (v >= -c) ? slope : T(0)) : slope);  // torch.clamp's gradient mask
      y[i] = d;
      if constexpr (ACC) acc[i] += d;
    }
  }
}

// `span`, or `span_pl` where it applies.
template <typename T, int A, int ORDER, bool CLAMP, bool BVEC, bool ACC = false>
void span_any(const T* x, const T* g, T* y, const T* bv, T bias, int64_t n, Consts<T> k, T* acc = nullptr) {
  if constexpr ((A == kLinear || A == kRelu || A == kLrelu) && ORDER < 2)
    span_pl<T, A, ORDER, CLAMP, BVEC, ACC>(x, g, y, bv, bias, n, k, acc);
  else
    span<T, A, ORDER, CLAMP, BVEC, ACC>(x, g, y, bv, bias, n, k, acc);
}

template <typename T, int A, int ORDER, bool CLAMP>
void loop(const T* x, const T* b, const T* g, T* y, const BiasActParams& p) {
  const Consts<T> k{T(p.alpha), T(p.gain), T(p.clamp)};
  const int64_t step = p.step_b, size = p.size_b;
  at::parallel_for(0, p.numel, 32768, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      int64_t len = end - i;
      if (size == 0) {
        span_any<T, A, ORDER, CLAMP, false>(x + i, g + i, y + i, nullptr, T(0), len, k);
      } else if (step == 1) {  // the bias changes every element (channels_last, dim 1): b[c], b[c+1], ...
        const int64_t c = i % size;
        len = std::min(len, size - c);
        span_any<T, A, ORDER, CLAMP, true>(x + i, g + i, y + i, b + c, T(0), len, k);
      } else {  // [i, i + len) shares one bias value
        len = std::min(len, (i / step + 1) * step - i);
        span_any<T, A, ORDER, CLAMP, false>(x + i, g + i, y + i, nullptr, b[(i / step) % size], len, k);
      }
      i += len;
    }
  });
}

template <typename T, int A>
void by_mode(const T* x, const T* b, const T* g, T* y, const BiasActParams& p) {
  const bool c = p.clamp >= 0;
  switch (p.order) {
    case 0: return c ? loop<T, A, 0, true>(x, b, g, y, p) : loop<T, A, 0, false>(x, b, g, y, p);
    case 1: return c ? loop<T, A, 1, true>(x, b, g, y, p) : loop<T, A, 1, false>(x, b, g, y, p);
    default: return c ? loop<T, A, 2, true>(x, b, g, y, p) : loop<T, A, 2, false>(x, b, g, y, p);
  }
}

template <typename T>
void by_act(const T* x, const T* b, const T* g, T* y, const BiasActParams& p) {
  with_act(p.act, [&](auto a) { by_mode<T, decltype(a)::value>(x, b, g, y, p); });
}

at::Tensor run(const at::Tensor& g_in, const at::Tensor& x_in, const at::Tensor& b, int64_t order, int64_t dim,
               int64_t act, double alpha, double gain, double clamp, const char* op) {
  TORCH_CHECK_VALUE(x_in.device().is_cpu(), op, ": x must be a CPU tensor, got one on ", x_in.device());
  const at::Tensor x = dense_4d_or_contiguous(x_in) ? x_in : x_in.contiguous();
  const BiasActParams p = bias_act_params(x, b, dim, act, order, alpha, gain, clamp, op);
  TORCH_CHECK_VALUE(order == 0 || g_in.scalar_type() == x.scalar_type(), op, ": the gradient must match x in dtype (",
                    x.scalar_type(), "), got ", g_in.scalar_type());
  const at::Tensor g = order > 0 ? like_x(g_in, x) : x;
  at::Tensor y = maybe_poison(at::empty_like(x));
  if (p.numel == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ganinv_bias_act_cpu", [&] {
    by_act<scalar_t>(x.const_data_ptr<scalar_t>(), p.size_b ? b.const_data_ptr<scalar_t>() : nullptr,
                     g.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), p);
  });
  return y;
}

// bfloat16 / float16 inputs are computed in float32 (widened, then the result rounded once), as on CUDA.
at::Tensor run_any(const at::Tensor& g, const at::Tensor& x, const at::Tensor& b, int64_t order, int64_t dim,
                   int64_t act, double alpha, double gain, double clamp, const char* op) {
  if (!is_16bit(x)) return run(g, x, b, order, dim, act, alpha, gain, clamp, op);
  TORCH_CHECK_VALUE(g.scalar_type() == x.scalar_type() && (!b.numel() || b.scalar_type() == x.scalar_type()), op,
                    ": every input must have x's dtype (", x.scalar_type(), ")");
  const at::Tensor xf = x.to(at::kFloat);
  return run(order > 0 ? g.to(at::kFloat) : xf, xf, b.to(at::kFloat), order, dim, act, alpha, gain, clamp, op)
      .to(x.scalar_type());
}

at::Tensor bias_act_cpu(const at::Tensor& x, const at::Tensor& b, int64_t dim, int64_t act, double alpha,
                        double gain, double clamp) {
  return run_any(x, x, b, 0, dim, act, alpha, gain, clamp, "bias_act");
}

at::Tensor bias_act_grad_cpu(const at::Tensor& g, const at::Tensor& x, const at::Tensor& b, int64_t order,
                             int64_t dim, int64_t act, double alpha, double gain, double clamp) {
  TORCH_CHECK_VALUE(order == 1 || order == 2, "bias_act_grad: order must be 1 or 2, got ", order);
  return run_any(g, x, b, order, dim, act, alpha, gain, clamp, "bias_act_grad");
}

// ---------------------------------------------------------------------------------------------------------
// bias_act_backward: dx as bias_act_grad(order 1) and db in the same pass, each sum taken while its values are in
// cache and added in an order that depends on the shape alone (deterministic, whatever the thread count):
// - runs of at least kBiasMinRun consecutive elements per bias value (NCHW planes, dim 1): partial[r] per run r,
//   added per channel afterwards;
// - runs of one element (channels innermost: channels_last, [N, C]): rows of `size` elements, in fixed blocks of
//   rows, each block's rows added into a partial row, the partial rows added afterwards.
// Other short runs (2 to kBiasMinRun - 1 elements, e.g. 3x3 planes): dx, then a reduction of it.

// Sum of v[0, n) in double: 32 lanes of T (8 independent vector chains, so the adds overlap), flushed into the
// double total every 4096 elements through 4 double chains (one chain of 32 dependent adds would cost more than
// the whole sum of a 64-element run).
template <typename T>
double sum_span(const T* __restrict__ v, int64_t n) {
  constexpr int L = 32;
  double total = 0;
  for (int64_t i0 = 0; i0 < n; i0 += 4096) {
    const int64_t i1 = std::min(n, i0 + 4096);
    T lane[L] = {};
    int64_t i = i0;
    for (; i + L <= i1; i += L)
      for (int l = 0; l < L; ++l) lane[l] += v[i + l];
    double q[4] = {};
    for (int l = 0; l < L; l += 4)
      for (int j = 0; j < 4; ++j) q[j] += double(lane[l + j]);
    double part = (q[0] + q[1]) + (q[2] + q[3]);
    for (; i < i1; ++i) part += double(v[i]);
    total += part;
  }
  return total;
}

// dx over x's memory order and db[c] = sum of the runs r = c, c + size, ... (added in that order).
template <typename T, int A, bool CLAMP>
void backward_runs(const T* x, const T* b, const T* g, T* dx, T* db, const BiasActParams& p) {
  const Consts<T> k{T(p.alpha), T(p.gain), T(p.clamp)};
  const int64_t step = p.step_b, size = p.size_b, runs = p.numel / step;
  std::vector<double> partial(size_t(runs), 0.0);
  at::parallel_for(0, runs, std::max<int64_t>(1, 32768 / step), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r * step;
      span_any<T, A, 1, CLAMP, false>(x + i, g + i, dx + i, nullptr, b[r % size], step, k);
      partial[size_t(r)] = sum_span(dx + i, step);
    }
  });
  for (int64_t c = 0; c < size; ++c) {
    double total = 0;
    for (int64_t r = c; r < runs; r += size) total += partial[size_t(r)];
    db[c] = T(total);
  }
}

// dx over x's memory order (rows of b's length) and db = the sum of the rows. The rows are cut into blocks of
// max(16, 32768 / size, rows / 1024) rows: fixed by the shape, so the sums' order does not depend on the thread
// count, and `partial` (one double row per block) takes at most about 1/8 of x's bytes. Within a block, each row of
// dx is added into T lanes as it is written (span's ACC), flushed into the block's partial row every kFlushRows
// rows (as `sum_span` flushes every 4096 elements); db[c] adds the blocks' partials in order.
constexpr int64_t kFlushRows = 128;

template <typename T, int A, bool CLAMP>
void backward_rows(const T* x, const T* b, const T* g, T* dx, T* db, const BiasActParams& p) {
  const Consts<T> k{T(p.alpha), T(p.gain), T(p.clamp)};
  const int64_t size = p.size_b, rows = p.numel / size;
  const int64_t per_block = std::max({int64_t(16), 32768 / size, (rows + 1023) / 1024});
  const int64_t blocks = (rows + per_block - 1) / per_block;
  std::vector<double> partial(size_t(blocks * size), 0.0);
  at::parallel_for(0, blocks, 1, [&](int64_t k0, int64_t k1) {
    std::vector<T> lane(static_cast<size_t>(size));
    for (int64_t blk = k0; blk < k1; ++blk) {
      double* part = partial.data() + blk * size;
      const int64_t r1 = std::min(rows, (blk + 1) * per_block);
      for (int64_t r = blk * per_block; r < r1; r += kFlushRows) {
        std::fill(lane.begin(), lane.end(), T(0));
        for (int64_t q = r; q < std::min(r1, r + kFlushRows); ++q) {
          const int64_t i = q * size;
          span_any<T, A, 1, CLAMP, true, true>(x + i, g + i, dx + i, b, T(0), size, k, lane.data());
        }
        for (int64_t c = 0; c < size; ++c) part[c] += double(lane[size_t(c)]);
      }
    }
  });
  for (int64_t c = 0; c < size; ++c) {
    double total = 0;
    for (int64_t blk = 0; blk < blocks; ++blk) total += partial[size_t(blk * size + c)];
    db[c] = T(total);
  }
}

// (dx, db) for float32 / float64 x, g, b of one dtype (runs of one element, or of at least kBiasMinRun).
std::tuple<at::Tensor, at::Tensor> backward_fused(const at::Tensor& x, const at::Tensor& b, const at::Tensor& g,
                                                  const BiasActParams& p) {
  at::Tensor dx = maybe_poison(at::empty_like(x)), db = maybe_poison(at::empty_like(b));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ganinv_bias_act_backward_cpu", [&] {
    with_act(p.act, [&](auto a) {
      constexpr int A = decltype(a)::value;
      const bool c = p.clamp >= 0;
      const auto run_with = p.step_b == 1 ? c ? &backward_rows<scalar_t, A, true> : &backward_rows<scalar_t, A, false>
                                          : c ? &backward_runs<scalar_t, A, true> : &backward_runs<scalar_t, A, false>;
      run_with(x.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
               dx.mutable_data_ptr<scalar_t>(), db.mutable_data_ptr<scalar_t>(), p);
    });
  });
  return {dx, db};
}

std::tuple<at::Tensor, at::Tensor> bias_act_backward_cpu(const at::Tensor& g_in, const at::Tensor& x_in,
                                                         const at::Tensor& b, int64_t dim, int64_t act, double alpha,
                                                         double gain, double clamp) {
  const char* op = "bias_act_backward";
  TORCH_CHECK_VALUE(x_in.device().is_cpu(), op, ": x must be a CPU tensor, got one on ", x_in.device());
  TORCH_CHECK_VALUE(b.numel() > 0, op, ": b must be a non-empty bias (without one, call bias_act_grad)");
  const at::Tensor x = dense_4d_or_contiguous(x_in) ? x_in : x_in.contiguous();
  const BiasActParams p = bias_act_params(x, b, dim, act, 1, alpha, gain, clamp, op);
  TORCH_CHECK_VALUE(g_in.scalar_type() == x.scalar_type(), op, ": the gradient must match x in dtype (",
                    x.scalar_type(), "), got ", g_in.scalar_type());
  const at::Tensor g = like_x(g_in, x);
  if (p.step_b > 1 && p.step_b < kBiasMinRun) {  // dx, then its sum; 16-bit: both from the float32 values
    if (is_16bit(x)) {
      const at::Tensor dx = run_any(g.to(at::kFloat), x.to(at::kFloat), b.to(at::kFloat), 1, dim, act, alpha, gain,
                                    clamp, op);
      return {dx.to(x.scalar_type()), bias_grad_by_sum(dx, b, dim)};
    }
    const at::Tensor dx = run_any(g, x, b, 1, dim, act, alpha, gain, clamp, op);
    return {dx, bias_grad_by_sum(dx, b, dim)};
  }
  if (!is_16bit(x)) return backward_fused(x, b, g, p);
  // bfloat16 / float16: computed in float32, dx rounded once; db from the unrounded values.
  auto [dx, db] = backward_fused(x.to(at::kFloat), b.to(at::kFloat), g.to(at::kFloat), p);
  return {dx.to(x.scalar_type()), db.to(b.scalar_type())};
}

at::Tensor unwritten_like_cpu(const at::Tensor& x) { return maybe_poison(at::empty_like(x)); }

}  // namespace

TORCH_LIBRARY_IMPL(ganinv, CPU, m) {
  m.impl("bias_act", &bias_act_cpu);
  m.impl("bias_act_grad", &bias_act_grad_cpu);
  m.impl("bias_act_backward", &bias_act_backward_cpu);
  m.impl("_unwritten_like", &unwritten_like_cpu);
}

}  // namespace ganinv
