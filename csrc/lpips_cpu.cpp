// lpips_distance on the CPU (maths in csrc/ganinv_ops.h). One task = one image and a block of kBlock pixels;
// the loops run over channels outside and pixels inside (contiguous, vectorised), so each pass reads f and t
// once in memory order. Forward: pass 1 the channel norms, pass 2 the distance and s. Backward: one pass.
// bfloat16/float16 f is computed in float32 (converted first), as the other CPU kernels do.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "ganinv_ops.h"

namespace ganinv {
namespace {

constexpr int64_t kBlock = 256;

template <typename T>
void forward_loop(const T* f, const T* t, const T* g, T* dist, T* norm, T* sp, const LpipsParams& p) {
  const int64_t hw = p.hw, C = p.c, nblk = (hw + kBlock - 1) / kBlock;
  const int64_t grain = std::max<int64_t>(1, 16384 / (kBlock * std::max<int64_t>(C, 1)));
  at::parallel_for(0, p.n * nblk, grain, [&](int64_t k0, int64_t k1) {
    T ss[kBlock], den[kBlock], d[kBlock], s[kBlock];
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t img = k / nblk, i0 = (k % nblk) * kBlock, len = std::min(hw, i0 + kBlock) - i0;
      const T* fi = f + img * C * hw + i0;
      const T* ti = t + img * p.t_sn + i0;
      std::fill(ss, ss + len, T(0));
      for (int64_t c = 0; c < C; ++c) {
        const T* fc = fi + c * hw;
        for (int64_t i = 0; i < len; ++i) ss[i] += fc[i] * fc[i];
      }
      for (int64_t i = 0; i < len; ++i) {
        ss[i] = std::sqrt(ss[i]);
        den[i] = ss[i] + T(p.eps);
        d[i] = s[i] = T(0);
      }
      for (int64_t c = 0; c < C; ++c) {
        const T* fc = fi + c * hw;
        const T* tc = ti + c * hw;
        const T gc = g[c];
        for (int64_t i = 0; i < len; ++i) {
          const T r = fc[i] / den[i] * gc - tc[i];  // as the reference rounds: (f / |f|) g
          d[i] += r * r;
          s[i] += gc * r * fc[i];
        }
      }
      const int64_t o = img * hw + i0;
      std::copy(d, d + len, dist + o);
      std::copy(ss, ss + len, norm + o);
      std::copy(s, s + len, sp + o);
    }
  });
}

template <typename T>
void backward_loop(const T* gd, const T* f, const T* t, const T* g, const T* norm, const T* sp, T* gf,
                   const LpipsParams& p) {
  const int64_t hw = p.hw, C = p.c, nblk = (hw + kBlock - 1) / kBlock;
  const int64_t grain = std::max<int64_t>(1, 16384 / (kBlock * std::max<int64_t>(C, 1)));
  at::parallel_for(0, p.n * nblk, grain, [&](int64_t k0, int64_t k1) {
    T den[kBlock], k2[kBlock], coef[kBlock];
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t img = k / nblk, i0 = (k % nblk) * kBlock, len = std::min(hw, i0 + kBlock) - i0;
      const int64_t o = img * hw + i0;
      for (int64_t i = 0; i < len; ++i) {
        const T nf = norm[o + i];
        den[i] = nf + T(p.eps);
        k2[i] = T(2) * gd[o + i] / den[i];                          // 2 gdist / (|f| + eps)
        coef[i] = nf > T(0) ? sp[o + i] / (den[i] * nf) : T(0);     // s / ((|f| + eps) |f|)
      }
      const T* fi = f + img * C * hw + i0;
      const T* ti = t + img * p.t_sn + i0;
      T* oi = gf + img * C * hw + i0;
      for (int64_t c = 0; c < C; ++c) {
        const T* fc = fi + c * hw;
        const T* tc = ti + c * hw;
        T* oc = oi + c * hw;
        const T gc = g[c];
        for (int64_t i = 0; i < len; ++i) {
          const T r = fc[i] / den[i] * gc - tc[i];  // as the reference rounds: (f / |f|) g
          oc[i] = k2[i] * (gc * r - fc[i] * coef[i]);
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cpu(const at::Tensor& f, const at::Tensor& t,
                                                           const at::Tensor& g, double eps) {
  const char* op = "lpips_distance";
  TORCH_CHECK_VALUE(f.device().is_cpu(), op, ": f must be a CPU tensor, got one on ", f.device());
  const LpipsParams p = lpips_params(f, t, g, eps, op);
  if (is_16bit(f)) return forward_cpu(f.to(at::kFloat), t, g, eps);
  const auto opts = t.options();
  at::Tensor dist = maybe_poison(at::empty({p.n, f.size(2), f.size(3)}, opts));
  at::Tensor norm = maybe_poison(at::empty_like(dist)), s = maybe_poison(at::empty_like(dist));
  if (p.c == 0) return {dist.zero_(), norm.zero_(), s.zero_()};
  if (dist.numel() == 0) return {dist, norm, s};
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "ganinv_lpips_distance_cpu", [&] {
    forward_loop<scalar_t>(f.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
                           dist.mutable_data_ptr<scalar_t>(), norm.mutable_data_ptr<scalar_t>(),
                           s.mutable_data_ptr<scalar_t>(), p);
  });
  return {dist, norm, s};
}

at::Tensor backward_cpu(const at::Tensor& gd_in, const at::Tensor& f, const at::Tensor& t, const at::Tensor& g,
                        const at::Tensor& norm_in, const at::Tensor& s_in, double eps) {
  const char* op = "lpips_distance_backward";
  TORCH_CHECK_VALUE(f.device().is_cpu(), op, ": f must be a CPU tensor, got one on ", f.device());
  const LpipsParams p = lpips_params(f, t, g, eps, op);
  check_lpips_saved(gd_in, f, t, "gdist", op);
  check_lpips_saved(norm_in, f, t, "norm", op);
  check_lpips_saved(s_in, f, t, "s", op);
  if (is_16bit(f)) return backward_cpu(gd_in, f.to(at::kFloat), t, g, norm_in, s_in, eps).to(f.scalar_type());
  const at::Tensor gd = gd_in.contiguous(), norm = norm_in.contiguous(), s = s_in.contiguous();
  at::Tensor gf = maybe_poison(at::empty_like(f));
  if (gf.numel() == 0) return gf;
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "ganinv_lpips_distance_backward_cpu", [&] {
    backward_loop<scalar_t>(gd.const_data_ptr<scalar_t>(), f.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(),
                            g.const_data_ptr<scalar_t>(), norm.const_data_ptr<scalar_t>(),
                            s.const_data_ptr<scalar_t>(), gf.mutable_data_ptr<scalar_t>(), p);
  });
  return gf;
}

}  // namespace

TORCH_LIBRARY_IMPL(ganinv, CPU, m) {
  m.impl("lpips_distance", &forward_cpu);
  m.impl("lpips_distance_backward", &backward_cpu);
}

}  // namespace ganinv
