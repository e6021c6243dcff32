"""StyleGAN2 building blocks: equalised-LR layers, resampling convolution, modulated convolution."""
import math

import torch
import torch.nn.functional as F

from ..ops import bias_act, modconv_epilogue, modconv_epilogue_vjp, setup_filter, upfirdn2d
from ..ops.bias_act import ACTIVATIONS


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    """x / sqrt(mean(x^2) + eps) along `dim`."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class _FrozenWeightConv(torch.autograd.Function):
    """conv2d / conv_transpose2d whose weight needs no gradient (a frozen generator): saves only the weight.

    Autograd's own convolution node keeps its input for the weight gradient whether or not anyone asks for it;
    in an inversion that is one activation-sized tensor per layer held until the backward pass for nothing.
    The input gradient is the adjoint: conv_transpose2d for a conv2d, conv2d for a conv_transpose2d (both
    with the same weight, stride, padding and groups; exact sizes for the unit-stride conv and the stride-`up`
    transposed conv used here).
    """

    @staticmethod
    def forward(ctx, x, w, transposed, stride, padding, groups):
        ctx.save_for_backward(w)
        ctx.conf = transposed, stride, padding, groups
        conv = F.conv_transpose2d if transposed else F.conv2d
        return conv(x, w, stride=stride, padding=padding, groups=groups)

    @staticmethod
    def backward(ctx, gy):
        (w,) = ctx.saved_tensors
        transposed, stride, padding, groups = ctx.conf
        adjoint = F.conv2d if transposed else F.conv_transpose2d
        # w.to: under autocast the forward ran in the autocast dtype (gy's), while w was saved as given
        return adjoint(gy, w.to(gy.dtype), stride=stride, padding=padding, groups=groups), None, None, None, None, None


def _conv(x, w, transposed=False, stride=1, padding=0, groups=1):
    """F.conv2d (or conv_transpose2d), through `_FrozenWeightConv` when only x needs a gradient."""
    if torch.is_grad_enabled() and x.requires_grad and not w.requires_grad and (transposed or stride == 1):
        return _FrozenWeightConv.apply(x, w, transposed, stride, padding, groups)
    conv = F.conv_transpose2d if transposed else F.conv2d
    return conv(x, w, stride=stride, padding=padding, groups=groups)


class _DemodBiasAct(torch.autograd.Function):
    """y = bias_act(c * d + noise, b) * e: the non-fused modulated convolution's epilogue, keeping c alone.

    Autograd would keep both c (for d's gradient) and s = c * d + noise (bias_act's input): two activation-sized
    tensors per layer, and run the chain as five or more passes over the activation each way. This runs
    `ops.modconv_epilogue` (one compiled pass forward, one backward, where the kernels cover the layout) and
    keeps c only. e (or None) is the next layer's modulation. First order only (a second derivative raises).
    """

    @staticmethod
    def forward(ctx, c, d, noise, b, e, act, gain, clamp):
        ctx.save_for_backward(c, d, noise, b, e)
        ctx.args = act, gain, clamp
        return modconv_epilogue(c, d, noise, b, act=act, gain=gain, clamp=clamp, e=e)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        c, d, noise, b, e = ctx.saved_tensors
        act, gain, clamp = ctx.args
        grads = modconv_epilogue_vjp(gy, c, d, noise, b, act=act, gain=gain, clamp=clamp, e=e)[:5]
        return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad)), None, None, None)


class _DemodBiasActRGB(torch.autograd.Function):
    """`_DemodBiasAct` whose output y also feeds a per-image 1x1 projection r = wr y (ToRGB): returns (y, r).

    The projection's backward (y's gradient wr^T gr, added to the next layer's, and wr's gradient gr y^T, from y
    recomputed from c) runs inside the epilogue's backward pass: no y-sized gradient is written, summed and read
    back, and y itself is not kept for the projection (c is kept anyway). First order only.
    """

    @staticmethod
    def forward(ctx, c, d, noise, b, e, wr, act, gain, clamp):
        ctx.save_for_backward(c, d, noise, b, e, wr)
        ctx.args = act, gain, clamp
        ctx.set_materialize_grads(False)   # an unused y (the last block's) sends no gradient: none is made up
        y = modconv_epilogue(c, d, noise, b, act=act, gain=gain, clamp=clamp, e=e)
        return y, _project(y, wr)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, gr):
        c, d, noise, b, e, wr = ctx.saved_tensors
        act, gain, clamp = ctx.args
        if gy is None and gr is None:
            grads = (None,) * 6
        elif gr is None:   # the projection unused: the plain epilogue's backward
            grads = (*modconv_epilogue_vjp(gy, c, d, noise, b, act=act, gain=gain, clamp=clamp, e=e)[:5], None)
        else:
            grads = modconv_epilogue_vjp(gy, c, d, noise, b, act=act, gain=gain, clamp=clamp, e=e, gr=gr, wr=wr)
        return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad)), None, None, None)


def conv2d_resample(x, w, f=None, up=1, padding=0, groups=1, flip_weight=True):
    """Conv2d with optional FIR upsampling, NVIDIA's `conv2d_resample` numbers for down=1.

    Args:
        x: [N, groups*I, H, W].
        w: [O, I, kh, kw] (O divisible by groups).
        f: FIR filter [fh, fw] for up > 1 (from `setup_filter`).
        up: integer upsampling factor.
        padding: int, same on all sides (applied at the upsampled resolution).
        groups: grouped convolution (the fused modulated conv uses groups = batch).
        flip_weight: True = correlation (F.conv2d), False = true convolution.

    Returns:
        [N, O, H', W']; H' = H*up + 2*padding - kh + 1 for up > 1 with a 3x3 kernel (2H for conv0).
    """
    O, I, kh, kw = w.shape
    if up == 1:
        if not flip_weight and kh * kw > 1:
            w = w.flip([2, 3])
        return _conv(x, w, padding=padding, groups=groups)
    fw, fh = (1, 1) if f is None else (f.shape[-1], f.shape[0])
    # Padding of the equivalent "zero-insert, pad, filter, conv" pipeline.
    px0, px1 = padding + (fw + up - 1) // 2, padding + (fw - up) // 2
    py0, py1 = padding + (fh + up - 1) // 2, padding + (fh - up) // 2
    if kh == 1 and kw == 1:  # 1x1: convolve at low resolution, then upsample
        x = _conv(x, w, groups=groups)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up * up)
    # Transposed strided conv (zero insertion + conv in one), then the FIR with the remaining padding.
    if groups == 1:
        w = w.transpose(0, 1)
    else:
        w = w.reshape(groups, O // groups, I, kh, kw).transpose(1, 2).reshape(groups * I, O // groups, kh, kw)
    if flip_weight:  # conv_transpose2d convolves; pre-flip to correlate
        w = w.flip([2, 3])
    px0, px1, py0, py1 = px0 - (kw - 1), px1 - (kw - up), py0 - (kh - 1), py1 - (kh - up)
    pxt, pyt = max(min(-px0, -px1), 0), max(min(-py0, -py1), 0)
    x = _conv(x, w, transposed=True, stride=up, padding=[pyt, pxt], groups=groups)
    return upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up * up)


def _per_sample_1x1(x, w):
    """A 1x1 convolution with one weight per sample: x [N,I,H,W], w [N,O,I] -> [N,O,H,W], in x's layout."""
    N, I, H, W = x.shape
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return torch.bmm(w, x.reshape(N, I, H * W)).reshape(N, -1, H, W)
    y = torch.bmm(x.permute(0, 2, 3, 1).reshape(N, H * W, I), w.transpose(1, 2))  # NHWC rows, no copy
    return y.reshape(N, H, W, -1).permute(0, 3, 1, 2)


