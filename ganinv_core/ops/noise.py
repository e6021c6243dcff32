"""Lag-1 circular autocorrelations of noise maps (NVIDIA's noise regulariser's inner term) as one op (compiled
kernel + reference path):

    a[n, c, 0] = mean_hw x[n, c, h, w] x[n, c, h, w - 1],     a[n, c, 1] = mean_hw x[n, c, h, w] x[n, c, h - 1, w]

(indices modulo W and H: ``x * x.roll(1, 3)`` and ``x * x.roll(1, 2)``, averaged). As separate ops each direction
is a roll (a copy), a product and a mean forward, and rolls, products and sums backward; the kernel reads x once
forward and once backward, where  d a_0 / d x = (x[w - 1] + x[w + 1]) / (H W)  (and likewise along h).
"""
import torch

from . import _backend, _ext
from .bias_act import OpArgumentError


def _autocorr_ref(x):
    """The reference: plain PyTorch ops (differentiable to any order), in float32 (float64 for float64 x)."""
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    return torch.stack([(x * x.roll(1, 3)).mean((2, 3)), (x * x.roll(1, 2)).mean((2, 3))], -1)


def _grad_ref(ga, x):
    """d a / d x (the module docstring's formula) in differentiable PyTorch ops, in x's dtype."""
    xf = x.to(ga.dtype)
    gx = ga[..., :1, None] * (xf.roll(1, 3) + xf.roll(-1, 3)) + ga[..., 1:, None] * (xf.roll(1, 2) + xf.roll(-1, 2))
    return (gx / (x.shape[2] * x.shape[3])).to(x.dtype)


class _AutocorrFn(torch.autograd.Function):
    """The compiled forward and backward; the backward of the backward (create_graph) in PyTorch ops."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _ext.noise_autocorr_ext(x)

    @staticmethod
    def backward(ctx, ga):
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _grad_ref(ga, x)
        return _ext.noise_autocorr_backward_ext(ga.contiguous(), x)


def noise_autocorr(x, impl=None):
    """Lag-1 circular autocorrelations of every [H, W] plane along w and h (see the module docstring).

    Args:
        x: [N, C, H, W].
        impl: None / 'auto' (follow GANINV_OPS), 'ref' or 'ext'.

    Returns:
        [N, C, 2] (along w, along h) in float32 (float64 for float64 x).

    Raises:
        OpArgumentError: x is not a 4-D tensor.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise OpArgumentError(f'noise_autocorr: x must be a [N, C, H, W] tensor, got '
                              f'{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}')
    if _backend.resolve('noise_autocorr', x, impl) == 'ext':
        return _AutocorrFn.apply(x.contiguous())
    return _autocorr_ref(x)
