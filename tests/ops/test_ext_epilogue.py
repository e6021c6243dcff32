"""Compiled modconv_epilogue (torch.ops.ganinv) against autograd through the plain float64 composition.

y = clamp(gain * act(c d + noise + b)) e; the backward gives (dc, dd, dnoise, db, de) from gy and c in one pass.
Inputs are drawn fresh each run (seed in the failure message), off the activation's kinks where the kernel
computes in float32 or less; outputs are NaN-poisoned. Tolerances as in the bias_act tests, with the sums (dd,
dnoise, db) compared at atol relative to their largest magnitude.
"""
import math

import pytest
import torch

from ganinv_core import ops
from ganinv_core.ops import OpArgumentError, _ext
from ganinv_core.ops.bias_act import ACTIVATIONS, _bias_act_ref

from _devices import DEVICES, gpu_only

pytestmark = pytest.mark.usefixtures('_poison')

TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 1e-5), torch.float16: (4e-3, 4e-3),
       torch.bfloat16: (3e-2, 3e-2)}  # (rtol, atol relative to the reference's largest magnitude)
# batch 1, odd sizes, one channel, 1x1 planes, planes larger than one CPU task / CUDA block (2500 > 2048); on CUDA
# whole 16-byte packs per plane for every dtype (4x4, 8x8: one small block; 128x72: several blocks per plane) or
# only for float32/float64 (50x50), and none (7x3, 1x1)
SHAPES = [(1, 3, 4, 4), (2, 5, 7, 3), (3, 1, 1, 1), (2, 3, 50, 50), (2, 4, 8, 8), (1, 2, 128, 72)]
# channels_last: the CUDA NHWC kernels take C a multiple of the pack (16 channels: 2, 4, 8 packs for 16-bit, float,
# double; 24: 3 and 6, not powers of two), the others run on an NCHW copy
NHWC_SHAPES = [(2, 16, 6, 5), (1, 24, 3, 4), (2, 5, 7, 3), (2, 32, 40, 33)]
LAYOUTS = ['nchw', 'nhwc']


def laid_out(t, layout):
    """t in the layout ('nhwc': channels_last), None kept."""
    return t if t is None or layout == 'nchw' else t.contiguous(memory_format=torch.channels_last)


def shapes_for(layout):
    return SHAPES if layout == 'nchw' else NHWC_SHAPES
NOISE = {'none': lambda n, h, w: None, 'shared': lambda n, h, w: (1, 1, h, w),
         'per-image': lambda n, h, w: (n, 1, h, w), 'hw': lambda n, h, w: (h, w)}


def draw(shape, dtype, device, gen, scale=1.5):
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def inputs(shape, noise, bias, dtype, device, gen, scale=False):
    """(c, d, noise, b, e): e (the next layer's modulation) only with `scale`."""
    n, ch, h, w = shape
    c = draw(shape, dtype, device, gen)
    d = (draw((n, ch), torch.float64, device, gen).abs() + 0.3).to(dtype)
    ns = NOISE[noise](n, h, w)
    noise_t = None if ns is None else draw(ns, dtype, device, gen)
    return (c, d, noise_t, draw((ch,), dtype, device, gen) if bias else None,
            draw((n, ch), dtype, device, gen) if scale else None)


def pre(d, noise, b):
    """c -> the pre-activation s = c d + noise + b in float64 (for `clear_of_kinks`)."""
    extra = (0 if noise is None else noise.double()) + (0 if b is None else b.double()[:, None, None])
    return lambda c: c.double() * d.double()[:, :, None, None] + extra


LRELU = ('lrelu', 0.2, 2 ** 0.5, 1.0)   # the reduced-precision tests' activation (act, alpha, gain, clamp)


def reference(gy, c, d, noise, b, e, act, alpha, gain, clamp, gr=None, wr=None):
    """(y, dc, dd, dnoise, db, de, dwr) by autograd through the composition, in float64; with gr / wr the output
    also feeds r = wr y, whose gradient is gr (gy None: y's own gradient is zero)."""
    ts = [None if t is None else t.detach().double().requires_grad_() for t in (c, d, noise, b, e, wr)]
    cc, dd, nn, bb, ee, ww = ts
    s = cc * dd[:, :, None, None] + (0 if nn is None else nn)
    y = _bias_act_ref(s, bb, 1, act, alpha, gain, clamp)
    y = y if ee is None else y * ee[:, :, None, None]
    loss = 0 if gy is None else (y * gy.double()).sum()
    if ww is not None:
        loss = loss + (torch.einsum('nkc,nchw->nkhw', ww, y) * gr.double()).sum()
    live = [t for t in ts if t is not None]
    g = iter(torch.autograd.grad(loss, live))
    return [y.detach()] + [None if t is None else next(g) for t in ts]


