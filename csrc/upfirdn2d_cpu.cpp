// upfirdn2d on the CPU. One task = one output row (of one channel; of all channels for channels_last):
// for every valid (ky, kx) tap the contributing output columns form an arithmetic progression (step
// so) reading input columns with step si, so the inner loop is an axpy into the accumulator
// (contiguous reads for si = 1, NCHW; across channels, contiguous, for channels_last).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
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

// ---- Rank-1 fast path: f = col (x) row (StyleGAN2's outer-product filters), as two 1-D passes. ----
// Every input row needed is filtered along x once (fw taps per output column) into a small ring of
// rows (fh slots, in cache), and each output row is the fh-tap combination of ring rows along y.

// Whether f (double [fh, fw], flipped and scaled) = col[i] row[j] to 1e-13 of its largest tap; fills col, row.
bool rank1_split(const at::Tensor& fd, std::vector<double>& col, std::vector<double>& row) {
  const int64_t fh = fd.size(0), fw = fd.size(1);
  const double* f = fd.const_data_ptr<double>();
  for (int64_t i = 0; i < fh * fw; ++i)
    if (!std::isfinite(f[i])) return false;  // a NaN / inf tap must reach every output it touches: general path
  int64_t piv = 0;
  for (int64_t i = 1; i < fh * fw; ++i) if (std::abs(f[i]) > std::abs(f[piv])) piv = i;
  const double fp = f[piv];
  if (fp == 0.0) return false;
  const int64_t r0 = piv / fw, c0 = piv % fw;
  col.resize(fh); row.resize(fw);
  for (int64_t j = 0; j < fw; ++j) row[j] = f[r0 * fw + j];
  for (int64_t i = 0; i < fh; ++i) col[i] = f[i * fw + c0] / fp;
  for (int64_t i = 0; i < fh; ++i)
    for (int64_t j = 0; j < fw; ++j)
      if (std::abs(col[i] * row[j] - f[i * fw + j]) > 1e-13 * std::abs(fp)) return false;
  return true;
}

// NCHW x-pass of one input row: h[ox] = sum_kx wx[kx] u[ox*dx + kx], u = the row zero-inserted (up)
// and padded, materialised in buf over the span read ((out_w - 1) dx + fw).
template <typename T, int FW, int DX>
void xpass_row(const T* row, int64_t sxw, T* buf, T* h, const T* wx, const UpfirdnParams& p) {
  const int64_t fw = FW ? FW : p.fw, dx = DX ? DX : p.downx, up = p.upx, len = (p.out_w - 1) * dx + fw;
  std::fill(buf, buf + len, T(0));
  const int64_t ix0 = p.padx0 >= 0 ? 0 : (-p.padx0 + up - 1) / up;
  const int64_t ix1 = std::min<int64_t>(p.in_w, len - 1 - p.padx0 < 0 ? 0 : (len - 1 - p.padx0) / up + 1);
  for (int64_t ix = ix0; ix < ix1; ++ix) buf[ix * up + p.padx0] = row[ix * sxw];
  if (FW == 4) {
    const T w0 = wx[0], w1 = wx[1], w2 = wx[2], w3 = wx[3];
    for (int64_t ox = 0; ox < p.out_w; ++ox) {
      const T* b = buf + ox * dx;
      h[ox] = w0 * b[0] + w1 * b[1] + w2 * b[2] + w3 * b[3];
    }
  } else {
    for (int64_t ox = 0; ox < p.out_w; ++ox) h[ox] = wx[0] * buf[ox * dx];
    for (int64_t kx = 1; kx < fw; ++kx) {
      const T w = wx[kx];
      const T* b = buf + kx;
      for (int64_t ox = 0; ox < p.out_w; ++ox) h[ox] += w * b[ox * dx];
    }
  }
}

// channels_last x-pass of one input row: h[ox, :] = sum_kx wx[kx] x[ix(ox, kx), :] (C contiguous).
template <typename T>
void xpass_row_cl(const T* row, int64_t sxw, T* h, const T* wx, const UpfirdnParams& p, int64_t C) {
  for (int64_t ox = 0; ox < p.out_w; ++ox) {
    T* a = h + ox * C;
    std::fill(a, a + C, T(0));
    for (int64_t kx = 0; kx < p.fw; ++kx) {
      const int64_t s = ox * p.downx + kx - p.padx0;  // column of the upsampled row
      if (s < 0 || s % p.upx != 0 || s / p.upx >= p.in_w) continue;
      const T w = wx[kx];
      const T* in = row + (s / p.upx) * sxw;
      for (int64_t k = 0; k < C; ++k) a[k] += w * in[k];
    }
  }
}

