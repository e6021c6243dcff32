// modconv_epilogue on the CPU: the demodulation, noise, bias, activation, gain, clamp (and the next layer's
// modulation) that follow the non-fused modulated convolution, as one pass over c (forward) and one pass over
// gy and c (backward); the per-(image, channel) sums of the backward in double. Specialised at compile time on the
// activation, the clamp and the noise, as bias_act's loops are.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "ganinv_ops.h"

namespace ganinv {
namespace {

constexpr int64_t kBlock = 2048;  // backward: at most this many positions per task (per image), all channels

// The activation's value (ORDER 0, clamped) or its derivative times g (ORDER 1, zero where clamped) at s. For
// linear/relu/lrelu the branch-free slope form of bias_act_cpu.cpp, which the compiler vectorises.
template <typename T, int A, int ORDER, bool CLAMP>
inline T epi(T s, T g, T alpha, T gain, T ag, T cl) {
  if constexpr (A == kLinear || A == kRelu || A == kLrelu) {
    const T slope = A == kLinear ? gain : s > T(0) ? gain : ag;
    if constexpr (ORDER == 0) {
      const T v = A == kRelu ? (s > T(0) ? s : T(0)) * gain : s * slope;
      if constexpr (!CLAMP) return v;
      const T lo = v < -cl ? -cl : v;
      return lo > cl ? cl : lo;
    } else {
      const T v = s * slope;
      return g * (CLAMP ? ((v <= cl) & (v >= -cl) ? slope : T(0)) : slope);
    }
  } else {
    const T v = act_eval<T>(A, 0, s, alpha) * gain;
    if constexpr (ORDER == 0) return CLAMP ? std::min(std::max(v, -cl), cl) : v;
    const T d = g * act_eval<T>(A, 1, s, alpha) * gain;
    return CLAMP ? ((v <= cl) & (v >= -cl) ? d : T(0)) : d;
  }
}

template <typename T>
T slope_neg(int act, T alpha, T gain) {  // the linear activations' slope below zero, times gain
  return (act == kLinear ? T(1) : act == kRelu ? T(0) : alpha) * gain;
}

template <typename T, int A, bool CLAMP, bool NOISE>
void forward_loop(const T* c, const T* d, const T* nz, const T* b, const T* e, T* y, const EpilogueParams& p) {
  const T alpha = T(p.alpha), gain = T(p.gain), cl = T(p.clamp), ag = slope_neg<T>(A, alpha, gain);
  const int64_t hw = p.hw, planes = p.n * p.c;
  at::parallel_for(0, planes, std::max<int64_t>(1, 32768 / std::max<int64_t>(hw, 1)), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {  // q = image * C + channel
      const T dv = d[q], bv = p.bias ? b[q % p.c] : T(0), ev = p.scale ? e[q] : T(1);
      const T* nq = NOISE ? nz + (p.noise_n == 1 ? 0 : q / p.c) * hw : nullptr;
      const T* cq = c + q * hw;
      T* yq = y + q * hw;
      for (int64_t i = 0; i < hw; ++i)
        yq[i] = epi<T, A, 0, CLAMP>(cq[i] * dv + (NOISE ? nq[i] : T(0)) + bv, T(0), alpha, gain, ag, cl) * ev;
    }
  });
}

// channels_last: one row of C channels per (image, position); d, b and e are rows of C too, so the channel loop
// vectorises.
template <typename T, int A, bool CLAMP, bool NOISE>
void forward_loop_nhwc(const T* c, const T* d, const T* nz, const T* b, const T* e, T* y, const EpilogueParams& p) {
  const T alpha = T(p.alpha), gain = T(p.gain), cl = T(p.clamp), ag = slope_neg<T>(A, alpha, gain);
  const int64_t hw = p.hw, C = p.c;
  const std::vector<T> zero(size_t(C), T(0)), one(size_t(C), T(1));  // absent b, e: plain loads (the loop vectorises)
  const T* bq = b ? b : zero.data();
  at::parallel_for(0, p.n * hw, std::max<int64_t>(1, 32768 / std::max<int64_t>(C, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {  // r = image * hw + position
      const int64_t img = r / hw;
      const T nv = NOISE ? nz[(p.noise_n == 1 ? 0 : img) * hw + r - img * hw] : T(0);
      const T* __restrict__ dq = d + img * C;
      const T* __restrict__ eq = p.scale ? e + img * C : one.data();
      const T* __restrict__ cr = c + r * C;
      T* __restrict__ yr = y + r * C;
#pragma omp simd
      for (int64_t ch = 0; ch < C; ++ch)
        yr[ch] = epi<T, A, 0, CLAMP>(cr[ch] * dq[ch] + nv + bq[ch], T(0), alpha, gain, ag, cl) * eq[ch];
    }
  });
}

// The per-task partial sums of a backward pass (task = image * nblk + block of positions), reduced in a fixed
// order into gd, ge, gb, gwr, and the noise gradient gnp [image][position] into gn.
template <typename T>
void finish_backward(const std::vector<double>& part, const std::vector<double>& partr, const std::vector<double>& gnp,
                     int64_t nblk, T* gd, T* gn, T* gb, T* ge, T* gwr, const EpilogueParams& p) {
  const int64_t C = p.c, K = p.k, hw = p.hw;
  std::vector<double> bsum(size_t(C), 0.0);
  for (int64_t img = 0; img < p.n; ++img) {
    for (int64_t ch = 0; ch < C; ++ch) {
      double sd = 0, se = 0, sr[GANINV_EPILOGUE_MAX_K] = {0};
      for (int64_t k = 0; k < nblk; ++k) {
        const int64_t task = img * nblk + k;
        const double* pt = part.data() + (task * C + ch) * 3;
        bsum[ch] += pt[0];
        sd += pt[1];
        se += pt[2];
        for (int64_t j = 0; j < K; ++j) sr[j] += partr[(task * C + ch) * K + j];
      }
      gd[img * C + ch] = T(sd);
      if (p.scale) ge[img * C + ch] = T(se);
      for (int64_t j = 0; j < K; ++j) gwr[(img * K + j) * C + ch] = T(sr[j]);
    }
  }
  if (p.bias)
    for (int64_t ch = 0; ch < C; ++ch) gb[ch] = T(bsum[ch]);
  if (p.noise_n) {
    at::parallel_for(0, hw, 16384, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        if (p.noise_n == 1) {
          double s = 0;
          for (int64_t img = 0; img < p.n; ++img) s += gnp[img * hw + i];
          gn[i] = T(s);
        } else {
          for (int64_t img = 0; img < p.n; ++img) gn[img * hw + i] = T(gnp[img * hw + i]);
        }
      }
    });
  }
}

