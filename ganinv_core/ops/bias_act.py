"""Fused bias + activation + gain + clamp (NVIDIA's `bias_act` semantics), reference path.

    y = clamp(act(x + b, alpha) * gain, -clamp, +clamp)

The bias `b` is broadcast along axis `dim` of `x`. `alpha`, `gain` default from the activation table.
"""
import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from . import _backend, _ext


class OpArgumentError(ValueError):
    """A custom op was called with an invalid argument (one line: the argument and the reason)."""


class Activation(NamedTuple):
    """One row of the activation table.

    Attributes:
        func: `func(x, alpha) -> y`, elementwise.
        def_alpha: default `alpha` (the negative slope of lrelu; unused by the others).
        def_gain: default output gain (sqrt(2) keeps the variance of relu-like activations).
        cuda_idx: the activation's index in the compiled kernel.
        ref: which tensor the analytic backward needs: 'y' (output), 'x' (input) or '' (none).
    """
    func: Callable
    def_alpha: float
    def_gain: float
    cuda_idx: int
    ref: str


_SQRT2 = math.sqrt(2)

ACTIVATIONS = {
    'linear':   Activation(lambda x, a: x,                         0.0, 1.0,    1, ''),
    'relu':     Activation(lambda x, a: F.relu(x),                 0.0, _SQRT2, 2, 'y'),
    'lrelu':    Activation(lambda x, a: F.leaky_relu(x, a),        0.2, _SQRT2, 3, 'y'),
    'tanh':     Activation(lambda x, a: torch.tanh(x),             0.0, 1.0,    4, 'y'),
    'sigmoid':  Activation(lambda x, a: torch.sigmoid(x),          0.0, 1.0,    5, 'y'),
    'elu':      Activation(lambda x, a: F.elu(x),                  0.0, 1.0,    6, 'y'),
    'selu':     Activation(lambda x, a: F.selu(x),                 0.0, 1.0,    7, 'y'),
    'softplus': Activation(lambda x, a: F.softplus(x),             0.0, 1.0,    8, 'y'),
    'swish':    Activation(lambda x, a: torch.sigmoid(x) * x,      0.0, _SQRT2, 9, 'x'),
}


def _normalize_args(x, b, dim, act, alpha, gain, clamp):
    """Validate the arguments of `bias_act`.

    Returns:
        (alpha, gain, clamp) as floats; clamp is None when off.

    Raises:
        OpArgumentError: a non-tensor x, an unknown act, a bad dim or a bias that does not fit x.
    """
    if not isinstance(x, torch.Tensor):
        raise OpArgumentError(f'bias_act: x must be a tensor, got {type(x).__name__}')
    if act not in ACTIVATIONS:
        raise OpArgumentError(f'bias_act: act={act!r} is unknown; valid: {", ".join(ACTIVATIONS)}')
    if not isinstance(dim, int) or not -x.ndim <= dim < x.ndim:
        raise OpArgumentError(f'bias_act: dim={dim!r} is not an axis of x (x shape {tuple(x.shape)})')
    if b is not None:
        if not isinstance(b, torch.Tensor) or b.ndim != 1:
            raise OpArgumentError('bias_act: b must be a 1-D tensor or None')
        if b.shape[0] != x.shape[dim]:
            raise OpArgumentError(f'bias_act: b has {b.shape[0]} elements but x.shape[{dim}] is {x.shape[dim]} '
                                  f'(x shape {tuple(x.shape)})')
    spec = ACTIVATIONS[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    if clamp is not None:
        clamp = float(clamp)
        if clamp < 0:  # NVIDIA's convention: a negative clamp means no clamping
            clamp = None
    return alpha, gain, clamp


def _bias_act_ref(x, b, dim, act, alpha, gain, clamp):
    """Pure-PyTorch bias_act; differentiable to any order by autograd.

    Args:
        x: input tensor, any shape.
        b: 1-D bias of length `x.shape[dim]`, or None.
        dim: the axis of `x` that `b` runs along.
        act: a key of `ACTIVATIONS`.
        alpha: activation parameter, or None for the table's default.
        gain: output scale, or None for the table's default.
        clamp: float >= 0, or None (or negative) for no clamping.

    Returns:
        Tensor shaped like `x`.
    """
    spec = ACTIVATIONS[act]
    alpha = spec.def_alpha if alpha is None else alpha
    gain = spec.def_gain if gain is None else gain
    if b is not None:
        x = x + b.reshape([-1 if i == dim % x.ndim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def bias_act(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl=None):
    """Add a bias along `dim`, apply `act`, scale by `gain`, clamp to [-clamp, clamp].

    Args:
        x: input tensor, e.g. [N, C, H, W].
        b: bias [x.shape[dim]] or None (used in x's dtype).
        dim: the axis `b` runs along (default 1, the channels of NCHW).
        act: 'linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus' or 'swish'.
        alpha: activation parameter (lrelu slope); None -> table default (0.2 for lrelu).
        gain: output scale; None -> table default (sqrt(2) for relu, lrelu, swish; else 1).
        clamp: clamp the output to +-clamp; None -> no clamp.
        impl: None / 'auto' (follow GANINV_OPS), 'ref' or 'ext'.

    Returns:
        Tensor shaped like `x`, same dtype.

    Raises:
        OpArgumentError: an invalid argument (one line naming it).
    """
    alpha, gain, clamp = _normalize_args(x, b, dim, act, alpha, gain, clamp)
    dim = dim % x.ndim
    if b is not None and b.dtype != x.dtype:
        b = b.to(x.dtype)   # the output is x's dtype on both paths (the reference would promote)
    if _backend.resolve('bias_act', x, impl) == 'ext':
        return _ext.bias_act_ext(x, b, dim, act, alpha, gain, clamp)
    return _bias_act_ref(x, b, dim, act, alpha, gain, clamp)


def bias_act_vjp(gy, x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl=None):
    """The gradient reaching `x` from `gy` through `bias_act(x, b, ...)`, given the saved input `x` only.

    For custom autograd functions that keep bias_act's input themselves. First order: the compiled kernel
    (`bias_act_grad`) or, on the reference path, autograd through a recomputed forward.

    Args:
        gy: gradient of the output, shaped like `x`.
        x, b, dim, act, alpha, gain, clamp, impl: as in `bias_act`.

    Returns:
        Tensor shaped like `x` (the bias gradient is its sum over every axis but `dim`).
    """
    alpha, gain, clamp = _normalize_args(x, b, dim, act, alpha, gain, clamp)
    dim = dim % x.ndim
    if _backend.resolve('bias_act', x, impl) == 'ext':
        return _ext.bias_act_grad_ext(gy, x, b, dim, act, alpha, gain, clamp)
    with torch.enable_grad():
        x_ = x.detach().requires_grad_(True)
        y = _bias_act_ref(x_, None if b is None else b.detach(), dim, act, alpha, gain, clamp)
        return torch.autograd.grad(y, x_, gy)[0]
