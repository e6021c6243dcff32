"""Compiled upfirdn2d (torch.ops.ganinv) against the reference `_upfirdn2d_ref`.

Fresh random inputs each run (seed in the failure message), NaN-poisoned outputs (GANINV_DEBUG_POISON=1).
Modes: every resampling StyleGAN2's generator uses (torgb upsample: up 2, pad [2,1,2,1], gain 4;
conv0's post-filter: 4x4 FIR, pad 1, gain 4) plus downsampling, anisotropic factors, up/down 3,
negative pads, flip, separable filters, 1x1 and odd filters. Tolerances as in test_ext_bias_act.py.
"""

import pytest
import torch

from ganinv_core import ops
from ganinv_core.ops import _ext
from ganinv_core.ops.upfirdn2d import _upfirdn2d_ref, setup_filter

from _devices import CUDA, DEVICES

pytestmark = pytest.mark.usefixtures('_poison')

TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 1e-5), torch.float16: (4e-3, 2e-3),
       torch.bfloat16: (3e-2, 2e-2)}  # (rtol, atol)

# name: (filter, up (x, y), down (x, y), pads (x0, x1, y0, y1), flip, gain)
MODES = {
    'torgb_up2': ('1331', (2, 2), (1, 1), (2, 1, 2, 1), False, 4.0),
    'conv0_fir': ('1331', (1, 1), (1, 1), (1, 1, 1, 1), False, 4.0),
    'down2': ('1331', (1, 1), (2, 2), (1, 1, 1, 1), False, 1.0),
    'filter_flip': ('1331', (1, 1), (1, 1), (2, 1, 2, 1), True, 1.0),
    'up2_sep8': ('sep8', (2, 2), (1, 1), (4, 3, 4, 3), False, 4.0),
    'down2_sep8': ('sep8', (1, 1), (2, 2), (3, 3, 3, 3), True, 1.0),
    'aniso': ('odd', (2, 1), (1, 2), (1, 2, 0, 3), False, 2.0),
    'up3_down2_negpad': ('odd', (3, 3), (2, 2), (-1, 2, 3, -2), False, 1.5),
    'down3': ('1331', (1, 1), (3, 3), (0, 2, 1, 1), False, 1.0),
    'identity_1x1': ('1x1', (1, 1), (1, 1), (0, 0, 0, 0), False, 1.0),
    'up2_1x1_crop': ('1x1', (2, 2), (1, 1), (-1, -2, 0, -1), True, 3.0),
    'rect_filter': ('rect', (2, 1), (1, 1), (2, 2, 1, 1), False, 1.0),
}
SHAPES = [((1, 3, 8, 8), 'contiguous'), ((2, 5, 7, 9), 'channels_last'), ((2, 3, 6, 5), 'strided'),
          ((1, 1, 5, 3), 'contiguous')]


def make_filter(kind, gen, device):
    f = {'1331': lambda: setup_filter([1, 3, 3, 1]),
         'sep8': lambda: setup_filter(torch.rand(8, generator=gen) + 0.1),
         'odd': lambda: torch.rand(5, 3, generator=gen).t().contiguous(),  # 3 x 5, not symmetric
         'rect': lambda: torch.rand(2, 3, generator=gen),
         '1x1': lambda: torch.full([1, 1], 0.7)}[kind]()
    return f.to(device=device, dtype=torch.float32)


def draw(shape, layout, dtype, device, gen):
    if layout == 'strided':
        n, c, h, w = shape
        t = torch.randn(n, c, w, 2 * h, generator=gen, dtype=torch.float64).transpose(-1, -2)[:, :, ::2]
    else:
        t = torch.randn(shape, generator=gen, dtype=torch.float64)
    t = t.to(device=device, dtype=dtype)
    if layout == 'channels_last':
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def run_both(x, f, mode):
    _, up, down, pad, flip, gain = mode
    y = _ext.upfirdn2d_ext(x, f, up[0], up[1], down[0], down[1], *pad, flip, gain)
    r = _upfirdn2d_ref(x, f, up, down, pad, flip, gain)
    return y, r