// Positions per backward task: small enough for ~4 tasks per thread (a batch of one small plane still spreads
// over the threads), at most kBlock.
int64_t backward_block(const EpilogueParams& p) {
  const int64_t want = (p.n * p.hw + 4 * at::get_num_threads() - 1) / (4 * at::get_num_threads());
  return std::min<int64_t>(kBlock, std::max<int64_t>(64, (want + 15) / 16 * 16));
}

// One task = one image and a block of positions, looping over every channel, so that the noise
// gradient (a sum over channels) needs no synchronisation; per-channel sums go to `part` per task. With a
// projection (p.k > 0) the gradient reaching y is gy + sum_k wr[k] gr[k] (`gyt`, built per channel in a buffer),
// and each channel's y is kept in a buffer for the sums gwr[k] = sum gr[k] y.
template <typename T, int A, bool CLAMP, bool NOISE>
void backward_loop(const T* gy, const T* c, const T* d, const T* nz, const T* b, const T* e, const T* gr, const T* wr,
                   T* gc, T* gd, T* gn, T* gb, T* ge, T* gwr, const EpilogueParams& p) {
  const T alpha = T(p.alpha), gain = T(p.gain), cl = T(p.clamp), ag = slope_neg<T>(A, alpha, gain);
  const int64_t blk = backward_block(p), hw = p.hw, C = p.c, K = p.k, nblk = (hw + blk - 1) / blk;
  const bool buffered = K > 0 || !p.grad;                           // gyt comes from the buffer
  std::vector<double> part(size_t(p.n * nblk * C * 3), 0.0);   // [task][channel][sum gs, sum gs c, sum gyt z]
  std::vector<double> partr(size_t(p.n * nblk * C * K), 0.0);  // [task][channel][k]: sum gr[k] y
  std::vector<double> gnp(NOISE ? size_t(p.n * hw) : 0, 0.0);  // [image][position]
  const int64_t grain = std::max<int64_t>(1, 32768 / (blk * C));  // small problems run on one thread
  at::parallel_for(0, p.n * nblk, grain, [&](int64_t t0, int64_t t1) {
    T acc_n[kBlock], gyt[kBlock], ybuf[kBlock];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t img = t / nblk, h0 = (t % nblk) * blk, len = std::min(hw, h0 + blk) - h0;
      const T* nq = NOISE ? nz + (p.noise_n == 1 ? 0 : img) * hw + h0 : nullptr;
      if (NOISE) std::fill(acc_n, acc_n + len, T(0));
      double* pt = part.data() + t * C * 3;
      double* pr = partr.data() + t * C * K;
      for (int64_t ch = 0; ch < C; ++ch) {
        const int64_t q = img * C + ch, off = q * hw + h0;
        const T dv = d[q], bv = p.bias ? b[ch] : T(0), ev = p.scale ? e[q] : T(1);
        const T* cq = c + off;
        if (buffered) {  // gyt = gy + sum_k wr[img, k, ch] gr[img, k]
          for (int64_t i = 0; i < len; ++i) gyt[i] = p.grad ? gy[off + i] : T(0);
          for (int64_t k = 0; k < K; ++k) {
            const T w = wr[(img * K + k) * C + ch];
            const T* g = gr + (img * K + k) * hw + h0;
            for (int64_t i = 0; i < len; ++i) gyt[i] += w * g[i];
          }
        }
        const T* gq = buffered ? gyt : gy + off;
        T* oq = gc + off;
        T sg = 0, sgc = 0, sgy = 0;
#pragma omp simd reduction(+ : sg, sgc, sgy)  // lets the compiler reorder the sums and vectorise the loop
        for (int64_t i = 0; i < len; ++i) {
          const T s = cq[i] * dv + (NOISE ? nq[i] : T(0)) + bv;
          const T g = epi<T, A, 1, CLAMP>(s, gq[i] * ev, alpha, gain, ag, cl);  // clamped: torch.clamp's mask
          const T z = epi<T, A, 0, CLAMP>(s, T(0), alpha, gain, ag, cl);
          oq[i] = g * dv;
          sg += g;
          sgc += g * cq[i];
          sgy += gq[i] * z;  // e's gradient (unused without e)
          ybuf[i] = z * ev;  // y, for the projection's weight gradient (unused without it)
          if constexpr (NOISE) acc_n[i] += g;
        }
        pt[3 * ch] = double(sg);
        pt[3 * ch + 1] = double(sgc);
        pt[3 * ch + 2] = double(sgy);
        for (int64_t k = 0; k < K; ++k) {
          const T* g = gr + (img * K + k) * hw + h0;
          T sr = 0;
#pragma omp simd reduction(+ : sr)
          for (int64_t i = 0; i < len; ++i) sr += g[i] * ybuf[i];
          pr[ch * K + k] = double(sr);
        }
      }
      if (NOISE) std::copy(acc_n, acc_n + len, gnp.begin() + img * hw + h0);
    }
  });
  finish_backward(part, partr, gnp, nblk, gd, gn, gb, ge, gwr, p);
}