def close(a, r, dtype, what, gen, shape):
    """a ~ r at the dtype's tolerance, atol relative to r's largest magnitude. A sum over k = numel(c) / numel(a)
    terms accumulated in float32 or float64 (dd, db, ...) rounds like a random walk: its atol grows by sqrt(k); the
    16-bit outputs' tolerance is their own rounding, far above a float32 sum's."""
    assert (a is None) == (r is None), what
    if a is None:
        return
    rtol, atol = TOL[dtype]
    if dtype in (torch.float32, torch.float64):
        atol *= (math.prod(shape) / max(1, r.numel())) ** 0.5
    assert a.shape == r.shape and a.dtype == dtype, f'{what}: {a.shape} {a.dtype}'
    torch.testing.assert_close(a.double(), r, rtol=rtol, atol=atol * max(1.0, r.abs().max().item()),
                               msg=lambda m: f'{what} (seed {gen.initial_seed()}): {m}')


NAMES = ('y', 'dc', 'dd', 'dnoise', 'db', 'de', 'dwr')


def run_ext(gy, c, d, noise, b, e, act, alpha, gain, clamp, gr=None, wr=None):
    kw = dict(act=act, alpha=alpha, gain=gain, clamp=clamp, e=e, impl='ext')
    return [ops.modconv_epilogue(c, d, noise, b, **kw), *ops.modconv_epilogue_vjp(gy, c, d, noise, b, gr=gr, wr=wr,
                                                                                    **kw)]


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('clamp', [None, 0.8])
@pytest.mark.parametrize('act', list(ACTIVATIONS))
def test_forward_and_backward_float64(act, clamp, device, layout, gen):
    """Every activation, clamp on and off, each noise layout, bias and e on and off; channels_last c with its output
    and gradient in c's layout (gy given in the other layout)."""
    alpha, gain = (0.3 if act == 'lrelu' else ACTIVATIONS[act].def_alpha), 1.3
    for shape in shapes_for(layout):
        for noise in NOISE:
            for bias, scale in ((True, False), (False, False), (True, True)):
                c, *rest = inputs(shape, noise, bias, torch.float64, device, gen, scale)
                c = laid_out(c, layout)
                gy = laid_out(draw(shape, torch.float64, device, gen), 'nhwc' if layout == 'nchw' else 'nchw')
                got = run_ext(gy, c, *rest, act, alpha, gain, clamp)
                want = reference(gy, c, *rest, act, alpha, gain, clamp)
                assert len(got) == len(want) == len(NAMES)
                for name, a, r in zip(NAMES, got, want):
                    close(a, r, torch.float64, f'{act} clamp={clamp} {shape} {layout} noise={noise} bias={bias} '
                                               f'e={scale} {name}', gen, shape)
                for a in got[:2]:
                    assert a.is_contiguous(memory_format=torch.channels_last if layout == 'nhwc' else
                                           torch.contiguous_format), f'{layout} {shape}: output layout {a.stride()}'



@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize('device', DEVICES)
def test_projection_gradient_in_the_same_pass(device, dtype, layout, gen, clear_of_kinks):
    """gr / wr: y also feeds r = wr y (ToRGB, K = 1, 3 or 4 channels): y's gradient gains wr^T gr and wr's gradient
    is sum_hw gr y^T; with and without y's own gradient, with e (the fold) and without."""
    for shape in shapes_for(layout):
        n, ch, h, w = shape
        for k, own, scale in ((3, True, True), (1, False, True), (4, True, False), (3, False, False)):
            c, *rest = inputs(shape, 'per-image', True, dtype, device, gen, scale)
            clear_of_kinks(c, pre(*rest[:3]), *LRELU)
            args = (laid_out(c, layout), *rest)
            gy = laid_out(draw(shape, dtype, device, gen), layout) if own else None
            gr, wr = draw((n, k, h, w), dtype, device, gen), draw((n, k, ch), dtype, device, gen, scale=0.5)
            got = run_ext(gy, *args, 'lrelu', 0.2, 2 ** 0.5, 1.0 if dtype != torch.float64 else None, gr, wr)
            want = reference(gy, *args, 'lrelu', 0.2, 2 ** 0.5, 1.0 if dtype != torch.float64 else None, gr, wr)
            for name, a, r in zip(NAMES, got, want):
                close(a, r, dtype, f'{dtype} {shape} {layout} K={k} gy={own} e={scale} {name}', gen, shape)


