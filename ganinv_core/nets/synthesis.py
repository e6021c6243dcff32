"""StyleGAN2 synthesis network: ws [N, num_ws, w_dim] -> image [N, C, R, R] in about [-1, 1]."""
import math

import numpy as np
import torch

from ..ops import bias_act, setup_filter, upsample2d
from ..ops.bias_act import ACTIVATIONS
from .layers import Conv2dLayer, FullyConnectedLayer, modulated_conv2d

_NOISE_MODES = ('random', 'const', 'none')


class SynthesisLayer(torch.nn.Module):
    """Modulated conv (optionally 2x up) + per-pixel noise + bias + activation.

    Args:
        in_channels, out_channels, w_dim, resolution: sizes (resolution = output size).
        kernel_size: conv size; up: 1 or 2; use_noise: has `noise_const`/`noise_strength`.
        activation: a key of `ops.ACTIVATIONS`; resample_filter: FIR taps for up=2.
        conv_clamp: clamp the output to +-conv_clamp*gain, or None.
        channels_last: store the weight channels-last.
    """

    #: (experimental, off) float32 latent-dependent coefficients in bf16/fp16 blocks: `modulated_conv2d`'s
    #: `coef_fp32` (slower: the epilogue takes its reference path); see benchmarks/precision_check.py `bf16-hp`
    coef_fp32 = False

    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation='lrelu', resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False):
        super().__init__()
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.register_buffer('resample_filter', setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].def_gain
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=fmt))
        if use_noise:
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1, noise=None, styles=None,
                post_styles=None, rgb_weight=None):
        """x [N, I, H, W], w [N, w_dim] -> [N, O, H*up, W*up] (and with `rgb_weight`, its projection).

        `noise` ([N|1, 1, R, R], optional) replaces `noise_const`; it is still scaled by `noise_strength`.
        Non-fused only: `styles` (= ``self.affine(w)``) says x was already modulated by them (by the previous
        layer's epilogue); `post_styles` [N, O] (the next layer's styles) are applied to the output.
        `rgb_weight` [N, K, O] (ToRGB's per-sample weight): return (y, r = rgb_weight y), see `modulated_conv2d`.
        """
        premodulated = styles is not None
        styles = self.affine(w) if styles is None else styles
        n = None
        if self.use_noise:
            if noise is not None:
                n = noise * self.noise_strength
            elif noise_mode == 'const':
                n = self.noise_const * self.noise_strength
            elif noise_mode == 'random':
                n = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) \
                    * self.noise_strength
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return modulated_conv2d(x, self.weight, styles, n, self.up, self.padding, self.resample_filter,
                                flip_weight=(self.up == 1), fused_modconv=fused_modconv,
                                epilogue=dict(b=self.bias.to(x.dtype), act=self.activation,
                                              gain=self.act_gain * gain, clamp=clamp),
                                premodulated=premodulated, post_scale=post_styles, rgb_weight=rgb_weight,
                                coef_fp32=self.coef_fp32)


class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 conv (no demodulation) to image channels; styles scaled by 1/sqrt(in * k^2)."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=fmt))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x, w, fused_modconv=True, in_scale=None):
        """x [N, I, H, W], w [N, w_dim] -> [N, img_channels, H, W].

        `in_scale` [N, I] (no zeros): x arrives multiplied by it per channel (the next block's modulation, applied
        by the layer before); the per-sample weight divides it out again, so the result is the same.
        """
        styles = self.affine(w) * self.weight_gain
        if in_scale is not None:
            styles = styles / in_scale
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return self.finish(x)

    def per_sample_weight(self, w, in_scale=None):
        """[N, img_channels, I]: the modulated 1x1 weight that `forward` applies (non-fused), for a caller that
        computes the projection itself (`SynthesisBlock`, inside conv1's epilogue); then `finish` the result."""
        styles = self.affine(w) * self.weight_gain
        if in_scale is not None:
            styles = styles / in_scale
        return self.weight[:, :, 0, 0] * styles.unsqueeze(1)

    def finish(self, r):
        """Bias and clamp of the projection r [N, img_channels, H, W]."""
        return bias_act(r, self.bias.to(r.dtype), clamp=self.conv_clamp)


