"""The compiled ops: loading, fake kernels, and the entry points the public ops call.

`torch.ops.ganinv.{bias_act, bias_act_grad, bias_act_backward, upfirdn2d, modconv_epilogue[_backward],
lpips_distance[_backward], noise_autocorr[_backward]}` come from `ganinv_core._C` (built by setup.py) or, for a
device whose kernels it lacks, from a just-in-time build (`_jit`). The autograd of bias_act, bias_act_grad and
upfirdn2d lives in C++ next to the schemas (csrc/autograd.cpp: no Python on the forward or backward path):
bias_act's backward is `bias_act_grad(order=1)`, whose own backward uses `order=2` (second derivatives; third order
is not supported), or, when the bias needs a gradient and no graph of the backward is built, `bias_act_backward` (dx
and the bias gradient in one pass), or for a plain bias add (linear, gain 1, no clamp) the incoming gradient itself;
upfirdn2d's backward is upfirdn2d with up/down swapped, so any order works. The epilogue pair is first order only,
called by `nets.layers._DemodBiasAct`; the lpips pair's autograd is `ops.lpips._LpipsFn`, the noise pair's
`ops.noise._AutocorrFn`.
"""
import os
import threading
from pathlib import Path

import torch

from . import _jit
from ._fast import device_type

OPS = ('bias_act', 'bias_act_grad', 'upfirdn2d', 'bias_act_backward', 'modconv_epilogue', 'modconv_epilogue_backward', 'lpips_distance',
       'lpips_distance_backward', 'noise_autocorr', 'noise_autocorr_backward')
AUTOGRAD_OPS = OPS[:3]  # with C++ autograd kernels
ACT_CODES = {'linear': 0, 'relu': 1, 'lrelu': 2, 'tanh': 3, 'sigmoid': 4, 'elu': 5, 'selu': 6, 'softplus': 7,
             'swish': 8}  # csrc/ganinv_ops.h `Act`
DTYPES = {'cpu': (torch.float32, torch.float64, torch.float16, torch.bfloat16),  # 16-bit: computed in float32
          'cuda': (torch.float32, torch.float64, torch.float16, torch.bfloat16)}
_DISPATCH_KEY = {'cpu': 'CPU', 'cuda': 'CUDA'}

_lock = threading.Lock()
_status = {}        # device type -> (ok, reason)
_import_error = []  # why `import ganinv_core._C` failed ([] = not tried / fine)
_registered = []


class ExtUnavailableError(RuntimeError):
    """The compiled kernels were requested (GANINV_OPS=ext / impl='ext') but cannot be used."""


def csrc_dir():
    """The kernel sources: next to the package (editable install) or inside it; None if absent."""
    here = Path(__file__).resolve().parent.parent  # ganinv_core/
    for d in (here.parent / 'csrc', here / 'csrc'):
        if (d / 'registration.cpp').is_file():
            return d
    return None


def _has_kernels(key, ops=OPS):
    try:
        return all(torch._C._dispatch_has_kernel_for_dispatch_key(f'ganinv::{op}', key) for op in ops)
    except RuntimeError:  # the schemas are not registered at all
        return False


def _import_c():
    if _has_kernels('CPU') or _import_error:
        return
    try:
        import ganinv_core._C  # noqa: F401  (registers the ops)
    except ImportError as e:
        _import_error.append(f'ganinv_core._C is not importable ({e})')


def _jit_enabled():
    return os.environ.get('GANINV_JIT', '1') != '0'


def _jit_build(name, sources, with_cuda, missing):
    """Build and load `name` just in time; (ok, reason). `missing` says what the installed `_C` lacks."""
    if not _jit_enabled():
        return False, f'{missing}; just-in-time build disabled (GANINV_JIT=0)'
    src = csrc_dir()
    if src is None:
        return False, f'{missing}, and the kernel sources (csrc/) are not installed'
    try:
        _jit.build_and_load(name, sources(src), with_cuda=with_cuda)
    except _jit.BuildError as e:
        return False, str(e)
    return True, ''