// channels_last: a task is one image and a block of positions; per position the channel loop runs over a row of C
// (vectorised), keeping per-channel sums for the task in rows of C and summing the noise gradient over the row.
template <typename T, int A, bool CLAMP, bool NOISE>
void backward_loop_nhwc(const T* gy, const T* c, const T* d, const T* nz, const T* b, const T* e, const T* gr,
                        const T* wr, T* gc, T* gd, T* gn, T* gb, T* ge, T* gwr, const EpilogueParams& p) {
  const T alpha = T(p.alpha), gain = T(p.gain), cl = T(p.clamp), ag = slope_neg<T>(A, alpha, gain);
  const int64_t blk = backward_block(p), hw = p.hw, C = p.c, K = p.k, nblk = (hw + blk - 1) / blk;
  std::vector<double> part(size_t(p.n * nblk * C * 3), 0.0);   // as backward_loop's
  std::vector<double> partr(size_t(p.n * nblk * C * K), 0.0);
  std::vector<double> gnp(NOISE ? size_t(p.n * hw) : 0, 0.0);
  const int64_t grain = std::max<int64_t>(1, 32768 / (blk * C));
  at::parallel_for(0, p.n * nblk, grain, [&](int64_t t0, int64_t t1) {
    // rows of C: sg, sgc, sgy, sr[k] (k < K), gyt; zero and one stand in for an absent b and e
    std::vector<T> sums(size_t(C * (3 + K) + C)), zero(size_t(C), T(0)), one(size_t(C), T(1));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t img = t / nblk, h0 = (t % nblk) * blk, len = std::min(hw, h0 + blk) - h0;
      std::fill(sums.begin(), sums.end(), T(0));
      T *sg = sums.data(), *sgc = sg + C, *sgy = sgc + C, *sr = sgy + C, *gyt = sr + C * K;
      const T* dq = d + img * C;
      const T* eq = p.scale ? e + img * C : one.data();   // absent b, e: plain loads (the loop vectorises)
      const T* bq = b ? b : zero.data();
      for (int64_t i = h0; i < h0 + len; ++i) {
        const int64_t r = img * hw + i;
        const T nv = NOISE ? nz[(p.noise_n == 1 ? 0 : img) * hw + i] : T(0);
        const T* cr = c + r * C;
        const T* gq = gyt;
        if (K > 0 || !p.grad) {  // gyt = gy + sum_k wr[img, k, :] gr[img, k, i]
          for (int64_t ch = 0; ch < C; ++ch) gyt[ch] = p.grad ? gy[r * C + ch] : T(0);
          for (int64_t k = 0; k < K; ++k) {
            const T g = gr[(img * K + k) * hw + i];
            const T* w = wr + (img * K + k) * C;
#pragma omp simd
            for (int64_t ch = 0; ch < C; ++ch) gyt[ch] += w[ch] * g;
          }
        } else {
          gq = gy + r * C;
        }
        T* orow = gc + r * C;
        T ns = 0;
#pragma omp simd reduction(+ : ns)
        for (int64_t ch = 0; ch < C; ++ch) {
          const T s = cr[ch] * dq[ch] + nv + bq[ch];
          const T ev = eq[ch];
          const T g = epi<T, A, 1, CLAMP>(s, gq[ch] * ev, alpha, gain, ag, cl);
          const T z = epi<T, A, 0, CLAMP>(s, T(0), alpha, gain, ag, cl);
          orow[ch] = g * dq[ch];
          sg[ch] += g;
          sgc[ch] += g * cr[ch];
          sgy[ch] += gq[ch] * z;
          ns += g;
          for (int64_t k = 0; k < K; ++k) sr[k * C + ch] += gr[(img * K + k) * hw + i] * z * ev;
        }
        if (NOISE) gnp[img * hw + i] = double(ns);
      }
      double* pt = part.data() + t * C * 3;
      double* pr = partr.data() + t * C * K;
      for (int64_t ch = 0; ch < C; ++ch) {
        pt[3 * ch] = double(sg[ch]);
        pt[3 * ch + 1] = double(sgc[ch]);
        pt[3 * ch + 2] = double(sgy[ch]);
        for (int64_t k = 0; k < K; ++k) pr[ch * K + k] = double(sr[k * C + ch]);
      }
    }
  });
  finish_backward(part, partr, gnp, nblk, gd, gn, gb, ge, gwr, p);
}