// y-pass: out[i] = sum_k w[k] rows[k][i] over n contiguous elements (0 when no row contributes).
template <typename T>
void ypass(T* out, int64_t n, const T* const* rows, const T* w, int nr) {
  if (nr == 0) { std::fill(out, out + n, T(0)); return; }
  if (nr == 4) {
    const T *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3];
    const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
    for (int64_t i = 0; i < n; ++i) out[i] = w0 * r0[i] + w1 * r1[i] + w2 * r2[i] + w3 * r3[i];
    return;
  }
  if (nr == 2) {
    const T *r0 = rows[0], *r1 = rows[1];
    const T w0 = w[0], w1 = w[1];
    for (int64_t i = 0; i < n; ++i) out[i] = w0 * r0[i] + w1 * r1[i];
    return;
  }
  const T w0 = w[0];
  const T* r0 = rows[0];
  for (int64_t i = 0; i < n; ++i) out[i] = w0 * r0[i];
  for (int k = 1; k < nr; ++k) {
    const T wk = w[k];
    const T* rk = rows[k];
    for (int64_t i = 0; i < n; ++i) out[i] += wk * rk[i];
  }
}

// The separable pass. Tasks: whole planes (NCHW) or output rows of all channels (channels_last).
template <typename T>
void upfirdn_rank1(const at::Tensor& x, at::Tensor& y, const UpfirdnParams& p, const std::vector<double>& col,
                   const std::vector<double>& rowf, bool cl) {
  const std::vector<T> wx(rowf.begin(), rowf.end()), wy(col.begin(), col.end());
  const T* xp = x.const_data_ptr<T>();
  T* yp = y.mutable_data_ptr<T>();
  const int64_t C = cl ? p.c : 1, W = p.out_w * C, buflen = (p.out_w - 1) * p.downx + p.fw;
  const int64_t tasks = cl ? p.n * p.out_h : p.n * p.c;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, W * (cl ? 1 : p.out_h)));
  auto xrow = [&](const T* r, T* buf, T* h) {
    if (cl) return xpass_row_cl<T>(r, p.sx[3], h, wx.data(), p, C);
    if (p.fw == 4 && p.downx == 1) return xpass_row<T, 4, 1>(r, p.sx[3], buf, h, wx.data(), p);
    if (p.fw == 4 && p.downx == 2) return xpass_row<T, 4, 2>(r, p.sx[3], buf, h, wx.data(), p);
    if (p.downx == 1) return xpass_row<T, 0, 1>(r, p.sx[3], buf, h, wx.data(), p);
    xpass_row<T, 0, 0>(r, p.sx[3], buf, h, wx.data(), p);
  };
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> ring(p.fh * W), buf(cl ? 0 : buflen);
    std::vector<int64_t> tag(p.fh);
    std::vector<const T*> rows(p.fh);
    std::vector<T> w(p.fh);
    int64_t plane_of_tags = -1;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = cl ? t / p.out_h : t / p.c, c = cl ? 0 : t % p.c;
      const T* plane = xp + n * p.sx[0] + c * p.sx[1];
      if (plane_of_tags != n * p.c + c) { std::fill(tag.begin(), tag.end(), -1); plane_of_tags = n * p.c + c; }
      const int64_t oy0 = cl ? t % p.out_h : 0, oy1 = cl ? oy0 + 1 : p.out_h;
      for (int64_t oy = oy0; oy < oy1; ++oy) {
        int nr = 0;
        for (int64_t ky = 0; ky < p.fh; ++ky) {
          const int64_t py = oy * p.downy + ky - p.pady0;  // row of the upsampled, padded image
          if (py < 0 || py % p.upy != 0 || py / p.upy >= p.in_h) continue;
          const int64_t iy = py / p.upy, slot = iy % p.fh;
          T* h = ring.data() + slot * W;
          if (tag[slot] != iy) { xrow(plane + iy * p.sx[2], buf.data(), h); tag[slot] = iy; }
          rows[nr] = h;
          w[nr++] = wy[ky];
        }
        ypass<T>(yp + n * p.sy[0] + c * p.sy[1] + oy * p.sy[2], W, rows.data(), w.data(), nr);
      }
    }
  });
}