def close(a, b, dtype, what, gen):
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(a.to(torch.float64), b.to(torch.float64), rtol=rtol, atol=atol,
                               msg=lambda m: f'{what} (seed {gen.initial_seed()}): {m}')


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('name', list(MODES))
def test_forward_and_derivatives_float64(name, device, gen):
    mode = MODES[name]
    f = make_filter(mode[0], gen, device)
    for shape, layout in SHAPES:
        x = draw(shape, layout, torch.float64, device, gen).requires_grad_()
        y, r = run_both(x, f, mode)
        what = f'{name} {shape} {layout}'
        assert y.shape == r.shape, what
        assert not y.isnan().any(), f'{what}: unwritten (NaN) outputs'
        assert y.is_contiguous(memory_format=torch.channels_last if layout == 'channels_last'
                               else torch.contiguous_format), f'{what}: layout not kept'
        close(y, r, torch.float64, what + ' forward', gen)
        gy = torch.randn(r.shape, generator=gen, dtype=torch.float64).to(device).requires_grad_()
        (dx,) = torch.autograd.grad(y, x, gy, create_graph=True)
        (dr,) = torch.autograd.grad(r, x, gy, create_graph=True)
        assert not dx.isnan().any(), f'{what}: unwritten (NaN) gradient'
        close(dx, dr, torch.float64, what + ' first derivative', gen)
        # Double backward: the derivative of <dx, w> with respect to gy.
        w = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(device)
        (ddx,) = torch.autograd.grad((dx * w).sum(), gy)
        (ddr,) = torch.autograd.grad((dr * w).sum(), gy)
        close(ddx, ddr, torch.float64, what + ' second derivative', gen)


@pytest.mark.parametrize('device,dtype', [('cpu', torch.float32), ('cpu', torch.float16), ('cpu', torch.bfloat16)] + [
    pytest.param('cuda', d, marks=CUDA.marks) for d in (torch.float32, torch.float16, torch.bfloat16)])
def test_float_dtypes(dtype, device, gen):
    for name, mode in MODES.items():
        f = make_filter(mode[0], gen, device)
        for shape, layout in SHAPES[:3]:
            x = draw(shape, layout, dtype, device, gen)
            y = _ext.upfirdn2d_ext(x, f, mode[1][0], mode[1][1], mode[2][0], mode[2][1], *mode[3], mode[4], mode[5])
            r = _upfirdn2d_ref(x.double(), f, *mode[1:])
            assert y.dtype == dtype
            close(y, r, dtype, f'{name} {dtype} {shape} {layout}', gen)


@pytest.mark.parametrize('device', DEVICES)
def test_generator_shapes_float32(device, gen):
    """The 4x4 fast paths at a realistic size (CUDA: the specialised kernels)."""
    f = make_filter('1331', gen, device)
    for name in ('torgb_up2', 'conv0_fir', 'down2'):
        x = draw((2, 8, 33, 32), 'contiguous', torch.float32, device, gen)
        for xx in (x, x.contiguous(memory_format=torch.channels_last)):
            y, r = run_both(xx, f, MODES[name])
            close(y, r.double(), torch.float32, name, gen)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('name', ['torgb_up2', 'down2_sep8', 'up3_down2_negpad', 'aniso'])
def test_gradcheck_gradgradcheck(name, device, gen):
    mode = MODES[name]
    f = make_filter(mode[0], gen, device)
    x = draw((1, 2, 5, 4), 'contiguous', torch.float64, device, gen).requires_grad_()
    fn = lambda x_: _ext.upfirdn2d_ext(x_, f, mode[1][0], mode[1][1], mode[2][0], mode[2][1], *mode[3],  # noqa: E731
                                       mode[4], mode[5])
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('name', ['torgb_up2', 'up2_sep8', 'up3_down2_negpad'])
def test_opcheck(name, device, gen):
    mode = MODES[name]
    f = make_filter(mode[0], gen, device)
    for layout in ('contiguous', 'channels_last'):
        x = draw((2, 3, 6, 7), layout, torch.float32, device, gen).requires_grad_()
        args = (x, f, mode[1][0], mode[1][1], mode[2][0], mode[2][1], *mode[3], mode[4], mode[5])
        torch.library.opcheck(torch.ops.ganinv.upfirdn2d.default, args)


