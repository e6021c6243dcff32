// Autograd for the ganinv ops, in C++ (one Autograd kernel per op): a call from Python costs one trip
// through the dispatcher, with no Python autograd.Function around it (that wrapper cost ~10x a small
// kernel's own run time). The backward formulas call the ops through the dispatcher, so they are
// differentiable in turn: bias_act -> bias_act_grad(order 1) -> bias_act_grad(order 2); upfirdn2d's
// adjoint is upfirdn2d with up/down swapped and the filter flipped, differentiable to any order. Where no graph
// of the backward is built, bias_act's backward with a bias gradient is bias_act_backward (dx and db in one pass).
#include "ganinv_ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

namespace ganinv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using at::Tensor;

// Activations with a nonzero second derivative (csrc/ganinv_ops.h `Act`).
bool has_2nd(int64_t act) { return act == kTanh || act == kSigmoid || act == kElu || act == kSelu ||
                                   act == kSoftplus || act == kSwish; }

Tensor call_bias_act(const Tensor& x, const Tensor& b, int64_t dim, int64_t act, double alpha, double gain,
                     double clamp) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("ganinv::bias_act", "")
                       .typed<Tensor(const Tensor&, const Tensor&, int64_t, int64_t, double, double, double)>();
  return op.call(x, b, dim, act, alpha, gain, clamp);
}

Tensor call_bias_act_grad(const Tensor& g, const Tensor& x, const Tensor& b, int64_t order, int64_t dim,
                          int64_t act, double alpha, double gain, double clamp) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("ganinv::bias_act_grad", "")
                       .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, int64_t,
                                     double, double, double)>();
  return op.call(g, x, b, order, dim, act, alpha, gain, clamp);
}

std::tuple<Tensor, Tensor> call_bias_act_backward(const Tensor& g, const Tensor& x, const Tensor& b, int64_t dim,
                                                  int64_t act, double alpha, double gain, double clamp) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("ganinv::bias_act_backward", "")
                       .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t,
                                                         double, double, double)>();
  return op.call(g, x, b, dim, act, alpha, gain, clamp);
}

Tensor call_upfirdn2d(const Tensor& x, const Tensor& f, int64_t upx, int64_t upy, int64_t downx, int64_t downy,
                      int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip, double gain) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("ganinv::upfirdn2d", "")
                       .typed<Tensor(const Tensor&, const Tensor&, int64_t, int64_t, int64_t, int64_t, int64_t,
                                     int64_t, int64_t, int64_t, bool, double)>();
  return op.call(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain);
}

// db = sum of dx over every axis but `dim` (an empty b has no gradient).
Tensor reduce_bias(const Tensor& dx, const Tensor& b, int64_t dim) {
  if (!b.defined() || b.sym_numel() == 0) return Tensor();  // sym_*: shapes may be symbolic under torch.compile
  std::vector<int64_t> axes;
  for (int64_t i = 0; i < dx.dim(); ++i) if (i != dim) axes.push_back(i);
  return axes.empty() ? dx : dx.sum(axes);
}

struct BiasActArgs {  // the non-tensor arguments, kept between forward and backward
  int64_t dim, act;
  double alpha, gain, clamp;
};

void save_args(AutogradContext* ctx, const BiasActArgs& a) {
  ctx->saved_data["dim"] = a.dim;
  ctx->saved_data["act"] = a.act;
  ctx->saved_data["alpha"] = a.alpha;
  ctx->saved_data["gain"] = a.gain;
  ctx->saved_data["clamp"] = a.clamp;
}

BiasActArgs load_args(AutogradContext* ctx) {
  return {ctx->saved_data["dim"].toInt(), ctx->saved_data["act"].toInt(), ctx->saved_data["alpha"].toDouble(),
          ctx->saved_data["gain"].toDouble(), ctx->saved_data["clamp"].toDouble()};
}

