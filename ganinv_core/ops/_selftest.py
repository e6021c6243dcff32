"""The compiled kernels checked against the reference path once per device and process, before a result depends on
them (GANINV_SELFTEST=0 skips the check).

Each op runs a few small cases that reach its kernels' main paths (planes that are whole 16-byte packs and planes
that are not, 4x4 planes, NCHW and channels_last, forward and backward) in float32 and bfloat16, plus float16 on
CUDA. The reference is the op's own PyTorch path in float64 on the CPU, fed the same rounded inputs. An op whose
kernels disagree, or raise, takes the reference path on that device from then on (`_backend`), with one warning that
names the case and the error; the other ops keep their kernels. It costs some tens of milliseconds on first use.

The check is deferred while `torch.compile` traces or a CUDA graph is being captured (it runs real kernels and
synchronises), and runs at the next eager call.
"""
import contextlib
import math
import threading

import torch

from .._errors import exc_line
from ._fast import getenv

TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}   # max |got - ref| / max(1, max |ref|)

_lock = threading.Lock()
_results = {}                  # device type -> {op: (ok, detail)}
_local = threading.local()     # .running: this thread is inside the check (its own calls are not checked again)


def enabled() -> bool:
    """False when GANINV_SELFTEST=0."""
    return getenv('GANINV_SELFTEST', '1').strip() != '0'


def _deferred() -> bool:
    if getattr(_local, 'running', False) or torch.compiler.is_compiling():
        return True
    if torch._guards.detect_fake_mode() is not None:
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def results(dev: str) -> dict:
    """{op: (ok, detail)} for device type `dev`: the check's outcome, run on first ask ({} while deferred).

    `detail` is the largest relative error per dtype when ok, else the failing case and its error."""
    if dev in _results or _deferred():
        return _results.get(dev, {})
    with _lock:
        if dev not in _results:
            _local.running = True
            try:
                _results[dev] = _run(dev)
            finally:
                _local.running = False
    return _results[dev]


def failure(dev: str, op: str) -> str:
    """'' when `op`'s kernels passed on `dev` (or the check is off or deferred), else why they failed (one line)."""
    if not enabled():
        return ''
    ok, detail = results(dev).get(op, (True, ''))
    return '' if ok else detail


# ---------------------------------------------------------------------------------------------------------
# The cases: each yields (what, got, want), got from impl='ext' on the device, want from impl='ref' in float64.

def _draw(gen, shape, dtype, dev, scale=1.0, cl=False):
    t = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    return (t.contiguous(memory_format=torch.channels_last) if cl else t).to(dev)


def _leaves(*ts):
    """(on the device, requiring grad), (float64 CPU copies of the same values, requiring grad)."""
    return ([t.detach().requires_grad_() for t in ts],
            [t.detach().cpu().double().requires_grad_() for t in ts])


def _grads(y, xs, gy):
    return torch.autograd.grad(y, xs, gy.to(y.device, y.dtype))


def _bias_act(dev, dt, gen):
    from .bias_act import bias_act
    for shape, act, cl in (((2, 16, 8, 8), 'lrelu', False), ((1, 3, 5, 7), 'lrelu', False),
                           ((2, 16, 8, 8), 'linear', False), ((2, 16, 4, 4), 'lrelu', True)):
        x, b, gy = _draw(gen, shape, dt, dev, cl=cl), _draw(gen, shape[1:2], dt, dev), _draw(gen, shape, dt, 'cpu')
        (xe, be), (xr, br) = _leaves(x, b)
        ye, yr = (bias_act(x_, b_, act=act, clamp=256, impl=i) for x_, b_, i in ((xe, be, 'ext'), (xr, br, 'ref')))
        yield f'{act} {shape}{" channels_last" if cl else ""}', (ye, *_grads(ye, (xe, be), gy)), \
            (yr, *_grads(yr, (xr, br), gy))


def _upfirdn2d(dev, dt, gen):
    from .upfirdn2d import downsample2d, setup_filter, upfirdn2d, upsample2d
    f = setup_filter([1, 3, 3, 1])
    ops = {'conv0 FIR': lambda x, i: upfirdn2d(x, f.to(x.device), padding=1, gain=4, impl=i),   # after conv_transpose
           'up 2': lambda x, i: upsample2d(x, f.to(x.device), impl=i),                         # ToRGB's image skip
           'down 2': lambda x, i: downsample2d(x, f.to(x.device), impl=i)}
    for name, shape, cl in (('conv0 FIR', (2, 16, 9, 9), False), ('conv0 FIR', (2, 16, 9, 9), True),
                            ('conv0 FIR', (1, 8, 5, 5), False), ('up 2', (1, 3, 4, 4), False),
                            ('up 2', (2, 3, 16, 16), False), ('down 2', (2, 16, 8, 8), True)):
        (xe,), (xr,) = _leaves(_draw(gen, shape, dt, dev, cl=cl))
        ye, yr = ops[name](xe, 'ext'), ops[name](xr, 'ref')
        gy = _draw(gen, yr.shape, dt, 'cpu')
        yield f'{name} {shape}{" channels_last" if cl else ""}', (ye, *_grads(ye, xe, gy)), (yr, *_grads(yr, xr, gy))