@pytest.mark.parametrize('device', DEVICES)
def test_the_kernel_runs_where_it_applies(device, monkeypatch):
    """impl='ext' reaches the compiled op for its layouts, and the reference for the others (same numbers)."""
    seen = []
    for name in ('modconv_epilogue_ext', 'modconv_epilogue_backward_ext'):
        real = getattr(_ext, name)
        monkeypatch.setattr(_ext, name, lambda *a, _r=real, _n=name: seen.append(_n) or _r(*a))
    g = torch.Generator().manual_seed(0)
    c, d, n, b, e = inputs((2, 3, 4, 5), 'per-image', True, torch.float64, device, g, scale=True)
    gy = draw(c.shape, torch.float64, device, g)
    run_ext(gy, c, d, n, b, e, 'lrelu', 0.2, 1.4, None)
    assert seen == ['modconv_epilogue_ext', 'modconv_epilogue_backward_ext']
    seen.clear()
    run_ext(gy, c.contiguous(memory_format=torch.channels_last), d, n, b, e, 'lrelu', 0.2, 1.4, None)
    assert seen == ['modconv_epilogue_ext', 'modconv_epilogue_backward_ext']   # channels_last: the kernel too
    seen.clear()
    per_channel = draw((1, 3, 4, 5), torch.float64, device, g)
    strided = torch.cat([c, c], 3)[..., ::2]   # neither contiguous nor channels_last
    others = [(strided, d, n, b, e), (c, d, per_channel, b, e),
              (c, d.float(), n, b, None), (c, d, n, b, e.float())]
    gr, wr = draw((2, 5, 4, 5), torch.float64, device, g), draw((2, 5, 3), torch.float64, device, g)  # K = 5 > 4
    for args, proj in [(a, None) for a in others] + [(others[0], (gr[:, :3], wr[:, :3])), ((c, d, n, b, e), (gr, wr))]:
        extra = (None, None) if proj is None else proj
        got = run_ext(gy, *args, 'lrelu', 0.2, 1.4, 0.5, *extra)
        want = reference(gy, *args, 'lrelu', 0.2, 1.4, 0.5, *extra)
        for a, r in zip(got, want):
            assert (a is None) == (r is None)
            if a is not None:
                torch.testing.assert_close(a.double(), r, rtol=1e-6, atol=1e-6)
    assert seen == ['modconv_epilogue_ext']   # the last case's forward; its K = 5 backward took the reference


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize('device', DEVICES)
def test_reduced_precision_against_float64(dtype, device, layout, gen, clear_of_kinks):
    for shape in shapes_for(layout):
        for noise, scale in (('per-image', True), ('shared', False)):
            c, *rest = inputs(shape, noise, True, dtype, device, gen, scale)
            clear_of_kinks(c, pre(*rest[:3]), *LRELU)
            args = (laid_out(c, layout), *rest)
            gy = laid_out(draw(shape, dtype, device, gen), layout)
            got = run_ext(gy, *args, 'lrelu', 0.2, 2 ** 0.5, 1.0)
            want = reference(gy, *args, 'lrelu', 0.2, 2 ** 0.5, 1.0)   # of the same rounded inputs
            for name, a, r in zip(NAMES, got, want):
                close(a, r, dtype, f'{dtype} {shape} {layout} noise={noise} {name}', gen, shape)


def misaligned(t):
    """t's values in a contiguous tensor that starts one element past an aligned address."""
    out = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)[1:].view(t.shape)
    return out.copy_(t)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('device', DEVICES)
