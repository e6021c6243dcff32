"""Upsample, pad, FIR-filter, downsample (NVIDIA's `upfirdn2d` semantics), reference path.

For each channel of x [N, C, H, W] and a filter f [fh, fw] (or separable [fw]):
    1. upsample: insert up-1 zeros after every pixel (size H*upy x W*upx);
    2. pad by (padx0, padx1, pady0, pady1) zeros; negative pads crop;
    3. convolve with f (a true convolution, i.e. f flipped, unless flip_filter) and multiply by gain;
    4. keep every down-th pixel.
Output width = (W*upx + padx0 + padx1 - fw + downx) // downx, likewise the height.
"""
import torch
import torch.nn.functional as F

from . import _backend, _ext
from .bias_act import OpArgumentError


def _parse_scaling(name, s):
    """(sx, sy) from an int or a pair of positive ints; `name` is the argument, for the error."""
    if type(s) is int and s >= 1:  # the common case, first (this runs on every call of every resampling layer)
        return s, s
    if isinstance(s, int):
        s = [s, s]
    if not (isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(v, int) and v >= 1 for v in s)):
        raise OpArgumentError(f'upfirdn2d: {name} must be a positive int or a pair of them, got {s!r}')
    return s[0], s[1]


def _parse_padding(p):
    """(padx0, padx1, pady0, pady1) from an int, (px, py) or four ints."""
    if type(p) is int:
        return p, p, p, p
    if isinstance(p, int):
        p = [p, p]
    if not (isinstance(p, (list, tuple)) and len(p) in (2, 4) and all(isinstance(v, int) for v in p)):
        raise OpArgumentError(f'upfirdn2d: padding must be an int or 2 or 4 ints, got {p!r}')
    if len(p) == 2:
        px, py = p
        p = [px, px, py, py]
    return tuple(p)  # (padx0, padx1, pady0, pady1)


def _filter_size(f):
    """(fw, fh) of a 2-D [fh, fw] or separable [fw] filter, (1, 1) for None."""
    if f is None:
        return 1, 1
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2) or f.numel() == 0:
        raise OpArgumentError('upfirdn2d: f must be a non-empty 1-D or 2-D tensor or None')
    return f.shape[-1], f.shape[0]