class SynthesisBlock(torch.nn.Module):
    """One resolution: (const | conv0 up 2x) -> conv1 -> (torgb), with the skip / resnet / orig image path.

    Non-fused (skip / orig), conv1 computes ToRGB's projection of its output itself (`fuse_torgb`): the two
    backward passes become one (`nets.layers._DemodBiasActRGB`); the numbers are ToRGB's.

    Args:
        in_channels: 0 for the first (4x4, learned `const`) block.
        out_channels, w_dim, resolution, img_channels: sizes.
        is_last: the final block (always has torgb).
        architecture: 'skip' (default), 'resnet' or 'orig'.
        resample_filter, conv_clamp: passed to the layers.
        use_fp16: run this block in reduced precision (`half_dtype` of forward): float16 on CUDA only,
            bfloat16 on any device.
        fp16_channels_last: channels-last memory format when in reduced precision.
        fused_modconv_default: None = NVIDIA ADA's rule (fused iff eval and (fp32 or batch 1));
            True / False / 'inference_only' (= not training) as in the stylegan3 repository.
        **layer_kwargs: extra SynthesisLayer arguments (kernel_size, use_noise, activation).
    """

    #: conv1 computes ToRGB's projection (non-fused, not resnet): one backward pass for both
    fuse_torgb = True

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture='skip',
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, use_fp16=False, fp16_channels_last=False,
                 fused_modconv_default=None, **layer_kwargs):
        super().__init__()
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"architecture={architecture!r} is unknown; valid: 'orig', 'skip', 'resnet'")
        self.in_channels, self.resolution, self.is_last = in_channels, resolution, is_last
        self.architecture, self.use_fp16 = architecture, use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.fused_modconv_default = fused_modconv_default
        self.register_buffer('resample_filter', setup_filter(list(resample_filter)))
        self.num_conv = self.num_torgb = 0
        kw = dict(resample_filter=resample_filter, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, **kw, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, **kw, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, 1, bias=False, up=2, resample_filter=resample_filter,
                                    channels_last=self.channels_last)
        self.noise_keys = tuple(f'b{resolution}.{name}' for name in ('conv0', 'conv1') if hasattr(self, name))

    def plan(self, N, device, force_fp32=False, fused_modconv=None, half_dtype=torch.float16):
        """(dtype, fused_modconv) this block runs with for a batch of N on `device`."""
        if half_dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f'synthesis: half_dtype must be torch.float16 or torch.bfloat16, got {half_dtype}')
        # NVIDIA's rule (fp16 only on CUDA), extended to bf16, which every device computes in
        half = self.use_fp16 and not force_fp32 and (device.type == 'cuda' or half_dtype == torch.bfloat16)
        dtype = half_dtype if half else torch.float32
        if fused_modconv is None:
            d = self.fused_modconv_default
            if d is None:
                fused_modconv = not self.training and (dtype == torch.float32 or N == 1)
            else:
                fused_modconv = (not self.training) if d == 'inference_only' else bool(d)
        return dtype, bool(fused_modconv)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, noise_mode='const', noise=None,
                half_dtype=torch.float16, channels_last=None, in_styles=None, out_styles=None):
        """x [N, I, R/2, R/2] (None for b4), img [N, C, R/2, R/2] or None, ws [N, num_conv + num_torgb, w_dim].

        `channels_last` (None: the block's `fp16_channels_last`) lays x out channels-last in reduced precision.
        Non-fused, not float16 (`SynthesisNetwork` decides): `in_styles` [N, I] says x arrives already modulated
        for conv0 (by the previous block), `out_styles` [N, O] (no zeros) that the next block's conv0 modulation is
        to be applied to the returned x (ToRGB divides it out).

        Returns:
            (x [N, O, R, R], img [N, C, R, R] float32 or None).
        """
        w_iter = iter(ws.unbind(dim=1))
        N = ws.shape[0]
        dtype, fused_modconv = self.plan(N, ws.device, force_fp32, fused_modconv, half_dtype)
        half = dtype != torch.float32
        cl = self.channels_last if channels_last is None else channels_last
        fmt = torch.channels_last if half and cl else torch.contiguous_format
        nz = [None, None] if noise is None else [noise.get(k) for k in self.noise_keys]
        lk = dict(fused_modconv=fused_modconv, noise_mode=noise_mode)
        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=fmt).unsqueeze(0).expand(N, -1, -1, -1)
            w1 = next(w_iter)
            rgb = self._fused_torgb(w_iter, fused_modconv, out_styles)
            x = self.conv1(x, w1, noise=nz[0], post_styles=out_styles, rgb_weight=rgb, **lk)
            x, rgb = x if rgb is not None else (x, None)
        else:
            x = x.to(dtype=dtype, memory_format=fmt)
            y = self.skip(x, gain=np.sqrt(0.5)) if self.architecture == 'resnet' else None
            w0, w1 = next(w_iter), next(w_iter)
            # Non-fused: conv0's output feeds conv1 alone, so conv0's epilogue applies conv1's modulation (no
            # separate modulated copy, nor its backward). Not in float16, where modulated_conv2d rescales styles.
            s1 = self.conv1.affine(w1) if not fused_modconv and dtype != torch.float16 else None
            x = self.conv0(x, w0, noise=nz[0], styles=in_styles, post_styles=s1, **lk)
            rgb = self._fused_torgb(w_iter, fused_modconv, out_styles)
            x = self.conv1(x, w1, noise=nz[1], styles=s1, post_styles=out_styles, rgb_weight=rgb,
                           gain=np.sqrt(0.5) if y is not None else 1, **lk)
            x, rgb = x if rgb is not None else (x, None)
            x = x if y is None else y.add_(x)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == 'skip':
            if rgb is not None:   # projected inside conv1 (its backward too)
                y = self.torgb.finish(rgb)
            else:
                y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv, in_scale=out_styles)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y
        return x, img

    def _fused_torgb(self, w_iter, fused_modconv, out_styles):
        """ToRGB's per-sample weight when conv1 is to compute the projection (non-fused, its output is ToRGB's
        input: not resnet; `SynthesisNetwork.fuse_torgb`), taking ToRGB's w from `w_iter`; else None."""
        if fused_modconv or self.architecture == 'resnet' or not self.fuse_torgb or not hasattr(self, 'torgb'):
            return None
        return self.torgb.per_sample_weight(next(w_iter), in_scale=out_styles)