def _epilogue(dev, dt, gen):
    from .epilogue import modconv_epilogue, modconv_epilogue_vjp
    for shape, cl, proj in (((2, 16, 8, 8), False, True), ((1, 3, 4, 4), False, False), ((2, 5, 7, 3), False, True),
                            ((2, 16, 6, 5), True, True), ((1, 24, 3, 4), True, False)):
        n, ch, h, w = shape
        c = _draw(gen, shape, dt, dev, 1.5, cl)
        d = (_draw(gen, (n, ch), torch.float64, 'cpu').abs() + 0.3).to(dt).to(dev)
        noise, b, e = _draw(gen, (n, 1, h, w), dt, dev), _draw(gen, (ch,), dt, dev), _draw(gen, (n, ch), dt, dev)
        # c off the lrelu kink (s = 0), where float32 and float64 may take different sides
        s = c.double() * d.double()[:, :, None, None] + noise.double() + b.double()[:, None, None]
        c = torch.where(s.abs() < 1e-3, (c.double() + 0.1).to(dt), c)
        c = c.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
        gy = _draw(gen, shape, dt, dev, cl=cl)
        gr, wr = (_draw(gen, (n, 3, h, w), dt, dev), _draw(gen, (n, 3, ch), dt, dev, 0.5)) if proj else (None, None)
        kw = dict(act='lrelu', gain=2 ** 0.5, clamp=256)
        args = [(c, d, noise, b, e, gy, gr, wr, 'ext')]
        args.append(tuple(None if t is None else t.cpu().double() for t in args[0][:-1]) + ('ref',))
        got, want = ([modconv_epilogue(c_, d_, n_, b_, e=e_, impl=i, **kw),
                      *modconv_epilogue_vjp(gy_, c_, d_, n_, b_, e=e_, gr=gr_, wr=wr_, impl=i, **kw)]
                     for c_, d_, n_, b_, e_, gy_, gr_, wr_, i in args)
        yield f'{shape}{" channels_last" if cl else ""}{" projection" if proj else ""}', got, want


def _lpips(dev, dt, gen):
    from .lpips import lpips_distance
    for shape in ((2, 16, 8, 8), (1, 5, 3, 7)):
        # ReLU-like features with no all-zero pixel: there the gradient is ~2 g t / eps (1e10), inf in float16 on
        # either path but finite in the float64 reference (tests/ops/test_ext_lpips.py compares that pixel apart)
        f = _draw(gen, shape, torch.float64, 'cpu').relu()
        f[:, 0] = f[:, 0].abs() + 0.1
        (fe,), (fr,) = _leaves(f.to(dt).to(dev))
        t, g = _draw(gen, shape, torch.float32, dev, 0.1), _draw(gen, shape[1:2], torch.float32, dev).abs()
        de, dr = lpips_distance(fe, t, g, impl='ext'), lpips_distance(fr, t.cpu().double(), g.cpu().double(), impl='ref')
        gd = _draw(gen, dr.shape, torch.float32, 'cpu')
        yield f'{shape}', (de, *_grads(de, fe, gd)), (dr, *_grads(dr, fr, gd))


def _noise(dev, dt, gen):
    from .noise import noise_autocorr
    for shape in ((1, 2, 8, 8), (2, 3, 5, 7)):
        (xe,), (xr,) = _leaves(_draw(gen, shape, dt, dev))
        ae, ar = noise_autocorr(xe, impl='ext'), noise_autocorr(xr, impl='ref')
        ga = _draw(gen, ar.shape, torch.float32, 'cpu')
        yield f'{shape}', (ae, *_grads(ae, xe, ga)), (ar, *_grads(ar, xr, ga))


CASES = {'bias_act': _bias_act, 'upfirdn2d': _upfirdn2d, 'modconv_epilogue': _epilogue, 'lpips_distance': _lpips,
         'noise_autocorr': _noise}


def _error(got, want):
    """The largest of max |a - r| / max(1, max |r|) over the outputs (inf for a missing, misshapen or non-finite
    one)."""
    worst = 0.0
    for a, r in zip(got, want, strict=True):
        if a is None or r is None:
            if (a is None) != (r is None):
                return math.inf
            continue
        a, r = a.detach().cpu().double(), r.detach().double()
        if a.shape != r.shape or not torch.isfinite(a).all():
            return math.inf
        if a.numel():
            worst = max(worst, ((a - r).abs().max() / r.abs().max().clamp(min=1)).item())
    return worst


def _check(op, dev, dtypes):
    errs = {}
    for dt in dtypes:
        gen = torch.Generator().manual_seed(1234)
        try:
            for what, got, want in CASES[op](dev, dt, gen):
                err = _error(got, want)
                if not err <= TOL[dt]:
                    return False, f'{what} {str(dt)[6:]}: error {err:.2g} > {TOL[dt]:g}'
                errs[dt] = max(errs.get(dt, 0.0), err)
        except Exception as exc:  # noqa: BLE001  (a kernel that raises fails its check; the message says how)
            return False, f'{str(dt)[6:]}: {exc_line(exc)}'
    return True, 'max error ' + ', '.join(f'{e:.1g} ({str(dt)[6:]})' for dt, e in errs.items())


def _run(dev):
    dtypes = (torch.float32, torch.bfloat16) + ((torch.float16,) if dev == 'cuda' else ())
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        for d in {'cpu', dev}:
            stack.enter_context(torch.autocast(d, enabled=False))
        return {op: _check(op, dev, dtypes) for op in CASES}
