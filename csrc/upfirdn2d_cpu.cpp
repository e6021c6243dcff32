// upfirdn2d on the CPU. One task = one output row: for every valid (ky, kx) tap the contributing
// output columns form an arithmetic progression (step so) reading input columns with step si,
// so the inner loop is a strided axpy (a plain vectorisable one for up = down = 1, contiguous).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "ganinv_ops.h"

namespace ganinv {
namespace {

struct TapRun {  // output columns ox0 + j*so read input columns ix0 + j*si, for j in [jlo, jhi)
  int64_t ox0, ix0, jlo, jhi;
};

// For each horizontal tap kx: the output columns it reaches (an empty run when none).
std::vector<TapRun> column_runs(const UpfirdnParams& p, int64_t so, int64_t si) {
  std::vector<TapRun> runs(p.fw, TapRun{0, 0, 0, 0});
  for (int64_t kx = 0; kx < p.fw; ++kx) {
    const int64_t t = kx - p.padx0;  // upsampled column read by output 0 = t (before decimation)
    for (int64_t ox0 = 0; ox0 < so; ++ox0) {
      if (pos_mod(ox0 * p.downx + t, p.upx) != 0) continue;
      const int64_t ix0 = (ox0 * p.downx + t) / p.upx;  // exact division
      const int64_t jlo = ix0 < 0 ? (-ix0 + si - 1) / si : 0;
      const int64_t jhi = std::min((p.out_w - ox0 + so - 1) / so, ix0 > p.in_w - 1 ? 0 : (p.in_w - 1 - ix0) / si + 1);
      runs[kx] = TapRun{ox0, ix0, jlo, std::max(jlo, jhi)};
      break;
    }
  }
  return runs;
}

template <typename T>
void upfirdn_pass_typed(const at::Tensor& x, const at::Tensor& fk, at::Tensor& y, const UpfirdnParams& p) {
  const T* xp = x.const_data_ptr<T>();
  const T* f = fk.const_data_ptr<T>();
  T* yp = y.mutable_data_ptr<T>();
  const int64_t so = p.upx / std::gcd(p.downx, p.upx), si = so * p.downx / p.upx;
  const std::vector<TapRun> runs = column_runs(p, so, si);
  const int64_t rows = p.n * p.c * p.out_h;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, p.out_w * p.fw * p.fh));
  const int64_t sxw = p.sx[3];
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> acc(p.out_w);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t oy = r % p.out_h, nc = r / p.out_h, c = nc % p.c, n = nc / p.c;
      const T* plane = xp + n * p.sx[0] + c * p.sx[1];
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t ky = 0; ky < p.fh; ++ky) {
        const int64_t py = oy * p.downy + ky - p.pady0;  // row in the upsampled, padded image
        if (py < 0 || py % p.upy != 0 || py / p.upy >= p.in_h) continue;
        const T* row = plane + (py / p.upy) * p.sx[2];
        for (int64_t kx = 0; kx < p.fw; ++kx) {
          const TapRun& q = runs[kx];
          const T w = f[ky * p.fw + kx];
          T* a = acc.data() + q.ox0;
          const T* in = row + q.ix0 * sxw;
          if (so == 1 && si == 1 && sxw == 1) {
            for (int64_t j = q.jlo; j < q.jhi; ++j) a[j] += w * in[j];
          } else {
            for (int64_t j = q.jlo; j < q.jhi; ++j) a[j * so] += w * in[j * si * sxw];
          }
        }
      }
      T* out = yp + n * p.sy[0] + c * p.sy[1] + oy * p.sy[2];
      for (int64_t ox = 0; ox < p.out_w; ++ox) out[ox * p.sy[3]] = acc[ox];
    }
  });
}

void upfirdn_pass_cpu(const at::Tensor& x, const at::Tensor& fk, at::Tensor& y, const UpfirdnParams& p) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ganinv_upfirdn2d_cpu", [&] { upfirdn_pass_typed<scalar_t>(x, fk, y, p); });
}

at::Tensor upfirdn2d_cpu(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                         int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip,
                         double gain) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), "upfirdn2d: x must be a CPU tensor");
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                    "upfirdn2d: CPU kernels take float32 or float64, got ", x.scalar_type());
  return upfirdn2d_run(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain, &upfirdn_pass_cpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(ganinv, CPU, m) { m.impl("upfirdn2d", &upfirdn2d_cpu); }

}  // namespace ganinv
