// Argument checks and layout helpers shared by the CPU and CUDA implementations.
#include "ganinv_ops.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <limits>
#include <vector>

namespace ganinv {

bool is_channels_last(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

bool dense_4d_or_contiguous(const at::Tensor& x) { return x.is_contiguous() || is_channels_last(x); }

at::Tensor maybe_poison(at::Tensor t) {
  const char* v = std::getenv("GANINV_DEBUG_POISON");  // read per call: cheap next to any kernel
  const bool on = v != nullptr && v[0] == '1';
  return on && t.numel() ? t.fill_(std::numeric_limits<double>::quiet_NaN()) : t;
}

// `t` with exactly x's strides (x dense): a no-op when they already match.
at::Tensor like_x(const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.sizes() == x.sizes(), "ganinv: tensor of shape ", t.sizes(), " where ", x.sizes(), " is expected");
  if (t.strides() == x.strides()) return t;
  return at::empty_like(x).copy_(t);
}

at::Tensor bias_grad_by_sum(const at::Tensor& dx, const at::Tensor& b, int64_t dim) {
  std::vector<int64_t> axes;
  for (int64_t i = 0; i < dx.dim(); ++i)
    if (i != dim) axes.push_back(i);
  const auto acc = dx.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return (axes.empty() ? dx.to(acc) : dx.sum(axes, false, acc)).to(b.scalar_type());
}

BiasActParams bias_act_params(const at::Tensor& x, const at::Tensor& b, int64_t dim, int64_t act, int64_t order,
                              double alpha, double gain, double clamp, const char* op) {
  TORCH_CHECK_VALUE(act >= 0 && act < kNumActs, op, ": unknown activation code ", act);
  TORCH_CHECK_VALUE(order >= 0 && order <= 2, op, ": derivative order must be 0, 1 or 2, got ", order);
  TORCH_CHECK_VALUE(dense_4d_or_contiguous(x), op, ": x must be contiguous or channels_last");
  BiasActParams p{};
  p.act = static_cast<int>(act);
  p.order = static_cast<int>(order);
  p.alpha = alpha;
  p.gain = gain;
  p.clamp = clamp;
  p.numel = x.numel();
  p.step_b = 1;
  p.size_b = 0;
  if (b.numel() > 0) {
    TORCH_CHECK_VALUE(x.dim() > 0 && dim >= 0 && dim < x.dim(), op, ": dim ", dim, " out of range for x of rank ",
                      x.dim());
    TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == x.size(dim), op, ": b must have shape [", x.size(dim),
                      "] (x.shape[dim]), got ", b.sizes());
    TORCH_CHECK_VALUE(b.scalar_type() == x.scalar_type() && b.device() == x.device(), op,
                      ": b must match x in dtype and device");
    TORCH_CHECK_VALUE(b.is_contiguous(), op, ": b must be contiguous");
    p.size_b = b.size(0);
    p.step_b = x.size(dim) > 1 ? x.stride(dim) : 1;
  }
  return p;
}