def test_bad_arguments_raise_value_errors():
    x = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match='f must be float32'):
        torch.ops.ganinv.upfirdn2d(x, torch.ones(2, 2, dtype=torch.float64), 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    with pytest.raises(ValueError, match='empty output'):
        torch.ops.ganinv.upfirdn2d(x, torch.ones(8, 8), 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    with pytest.raises(ValueError, match='up and down'):
        torch.ops.ganinv.upfirdn2d(x, torch.ones(2, 2), 0, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    # beyond what the kernels index in int32 (these used to wrap: a wrong output, or a division by zero)
    with pytest.raises(ValueError, match=r'factors must be at most 65536, got up \(4294967297, 1\)'):
        torch.ops.ganinv.upfirdn2d(x, torch.ones(1, 3), 2 ** 32 + 1, 1, 2 ** 32 + 1, 1, 0, 0, 0, 0, False, 1.0)
    with pytest.raises(ValueError, match=r'paddings must lie within \+-2\^30, got \(4294967296, -4294967296, 0, 0\)'):
        torch.ops.ganinv.upfirdn2d(x, torch.ones(1, 3), 1, 1, 1, 1, 2 ** 32, -2 ** 32, 0, 0, False, 1.0)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('flip', [False, True])
def test_a_nan_tap_reaches_the_outputs_it_touches(flip, device):
    """A NaN tap off the largest one's row and column makes the filter not rank-1: the CPU's rank-1 fast path used to
    rebuild the taps from that row and column and lose it. NaN in every output where that tap reads the input (7x7
    of 8x8; the kernels skip the zero padding, which the reference multiplies, NaN * 0 = NaN), the reference's
    values elsewhere."""
    f = torch.ones(3, 3, device=device)
    f[0, 0] = float('nan')
    f[1, 1] = 2.0   # the largest tap
    x = torch.ones(1, 1, 8, 8, device=device)
    y = torch.ops.ganinv.upfirdn2d(x, f, 1, 1, 1, 1, 1, 1, 1, 1, flip, 1.0)
    assert y.isnan().sum() == 49
    r0 = _upfirdn2d_ref(x.double(), f.nan_to_num(0.0).double(), padding=1, flip_filter=flip)
    torch.testing.assert_close(y[~y.isnan()].double(), r0[~y.isnan()])


# The tiled CUDA kernel's cases (NCHW, 4x4 filter; up 1 / up 2 / down 2; 32x64 output tiles, 16x64
# for down 2) at sizes that end mid-tile, exactly on a tile, one past it, and odd; batch 1 and 8;
# plus pads that crop (negative) and a flipped filter. On the CPU the same shapes exercise the
# phase-split accumulator and (channels_last) the channels-innermost loop.
TILED_MODES = {
    'conv0_fir': MODES['conv0_fir'], 'torgb_up2': MODES['torgb_up2'], 'down2': MODES['down2'],
    'fir_crop_flip': ('1331', (1, 1), (1, 1), (-1, 2, 3, -2), True, 1.5),
    'up2_crop': ('1331', (2, 2), (1, 1), (-3, 1, 1, -2), False, 4.0),
    'down2_asym': ('1331', (1, 1), (2, 2), (0, 1, 2, 1), False, 1.0),
}
TILED_SHAPES = [(1, 3, 65, 129), (1, 2, 66, 130), (8, 2, 17, 33), (8, 1, 33, 64), (1, 1, 5, 3)]


@pytest.mark.parametrize('device,dtype', [('cpu', torch.float32)] + [
    pytest.param('cuda', d, marks=CUDA.marks) for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16)])
@pytest.mark.parametrize('name', list(TILED_MODES))
def test_tiled_shapes(name, dtype, device, gen):
    mode = TILED_MODES[name]
    f = make_filter(mode[0], gen, device)
    for shape in TILED_SHAPES:
        for layout in ('contiguous', 'channels_last'):
            x = draw(shape, layout, dtype, device, gen)
            y = _ext.upfirdn2d_ext(x, f, mode[1][0], mode[1][1], mode[2][0], mode[2][1], *mode[3], mode[4], mode[5])
            r = _upfirdn2d_ref(x.double(), f, *mode[1:])
            what = f'{name} {dtype} {shape} {layout}'
            assert y.shape == r.shape, what
            assert not y.isnan().any(), f'{what}: unwritten (NaN) outputs'
            close(y, r, dtype, what, gen)


# The CPU rank-1 fast path (f = col (x) row: two 1-D passes through a ring of x-filtered rows) against
# the reference in float64: asymmetric exact-in-float32 factors (so flip matters), up/down 2 and 3,
# cropping pads, odd sizes, batch 1 and 8, both layouts; plus an almost-rank-1 filter (generic path).
RANK1_MODES = [((1, 1), (1, 1), (1, 1, 1, 1), False, 4.0), ((2, 2), (1, 1), (2, 1, 2, 1), True, 4.0),
               ((1, 1), (2, 2), (1, 2, 0, 1), False, 1.0), ((1, 2), (3, 1), (-1, 2, 3, -2), True, 1.5),
               ((3, 1), (1, 2), (2, -1, -1, 2), False, 0.5)]


@pytest.mark.parametrize('filt', ['rank1', 'almost_rank1', 'column', 'row'])
@pytest.mark.parametrize('mode', range(len(RANK1_MODES)))
def test_rank1_filters_cpu_float64(filt, mode, gen):
    col, row = torch.tensor([1., 2., 5.]) / 8, torch.tensor([3., 1., 4., 2.]) / 16
    f = {'rank1': torch.outer(col, row), 'almost_rank1': torch.outer(col, row) + torch.eye(3, 4) * 1e-3,
         'column': col[:, None], 'row': row[None]}[filt]
    up, down, pad, flip, gain = RANK1_MODES[mode]
    for shape in [(1, 3, 9, 7), (8, 2, 6, 11), (1, 1, 4, 3)]:
        for layout in ('contiguous', 'channels_last'):
            x = draw(shape, layout, torch.float64, 'cpu', gen).requires_grad_()
            y = _ext.upfirdn2d_ext(x, f, up[0], up[1], down[0], down[1], *pad, flip, gain)
            r = _upfirdn2d_ref(x, f, up, down, pad, flip, gain)
            what = f'{filt} {RANK1_MODES[mode]} {shape} {layout}'
            assert y.shape == r.shape and not y.isnan().any(), what
            close(y, r, torch.float64, what, gen)
            gy = torch.randn(r.shape, generator=gen, dtype=torch.float64)
            close(torch.autograd.grad(y, x, gy)[0], torch.autograd.grad(r, x, gy)[0], torch.float64,
                  what + ' gradient', gen)


# Planes whose output fills at most 1/8 of a tile (<= 256 outputs for up 1 / up 2, <= 128 for down 2) take the
# simple kernel's 4x4 specialisations on CUDA, which flip and scale the raw filter themselves: an asymmetric
# filter (so the flip matters) in each of the three modes, both flips, a gain that is not a power of two, output
# sizes just inside and just outside the threshold, and the same in channels_last (always the simple kernel).
SMALL_MODES = {'fir': ((1, 1), (1, 1), (1, 1, 1, 1)), 'up2': ((2, 2), (1, 1), (2, 1, 2, 1)),
               'down2': ((1, 1), (2, 2), (1, 1, 1, 1))}
SMALL_SHAPES = [(8, 4, 9, 9), (1, 2, 17, 17), (2, 3, 18, 17), (1, 1, 4, 4), (3, 2, 8, 8), (2, 2, 23, 21)]


@pytest.mark.parametrize('device,dtype', [('cpu', torch.float64)] + [
    pytest.param('cuda', d, marks=CUDA.marks) for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16)])
@pytest.mark.parametrize('flip', [False, True])
@pytest.mark.parametrize('name', list(SMALL_MODES))
def test_small_planes_asymmetric_4x4(name, flip, dtype, device, gen):
    up, down, pad = SMALL_MODES[name]
    f = (torch.rand(4, 4, generator=gen) + 0.1).to(device)
    for shape in SMALL_SHAPES:
        for layout in ('contiguous', 'channels_last'):
            x = draw(shape, layout, dtype, device, gen)
            y = _ext.upfirdn2d_ext(x, f, up[0], up[1], down[0], down[1], *pad, flip, 1.7)
            r = _upfirdn2d_ref(x.double(), f, up, down, pad, flip, 1.7)
            what = f'{name} flip={flip} {dtype} {shape} {layout}'
            assert y.shape == r.shape, what
            assert not y.isnan().any(), f'{what}: unwritten (NaN) outputs'
            close(y, r, dtype, what, gen)


# The experimental register-blocked FIR kernel (GANINV_UPFIRDN_RB=1; up = down = 1, 4x4, NCHW, planes larger than
# 16x16): 32 x 64 output tiles, 8 rows per thread. Sizes that end mid-tile, on a tile, one past it, odd; batch 8;
# cropping and padding; an asymmetric filter, both flips; against the reference and against the default kernel.
RB_SHAPES = [(1, 3, 65, 129), (2, 2, 64, 32), (1, 2, 66, 34), (8, 1, 33, 17), (1, 1, 130, 70)]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('device', [CUDA])
def test_fir_register_blocked_kernel(device, dtype, gen, monkeypatch):
    for pad in ((1, 1, 1, 1), (-1, 2, 3, -2), (2, 0, 0, 2)):
        for flip in (False, True):
            f = (torch.rand(4, 4, generator=gen) + 0.1).to(device)
            for shape in RB_SHAPES:
                x = draw(shape, 'contiguous', dtype, device, gen)
                monkeypatch.setenv('GANINV_UPFIRDN_RB', '1')
                y = _ext.upfirdn2d_ext(x, f, 1, 1, 1, 1, *pad, flip, 1.7)
                monkeypatch.setenv('GANINV_UPFIRDN_RB', '0')
                y_tiled = _ext.upfirdn2d_ext(x, f, 1, 1, 1, 1, *pad, flip, 1.7)
                r = _upfirdn2d_ref(x.double(), f, 1, 1, pad, flip, 1.7)
                what = f'rb {dtype} {shape} pad={pad} flip={flip}'
                assert y.shape == r.shape, what
                assert not y.isnan().any(), f'{what}: unwritten (NaN) outputs'
                close(y, r, dtype, what, gen)
                close(y, y_tiled.double(), dtype, what + ' vs the tiled kernel', gen)


# The packed CUDA kernel (channels_last x and y, C a multiple of the 16-byte pack: 8 half/bfloat16, 4 float, 2 double,
# both 16-byte aligned): C = 8, 16, 24, 32 (packs for every dtype), 12 (float, double), 6 (double), 5 (none: the
# simple kernel); each also as a misaligned view (one element into its storage: the simple kernel). The 4x4
# specialisations (up 2, FIR, down 2) and the generic kernel (3x5 and 2x3 filters, up/down 3, anisotropic factors,
# negative pads, separable passes), both flips; H or W of 1; against the float64 reference and the same input in
# NCHW (other kernels). On the CPU the same cases run the channels-innermost loops.
PACKED_MODES = {
    'torgb_up2': MODES['torgb_up2'], 'conv0_fir': MODES['conv0_fir'], 'down2': MODES['down2'],
    'fir_crop_flip': TILED_MODES['fir_crop_flip'], 'up3_down2_negpad': MODES['up3_down2_negpad'],
    'aniso': MODES['aniso'], 'rect_filter': MODES['rect_filter'], 'up2_sep8': MODES['up2_sep8'],
    'odd_flip_negpad': ('odd', (1, 2), (2, 1), (-1, 2, 2, -1), True, 0.5),
}
PACKED_SHAPES = [(2, 8, 7, 9), (1, 16, 1, 13), (3, 32, 6, 1), (1, 32, 33, 17), (2, 24, 4, 4), (1, 12, 9, 17),
                 (2, 6, 5, 4), (1, 5, 4, 6)]


def draw_misaligned(shape, dtype, device, gen):
    """A channels_last view starting one element into its storage (not 16-byte aligned)."""
    n, c, h, w = shape
    buf = torch.randn(n * c * h * w + 1, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    return buf.as_strided(shape, (h * w * c, 1, w * c, c), storage_offset=1)


def out_shape(shape, mode, f):
    """(outH, outW) of `mode` on an x of `shape`; 0 where the filter does not fit."""
    _, up, down, pad, _, _ = mode
    fh, fw = (f.shape[0], f.shape[0]) if f.dim() == 1 else f.shape
    spans = (shape[2] * up[1] + pad[2] + pad[3] - fh, shape[3] * up[0] + pad[0] + pad[1] - fw)
    return tuple(s // d + 1 if s >= 0 else 0 for s, d in zip(spans, (down[1], down[0])))


@pytest.mark.parametrize('device,dtype', [('cpu', torch.float64), ('cpu', torch.float32)] + [
    pytest.param('cuda', d, marks=CUDA.marks) for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16)])
@pytest.mark.parametrize('name', list(PACKED_MODES))
def test_channels_last_packs(name, dtype, device, gen):
    mode = PACKED_MODES[name]
    f = make_filter(mode[0], gen, device)
    args = (mode[1][0], mode[1][1], mode[2][0], mode[2][1], *mode[3], mode[4], mode[5])
    ran = 0
    for shape in PACKED_SHAPES:
        if min(out_shape(shape, mode, f)) < 1:  # too small for this mode's filter
            continue
        for layout in ('channels_last', 'misaligned'):
            x = (draw(shape, layout, dtype, device, gen) if layout == 'channels_last'
                 else draw_misaligned(shape, dtype, device, gen))
            packed = layout == 'channels_last' and shape[1] % (16 // x.element_size()) == 0
            what = f'{name} {dtype} {shape} {layout} ({"packed" if packed else "simple"} kernel on CUDA)'
            y = _ext.upfirdn2d_ext(x, f, *args)
            r = _upfirdn2d_ref(x.double(), f, *mode[1:])
            assert y.shape == r.shape, what
            assert not y.isnan().any(), f'{what}: unwritten (NaN) outputs'
            assert y.is_contiguous(memory_format=torch.channels_last), f'{what}: layout not kept'
            close(y, r, dtype, what, gen)
            close(y, _ext.upfirdn2d_ext(x.contiguous(), f, *args).double(), dtype, what + ' vs NCHW', gen)
            ran += 1
    assert ran >= 8, f'{name}: only {ran} cases ran'


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('shape', [(2, 3, 0, 5), (2, 3, 5, 0), (0, 3, 5, 5)])
def test_empty_input_has_an_empty_gradient(shape, device):
    """An input with no elements whose padded output is not empty (padding 2 around a 4x4 filter): the forward as the
    reference's, and a gradient of the input's shape (the adjoint would ask for an empty output, which is refused)."""
    f = ops.setup_filter([1, 3, 3, 1], device=device)
    outs = {}
    for impl in ('ref', 'ext'):
        x = torch.zeros(shape, device=device, requires_grad=True)
        y = ops.upfirdn2d(x, f, padding=2, impl=impl)
        (y * torch.arange(y.numel(), device=device).view(y.shape)).sum().backward()
        assert x.grad.shape == x.shape
        outs[impl] = y.detach()
    torch.testing.assert_close(outs['ext'], outs['ref'])