def modulated_conv2d(x, weight, styles, noise=None, up=1, padding=0, resample_filter=None, demodulate=True,
                     flip_weight=True, fused_modconv=True, epilogue=None, premodulated=False, post_scale=None,
                     rgb_weight=None, coef_fp32=False):
    """StyleGAN2 modulated (and demodulated) convolution; with `rgb_weight`, also the 1x1 projection of its output.

    See `_modulated_conv2d` for the arguments. `rgb_weight` [N, K, O] (ToRGB's per-sample weight, its input
    modulation already applied): return (y, r) with r[n] = rgb_weight[n] y[n] [N, K, H', W']; where the epilogue
    runs fused (`_DemodBiasActRGB`) the projection's backward runs inside the epilogue's.
    """
    out = _modulated_conv2d(x, weight, styles, noise, up, padding, resample_filter, demodulate, flip_weight,
                            fused_modconv, epilogue, premodulated, post_scale, rgb_weight, coef_fp32)
    if rgb_weight is None or isinstance(out, tuple):
        return out
    return out, _project(out, rgb_weight if coef_fp32 else rgb_weight.to(out.dtype))


def _project(y, w):
    """`_per_sample_1x1(y, w)` in y's dtype; a float32 w with a 16-bit y as two halves (w = hi + lo, each in y's
    dtype, one matmul of [hi; lo]), so w's own rounding (~8 bits in bf16) does not enter the result."""
    if w.dtype == y.dtype:
        return _per_sample_1x1(y, w)
    hi = w.to(y.dtype)
    lo = (w - hi.to(w.dtype)).to(y.dtype)
    r = _per_sample_1x1(y, torch.cat([hi, lo], 1))
    k = w.shape[1]
    return (r[:, :k].to(w.dtype) + r[:, k:].to(w.dtype)).to(y.dtype)