EpilogueParams epilogue_params(const at::Tensor& c, const at::Tensor& d, const at::Tensor& noise, const at::Tensor& b,
                               const at::Tensor& e, int64_t act, double alpha, double gain, double clamp,
                               const char* op) {
  TORCH_CHECK_VALUE(act >= 0 && act < kNumActs, op, ": unknown activation code ", act);
  TORCH_CHECK_VALUE(c.dim() == 4 && dense_4d_or_contiguous(c), op,
                    ": c must be a contiguous or channels_last [N, C, H, W] tensor, got ", c.sizes(),
                    c.dim() == 4 ? " (neither layout)" : "");
  const int64_t n = c.size(0), ch = c.size(1), hw = c.size(2) * c.size(3);
  auto same = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK_VALUE(t.scalar_type() == c.scalar_type() && t.device() == c.device(), op, ": ", name,
                      " must match c in dtype and device (", c.scalar_type(), ", ", c.device(), "), got ",
                      t.scalar_type(), ", ", t.device());
    TORCH_CHECK_VALUE(t.is_contiguous(), op, ": ", name, " must be contiguous");
  };
  same(d, "d");
  TORCH_CHECK_VALUE(d.numel() == n * ch && d.dim() >= 1 && d.size(0) == n, op, ": d must hold [N, C] = [", n, ", ",
                    ch, "] values, got ", d.sizes());
  EpilogueParams p{};
  p.n = n; p.c = ch; p.hw = hw;
  p.nhwc = is_channels_last(c);
  p.act = static_cast<int>(act);
  p.alpha = alpha; p.gain = gain; p.clamp = clamp;
  if (noise.numel() > 0) {
    same(noise, "noise");
    TORCH_CHECK_VALUE(noise.dim() == 4 && (noise.size(0) == 1 || noise.size(0) == n) && noise.size(1) == 1 &&
                      noise.size(2) == c.size(2) && noise.size(3) == c.size(3),
                      op, ": noise must be [1 or N, 1, H, W] = [1 or ", n, ", 1, ", c.size(2), ", ", c.size(3),
                      "], got ", noise.sizes());
    p.noise_n = noise.size(0);
  }
  if (b.numel() > 0) {
    same(b, "b");
    TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == ch, op, ": b must have shape [", ch, "], got ", b.sizes());
    p.bias = true;
  }
  if (e.numel() > 0) {
    same(e, "e");
    TORCH_CHECK_VALUE(e.numel() == n * ch && e.size(0) == n, op, ": e must hold [N, C] = [", n, ", ", ch,
                      "] values, got ", e.sizes());
    p.scale = true;
  }
  return p;
}

LpipsParams lpips_params(const at::Tensor& f, const at::Tensor& t, const at::Tensor& g, double eps, const char* op) {
  TORCH_CHECK_VALUE(f.dim() == 4 && f.is_contiguous(), op, ": f must be a contiguous [N, C, H, W] tensor, got ",
                    f.sizes(), f.dim() == 4 ? " (not contiguous)" : "");
  const auto acc = f.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto typed = [&](const at::Tensor& x, const char* name) {
    TORCH_CHECK_VALUE(x.scalar_type() == acc && x.device() == f.device(), op, ": ", name, " must be ", acc, " on ",
                      f.device(), " (f is ", f.scalar_type(), "), got ", x.scalar_type(), " on ", x.device());
  };
  typed(t, "t");
  typed(g, "g");
  TORCH_CHECK_VALUE(t.sizes() == f.sizes(), op, ": t must match f's shape ", f.sizes(), ", got ", t.sizes());
  const int64_t n = f.size(0), c = f.size(1), h = f.size(2), w = f.size(3);
  // Each image of t dense (C, H, W) in order; the images may sit anywhere (views into a [N, F] feature matrix).
  // (No elements: nothing is read, and torch calls such a tensor contiguous whatever its strides.)
  const bool dense = f.numel() == 0 || ((c <= 1 || t.stride(1) == h * w) && (h <= 1 || t.stride(2) == w) &&
                                        (w <= 1 || t.stride(3) == 1));
  TORCH_CHECK_VALUE(dense, op, ": each image of t must be contiguous [C, H, W], got strides ", t.strides());
  TORCH_CHECK_VALUE(g.dim() == 1 && g.size(0) == c && g.is_contiguous(), op, ": g must be a contiguous [", c,
                    "] tensor, got ", g.sizes());
  TORCH_CHECK_VALUE(eps >= 0, op, ": eps must be >= 0, got ", eps);
  return LpipsParams{n, c, h * w, n > 1 ? t.stride(0) : c * h * w, eps};
}

void check_lpips_saved(const at::Tensor& x, const at::Tensor& f, const at::Tensor& t, const char* name, const char* op) {
  TORCH_CHECK_VALUE(x.dim() == 3 && x.size(0) == f.size(0) && x.size(1) == f.size(2) && x.size(2) == f.size(3) &&
                        x.scalar_type() == t.scalar_type() && x.device() == f.device(),
                    op, ": ", name, " must be [N, H, W] = [", f.size(0), ", ", f.size(2), ", ", f.size(3), "] of ",
                    t.scalar_type(), " on ", f.device(), ", got ", x.sizes(), " of ", x.scalar_type());
}