// The accumulator of one output row is stored by phase: output column ox = ox0 + j*so lives at
// (ox0 * plen + j) [* C for channels_last], so every tap's run adds into a contiguous span even when
// upsampling (so > 1); the copy-out at the end of a row interleaves the phases.
template <typename T>
void upfirdn_pass_typed(const at::Tensor& x, const at::Tensor& f_raw, at::Tensor& y, const UpfirdnParams& p) {
  // channels_last (x and y): one task = one output row of all channels, channels innermost.
  const bool cl = p.c > 1 && p.sx[1] == 1 && p.sy[1] == 1 && p.sx[3] == p.c && p.sy[3] == p.c;
  std::vector<double> col, rowf;
  if ((cl || p.sy[3] == 1) && rank1_split(prepare_filter(f_raw, p.flip, p.gain, at::kDouble), col, rowf))
    return upfirdn_rank1<T>(x, y, p, col, rowf, cl);
  const at::Tensor fk = prepare_filter(f_raw, p.flip, p.gain, x.scalar_type());
  const T* xp = x.const_data_ptr<T>();
  const T* f = fk.const_data_ptr<T>();
  T* yp = y.mutable_data_ptr<T>();
  const int64_t so = p.upx / std::gcd(p.downx, p.upx), si = so * p.downx / p.upx;
  const int64_t plen = (p.out_w + so - 1) / so;  // columns per phase
  const std::vector<TapRun> runs = column_runs(p, so, si);
  const int64_t C = cl ? p.c : 1, rows = p.n * (cl ? 1 : p.c) * p.out_h;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, p.out_w * C * p.fw * p.fh));
  const int64_t sxw = p.sx[3], syw = p.sy[3];
  // 4-tap FIR rows (up = down = 1 along x, NCHW): all four taps in one pass over a zero-padded copy of
  // the input row, out[ox] += sum_kx w[kx] buf[ox + kx], buf[t] = row[t - padx0] (0 outside).
  const bool fir4 = !cl && p.upx == 1 && p.downx == 1 && p.fw == 4 && sxw == 1;
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> acc(so * plen * C), buf(fir4 ? p.out_w + 3 : 0);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t oy = r % p.out_h, nc = r / p.out_h, c = cl ? 0 : nc % p.c, n = cl ? nc : nc / p.c;
      const T* plane = xp + n * p.sx[0] + c * p.sx[1];
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t ky = 0; ky < p.fh; ++ky) {
        const int64_t py = oy * p.downy + ky - p.pady0;  // row in the upsampled, padded image
        if (py < 0 || py % p.upy != 0 || py / p.upy >= p.in_h) continue;
        const T* row = plane + (py / p.upy) * p.sx[2];
        if (fir4) {
          for (int64_t t = 0; t < p.out_w + 3; ++t) {
            const int64_t ix = t - p.padx0;
            buf[t] = ix >= 0 && ix < p.in_w ? row[ix] : T(0);
          }
          const T* w = f + ky * 4;
          const T* b = buf.data();
          T* a = acc.data();
          for (int64_t ox = 0; ox < p.out_w; ++ox)
            a[ox] += w[0] * b[ox] + w[1] * b[ox + 1] + w[2] * b[ox + 2] + w[3] * b[ox + 3];
          continue;
        }
        for (int64_t kx = 0; kx < p.fw; ++kx) {
          const TapRun& q = runs[kx];
          const T w = f[ky * p.fw + kx];
          T* a = acc.data() + q.ox0 * plen * C;
          const T* in = row + q.ix0 * sxw;
          if (cl) {  // a[j, :] += w * in[j * si, :]
            for (int64_t j = q.jlo; j < q.jhi; ++j) {
              T* aj = a + j * C;
              const T* ij = in + j * si * sxw;
              for (int64_t k = 0; k < C; ++k) aj[k] += w * ij[k];
            }
          } else if (si == 1 && sxw == 1) {
            for (int64_t j = q.jlo; j < q.jhi; ++j) a[j] += w * in[j];
          } else {
            for (int64_t j = q.jlo; j < q.jhi; ++j) a[j] += w * in[j * si * sxw];
          }
        }
      }
      T* out = yp + n * p.sy[0] + c * p.sy[1] + oy * p.sy[2];
      for (int64_t ox = 0; ox < p.out_w; ++ox) {
        const T* src = acc.data() + ((ox % so) * plen + ox / so) * C;
        T* dst = out + ox * syw;
        for (int64_t k = 0; k < C; ++k) dst[k] = src[k];  // C = 1 unless channels_last (then stride 1)
      }
    }
  });
}

void upfirdn_pass_cpu(const at::Tensor& x, const at::Tensor& f, at::Tensor& y, const UpfirdnParams& p) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ganinv_upfirdn2d_cpu", [&] { upfirdn_pass_typed<scalar_t>(x, f, y, p); });
}

at::Tensor upfirdn2d_cpu(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                         int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip,
                         double gain) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), "upfirdn2d: x must be a CPU tensor");
  const auto t = x.scalar_type();
  TORCH_CHECK_VALUE(t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf,
                    "upfirdn2d: CPU kernels take float32, float64, bfloat16 or float16, got ", t);
  if (is_16bit(x))  // computed in float32 (widen, filter, round once)
    return upfirdn2d_run(x.to(at::kFloat), f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain,
                         &upfirdn_pass_cpu).to(t);
  return upfirdn2d_run(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain, &upfirdn_pass_cpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(ganinv, CPU, m) { m.impl("upfirdn2d", &upfirdn2d_cpu); }

}  // namespace ganinv