// y = clamp(gain * act(x + b));  dy/dx . g = bias_act_grad(g, order 1), dy/db . g = its sum over non-`dim` axes.
struct BiasActFn : public torch::autograd::Function<BiasActFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& b, int64_t dim, int64_t act,
                        double alpha, double gain, double clamp) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, b});
    save_args(ctx, {dim, act, alpha, gain, clamp});
    return call_bias_act(x, b, dim, act, alpha, gain, clamp);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const BiasActArgs a = load_args(ctx);
    Tensor dx, db;
    if (a.act == kLinear && a.gain == 1.0 && a.clamp < 0) {
      // y = x + b: dx is the incoming gradient itself, as for a plain add (no copy; differentiable in g as is).
      dx = grads[0];
      if (ctx->needs_input_grad(1)) db = reduce_bias(dx, saved[1], a.dim);
    } else if (ctx->needs_input_grad(1) && saved[1].sym_numel() != 0 && !at::GradMode::is_enabled()) {
      // The bias gradient in the same pass (bias_act_backward is not differentiable: only without create_graph).
      std::tie(dx, db) = call_bias_act_backward(grads[0], saved[0], saved[1], a.dim, a.act, a.alpha, a.gain, a.clamp);
    } else {
      dx = call_bias_act_grad(grads[0], saved[0], saved[1], 1, a.dim, a.act, a.alpha, a.gain, a.clamp);
      if (ctx->needs_input_grad(1)) db = reduce_bias(dx, saved[1], a.dim);
    }
    return {dx, db, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// dx = g * gain * act^(k)(x + b) * mask: d/dg is the same op on the incoming gradient; d/dx (and d/db) is
// order k + 1 applied to (incoming gradient * g); zero for activations whose act'' vanishes.
struct BiasActGradFn : public torch::autograd::Function<BiasActGradFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& g, const Tensor& x, const Tensor& b, int64_t order,
                        int64_t dim, int64_t act, double alpha, double gain, double clamp) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({g, x, b});
    save_args(ctx, {dim, act, alpha, gain, clamp});
    ctx->saved_data["order"] = order;
    return call_bias_act_grad(g, x, b, order, dim, act, alpha, gain, clamp);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const BiasActArgs a = load_args(ctx);
    const int64_t order = ctx->saved_data["order"].toInt();
    const Tensor& gdx = grads[0];
    Tensor dg, dx, db;
    if (ctx->needs_input_grad(0))
      dg = call_bias_act_grad(gdx, saved[1], saved[2], order, a.dim, a.act, a.alpha, a.gain, a.clamp);
    if ((ctx->needs_input_grad(1) || ctx->needs_input_grad(2)) && has_2nd(a.act)) {
      TORCH_CHECK(order < 2, "bias_act: third-order gradients are not supported by the compiled kernels");
      dx = call_bias_act_grad(gdx * saved[0], saved[1], saved[2], 2, a.dim, a.act, a.alpha, a.gain, a.clamp);
      if (ctx->needs_input_grad(2)) db = reduce_bias(dx, saved[2], a.dim);
    }
    return {dg, dx, db, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// The adjoint of upfirdn2d: upfirdn2d with up and down swapped, the filter flipped, and pads that put each
// input pixel's taps back where they came from.
struct UpfirdnFn : public torch::autograd::Function<UpfirdnFn> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& f, int64_t upx, int64_t upy,
                        int64_t downx, int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1,
                        bool flip, double gain) {
    at::AutoDispatchBelowADInplaceOrView guard;
    Tensor y = call_upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain);
    ctx->save_for_backward({f});
    auto& d = ctx->saved_data;
    d["upx"] = upx; d["upy"] = upy; d["downx"] = downx; d["downy"] = downy;
    d["padx0"] = padx0; d["pady0"] = pady0; d["flip"] = flip; d["gain"] = gain;
    d["ih"] = x.sym_size(2); d["iw"] = x.sym_size(3); d["oh"] = y.sym_size(2); d["ow"] = y.sym_size(3);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!ctx->needs_input_grad(1),
                "upfirdn2d: gradients with respect to the filter are not supported by the compiled kernels");
    const Tensor f = ctx->get_saved_variables()[0];
    auto& d = ctx->saved_data;
    const int64_t upx = d["upx"].toInt(), upy = d["upy"].toInt(), downx = d["downx"].toInt(),
                  downy = d["downy"].toInt(), padx0 = d["padx0"].toInt(), pady0 = d["pady0"].toInt();
    // The pads depend on the sizes, which may be symbolic while torch.compile traces: specialise on them.
    auto concrete = [](const c10::SymInt& v) { return v.guard_int(__FILE__, __LINE__); };
    const c10::SymInt ih = d["ih"].toSymInt(), iw = d["iw"].toSymInt(), oh = d["oh"].toSymInt(),
                      ow = d["ow"].toSymInt();
    const int64_t fw = concrete(f.sym_size(-1)), fh = concrete(f.sym_size(0));
    variable_list out(12);
    const int64_t h = concrete(ih), w = concrete(iw);
    if (h == 0 || w == 0) {  // an empty input's (empty) gradient: no adjoint to an empty output
      out[0] = at::zeros({grads[0].size(0), grads[0].size(1), h, w}, grads[0].options());
      return out;
    }
    Tensor dx = call_upfirdn2d(grads[0], f, downx, downy, upx, upy, fw - padx0 - 1,
                               concrete(iw * upx - ow * downx + padx0 - upx + 1), fh - pady0 - 1,
                               concrete(ih * upy - oh * downy + pady0 - upy + 1), !d["flip"].toBool(),
                               d["gain"].toDouble());
    out[0] = dx;
    return out;
  }
};

Tensor bias_act_autograd(const Tensor& x, const Tensor& b, int64_t dim, int64_t act, double alpha, double gain,
                         double clamp) {
  return BiasActFn::apply(x, b, dim, act, alpha, gain, clamp);
}

Tensor bias_act_grad_autograd(const Tensor& g, const Tensor& x, const Tensor& b, int64_t order, int64_t dim,
                              int64_t act, double alpha, double gain, double clamp) {
  return BiasActGradFn::apply(g, x, b, order, dim, act, alpha, gain, clamp);
}

Tensor upfirdn2d_autograd(const Tensor& x, const Tensor& f, int64_t upx, int64_t upy, int64_t downx, int64_t downy,
                          int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip, double gain) {
  return UpfirdnFn::apply(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain);
}

}  // namespace
}  // namespace ganinv

TORCH_LIBRARY_IMPL(ganinv, Autograd, m) {
  m.impl("bias_act", &ganinv::bias_act_autograd);
  m.impl("bias_act_grad", &ganinv::bias_act_grad_autograd);
  m.impl("upfirdn2d", &ganinv::upfirdn2d_autograd);
}