void check_autocorr_args(const at::Tensor& x, const at::Tensor& ga, const char* op) {
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": x must be [N, C, H, W], got ", x.sizes());
  if (!ga.defined()) return;
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK_VALUE(ga.dim() == 3 && ga.size(0) == x.size(0) && ga.size(1) == x.size(1) && ga.size(2) == 2 &&
                        ga.scalar_type() == acc && ga.device() == x.device(),
                    op, ": ga must be [N, C, 2] = [", x.size(0), ", ", x.size(1), ", 2] of ", acc, " on ", x.device(),
                    ", got ", ga.sizes(), " of ", ga.scalar_type());
}

void epilogue_backward_params(EpilogueParams& p, const at::Tensor& c, const at::Tensor& gy, const at::Tensor& gr,
                              const at::Tensor& wr, const char* op) {
  p.grad = gy.numel() > 0;
  if (p.grad)
    TORCH_CHECK_VALUE(gy.sizes() == c.sizes() && gy.scalar_type() == c.scalar_type() && gy.device() == c.device(), op,
                      ": gy must match c in shape, dtype and device (", c.sizes(), ", ", c.scalar_type(), "), got ",
                      gy.sizes(), ", ", gy.scalar_type());  // any layout: the kernels read it in c's
  p.k = 0;
  if (gr.numel() == 0 && wr.numel() == 0) return;
  TORCH_CHECK_VALUE(gr.dim() == 4 && gr.size(0) == p.n && gr.size(2) == c.size(2) && gr.size(3) == c.size(3) &&
                        gr.size(1) >= 1 && gr.size(1) <= GANINV_EPILOGUE_MAX_K,
                    op, ": gr must be [N, K, H, W] = [", p.n, ", K <= ", GANINV_EPILOGUE_MAX_K, ", ", c.size(2), ", ",
                    c.size(3), "], got ", gr.sizes());
  const int64_t k = gr.size(1);
  TORCH_CHECK_VALUE(wr.dim() == 3 && wr.size(0) == p.n && wr.size(1) == k && wr.size(2) == p.c, op,
                    ": wr must be [N, K, C] = [", p.n, ", ", k, ", ", p.c, "], got ", wr.sizes());
  for (const at::Tensor* t : {&gr, &wr})
    TORCH_CHECK_VALUE(t->scalar_type() == c.scalar_type() && t->device() == c.device() && t->is_contiguous(), op,
                      ": gr and wr must be contiguous, of c's dtype and device (", c.scalar_type(), ", ", c.device(),
                      "), got ", t->scalar_type(), ", ", t->device());
  p.k = k;
}

void check_upfirdn_args(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                        int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1) {
  TORCH_CHECK_VALUE(x.dim() == 4, "upfirdn2d: x must be [N, C, H, W], got rank ", x.dim());
  TORCH_CHECK_VALUE(f.dim() == 1 || f.dim() == 2, "upfirdn2d: f must be 1-D (separable) or 2-D, got rank ",
                    f.dim());
  TORCH_CHECK_VALUE(f.numel() > 0, "upfirdn2d: f is empty");
  TORCH_CHECK_VALUE(f.scalar_type() == at::kFloat, "upfirdn2d: f must be float32, got ", f.scalar_type());
  TORCH_CHECK_VALUE(f.device() == x.device(), "upfirdn2d: f must be on x's device");
  TORCH_CHECK_VALUE(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1,
                    "upfirdn2d: up and down factors must be >= 1");
  constexpr int64_t kMaxFactor = int64_t(1) << 16, kMaxPad = int64_t(1) << 30;  // the kernels index in int32
  TORCH_CHECK_VALUE(upx <= kMaxFactor && upy <= kMaxFactor && downx <= kMaxFactor && downy <= kMaxFactor,
                    "upfirdn2d: up and down factors must be at most 65536, got up (", upx, ", ", upy, "), down (",
                    downx, ", ", downy, ")");
  for (const int64_t pad : {padx0, padx1, pady0, pady1})
    TORCH_CHECK_VALUE(pad >= -kMaxPad && pad <= kMaxPad, "upfirdn2d: paddings must lie within +-2^30, got (", padx0,
                      ", ", padx1, ", ", pady0, ", ", pady1, ")");
  const int64_t fw = f.size(-1), fh = f.dim() == 2 ? f.size(0) : f.size(0);
  const int64_t oh = upfirdn_out_size(x.size(2), upy, pady0, pady1, fh, downy);
  const int64_t ow = upfirdn_out_size(x.size(3), upx, padx0, padx1, fw, downx);
  TORCH_CHECK_VALUE(oh >= 1 && ow >= 1, "upfirdn2d: padding and filter leave an empty output (", oh, "x", ow, ")");
  TORCH_CHECK_VALUE(x.size(2) * upy + pady0 + pady1 >= 1 && x.size(3) * upx + padx0 + padx1 >= 1,
                    "upfirdn2d: padding crops the whole input");
}