def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    """Make a filter tensor for `upfirdn2d`.

    Args:
        f: None, a scalar, a 1-D list/array (outer product taken unless separable) or a 2-D one.
        device: where to put the result.
        normalize: scale so the taps sum to 1.
        flip_filter: flip the taps.
        gain: overall gain (split as gain**(1/2) per axis for a separable filter).
        separable: keep 1-D; None -> 1-D input with at least 8 taps.

    Returns:
        float32 tensor [fh, fw] or, when separable, [fw].

    Raises:
        OpArgumentError: empty or more than 2-D taps, or 2-D taps with separable=True.
    """
    f = torch.as_tensor(1 if f is None else f, dtype=torch.float32)
    if f.ndim > 2 or f.numel() == 0:
        raise OpArgumentError(f'setup_filter: f must be a non-empty scalar, 1-D or 2-D, got shape {tuple(f.shape)}')
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if separable and f.ndim != 1:
        raise OpArgumentError(f'setup_filter: separable=True needs 1-D taps, got shape {tuple(f.shape)}')
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 1 and gain < 0:
        raise OpArgumentError(f'setup_filter: a separable filter applies its gain as sqrt(gain) per axis; '
                              f'gain={gain} < 0 needs the 2-D form (separable=False)')
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def _upfirdn2d_ref(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Pure-PyTorch upfirdn2d; differentiable to any order (w.r.t. x) by autograd.

    Args:
        x: [N, C, H, W].
        f: [fh, fw], separable [fw], or None (identity 1x1).
        up, down: int or (x, y) pair of positive ints.
        padding: int, (px, py) or (padx0, padx1, pady0, pady1); negative crops.
        flip_filter: False = convolution (f flipped), True = correlation.
        gain: overall gain.

    Returns:
        [N, C, outH, outW].
    """
    upx, upy = _parse_scaling('up', up)
    downx, downy = _parse_scaling('down', down)
    px0, px1, py0, py1 = _parse_padding(padding)
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    N, C, H, W = x.shape
    if upx > 1 or upy > 1:  # zero insertion: [.., H, 1, W, 1] padded to [.., H, upy, W, upx]
        x = F.pad(x.reshape(N, C, H, 1, W, 1), [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(N, C, H * upy, W * upx)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    if min(px0, px1, py0, py1) < 0:
        x = x[:, :, max(-py0, 0):x.shape[2] - max(-py1, 0), max(-px0, 0):x.shape[3] - max(-px1, 0)]
    f = f.to(x.dtype) * (gain ** (f.ndim / 2))
    if not flip_filter:  # conv2d correlates; flip the taps to convolve
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].expand(C, 1, *f.shape), groups=C)
    else:
        x = F.conv2d(x, f.reshape(1, 1, 1, -1).expand(C, 1, 1, f.numel()), groups=C)
        x = F.conv2d(x, f.reshape(1, 1, -1, 1).expand(C, 1, f.numel(), 1), groups=C)
    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl=None):
    """Upsample, pad, FIR-filter and downsample a batch of 2-D images (see the module docstring).

    Args:
        x: [N, C, H, W] float tensor.
        f: float32 filter [fh, fw], separable [fw], or None.
        up, down: int or (x, y) pair of positive ints.
        padding: int, (px, py) or (padx0, padx1, pady0, pady1); negative values crop.
        flip_filter: False = convolution, True = correlation.
        gain: overall scaling of the output.
        impl: None / 'auto' (follow GANINV_OPS), 'ref' or 'ext' (the kernel unless f needs a gradient, which
            only the reference gives).

    Returns:
        [N, C, outH, outW].
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise OpArgumentError(f'upfirdn2d: x must be a 4-D [N, C, H, W] tensor, got '
                              f'{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}')
    fw, fh = _filter_size(f)
    upx, upy = _parse_scaling('up', up)
    downx, downy = _parse_scaling('down', down)
    px0, px1, py0, py1 = _parse_padding(padding)
    if x.shape[3] * upx + px0 + px1 < fw or x.shape[2] * upy + py0 + py1 < fh:
        raise OpArgumentError(f'upfirdn2d: the padded input ({x.shape[2] * upy + py0 + py1}x'
                              f'{x.shape[3] * upx + px0 + px1}) is smaller than the filter ({fh}x{fw})')
    if f is not None and f.ndim == 1 and gain < 0:   # sqrt(gain) per axis is not real: the 2-D form takes it once
        f = torch.outer(f, f)
    trainable = f is not None and f.requires_grad and torch.is_grad_enabled()
    if _backend.resolve('upfirdn2d', x, impl) == 'ext' and not trainable:
        if f is None:
            f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
        return _ext.upfirdn2d_ext(x, f, upx, upy, downx, downy, px0, px1, py0, py1, bool(flip_filter), float(gain))
    return _upfirdn2d_ref(x, f, (upx, upy), (downx, downy), (px0, px1, py0, py1), flip_filter, gain)


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl=None):
    """Filter x with f, keeping its size (plus `padding`).

    Args:
        x: [N, C, H, W].
        f: [fh, fw] or separable [fw].
        padding: as in `upfirdn2d`, added to the size-preserving padding.
        flip_filter, gain, impl: as in `upfirdn2d`.

    Returns:
        [N, C, H + pady0 + pady1, W + padx0 + padx1].
    """
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl=None):
    """Upsample x by `up` with the interpolation filter f (gain multiplied by upx*upy).

    Args:
        x: [N, C, H, W].
        f: [fh, fw] or separable [fw].
        up: int or (x, y) pair.
        padding: as in `upfirdn2d`, added to the centring padding.
        flip_filter, gain, impl: as in `upfirdn2d`.

    Returns:
        [N, C, H*upy + pady0 + pady1, W*upx + padx0 + padx1].
    """
    upx, upy = _parse_scaling('up', up)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2, py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl=None):
    """Low-pass filter x with f, then keep every `down`-th pixel.

    Args:
        x: [N, C, H, W].
        f: [fh, fw] or separable [fw].
        down: int or (x, y) pair.
        padding: as in `upfirdn2d`, added to the centring padding.
        flip_filter, gain, impl: as in `upfirdn2d`.

    Returns:
        [N, C, (H + pady0 + pady1) // downy, (W + padx0 + padx1) // downx].
    """
    downx, downy = _parse_scaling('down', down)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2, py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