def test_any_operand_off_the_16_byte_grid(dtype, device, gen, clear_of_kinks):
    """CUDA moves 16-byte packs only when every operand is aligned to them: one misaligned operand (c, gy, the
    noise or the projection's gradient) takes the one-element kernel, with the same numbers."""
    shape = (2, 3, 16, 24)
    c, d, noise, b, e = inputs(shape, 'per-image', True, dtype, device, gen, scale=True)
    clear_of_kinks(c, pre(d, noise, b), *LRELU)
    gy, gr = draw(shape, dtype, device, gen), draw((2, 3, 16, 24), dtype, device, gen)
    wr = draw((2, 3, 3), dtype, device, gen)
    want = reference(gy, c, d, noise, b, e, 'lrelu', 0.2, 2 ** 0.5, 1.0, gr, wr)
    for which in ('none', 'c', 'gy', 'noise', 'gr'):
        args = dict(c=c, gy=gy, noise=noise, gr=gr)
        if which in args:
            args[which] = misaligned(args[which])
            assert args[which].data_ptr() % 16 != 0 and args[which].is_contiguous()
        got = run_ext(args['gy'], args['c'], d, args['noise'], b, e, 'lrelu', 0.2, 2 ** 0.5, 1.0, args['gr'], wr)
        for name, a, r in zip(NAMES, got, want):
            close(a, r, dtype, f'{dtype} misaligned {which} {name}', gen, shape)


@pytest.mark.parametrize('device', DEVICES)
def test_opcheck(device, gen):
    c, d, n, b, e = inputs((2, 3, 5, 4), 'per-image', True, torch.float32, device, gen, scale=True)
    gy = draw(c.shape, torch.float32, device, gen)
    code, E = _ext.ACT_CODES['lrelu'], c.new_empty(0)
    torch.library.opcheck(torch.ops.ganinv.modconv_epilogue.default, (c, d, n, b, e, code, 0.2, 1.4, 0.7))
    torch.library.opcheck(torch.ops.ganinv.modconv_epilogue.default, (c, d, E, E, E, 0, 0.0, 1.0, -1.0))
    torch.library.opcheck(torch.ops.ganinv.modconv_epilogue_backward.default, (gy, c, d, n[:1], b, e, E, E, code, 0.2,
                                                                               1.4, -1.0))
    torch.library.opcheck(torch.ops.ganinv.modconv_epilogue_backward.default, (gy, c, d, E, E, E, E, E, 0, 0.0, 1.0,
                                                                               -1.0))
    gr, wr = draw((2, 3, 5, 4), torch.float32, device, gen), draw((2, 3, 3), torch.float32, device, gen)
    torch.library.opcheck(torch.ops.ganinv.modconv_epilogue_backward.default, (gy, c, d, n, b, e, gr, wr, code, 0.2,
                                                                               1.4, 0.7))
    torch.library.opcheck(torch.ops.ganinv.modconv_epilogue_backward.default, (E, c, d, n, b, E, gr, wr, code, 0.2,
                                                                               1.4, -1.0))
    # channels_last c (the NHWC kernels; C = 16: whole packs for every dtype), with and without the projection
    c, d, n, b, e = inputs((2, 16, 5, 4), 'per-image', True, torch.float32, device, gen, scale=True)
    c, gy = (t.contiguous(memory_format=torch.channels_last) for t in (c, draw(c.shape, torch.float32, device, gen)))
    torch.library.opcheck(torch.ops.ganinv.modconv_epilogue.default, (c, d, n, b, e, code, 0.2, 1.4, 0.7))
    torch.library.opcheck(torch.ops.ganinv.modconv_epilogue_backward.default, (gy, c, d, n, b, e, E, E, code, 0.2,
                                                                               1.4, 0.7))
    gr, wr = draw((2, 3, 5, 4), torch.float32, device, gen), draw((2, 3, 16), torch.float32, device, gen)
    torch.library.opcheck(torch.ops.ganinv.modconv_epilogue_backward.default, (gy, c, d, n[:1], b, E, gr, wr, code,
                                                                               0.2, 1.4, -1.0))
    # one image, one channel: the per-(image, channel) sums are [1, 1] columns of one buffer, which must not come
    # back as views of it (outputs may not alias each other)
    c, d, n, b, e = inputs((1, 1, 3, 2), 'per-image', True, torch.float32, device, gen, scale=True)
    gy = draw(c.shape, torch.float32, device, gen)
    out = torch.ops.ganinv.modconv_epilogue_backward(gy, c, d, n, b, e, E, E, code, 0.2, 1.4, -1.0)
    assert len({t.untyped_storage().data_ptr() for t in out if t.numel()}) == sum(t.numel() > 0 for t in out)
    torch.library.opcheck(torch.ops.ganinv.modconv_epilogue_backward.default, (gy, c, d, n, b, e, E, E, code, 0.2,
                                                                               1.4, -1.0))