int64_t upfirdn_out_size(int64_t in, int64_t up, int64_t pad0, int64_t pad1, int64_t taps, int64_t down) {
  const int64_t span = in * up + pad0 + pad1 - taps;  // floor division: the last window start / down
  return span < 0 ? 0 : span / down + 1;
}

at::Tensor prepare_filter(const at::Tensor& f2d, bool flip, double gain, at::ScalarType dtype) {
  // Without `flip` the kernel convolves: tap (ky, kx) reads f[fh-1-ky][fw-1-kx].
  at::Tensor k = flip ? f2d : f2d.flip({0, 1});
  return (k.to(at::kDouble) * gain).to(dtype).contiguous();
}

UpfirdnParams upfirdn_params(const at::Tensor& x, const at::Tensor& y, int upx, int upy, int downx, int downy,
                             int padx0, int pady0, int fw, int fh) {
  UpfirdnParams p{};
  p.n = x.size(0);
  p.c = x.size(1);
  p.in_h = x.size(2);
  p.in_w = x.size(3);
  p.out_h = y.size(2);
  p.out_w = y.size(3);
  for (int d = 0; d < 4; ++d) {
    p.sx[d] = x.stride(d);
    p.sy[d] = y.stride(d);
  }
  p.upx = upx; p.upy = upy; p.downx = downx; p.downy = downy;
  p.padx0 = padx0; p.pady0 = pady0; p.fw = fw; p.fh = fh;
  return p;
}

}  // namespace ganinv

namespace ganinv {
namespace {

at::Tensor one_pass(const at::Tensor& x, const at::Tensor& f2d, int64_t upx, int64_t upy, int64_t downx,
                    int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip,
                    double gain, at::MemoryFormat fmt, UpfirdnPass pass) {
  const int64_t fh = f2d.size(0), fw = f2d.size(1);
  const int64_t oh = upfirdn_out_size(x.size(2), upy, pady0, pady1, fh, downy);
  const int64_t ow = upfirdn_out_size(x.size(3), upx, padx0, padx1, fw, downx);
  at::Tensor y = maybe_poison(at::empty({x.size(0), x.size(1), oh, ow}, x.options().memory_format(fmt)));
  if (y.numel() == 0) return y;
  UpfirdnParams p = upfirdn_params(x, y, int(upx), int(upy), int(downx), int(downy), int(padx0), int(pady0),
                                   int(fw), int(fh));
  p.flip = flip;
  p.gain = gain;
  pass(x, f2d, y, p);
  return y;
}

}  // namespace

at::Tensor upfirdn2d_run(const at::Tensor& x_in, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                         int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip,
                         double gain, UpfirdnPass pass) {
  check_upfirdn_args(x_in, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1);
  const at::Tensor x = dense_4d_or_contiguous(x_in) ? x_in : x_in.contiguous();
  // The output (and a separable pass's intermediate) keeps x's layout.
  const auto fmt = is_channels_last(x) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  if (f.dim() == 2)
    return one_pass(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain, fmt, pass);
  // Separable: the 1-D filter along x, then along y, each with sqrt(gain) (the reference's split).
  const int64_t k = f.size(0);
  const double g = std::sqrt(gain);
  const at::Tensor t = one_pass(x, f.view({1, k}), upx, 1, downx, 1, padx0, padx1, 0, 0, flip, g, fmt, pass);
  return one_pass(t, f.view({k, 1}), 1, upy, 1, downy, 0, 0, pady0, pady1, flip, g, fmt, pass);
}

}  // namespace ganinv