def _load(dev):
    """Make the kernels for device type `dev` available if possible; return (ok, reason)."""
    if dev not in _DISPATCH_KEY:
        return False, f'no compiled kernels for device type {dev!r}'
    if dev == 'cuda' and torch.version.cuda is None:
        return False, 'this torch build has no CUDA support'
    _import_c()
    if _has_kernels('CPU', OPS[:1]) and not _has_kernels('CPU'):  # a second library could not redefine them
        return False, ('the loaded ganinv_core._C lacks some ops (built from older sources: reinstall with '
                       '`pip install --no-build-isolation -e .`)')
    if not _has_kernels('CPU'):  # the schemas + CPU kernels live together
        ok, reason = _jit_build('ganinv_cpu', lambda src: sorted(src.glob('*.cpp')), False,
                                _import_error[0] if _import_error else 'ganinv_core._C has no CPU kernels')
        if not ok:
            return False, reason
    if dev == 'cuda' and not _has_kernels('CUDA'):
        ok, reason = _jit_build('ganinv_cuda', lambda src: [src / 'ops_common.cpp'] + sorted(src.glob('*.cu')),
                                True, 'ganinv_core._C was built without CUDA kernels')
        if not ok:
            return False, reason
    if not _has_kernels(_DISPATCH_KEY[dev]):
        return False, f'the loaded library has no {dev} kernels'
    if not _has_kernels('Autograd', AUTOGRAD_OPS):
        return False, ('the loaded ganinv_core._C has no autograd kernels (built from older sources: '
                       'reinstall with `pip install --no-build-isolation -e .`)')
    _register_python_parts()
    return True, ''


@torch.compiler.assume_constant_result  # torch.compile: evaluated while tracing, a constant in the graph
def available(dev: str):
    """Whether the compiled kernels can run on device type `dev`, loading or building them on first ask.

    Args:
        dev: a device type, 'cpu' or 'cuda'.

    Returns:
        (ok, reason): `reason` is '' when ok, else why not (one line). Cached per process.
    """
    if dev not in _status:
        with _lock:
            if dev not in _status:
                _status[dev] = _load(dev)
    return _status[dev]


def _ensure(dev):
    ok, reason = available(dev)
    if not ok:
        raise ExtUnavailableError(f'ganinv: the compiled kernels are unavailable on {dev}: {reason}')


# ---------------------------------------------------------------------------------------------------------
# Entry points called by ops.bias_act / ops.upfirdn2d with normalised arguments.

def bias_act_ext(x, b, dim, act, alpha, gain, clamp):
    """Compiled bias_act (arguments already checked by `ops.bias_act`).

    Args:
        x: input tensor, any shape.
        b: bias [x.shape[dim]], or None.
        dim: the axis `b` runs along, in [0, x.ndim).
        act: a key of `ACTIVATIONS`.
        alpha, gain: floats.
        clamp: float >= 0, or None for no clamping.

    Returns:
        Tensor shaped like `x`, in x's memory layout when that is contiguous or channels_last.

    Raises:
        ExtUnavailableError: no compiled kernels for x's device.
    """
    return torch.ops.ganinv.bias_act.default(x, *_bias_act_args(x, b, dim, act, alpha, gain, clamp))


def bias_act_grad_ext(g, x, b, dim, act, alpha, gain, clamp):
    """Compiled first derivative of bias_act times `g` (arguments as in `bias_act_ext`)."""
    b, *rest = _bias_act_args(x, b, dim, act, alpha, gain, clamp)
    return torch.ops.ganinv.bias_act_grad.default(g, x, b, 1, *rest)


def _bias_act_args(x, b, dim, act, alpha, gain, clamp):
    """The kernels' (b, dim, act code, alpha, gain, clamp) for x's device (loading the kernels if needed)."""
    _ensure(device_type(x))
    if b is None:
        b = _absent(x)
    elif b.dtype != x.dtype or b.device != x.device:
        b = b.to(device=x.device, dtype=x.dtype)
    return b, dim, ACT_CODES[act], float(alpha), float(gain), -1.0 if clamp is None else float(clamp)