def test_bad_arguments_name_the_input():
    c, d = torch.zeros(2, 3, 4, 4), torch.ones(2, 3)
    with pytest.raises(OpArgumentError, match=r'modconv_epilogue: d must hold \[N, C\] = \[2, 3\]'):
        ops.modconv_epilogue(c, torch.ones(3, 2, 1), impl='ext')
    with pytest.raises(OpArgumentError, match='modconv_epilogue: noise of shape .* does not broadcast'):
        ops.modconv_epilogue(c, d, torch.zeros(1, 1, 5, 4))
    with pytest.raises(OpArgumentError, match='modconv_epilogue: noise must be a tensor or None, got float'):
        ops.modconv_epilogue(c, d, 0.5)
    with pytest.raises(OpArgumentError, match=r'modconv_epilogue: b must be a \[3\] tensor or None, got list'):
        ops.modconv_epilogue(c, d, b=[0.0, 0.0, 0.0])
    for noise in (torch.zeros(2, 1, 4, 4), torch.zeros(1, 1, 1, 4, 4)):   # would widen the output / 5-D
        with pytest.raises(OpArgumentError, match='modconv_epilogue: noise of shape .* does not broadcast'):
            ops.modconv_epilogue(c[:1], d[:1], noise)
    with pytest.raises(OpArgumentError, match='modconv_epilogue: c must be a'):
        ops.modconv_epilogue(torch.zeros(3, 4), d)
    with pytest.raises(OpArgumentError, match=r'modconv_epilogue: e must hold \[N, C\] = \[2, 3\]'):
        ops.modconv_epilogue(c, d, e=torch.ones(2, 4))
    E = c.new_empty(0)
    with pytest.raises(ValueError, match=r'modconv_epilogue: noise must be \[1 or N, 1, H, W\]'):
        torch.ops.ganinv.modconv_epilogue(c, d, torch.zeros(2, 2, 4, 4), torch.zeros(3), E, 0, 0.0, 1.0, -1.0)
    with pytest.raises(ValueError, match=r'modconv_epilogue: e must hold \[N, C\]'):
        torch.ops.ganinv.modconv_epilogue(c, d, E, E, torch.ones(3), 0, 0.0, 1.0, -1.0)
    with pytest.raises(ValueError, match='modconv_epilogue_backward: gy must match c'):
        torch.ops.ganinv.modconv_epilogue_backward(c[:1], c, d, E, E, E, E, E, 0, 0.0, 1.0, -1.0)
    with pytest.raises(ValueError, match=r'modconv_epilogue_backward: gr must be \[N, K, H, W\] = \[2, K <= 4, 4, 4\]'):
        torch.ops.ganinv.modconv_epilogue_backward(c, c, d, E, E, E, torch.zeros(2, 5, 4, 4), torch.zeros(2, 5, 3), 0,
                                                   0.0, 1.0, -1.0)
    with pytest.raises(ValueError, match=r'modconv_epilogue_backward: wr must be \[N, K, C\] = \[2, 3, 3\]'):
        torch.ops.ganinv.modconv_epilogue_backward(c, c, d, E, E, E, torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4), 0,
                                                   0.0, 1.0, -1.0)
    with pytest.raises(OpArgumentError, match='modconv_epilogue_vjp: give gr and wr together'):
        ops.modconv_epilogue_vjp(c, c, d, gr=torch.zeros(2, 3, 4, 4))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_float32_coefficients_with_a_16bit_c(dtype, gen, clear_of_kinks):
    """d, noise, e (and the projection's wr) in float32 with a bf16/fp16 c (`modulated_conv2d(coef_fp32=True)`):
    the reference path computes in float32 and rounds the output once to c's dtype; every gradient comes back in
    its input's dtype and matches float64 autograd of the same inputs."""
    shape = (2, 3, 6, 5)
    c, d, noise, b, e = inputs(shape, 'per-image', True, dtype, 'cpu', gen, scale=True)
    d, noise, e = d.float(), noise.float(), e.float()
    clear_of_kinks(c, pre(d, noise, b), *LRELU)
    gy = draw(shape, dtype, 'cpu', gen)
    gr, wr = draw((2, 3, 6, 5), dtype, 'cpu', gen), draw((2, 3, 3), torch.float32, 'cpu', gen, scale=0.5)
    got = run_ext(gy, c, d, noise, b, e, 'lrelu', 0.2, 2 ** 0.5, 1.0, gr, wr)
    want = reference(gy, c, d, noise, b, e, 'lrelu', 0.2, 2 ** 0.5, 1.0, gr, wr)
    for name, a, r, t in zip(NAMES, got, want, (c, c, d, noise, b, e, wr)):
        assert a.dtype == t.dtype, f'{name}: {a.dtype}, not {t.dtype}'
        rtol = 1e-5 if t.dtype == torch.float32 and name != 'y' else TOL[dtype][0]
        torch.testing.assert_close(a.double(), r, rtol=rtol, atol=rtol * max(1.0, r.abs().max().item()),
                                   msg=lambda m: f'{name} (seed {gen.initial_seed()}): {m}')
    # rounded once: y is float32's result rounded to c's dtype, so within half a 16-bit ulp of it, give or take
    # float32's own rounding (the kernel's order of operations is not the reference's: right at a 16-bit midpoint
    # the two can round apart, seen once in fp16); any 16-bit intermediate would be several ulps off somewhere
    y32 = ops.modconv_epilogue(c.float(), d, noise, b.float(), act='lrelu', alpha=0.2, gain=2 ** 0.5, clamp=1.0, e=e,
                               impl='ref')
    fi = torch.finfo(dtype)
    ulp = fi.eps * torch.exp2(torch.floor(torch.log2(y32.abs().clamp(min=fi.tiny))))
    assert ((got[0].float() - y32).abs() <= 0.5 * ulp + 1e-6 * y32.abs()).all()
    assert (got[0] != y32.to(dtype)).float().mean() <= 0.05