def _nonzero(s, tiny=1e-20):
    """s with |s| < tiny replaced by tiny: styles that ToRGB divides by (a style of 0 would make 0/0 there; any
    |s| < tiny modulates its channel by ~0 either way)."""
    return torch.where(s.abs() < tiny, tiny, s)


class SynthesisNetwork(torch.nn.Module):
    """Blocks b4 ... b{img_resolution}; block R has min(channel_base // R, channel_max) channels.

    Args:
        w_dim, img_resolution (power of 2, >= 4), img_channels: sizes.
        channel_base, channel_max: channel counts (32768, 512 in config-f).
        num_fp16_res: the top resolutions that run in reduced precision (fp16 on CUDA, or bf16; 0 = none).
        **block_kwargs: SynthesisBlock arguments (architecture, conv_clamp, resample_filter, ...).
    """

    #: apply each block's conv0 modulation in the previous block's last epilogue (non-fused, not float16)
    fold_modulation = True

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=0,
                 **block_kwargs):
        super().__init__()
        log2 = int(np.log2(img_resolution)) if img_resolution >= 4 else 0
        if img_resolution < 4 or 2 ** log2 != img_resolution:
            raise ValueError(f'img_resolution={img_resolution} must be a power of 2, at least 4')
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for r in self.block_resolutions:
            block = SynthesisBlock(channels[r // 2] if r > 4 else 0, channels[r], w_dim, r, img_channels,
                                   is_last=(r == img_resolution), use_fp16=(r >= fp16_resolution), **block_kwargs)
            self.num_ws += block.num_conv
            if r == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f'b{r}', block)
        self._noise_layers = [(k, r) for r in self.block_resolutions for k in getattr(self, f'b{r}').noise_keys
                              if getattr(self, f'b{r}').conv1.use_noise]
        self._noise_names = frozenset(k for k, _ in self._noise_layers)

    def noise_layers(self):
        """[(layer_name, resolution)] of the layers with noise, in forward order, e.g. ('b4.conv1', 4)."""
        return list(self._noise_layers)

    def forward(self, ws, noise_mode='const', force_fp32=False, fused_modconv=None, noise=None,
                half_dtype=torch.float16, channels_last=None):
        """Render images.

        Args:
            ws: [N, num_ws, w_dim].
            noise_mode: 'const' (the stored noise_const), 'random' (fresh randn) or 'none'.
            force_fp32: never use reduced precision, even in the fp16 blocks.
            half_dtype: the reduced precision of the fp16 blocks (the top `num_fp16_res` resolutions):
                torch.float16 (NVIDIA's; CUDA only) or torch.bfloat16 (any device).
            channels_last: lay the reduced-precision blocks' activations out channels-last (True / False;
                None = as built, `fp16_channels_last`).
            fused_modconv: None = the default rule (see SynthesisBlock), True / False to force.
            noise: optional {layer_name: [N|1, 1, R, R]} replacing noise_const for those layers (any noise_mode).

        Returns:
            [N, img_channels, R, R] float32.
        """
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f'synthesis: ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}')
        if noise_mode not in _NOISE_MODES:
            raise ValueError(f"synthesis: noise_mode={noise_mode!r} is unknown; valid: {', '.join(_NOISE_MODES)}")
        if noise is not None and not self._noise_names.issuperset(noise):
            bad = sorted(set(noise) - self._noise_names)
            raise ValueError(f'synthesis: noise has unknown layer names {bad}; see noise_layers()')
        blocks = [getattr(self, f'b{r}') for r in self.block_resolutions]
        plans = [b.plan(ws.shape[0], ws.device, force_fp32, fused_modconv, half_dtype) for b in blocks]
        x = img = s_in = None
        w_idx = 0
        for i, block in enumerate(blocks):
            # A block's output feeds its ToRGB and the next block's conv0, which starts with x * s: with both
            # blocks non-fused (and not float16, where the styles are rescaled), that product is done by this
            # block's last epilogue instead (no separate copy, nor its backward) and ToRGB divides s out again.
            s_out = None
            if (self.fold_modulation and i + 1 < len(blocks) and block.architecture != 'resnet'
                    and all(not fused and dtype != torch.float16 for dtype, fused in plans[i:i + 2])):
                s_out = _nonzero(blocks[i + 1].conv0.affine(ws[:, w_idx + block.num_conv]))
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), force_fp32=force_fp32,
                           fused_modconv=plans[i][1], noise_mode=noise_mode, noise=noise, half_dtype=half_dtype,
                           channels_last=channels_last, in_styles=s_in, out_styles=s_out)
            s_in = s_out
            w_idx += block.num_conv
        return img
