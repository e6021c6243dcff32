"""One LPIPS level as one op (compiled kernel + reference path): the per-pixel distance between unit-normalised,
channel-weighted features and a target,

    dist[n, h, w] = sum_c (g_c f_nchw / (|f_nhw| + eps) - t_nchw)^2,     |f_nhw| = sqrt(sum_c f_nchw^2).

With t = g f_t / (|f_t| + eps) (the target's features, prepared once) and g_c = sqrt(w_c / (H W)) this is LPIPS's
per-level term (`nets.vgg16.VGG16Features.distance`). As separate ops the chain (cast, norm, divide, scale,
subtract, square, sum, and their gradients) reads and writes the feature map about twenty times; the kernel reads
f and t twice forward (keeping |f| and s = sum_c g_c r_c f_c per pixel, 1/C of the data) and once backward:

    d dist / d f_c = 2 (g_c r_c - f_c s / ((|f| + eps) |f|)) / (|f| + eps),     r_c = g_c f_c / (|f| + eps) - t_c.
"""
import torch

from . import _backend, _ext
from .bias_act import OpArgumentError


def _check(f, t, g):
    if not isinstance(f, torch.Tensor) or f.ndim != 4:
        raise OpArgumentError(f'lpips_distance: f must be a [N, C, H, W] tensor, got '
                              f'{tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}')
    if not isinstance(t, torch.Tensor) or t.shape != f.shape:
        raise OpArgumentError(f'lpips_distance: t must match f {tuple(f.shape)}, got '
                              f'{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}')
    if not isinstance(g, torch.Tensor) or g.shape != (f.shape[1],):
        raise OpArgumentError(f'lpips_distance: g must be a [{f.shape[1]}] per-channel weight, got '
                              f'{tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__}')


def _compute_dtype(f):
    return torch.float64 if f.dtype == torch.float64 else torch.float32


def _lpips_ref(f, t, g, eps):
    """The reference: plain PyTorch ops, differentiable in every argument and to any order."""
    f = f.to(_compute_dtype(f))
    r = f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + eps) * g.view(1, -1, 1, 1) - t
    return r.square().sum(1)


def _image_dense(t):
    """True when each image of t is a contiguous [C, H, W] block (t may be a view into a [N, F] matrix)."""
    _, c, h, w = t.shape
    return (c <= 1 or t.stride(1) == h * w) and (h <= 1 or t.stride(2) == w) and \
        (w <= 1 or t.stride(3) == 1)


def _on(t, f, dt):
    """t in dtype dt on f's device (no call where it already is: this runs per level and step)."""
    return t if t.dtype == dt and t.device == f.device else t.to(device=f.device, dtype=dt)


class _LpipsFn(torch.autograd.Function):
    """The compiled forward and backward; the backward of the backward (create_graph) in PyTorch ops."""

    @staticmethod
    def forward(ctx, f, t, g, eps):
        dist, norm, s = _ext.lpips_distance_ext(f, t, g, eps)
        ctx.save_for_backward(f, t, g, norm, s)
        ctx.eps = eps
        return dist

    @staticmethod
    def backward(ctx, gd):
        f, t, g, norm, s = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a gradient that is itself differentiable
            return _grad_ref(gd, f, t, g, ctx.eps), None, None, None
        return _ext.lpips_distance_backward_ext(gd.to(t.dtype), f, t, g, norm, s, ctx.eps), None, None, None


def _grad_ref(gd, f, t, g, eps):
    """d dist / d f (the module docstring's formula) in differentiable PyTorch ops, in f's dtype."""
    x = f.to(_compute_dtype(f))
    nf = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    den = nf + eps
    g4 = g.view(1, -1, 1, 1)
    r = x / den * g4 - t
    s = (g4 * r * x).sum(1, keepdim=True)
    coef = s / (den * torch.where(nf > 0, nf, torch.ones_like(nf)))  # s = 0 where |f| = 0: no 0/0
    return (2 * gd.unsqueeze(1) / den * (g4 * r - x * coef)).to(f.dtype)


def lpips_distance(f, t, g, eps=1e-10, impl=None):
    """Per-pixel LPIPS distance of one feature level (see the module docstring).

    Args:
        f: features [N, C, H, W] (float32/64, or bf16/fp16 from autocast: computed in float32).
        t: target [N, C, H, W], already normalised and weighted (each image a contiguous [C, H, W] block for the
            kernel: a view into a [N, F] feature matrix qualifies).
        g: per-channel weight [C].
        eps: added to each pixel's channel norm before dividing.
        impl: None / 'auto' (follow GANINV_OPS), 'ref' or 'ext' (the kernel when f is contiguous and neither t nor
            g needs a gradient; otherwise the reference).

    Returns:
        [N, H, W] in float32 (float64 for float64 f).

    Raises:
        OpArgumentError: an argument of the wrong shape (one line naming it).
    """
    _check(f, t, g)
    dt = _compute_dtype(f)
    t, g = _on(t, f, dt), _on(g, f, dt)
    eps = float(eps)
    if _backend.resolve('lpips_distance', f, impl) == 'ext' and not (t.requires_grad or g.requires_grad):
        if not _image_dense(t):
            t = t.contiguous()
        return _LpipsFn.apply(f.contiguous(), t, g.contiguous(), eps)
    return _lpips_ref(f, t, g, eps)
