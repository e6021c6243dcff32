"""The tail of StyleGAN2's non-fused modulated convolution as one op (compiled kernel + reference path):

    y = clamp(act(c * d + noise + b, alpha) * gain, -clamp, +clamp) * e

c is the convolution's output [N, C, H, W]; d the demodulation coefficients [N, C] (or [N, C, 1, 1]); noise the
scaled per-pixel noise, broadcast over channels ([N|1, 1, H, W] or [H, W]; a per-channel noise takes the
reference path); b the bias [C]; e (optional, [N, C]) the next layer's modulation, when this output feeds only
that layer (so its modulated copy need not be made separately). Done as separate ops this chain reads and writes
the activation several times forward and backward; the compiled kernel reads c once forward, and gy and c once
backward, computing the gradients of d, noise, b and e as sums in the same pass. `modconv_epilogue_vjp` is the
backward, from c alone (nothing else activation-sized needs to be kept).
"""
import torch

from . import _backend, _ext
from .bias_act import OpArgumentError, _normalize_args, bias_act, bias_act_vjp


def _check(c, d, noise, b, e=None):
    """Checked shapes; returns the noise as a 4-D view [.,.,H,W] (None without one)."""
    if not isinstance(c, torch.Tensor) or c.ndim != 4:
        raise OpArgumentError(f'modconv_epilogue: c must be a [N, C, H, W] tensor, got '
                              f'{tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__}')
    N, C, H, W = c.shape
    for name, t in (('d', d), ('e', e)):
        if (t is not None or name == 'd') and (not isinstance(t, torch.Tensor) or t.numel() != N * C
                                               or t.shape[0] != N):
            raise OpArgumentError(f'modconv_epilogue: {name} must hold [N, C] = [{N}, {C}] coefficients, got '
                                  f'{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}')
    if b is not None and not isinstance(b, torch.Tensor):
        raise OpArgumentError(f'modconv_epilogue: b must be a [{C}] tensor or None, got {type(b).__name__}')
    if noise is None:
        return None
    if not isinstance(noise, torch.Tensor):
        raise OpArgumentError(f'modconv_epilogue: noise must be a tensor or None, got {type(noise).__name__}')
    n4 = noise.reshape((1,) * (4 - noise.ndim) + tuple(noise.shape)) if noise.ndim < 4 else noise
    # to c's shape exactly (a noise that would widen the output is refused); not torch.broadcast_shapes, which
    # costs several times the kernel at batch 1
    if n4.ndim != 4 or any(s != 1 and s != t for s, t in zip(n4.shape, c.shape)):
        raise OpArgumentError(f'modconv_epilogue: noise of shape {tuple(noise.shape)} does not broadcast to c '
                              f'{tuple(c.shape)}')
    return n4


def _as4(t, c):
    """[N, C] coefficients (any shape holding them) as [N, C, 1, 1]; None stays None."""
    return None if t is None else t.reshape(c.shape[0], c.shape[1], 1, 1)


def _prepare(c, d, noise, b, e, act, alpha, gain, clamp, impl):
    """Checked arguments: (noise as 4-D, (alpha, gain, clamp), the kernel's operands or None for the reference)."""
    n4 = _check(c, d, noise, b, e)
    consts = _normalize_args(c, b, 1, act, alpha, gain, clamp)
    ops = _ext_layout(c, d, n4, b, e) if _backend.resolve('modconv_epilogue', c, impl) == 'ext' else None
    return n4, consts, ops


def _ext_layout(c, d, n4, b, e):
    """The compiled kernel's operands (c contiguous or channels_last, c's dtype, d and e [N, C], noise
    [1|N, 1, H, W], all dense), or None if it does not apply. Runs per layer and step: no view or copy is made
    where the argument already has the form."""
    dt = c.dtype
    if not _dense(c) or d.dtype != dt or (b is not None and b.dtype != dt) or (e is not None and e.dtype != dt):
        return None
    if n4 is not None:
        _, nc, nh, nw = n4.shape
        _, _, h, w = c.shape
        if nc != 1 or nh != h or nw != w or n4.dtype != dt:
            return None
    return _flat(d, c), None if n4 is None else n4.contiguous(), None if b is None else b.contiguous(), _flat(e, c)


def _flat(t, c):
    """[N, C] coefficients as a contiguous [N, C] tensor (None stays None)."""
    if t is None:
        return None
    return (t if t.ndim == 2 else t.reshape(c.shape[0], c.shape[1])).contiguous()


def _any_needs_grad(*ts):
    for t in ts:
        if t is not None and t.requires_grad:
            return True
    return False


def _shaped(g, t):
    """The gradient g of input t in t's shape (None for an absent t)."""
    return None if t is None else g if g.shape == t.shape else g.reshape(t.shape)


def _dense(c):
    return c.is_contiguous() or c.is_contiguous(memory_format=torch.channels_last)