def upfirdn2d_ext(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain):
    """Compiled upfirdn2d (arguments already checked by `ops.upfirdn2d`).

    Args:
        x: [N, C, H, W].
        f: filter [fh, fw] or separable [fw] (converted to float32 on x's device).
        upx, upy, downx, downy: positive ints.
        padx0, padx1, pady0, pady1: ints; negative crops.
        flip_filter: False = convolution, True = correlation.
        gain: float.

    Returns:
        [N, C, outH, outW], channels_last when x is.

    Raises:
        ExtUnavailableError: no compiled kernels for x's device.
    """
    _ensure(device_type(x))
    if f.dtype != torch.float32 or f.device != x.device:
        f = f.to(device=x.device, dtype=torch.float32)
    return torch.ops.ganinv.upfirdn2d.default(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1,
                                              bool(flip_filter), float(gain))


def modconv_epilogue_ext(c, d, noise, b, e, act, alpha, gain, clamp):
    """Compiled modconv_epilogue (arguments checked and laid out by `ops.modconv_epilogue`; noise / b / e: None or
    tensors in c's dtype, noise [1|N, 1, H, W], d and e [N, C])."""
    return torch.ops.ganinv.modconv_epilogue.default(c, *_epilogue_args(c, d, noise, b, e, act, alpha, gain, clamp))


def modconv_epilogue_backward_ext(gy, c, d, noise, b, e, act, alpha, gain, clamp, gr=None, wr=None):
    """Compiled modconv_epilogue backward: (gc, gd, gnoise, gb, ge, gwr), with None for an absent noise / b / e /
    projection (gy None: only gr reaches the output; gr [N, K, H, W] and wr [N, K, C]: see csrc/ganinv_ops.h)."""
    d, *rest = _epilogue_args(c, d, noise, b, e, act, alpha, gain, clamp)
    empty = _absent(c)
    gy, gr, wr = (empty if t is None else t for t in (gy, gr, wr))
    gc, gd, gn, gb, ge, gw = torch.ops.ganinv.modconv_epilogue_backward.default(gy, c, d, *rest[:3], gr, wr, *rest[3:])
    return (gc, gd, None if noise is None else gn, None if b is None else gb, None if e is None else ge,
            None if wr.numel() == 0 else gw)


def lpips_distance_ext(f, t, g, eps):
    """Compiled lpips_distance (arguments checked by `ops.lpips_distance`): (dist, norm, s), each [N, H, W]."""
    _ensure(device_type(f))
    return torch.ops.ganinv.lpips_distance.default(f, t, g, eps)


def lpips_distance_backward_ext(gd, f, t, g, norm, s, eps):
    """Compiled lpips_distance backward: the gradient of f (shaped and typed like f)."""
    _ensure(device_type(f))
    return torch.ops.ganinv.lpips_distance_backward.default(gd, f, t, g, norm, s, eps)


def noise_autocorr_ext(x):
    """Compiled noise_autocorr (x: contiguous [N, C, H, W]): [N, C, 2] in float32 (float64 for float64 x)."""
    _ensure(device_type(x))
    return torch.ops.ganinv.noise_autocorr.default(x)


def noise_autocorr_backward_ext(ga, x):
    """Compiled noise_autocorr backward: the gradient of x from ga [N, C, 2]."""
    _ensure(device_type(x))
    return torch.ops.ganinv.noise_autocorr_backward.default(ga, x)


_ABSENT = {}   # (device, dtype) -> the 0-element tensor that stands for an absent operand