# The experimental channel-grouped backward (GANINV_EPILOGUE_GROUPED=1: NCHW, 16-byte packs, lrelu and linear): C not
# a multiple of its group of 4 (5, 3, 9), one channel, planes in one block and in several, noise per image, shared
# and none, the projection with K = 0, 1, 3, 4, with and without y's own gradient (gy) and the bias.
GROUPED_SHAPES = [(2, 5, 8, 8), (1, 3, 4, 4), (3, 1, 16, 16), (2, 9, 128, 72), (1, 8, 64, 64)]
GROUPED_CASES = [(LRELU, 'per-image', 0, True, True, True), (LRELU, 'shared', 3, False, False, True),
                 (('linear', 0.0, 1.0, None), 'none', 1, True, True, False), (LRELU, 'per-image', 4, False, True, False)]


@gpu_only
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_grouped_backward_kernel(dtype, gen, clear_of_kinks, monkeypatch):
    monkeypatch.setenv('GANINV_EPILOGUE_GROUPED', '1')
    for shape in GROUPED_SHAPES:
        n, ch, h, w = shape
        for spec, noise, k, scale, own, bias in GROUPED_CASES:
            c, *rest = inputs(shape, noise, bias, dtype, 'cuda', gen, scale)
            clear_of_kinks(c, pre(*rest[:3]), *spec)
            gy = draw(shape, dtype, 'cuda', gen) if own else None
            gr, wr = (draw((n, k, h, w), dtype, 'cuda', gen), draw((n, k, ch), dtype, 'cuda', gen, scale=0.5)) if k \
                else (None, None)
            got = run_ext(gy, c, *rest, *spec, gr, wr)
            want = reference(gy, c, *rest, *spec, gr, wr)
            for name, a, r in zip(NAMES, got, want):
                close(a, r, dtype, f'grouped {dtype} {shape} {spec[0]} noise={noise} K={k} gy={own} b={bias} {name}',
                      gen, shape)
    # and it is the grouped kernel that ran (its name in the profile), not the per-channel one
    c, *rest = inputs((2, 8, 16, 16), 'per-image', True, dtype, 'cuda', gen)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        run_ext(draw(c.shape, dtype, 'cuda', gen), c, *rest, *LRELU)
        torch.cuda.synchronize()
    names = [ev.name for ev in prof.events()]
    assert any('epilogue_backward_grouped_kernel' in x for x in names), sorted(set(names))