def modconv_epilogue(c, d, noise=None, b=None, act='linear', alpha=None, gain=None, clamp=None, e=None, impl=None):
    """y = clamp(act(c * d + noise + b) * gain, +-clamp) * e: the demodulation, noise, bias and activation.

    Args:
        c: convolution output [N, C, H, W].
        d: per-image, per-channel scale [N, C] or [N, C, 1, 1].
        noise: None, or broadcastable to c (the kernel covers [N|1, 1, H, W] and [H, W]).
        b: bias [C] or None.
        act, alpha, gain, clamp: as in `bias_act`.
        e: None, or a per-image, per-channel output scale [N, C] or [N, C, 1, 1] (the next layer's modulation).
        impl: None / 'auto' (follow GANINV_OPS), 'ref' or 'ext' (the kernel where it covers the layout: c
            contiguous or channels_last, noise shared over channels, one dtype, and no input needing a gradient;
            otherwise the reference). The kernel has no autograd of its own: differentiable callers that want it
            pair it with `modconv_epilogue_vjp` in an autograd function, as `nets.layers._DemodBiasAct` does.

    Returns:
        Tensor shaped like c, in c's dtype (and, from the kernel, c's memory format).

    Raises:
        OpArgumentError: an invalid argument (one line naming it).
    """
    n4, (alpha, gain, clamp), ops = _prepare(c, d, noise, b, e, act, alpha, gain, clamp, impl)
    if ops is not None and not (torch.is_grad_enabled() and _any_needs_grad(c, d, noise, b, e)):
        return _ext.modconv_epilogue_ext(c, *ops, act, alpha, gain, clamp)
    d4, e4 = _as4(d, c), _as4(e, c)
    cw = c.to(_wide(c, d4, n4, e4))   # float32 coefficients with a 16-bit c: computed in float32, rounded once
    s = cw * d4 if n4 is None else torch.addcmul(n4, cw, d4)
    y = bias_act(s, b, act=act, alpha=alpha, gain=gain, clamp=clamp, impl=impl)
    return (y if e4 is None else y * e4).to(c.dtype)


def _wide(c, *ts):
    """The widest floating dtype among c and the coefficient tensors (None skipped)."""
    dt = c.dtype
    for t in ts:
        if t is not None:
            dt = torch.promote_types(dt, t.dtype)
    return dt


def modconv_epilogue_vjp(gy, c, d, noise=None, b=None, act='linear', alpha=None, gain=None, clamp=None, e=None,
                         impl=None, gr=None, wr=None):
    """The gradients reaching (c, d, noise, b, e, wr) through `modconv_epilogue`, given its inputs.

    With y the output, z = clamp(act(s) * gain) at s = c d + noise + b (y = z e), the gradient reaching y is
    gyt = gy + wr^T gr when y also feeds a per-image 1x1 projection r[n] = wr[n] y[n] (ToRGB) whose gradient gr is
    given, else gy. With gs = dL/ds (from gyt e):  dc = gs d,  dd = sum_hw gs c,  dnoise = gs summed to noise's
    shape,  db = sum_{n,h,w} gs,  de = sum_hw gyt z,  dwr = sum_hw gr y^T. First order.

    Args:
        gy: gradient of the output, shaped like c, or None (only the projection's gradient reaches y).
        c, d, noise, b, act, alpha, gain, clamp, e, impl: as in `modconv_epilogue`.
        gr: None, or the gradient of the projection r [N, K, H, W] (K <= 4 for the kernel).
        wr: the projection's per-image weight [N, K, C] (with gr).

    Returns:
        (dc, dd, dnoise, db, de, dwr), each shaped like its input (None for an absent noise / b / e / projection).
    """
    if (gr is None) != (wr is None) or (gy is None and gr is None):
        raise OpArgumentError('modconv_epilogue_vjp: give gr and wr together, and gy, gr or both')
    n4, (alpha, gain, clamp), ops = _prepare(c, d, noise, b, e, act, alpha, gain, clamp, impl)
    if gr is not None:
        N, C, H, W = c.shape
        if wr.ndim != 3 or wr.shape[0] != N or wr.shape[2] != C or tuple(gr.shape) != (N, wr.shape[1], H, W):
            raise OpArgumentError(f'modconv_epilogue_vjp: gr {tuple(gr.shape)} and wr {tuple(wr.shape)} must be '
                                  f'[N, K, H, W] and [N, K, C] for c {tuple(c.shape)}')
        if ops is not None and (wr.shape[1] > 4 or gr.dtype != c.dtype or wr.dtype != c.dtype):
            ops = None
    if ops is not None:
        gc, gd, gn, gb, ge, gw = _ext.modconv_epilogue_backward_ext(
            gy if gy is None or gy.dtype == c.dtype else gy.to(c.dtype), c, *ops, act, alpha, gain, clamp,
            None if gr is None else gr.contiguous(), None if wr is None else wr.contiguous())   # gy: any layout
        return (gc, _shaped(gd, d), _shaped(gn, noise), gb, _shaped(ge, e), gw)
    d4, e4 = _as4(d, c), _as4(e, c)
    dt = _wide(c, d4, n4, e4)   # float32 coefficients with a 16-bit c: computed in float32
    cw = c.to(dt)
    s = cw * d4 if n4 is None else torch.addcmul(n4, cw, d4)
    gy = None if gy is None else gy.to(dt)
    if gr is not None:
        gp = torch.einsum('nkc,nkhw->nchw', wr.to(dt), gr.to(dt))
        gy = gp if gy is None else gy + gp
    ge = gw = None
    if e4 is not None or gr is not None:
        z = bias_act(s, b, act=act, alpha=alpha, gain=gain, clamp=clamp, impl=impl)
        if gr is not None:
            gw = torch.einsum('nkhw,nchw->nkc', gr.to(dt), z if e4 is None else z * e4).to(wr.dtype)
        if e4 is not None:
            ge = torch.einsum('nchw,nchw->nc', gy, z).reshape(e.shape).to(e.dtype)
            gy = gy * e4
    gs = bias_act_vjp(gy, s, b, act=act, alpha=alpha, gain=gain, clamp=clamp, impl=impl)
    gd = torch.einsum('nchw,nchw->nc', gs, cw).reshape(d.shape).to(d.dtype)   # one reduction, no gs * c temporary
    gn = None if n4 is None else gs.sum_to_size(n4.shape).reshape(noise.shape).to(noise.dtype)
    gb = None if b is None else gs.sum([0, 2, 3]).to(b.dtype)
    return (gs * d4).to(c.dtype), gd, gn, gb, ge, gw