def _absent(x):
    """The kernels' stand-in for an absent optional operand: a 0-element tensor on x's device, in x's dtype.

    Made once per device and dtype (`new_empty` costs about 2 us a call on the CPU, as much as the rest of a wrapper),
    outside inference mode so that autograd may save it. A fake or traced `x` (torch.compile, a tensor subclass) gets
    a fresh one of its own kind.
    """
    if type(x) is not torch.Tensor or torch.compiler.is_compiling():
        return x.new_empty([0])
    key = (x.device, x.dtype)
    t = _ABSENT.get(key)
    if t is None:
        with torch.inference_mode(False):
            t = _ABSENT[key] = torch.empty([0], dtype=x.dtype, device=x.device)
    return t


def _epilogue_args(c, d, noise, b, e, act, alpha, gain, clamp):
    _ensure(device_type(c))
    empty = _absent(c)
    return (d, *(empty if t is None else t for t in (noise, b, e)), ACT_CODES[act], float(alpha), float(gain),
            -1.0 if clamp is None else float(clamp))


# ---------------------------------------------------------------------------------------------------------
# Fake (meta) kernels for torch.compile, registered once the schemas exist (autograd: csrc/autograd.cpp).

def _out_like(x):
    """Fake output laid out as the kernels lay out theirs (x's strides when dense, else contiguous)."""
    if x.is_contiguous() or (x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return torch.empty_like(x)
    return x.new_empty(x.shape)


def _fake_bias_act(x, b, dim, act, alpha, gain, clamp):
    return _out_like(x)


def _fake_bias_act_grad(g, x, b, order, dim, act, alpha, gain, clamp):
    return _out_like(x)


def _fake_bias_act_backward(g, x, b, dim, act, alpha, gain, clamp):
    return _out_like(x), b.new_empty(b.shape)


def _fake_upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain):
    fw, fh = f.shape[-1], f.shape[0]
    oh = (x.shape[2] * upy + pady0 + pady1 - fh) // downy + 1
    ow = (x.shape[3] * upx + padx0 + padx1 - fw) // downx + 1
    cl = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    y = x.new_empty([x.shape[0], x.shape[1], oh, ow])
    return y.contiguous(memory_format=torch.channels_last) if cl else y


def _fake_epilogue(c, d, noise, b, e, act, alpha, gain, clamp):
    return torch.empty_like(c)   # c's layout, contiguous or channels_last


def _fake_epilogue_backward(gy, c, d, noise, b, e, gr, wr, act, alpha, gain, clamp):
    def like(t):
        return torch.empty_like(t, memory_format=torch.contiguous_format) if t.numel() else c.new_empty([0])
    return torch.empty_like(c), like(d), like(noise), like(b), like(e), like(wr)


def _fake_lpips(f, t, g, eps):
    n, _, h, w = f.shape
    return tuple(t.new_empty([n, h, w]) for _ in range(3))


def _fake_lpips_backward(gd, f, t, g, norm, s, eps):
    return torch.empty_like(f, memory_format=torch.contiguous_format)


def _fake_autocorr(x):
    return x.new_empty([x.shape[0], x.shape[1], 2], dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)


def _fake_autocorr_backward(ga, x):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _register_python_parts():
    if _registered:
        return
    _registered.append(True)
    lib = 'ganinv::'
    torch.library.register_fake(lib + 'bias_act')(_fake_bias_act)
    torch.library.register_fake(lib + 'bias_act_grad')(_fake_bias_act_grad)
    torch.library.register_fake(lib + 'bias_act_backward')(_fake_bias_act_backward)
    torch.library.register_fake(lib + 'upfirdn2d')(_fake_upfirdn2d)
    torch.library.register_fake(lib + 'modconv_epilogue')(_fake_epilogue)
    torch.library.register_fake(lib + 'modconv_epilogue_backward')(_fake_epilogue_backward)
    torch.library.register_fake(lib + 'lpips_distance')(_fake_lpips)
    torch.library.register_fake(lib + 'lpips_distance_backward')(_fake_lpips_backward)
    torch.library.register_fake(lib + 'noise_autocorr')(_fake_autocorr)
    torch.library.register_fake(lib + 'noise_autocorr_backward')(_fake_autocorr_backward)