// Calls f(act, clamp, noise) with compile-time constants for the runtime (activation, clamp on, noise on) of p.
template <typename F>
void with_modes(const EpilogueParams& p, F&& f) {
  using On = std::true_type;
  using Off = std::false_type;
  with_act(p.act, [&](auto a) {
    const bool cl = p.clamp >= 0, nz = p.noise_n > 0;
    if (cl && nz) f(a, On{}, On{});
    else if (cl) f(a, On{}, Off{});
    else if (nz) f(a, Off{}, On{});
    else f(a, Off{}, Off{});
  });
}

at::Tensor empty_out(const at::Tensor& like, const at::Tensor& c) {
  return like.numel() > 0 ? maybe_poison(at::empty_like(like)) : at::empty({0}, c.options());
}

at::Tensor forward_cpu(const at::Tensor& c, const at::Tensor& d, const at::Tensor& noise, const at::Tensor& b,
                       const at::Tensor& e, int64_t act, double alpha, double gain, double clamp) {
  TORCH_CHECK_VALUE(c.device().is_cpu(), "modconv_epilogue: c must be a CPU tensor, got one on ", c.device());
  if (is_16bit(c)) {  // computed in float32, the result rounded once
    epilogue_params(c, d, noise, b, e, act, alpha, gain, clamp, "modconv_epilogue");
    auto f = [](const at::Tensor& t) { return t.to(at::kFloat); };
    return forward_cpu(f(c), f(d), f(noise), f(b), f(e), act, alpha, gain, clamp).to(c.scalar_type());
  }
  const EpilogueParams p = epilogue_params(c, d, noise, b, e, act, alpha, gain, clamp, "modconv_epilogue");
  at::Tensor y = maybe_poison(at::empty_like(c));
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "ganinv_modconv_epilogue_cpu", [&] {
    const scalar_t* nz = p.noise_n ? noise.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* bp = p.bias ? b.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* ep = p.scale ? e.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* cp = c.const_data_ptr<scalar_t>();
    const scalar_t* dp = d.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    with_modes(p, [&](auto a, auto cl, auto nzc) {
      constexpr int A = decltype(a)::value;
      constexpr bool CL = decltype(cl)::value, NZ = decltype(nzc)::value;
      if (p.nhwc) forward_loop_nhwc<scalar_t, A, CL, NZ>(cp, dp, nz, bp, ep, yp, p);
      else forward_loop<scalar_t, A, CL, NZ>(cp, dp, nz, bp, ep, yp, p);
    });
  });
  return y;
}

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Grads backward_cpu(const at::Tensor& gy_in, const at::Tensor& c, const at::Tensor& d, const at::Tensor& noise,
                   const at::Tensor& b, const at::Tensor& e, const at::Tensor& gr, const at::Tensor& wr, int64_t act,
                   double alpha, double gain, double clamp) {
  const char* op = "modconv_epilogue_backward";
  TORCH_CHECK_VALUE(c.device().is_cpu(), op, ": c must be a CPU tensor, got one on ", c.device());
  EpilogueParams p = epilogue_params(c, d, noise, b, e, act, alpha, gain, clamp, op);
  epilogue_backward_params(p, c, gy_in, gr, wr, op);
  if (is_16bit(c)) {
    auto f = [](const at::Tensor& t) { return t.to(at::kFloat); };
    auto [gc, gd, gn, gb, ge, gw] = backward_cpu(f(gy_in), f(c), f(d), f(noise), f(b), f(e), f(gr), f(wr), act, alpha,
                                                 gain, clamp);
    const auto t = c.scalar_type();
    return {gc.to(t), gd.to(t), gn.to(t), gb.to(t), ge.to(t), gw.to(t)};
  }
  const at::Tensor gy = p.grad ? gy_in.contiguous(epilogue_format(p)) : gy_in;
  at::Tensor gc = maybe_poison(at::empty_like(c)), gd = maybe_poison(at::empty_like(d));
  at::Tensor gn = empty_out(noise, c), gb = empty_out(b, c), ge = empty_out(e, c), gw = empty_out(wr, c);
  if (c.numel() == 0) {
    gd.zero_(); gn.zero_(); gb.zero_(); ge.zero_(); gw.zero_();
    return {gc, gd, gn, gb, ge, gw};
  }
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "ganinv_modconv_epilogue_backward_cpu", [&] {
    const scalar_t* nz = p.noise_n ? noise.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* bp = p.bias ? b.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gnp = p.noise_n ? gn.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gbp = p.bias ? gb.mutable_data_ptr<scalar_t>() : nullptr;
    const scalar_t* ep = p.scale ? e.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gep = p.scale ? ge.mutable_data_ptr<scalar_t>() : nullptr;
    const scalar_t* grp = p.k ? gr.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* wrp = p.k ? wr.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gwp = p.k ? gw.mutable_data_ptr<scalar_t>() : nullptr;
    const scalar_t* gyp = p.grad ? gy.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* cp = c.const_data_ptr<scalar_t>();
    const scalar_t* dp = d.const_data_ptr<scalar_t>();
    scalar_t* gcp = gc.mutable_data_ptr<scalar_t>();
    scalar_t* gdp = gd.mutable_data_ptr<scalar_t>();
    with_modes(p, [&](auto a, auto cl, auto nzc) {
      constexpr int A = decltype(a)::value;
      constexpr bool CL = decltype(cl)::value, NZ = decltype(nzc)::value;
      if (p.nhwc)
        backward_loop_nhwc<scalar_t, A, CL, NZ>(gyp, cp, dp, nz, bp, ep, grp, wrp, gcp, gdp, gnp, gbp, gep, gwp, p);
      else
        backward_loop<scalar_t, A, CL, NZ>(gyp, cp, dp, nz, bp, ep, grp, wrp, gcp, gdp, gnp, gbp, gep, gwp, p);
    });
  });
  return {gc, gd, gn, gb, ge, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(ganinv, CPU, m) {
  m.impl("modconv_epilogue", &forward_cpu);
  m.impl("modconv_epilogue_backward", &backward_cpu);
}

}  // namespace ganinv