def _modulated_conv2d(x, weight, styles, noise=None, up=1, padding=0, resample_filter=None, demodulate=True,
                      flip_weight=True, fused_modconv=True, epilogue=None, premodulated=False, post_scale=None,
                      rgb_weight=None, coef_fp32=False):
    """StyleGAN2 modulated (and demodulated) convolution.

    w'[n,o,i] = weight[o,i] * s[n,i];  w''[n,o,i] = w'[n,o,i] / sqrt(sum_{i,k,k} w'^2 + 1e-8) (demodulate).
    Fused: one grouped conv with the per-sample weights w''. Non-fused: scale the input by s, plain conv with
    `weight`, scale the output by the demodulation coefficients (same numbers, no per-sample weights); a 1x1
    conv without demodulation or noise (ToRGB) instead multiplies x by its small per-sample weight [N,O,I].

    Args:
        x: [N, I, H, W]; weight: [O, I, kh, kw]; styles: [N, I].
        noise: added after the conv, broadcastable to [N, O, H', W'], or None.
        up, padding, resample_filter, flip_weight: as in `conv2d_resample`.
        demodulate: normalise each output channel to unit expected variance.
        fused_modconv: the grouped-conv form (faster for small batches / inference).
        epilogue: optional `bias_act` arguments (dict: b, act, gain, clamp) applied to the result; with a frozen
            weight, the non-fused form and demodulation it runs fused with the demodulation (`_DemodBiasAct`).
        premodulated: (non-fused, not float16) x is already x * styles (the previous layer applied them).
        post_scale: (non-fused) [N, O]: multiply the result by it, i.e. apply the next layer's modulation here,
            inside the fused epilogue where there is one (no separate modulated copy of the output).
        rgb_weight: [N, K, O] or None: on the fused-epilogue path, return (y, rgb_weight y) from
            `_DemodBiasActRGB` (elsewhere `modulated_conv2d` adds the projection).
        coef_fp32: (non-fused, x in bf16/fp16; experimental) keep what depends on the optimised latent and noise
            at float32 where it meets the activations: the input modulation's product (rounded once), the
            demodulation, the next layer's modulation, the noise, ToRGB's weight. In x's dtype those are rounded to
            8 (bf16) bits, so the image is a staircase function of w and the noise at that scale. The epilogue then
            takes the reference path (the kernels want one dtype), which is slower.

    Returns:
        [N, O, H', W'] in x's dtype.
    """
    N = x.shape[0]
    O, I, kh, kw = weight.shape
    if fused_modconv and (premodulated or post_scale is not None):
        raise ValueError('modulated_conv2d: premodulated / post_scale need the non-fused form')
    if premodulated and x.dtype == torch.float16 and demodulate:
        raise ValueError('modulated_conv2d: premodulated float16 input (its styles are rescaled here)')
    if x.dtype == torch.float16 and demodulate:  # rescale before the fp16 products to avoid overflow
        weight = weight * (1 / math.sqrt(I * kh * kw) / weight.norm(float('inf'), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float('inf'), dim=1, keepdim=True)
    if fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(N, 1, I, 1, 1)  # [N, O, I, kh, kw]
        if demodulate:
            dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
    elif demodulate:
        # sum_{i,k} (weight[o,i,k] s[n,i])^2 = sum_i s[n,i]^2 sum_k weight[o,i,k]^2: one [N,I]x[I,O] matmul,
        # no [N,O,I,kh,kw] per-sample weights (nor their backward)
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, O]
    if (not fused_modconv and kh == kw == 1 and up == 1 and not demodulate and noise is None and not premodulated
            and post_scale is None):
        # ToRGB: y[n] = (weight diag(s[n])) x[n] as one batched matmul with the tiny per-sample weight [N,O,I]:
        # no modulated copy of x is written (nor read back, nor differentiated) as the x * s form would
        x = _per_sample_1x1(x, (weight[:, :, 0, 0] * styles.reshape(N, 1, I)).to(x.dtype))
        return x if epilogue is None else bias_act(x, **epilogue)
    if not fused_modconv:
        cd = torch.float32 if coef_fp32 and x.dtype in (torch.bfloat16, torch.float16) else x.dtype
        if not premodulated:
            x = (x * styles.to(cd).reshape(N, I, 1, 1)).to(x.dtype)
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up, padding, flip_weight=flip_weight)
        e = None if post_scale is None else post_scale.to(cd).reshape(N, O, 1, 1)
        if demodulate:
            d = dcoefs.to(cd).reshape(N, O, 1, 1)
            n = None if noise is None else noise.to(cd)
            if epilogue is not None and not weight.requires_grad and (not torch.is_grad_enabled() or x.requires_grad):
                ep = {'act': 'linear', **epilogue}
                if not torch.is_grad_enabled():  # forward only: the op itself
                    return modconv_epilogue(x, d, n, e=e, **ep)
                if rgb_weight is not None:
                    return _DemodBiasActRGB.apply(x, d, n, ep.get('b'), e, rgb_weight.to(cd), ep['act'],
                                                  ep.get('gain'), ep.get('clamp'))
                return _DemodBiasAct.apply(x, d, n, ep.get('b'), e, ep['act'], ep.get('gain'), ep.get('clamp'))
            x = (x * d if n is None else torch.addcmul(n, x, d)).to(x.dtype)
        elif noise is not None:
            x = x + noise.to(x.dtype)
        x = x if epilogue is None else bias_act(x, **epilogue)
        return x if e is None else (x * e).to(x.dtype)
    if demodulate:
        w = w * dcoefs.reshape(N, O, 1, 1, 1)
    x = x.reshape(1, N * I, *x.shape[2:])
    x = conv2d_resample(x, w.reshape(N * O, I, kh, kw).to(x.dtype), resample_filter, up, padding, groups=N,
                        flip_weight=flip_weight)
    x = x.reshape(N, O, *x.shape[2:])
    x = x if noise is None else x.add_(noise.to(x.dtype))
    return x if epilogue is None else bias_act(x, **epilogue)


class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalised learning rate: y = act(x @ (W * lr_mul / sqrt(in)).T + b * lr_mul).

    Args:
        in_features, out_features: sizes.
        bias: learnable bias.
        activation: a key of `ops.ACTIVATIONS`.
        lr_multiplier: equalised-LR multiplier (0.01 in the mapping network).
        bias_init: initial bias value (1 for the style affines).
    """

    def __init__(self, in_features, out_features, bias=True, activation='linear', lr_multiplier=1, bias_init=0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        """x: [N, in_features] -> [N, out_features]."""
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(torch.nn.Module):
    """Equalised-LR convolution with optional FIR upsampling (the resnet `skip` of the generator).

    Args:
        in_channels, out_channels, kernel_size: sizes.
        bias: learnable bias; activation: a key of `ops.ACTIVATIONS`.
        up: upsampling factor (1 or 2); resample_filter: low-pass filter taps.
        conv_clamp: clamp the output to +-conv_clamp, or None.
        channels_last: store the weight channels-last.
    """

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation='linear', up=1,
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False):
        super().__init__()
        self.activation, self.up, self.conv_clamp = activation, up, conv_clamp
        self.register_buffer('resample_filter', setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = ACTIVATIONS[activation].def_gain
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=fmt))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x, gain=1):
        """x: [N, I, H, W] -> [N, O, H*up, W*up]."""
        w = self.weight * self.weight_gain
        x = conv2d_resample(x, w.to(x.dtype), self.resample_filter, self.up, self.padding,
                            flip_weight=(self.up == 1))
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

