"""Compiled bias_act (torch.ops.ganinv) against the reference `_bias_act_ref`.

Inputs are drawn fresh every run (the seed is in each failure message; GANINV_TEST_SEED replays it), off the
clamp where a gradient is compared, and outputs are NaN-poisoned (GANINV_DEBUG_POISON=1) so an element a kernel
forgets to write cannot pass. Tolerances: float64 1e-10; float32 1e-5 (CPU and CUDA); float16 rtol 4e-3 / atol 2e-3
and bfloat16 rtol 3e-2 / atol 2e-2 against the float64 reference of the same (rounded) inputs: half an output ulp
plus float accumulation.
"""

import pytest
import torch

from ganinv_core.ops import _ext
from ganinv_core.ops.bias_act import ACTIVATIONS, _bias_act_ref

from _devices import CUDA, DEVICES

pytestmark = pytest.mark.usefixtures('_poison')

TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 1e-5), torch.float16: (4e-3, 2e-3),
       torch.bfloat16: (3e-2, 2e-2)}  # (rtol, atol)

# (shape, dim, layout): batch 1, odd sizes, channels_last, non-contiguous, bias on a non-channel axis.
CASES = [((1, 3, 4, 4), 1, 'contiguous'), ((2, 5, 7, 3), 1, 'channels_last'), ((3, 4, 5, 6), 1, 'strided'),
         ((7, 9), 1, 'contiguous'), ((6, 5, 3), 0, 'contiguous'), ((2, 3, 5, 4), 2, 'channels_last'),
         ((1, 1, 1, 1), 1, 'contiguous'), ((11,), 0, 'contiguous'), ((2, 4, 3, 3), 3, 'strided')]


def draw(shape, layout, dtype, device, gen, scale=1.5):
    """A random tensor of `shape` in the given memory layout ('contiguous', 'channels_last', 'strided')."""
    if layout == 'strided':  # a transposed view of a bigger tensor, then sliced: neither layout is dense
        big = torch.randn(*shape[:-2], shape[-1], 2 * shape[-2], generator=gen, dtype=torch.float64)
        t = big.transpose(-1, -2)[..., ::2, :]
    else:
        t = torch.randn(shape, generator=gen, dtype=torch.float64)
    t = (t * scale).to(device=device, dtype=dtype)
    if layout == 'channels_last':
        t = t.contiguous(memory_format=torch.channels_last)
        assert not t.is_contiguous()
    return t


def params(act, clamp):
    spec = ACTIVATIONS[act]
    alpha = 0.3 if act == 'lrelu' else spec.def_alpha
    return alpha, spec.def_gain, clamp


def both(x, b, dim, act, clamp):
    alpha, gain, clamp = params(act, clamp)
    return (_ext.bias_act_ext(x, b, dim, act, alpha, gain, clamp),
            _bias_act_ref(x, b, dim, act, alpha, gain, clamp))


def grads(y, inputs, gy, create_graph=False):
    g = torch.autograd.grad(y, inputs, gy, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(i) if d is None else d for i, d in zip(inputs, g)]


def plus(b, dim, ndim):
    """x -> x + b along `dim` in float64 (the pre-activation, for `clear_of_kinks`)."""
    return lambda x: x.double() + b.double().view([-1 if i == dim else 1 for i in range(ndim)])


def close(a, b, dtype, what, gen, terms=1):
    """a ~ b at the dtype's tolerance; `terms`: a is a sum of that many rounded values, whose rounding errors add
    up like a random walk (atol scaled by sqrt(terms))."""
    rtol, atol = TOL[dtype]
    atol *= max(1, terms) ** 0.5
    torch.testing.assert_close(a.to(torch.float64), b.to(torch.float64), rtol=rtol, atol=atol,
                               msg=lambda m: f'{what} (seed {gen.initial_seed()}): {m}')


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('clamp', [None, 0.8])
@pytest.mark.parametrize('act', list(ACTIVATIONS))
def test_forward_first_second_derivatives_float64(act, clamp, device, gen):
    for shape, dim, layout in CASES:
        x = draw(shape, layout, torch.float64, device, gen).requires_grad_()
        b = draw((shape[dim],), 'contiguous', torch.float64, device, gen).requires_grad_()
        for bias in (b, None):
            y, r = both(x, bias, dim, act, clamp)
            what = f'{act} clamp={clamp} {shape} dim={dim} {layout} bias={bias is not None}'
            assert y.shape == r.shape and y.dtype == r.dtype
            assert not y.isnan().any(), f'{what}: unwritten (NaN) outputs'
            close(y, r, torch.float64, what + ' forward', gen)
            inputs = [x] if bias is None else [x, bias]
            gy = draw(shape, 'contiguous', torch.float64, device, gen).requires_grad_()
            g_ext, g_ref = grads(y, inputs, gy, True), grads(r, inputs, gy, True)
            for a, c in zip(g_ext, g_ref):
                close(a, c, torch.float64, what + ' first derivative', gen)
            # Second order: a scalar of the first derivatives, differentiated w.r.t. inputs and gy.
            w = draw(shape, 'contiguous', torch.float64, device, gen)
            s_ext = (g_ext[0] * w).sum() + g_ext[-1].square().sum()
            s_ref = (g_ref[0] * w).sum() + g_ref[-1].square().sum()
            if not s_ref.requires_grad:  # the reference's first derivative is constant (linear, no bias)
                continue
            for a, c in zip(grads(s_ext, inputs + [gy], None), grads(s_ref, inputs + [gy], None)):
                close(a, c, torch.float64, what + ' second derivative', gen)


@pytest.mark.parametrize('device,dtype', [('cpu', torch.float32), ('cpu', torch.float16), ('cpu', torch.bfloat16)] + [
    pytest.param('cuda', d, marks=CUDA.marks) for d in (torch.float32, torch.float16, torch.bfloat16)])
def test_float_dtypes(dtype, device, gen):
    for act in ACTIVATIONS:
        for clamp in (None, 0.7):
            for shape, dim, layout in CASES[:6]:
                x = draw(shape, layout, dtype, device, gen)
                b = draw((shape[dim],), 'contiguous', dtype, device, gen)
                alpha, gain, clmp = params(act, clamp)
                y = _ext.bias_act_ext(x, b, dim, act, alpha, gain, clmp)
                r = _bias_act_ref(x.double(), b.double(), dim, act, alpha, gain, clmp)
                assert y.dtype == dtype
                close(y, r, dtype, f'{act} {dtype} {shape} {layout}', gen)


@pytest.mark.parametrize('device', DEVICES)
def test_layout_is_preserved(device, gen):
    x = draw((2, 6, 5, 5), 'channels_last', torch.float32, device, gen)
    y = _ext.bias_act_ext(x, None, 1, 'lrelu', 0.2, 2 ** 0.5, None)
    assert y.stride() == x.stride()
    gx = torch.ops.ganinv.bias_act_grad(torch.ones(2, 6, 5, 5, device=device), x, x.new_empty([0]), 1, 1, 2, 0.2, 1.0, -1.0)
    assert gx.stride() == x.stride()


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('act', list(ACTIVATIONS))
def test_gradcheck_gradgradcheck(act, device, gen):
    for clamp in (None, 0.9):
        x = draw((2, 3, 3, 2), 'contiguous', torch.float64, device, gen).requires_grad_()
        b = draw((3,), 'contiguous', torch.float64, device, gen).requires_grad_()
        # Keep x + b away from the kinks (0 for relu-like, +-clamp) where finite differences lie.
        with torch.no_grad():
            x.add_(torch.where((x + b[:, None, None]).abs() < 0.05, 0.2, 0.0))
        alpha, gain, clmp = params(act, clamp)
        fn = lambda x_, b_: _ext.bias_act_ext(x_, b_, 1, act, alpha, gain, clmp)  # noqa: E731
        y = fn(x, b).detach()
        if clmp is not None and ((y.abs() - clmp).abs() < 1e-3).any():
            continue
        assert torch.autograd.gradcheck(fn, (x, b), eps=1e-6, atol=1e-5)
        assert torch.autograd.gradgradcheck(fn, (x, b), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('act', ['linear', 'lrelu', 'swish'])
def test_opcheck(act, device, gen):
    x = draw((2, 4, 3, 3), 'contiguous', torch.float32, device, gen).requires_grad_()
    b = draw((4,), 'contiguous', torch.float32, device, gen).requires_grad_()
    code = _ext.ACT_CODES[act]
    torch.library.opcheck(torch.ops.ganinv.bias_act.default, (x, b, 1, code, 0.2, 1.4, -1.0))
    torch.library.opcheck(torch.ops.ganinv.bias_act.default, (x.contiguous(memory_format=torch.channels_last),
                                                              b, 1, code, 0.2, 1.4, 0.5))
    g = draw((2, 4, 3, 3), 'contiguous', torch.float32, device, gen).requires_grad_()
    torch.library.opcheck(torch.ops.ganinv.bias_act_grad.default, (g, x, b, 1, 1, code, 0.2, 1.4, 0.5))


def test_bad_arguments_raise_value_errors():
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match='b must have shape'):
        torch.ops.ganinv.bias_act(x, torch.zeros(5), 1, 0, 0.0, 1.0, -1.0)
    with pytest.raises(ValueError, match='unknown activation'):
        torch.ops.ganinv.bias_act(x, torch.zeros(3), 1, 99, 0.0, 1.0, -1.0)


# Shapes long enough for the vectorised CPU spans and the packed CUDA kernel (16-byte packs: 4 float,
# 8 half): planes of H*W a multiple of the pack and not, channels_last (the bias changes every element).
VEC_CASES = [((2, 4, 8, 8), 'contiguous'), ((1, 3, 9, 13), 'contiguous'), ((2, 19, 5, 7), 'channels_last'),
             ((8, 5, 16, 17), 'contiguous'), ((1, 1, 1, 37), 'contiguous')]


@pytest.mark.parametrize('device,dtype', [('cpu', torch.float32), ('cpu', torch.float64)] + [
    pytest.param('cuda', d, marks=CUDA.marks) for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16)])
@pytest.mark.parametrize('act', ['linear', 'relu', 'lrelu', 'swish'])
def test_vector_paths_forward_and_derivative(act, dtype, device, gen, clear_of_kinks):
    """The explicit-vector CPU spans (linear/relu/lrelu) and the packed CUDA kernel, against the reference."""
    for shape, layout in VEC_CASES:
        for clamp in (None, 0.9):
            x = draw(shape, layout, dtype, device, gen)
            b = draw((shape[1],), 'contiguous', dtype, device, gen)
            gy = draw(shape, 'contiguous', dtype, device, gen)
            alpha, gain, clmp = params(act, clamp)
            clear_of_kinks(x, (plus(b, 1, x.dim()), plus(b * 0, 1, x.dim())), act, alpha, gain, clmp)  # bias, none
            for bias in (b, None):
                what = f'{act} {dtype} clamp={clamp} {shape} {layout} bias={bias is not None}'
                y = _ext.bias_act_ext(x, bias, 1, act, alpha, gain, clmp)
                xd = x.double().requires_grad_()
                r = _bias_act_ref(xd, None if bias is None else bias.double(), 1, act, alpha, gain, clmp)
                assert not y.isnan().any(), f'{what}: unwritten (NaN) outputs'
                close(y, r, dtype, what + ' forward', gen)
                bb = x.new_empty([0]) if bias is None else bias
                dx = torch.ops.ganinv.bias_act_grad(gy, x, bb, 1, 1, _ext.ACT_CODES[act], alpha, gain,
                                                    -1.0 if clmp is None else clmp)
                (dr,) = torch.autograd.grad(r, xd, gy.double())
                assert not dx.isnan().any(), f'{what}: unwritten (NaN) gradient'
                close(dx, dr, dtype, what + ' first derivative', gen)


@pytest.mark.parametrize('device', [CUDA])
def test_cuda_unaligned_input_takes_a_correct_path(device, gen):
    """x at an odd offset (not 16-byte aligned): the packed kernel must not be used, the result is still right."""
    base = draw((1, 2 * 4 * 8 * 8 + 1), 'contiguous', torch.float32, device, gen)
    x = base[0, 1:].view(2, 4, 8, 8)
    b = draw((4,), 'contiguous', torch.float32, device, gen)
    y = _ext.bias_act_ext(x, b, 1, 'lrelu', 0.2, 2 ** 0.5, 0.5)
    r = _bias_act_ref(x.double(), b.double(), 1, 'lrelu', 0.2, 2 ** 0.5, 0.5)
    close(y, r, torch.float32, 'unaligned', gen)


def test_poisoning_exposes_unwritten_outputs(monkeypatch):
    """GANINV_DEBUG_POISON=1 must NaN-fill fresh outputs, so an op that writes nothing fails the tests' checks.

    `ganinv::_unwritten_like` allocates its output like the kernels do and writes nothing.
    """
    x = torch.zeros(3, 5, 7)
    out = torch.ops.ganinv._unwritten_like(x)
    assert out.shape == x.shape and out.isnan().all()
    # Read per call: off again, the same op no longer poisons (memory content is then arbitrary,
    # so check the op still runs rather than its values).
    monkeypatch.setenv('GANINV_DEBUG_POISON', '0')
    assert torch.ops.ganinv._unwritten_like(x).shape == x.shape


# bias_act_backward: NCHW planes (fused: runs of one bias value, a multiple of the 16-byte pack and not, several
# chunks per run on CUDA above 8192 elements, the CPU's 4096-element flush), a non-channel axis whose runs
# alternate within a plane; channels innermost (channels_last, [N, C]; fused on the CPU: two blocks of rows, 128-row
# flushes, a last block shorter than the others; dx + a reduction on CUDA); and runs of 2 to 15 elements (3x3
# planes: dx + a reduction).
BWD_CASES = [((2, 4, 8, 8), 1, 'contiguous'), ((1, 3, 9, 13), 1, 'contiguous'), ((2, 3, 100, 101), 1, 'contiguous'),
             ((2, 3, 5, 40), 2, 'contiguous'), ((2, 5, 7, 3), 1, 'channels_last'), ((7, 9), 1, 'contiguous'),
             ((2, 3, 100, 101), 1, 'channels_last'), ((40, 1500), 1, 'contiguous'), ((2, 5, 3, 3), 1, 'contiguous'),
             ((3, 4, 5, 6), 1, 'strided'), ((0, 4, 8, 8), 1, 'contiguous')]


def bias_backward_ref(x, b, gy, dim, act, alpha, gain, clamp):
    """(dx, db) of the float64 reference, by autograd."""
    xd, bd = x.double().requires_grad_(), b.double().requires_grad_()
    y = _bias_act_ref(xd, bd, dim, act, alpha, gain, clamp)
    return torch.autograd.grad(y, (xd, bd), gy.double())


@pytest.mark.parametrize('device,dtype', [('cpu', d) for d in (torch.float64, torch.float32, torch.bfloat16)] + [
    pytest.param('cuda', d, marks=CUDA.marks) for d in (torch.float64, torch.float32, torch.float16, torch.bfloat16)])
@pytest.mark.parametrize('act', list(ACTIVATIONS))
def test_backward_with_bias_gradient(act, dtype, device, gen, clear_of_kinks):
    """`bias_act_backward` (dx and db in one pass) against the float64 reference, called directly and as the
    autograd of bias_act when the bias needs a gradient and no graph is built."""
    for shape, dim, layout in BWD_CASES:
        for clamp in (None, 0.8):
            x = draw(shape, layout, dtype, device, gen)
            b = draw((shape[dim],), 'contiguous', dtype, device, gen)
            gy = draw(shape, 'contiguous', dtype, device, gen)
            alpha, gain, clmp = params(act, clamp)
            clear_of_kinks(x, plus(b, dim, x.dim()), act, alpha, gain, clmp)
            what = f'{act} {dtype} clamp={clamp} {shape} dim={dim} {layout}'
            dr, dbr = bias_backward_ref(x, b, gy, dim, act, alpha, gain, clmp)
            dx, db = torch.ops.ganinv.bias_act_backward(gy, x, b, dim, _ext.ACT_CODES[act], alpha, gain,
                                                        -1.0 if clmp is None else clmp)
            assert dx.dtype == dtype and db.dtype == dtype and db.shape == b.shape
            assert not dx.isnan().any() and not db.isnan().any(), f'{what}: unwritten (NaN) outputs'
            close(dx, dr, dtype, what + ' dx', gen)
            close(db, dbr, dtype, what + ' db', gen, terms=x.numel() // b.numel())
            xg, bg = x.clone().requires_grad_(), b.clone().requires_grad_()
            ga, gb = torch.autograd.grad(_ext.bias_act_ext(xg, bg, dim, act, alpha, gain, clmp), (xg, bg), gy)
            close(ga, dr, dtype, what + ' autograd dx', gen)
            close(gb, dbr, dtype, what + ' autograd db', gen, terms=x.numel() // b.numel())


@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
@pytest.mark.parametrize('device', DEVICES)
def test_backward_bias_gradient_is_deterministic(device, layout, gen):
    """The per-channel sums are added in an order fixed by the shape (no atomics, no per-thread partial sums): runs
    agree bit for bit, on the CPU also with 1 and with 2 threads."""
    x = draw((4, 3, 64, 129), layout, torch.float32, device, gen)
    b = draw((3,), 'contiguous', torch.float32, device, gen)
    gy = draw((4, 3, 64, 129), layout, torch.float32, device, gen)
    first = torch.ops.ganinv.bias_act_backward(gy, x, b, 1, 2, 0.2, 2 ** 0.5, -1.0)
    threads = torch.get_num_threads()
    try:
        for n in (2, 1, 2) if device == 'cpu' else (threads,) * 3:
            torch.set_num_threads(n)
            again = torch.ops.ganinv.bias_act_backward(gy, x, b, 1, 2, 0.2, 2 ** 0.5, -1.0)
            assert all(torch.equal(a, c) for a, c in zip(first, again)), f'{n} thread(s)'
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize('device,dtype', [('cpu', torch.float16), ('cpu', torch.bfloat16)] + [
    pytest.param('cuda', d, marks=CUDA.marks) for d in (torch.float16, torch.bfloat16)])
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
def test_16bit_bias_gradient_sums_the_unrounded_values(layout, dtype, device):
    """db in 16-bit is the rounded sum of the float32 per-element gradients, in every layout (channels_last takes
    dx + a reduction, which used to sum dx after rounding it). Each channel: 1024 elements with gradient gain =
    1 + 1/2048 (1.0 once rounded) and one with -1024 gain alpha = -1024, so db = 0.5 (rounded first: 0)."""
    gain = 1 + 2 ** -11
    x = torch.ones(1, 2, 5, 205, device=device, dtype=dtype)
    x[..., 0, 0] = -1
    g = torch.ones_like(x)
    g[..., 0, 0] = -1024
    if layout == 'channels_last':
        x, g = (t.contiguous(memory_format=torch.channels_last) for t in (x, g))
    dx, db = torch.ops.ganinv.bias_act_backward(g, x, torch.zeros(2, device=device, dtype=dtype), 1, 2, 1 / gain,
                                                gain, -1.0)
    assert torch.equal(db.float().cpu(), torch.full((2,), 0.5))
    assert dx.dtype == dtype and torch.equal(dx[0, 0, 0, 1:].float().cpu(), torch.ones(204))


class _OpLog(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('device', DEVICES)
def test_autograd_takes_the_one_pass_backward_only_without_create_graph(device, gen):
    """A bias that needs a gradient: one `bias_act_backward` call and no separate reduction; with create_graph the
    differentiable `bias_act_grad` + sum (second derivatives need it); without a bias gradient, `bias_act_grad`."""
    x = draw((2, 4, 8, 8), 'contiguous', torch.float32, device, gen).requires_grad_()
    b = draw((4,), 'contiguous', torch.float32, device, gen).requires_grad_()
    gy = torch.ones(2, 4, 8, 8, device=device)
    for wrt, create_graph, expect, absent in (((x, b), False, 'ganinv.bias_act_backward', 'aten.sum'),
                                               ((x, b), True, 'ganinv.bias_act_grad', 'ganinv.bias_act_backward'),
                                               ((x,), False, 'ganinv.bias_act_grad', 'ganinv.bias_act_backward')):
        y = _ext.bias_act_ext(x, b, 1, 'lrelu', 0.2, 2 ** 0.5, 0.5)
        with _OpLog() as log:
            torch.autograd.grad(y, wrt, gy, create_graph=create_graph)
        assert expect in log.names and absent not in log.names, (create_graph, len(wrt), log.names)


@pytest.mark.parametrize('device', DEVICES)
def test_plain_bias_add_passes_the_gradient_through(device, gen):
    """linear, gain 1, no clamp (ToRGB without conv_clamp) is y = x + b: x's gradient is the incoming one itself,
    as for torch's add (no copy, no kernel), and b's its sum; with a gain or a clamp it is computed."""
    x = draw((2, 3, 8, 8), 'contiguous', torch.float32, device, gen).requires_grad_()
    b = draw((3,), 'contiguous', torch.float32, device, gen).requires_grad_()
    gy = draw((2, 3, 8, 8), 'contiguous', torch.float32, device, gen)
    for create_graph in (False, True):
        with _OpLog() as log:
            gx, gb = torch.autograd.grad(_ext.bias_act_ext(x, b, 1, 'linear', 0.0, 1.0, None), (x, b), gy,
                                         create_graph=create_graph)
        assert gx.data_ptr() == gy.data_ptr() and torch.equal(gx, gy)
        assert not any(n.startswith('ganinv.bias_act_') for n in log.names), log.names
        torch.testing.assert_close(gb, gy.sum((0, 2, 3)), rtol=1e-6, atol=1e-6)
    for gain, clamp in ((2.0, None), (1.0, 0.5)):
        gx, = torch.autograd.grad(_ext.bias_act_ext(x, b, 1, 'linear', 0.0, gain, clamp), x, gy)
        assert gx.data_ptr() != gy.data_ptr()
        gr, = torch.autograd.grad(_bias_act_ref(x, b, 1, 'linear', 0.0, gain, clamp), x, gy)
        close(gx, gr, torch.float32, f'linear gain={gain} clamp={clamp}', gen)


@pytest.mark.parametrize('device', DEVICES)
def test_backward_opcheck_and_bad_bias(device, gen):
    for shape, layout in (((2, 4, 8, 8), 'contiguous'), ((2, 4, 3, 3), 'channels_last')):
        x = draw(shape, layout, torch.float32, device, gen)
        b = draw((4,), 'contiguous', torch.float32, device, gen)
        gy = draw(shape, 'contiguous', torch.float32, device, gen)
        torch.library.opcheck(torch.ops.ganinv.bias_act_backward.default, (gy, x, b, 1, 2, 0.2, 1.4, 0.5))
    # a gradient of another dtype is refused, also where its layout differs from x's (no silent conversion)
    xh = x.half().contiguous(memory_format=torch.channels_last)
    for fn in (lambda: torch.ops.ganinv.bias_act_backward(gy, xh, b.half(), 1, 2, 0.2, 1.4, -1.0),
               lambda: torch.ops.ganinv.bias_act_grad(gy, xh, b.half(), 1, 1, 2, 0.2, 1.4, -1.0)):
        with pytest.raises(ValueError, match="(the gradient must match|every input must have) x's dtype|the gradient must match x in dtype"):
            fn()
    with pytest.raises(ValueError, match='b must be a non-empty bias'):
        torch.ops.ganinv.bias_act_backward(gy, x, x.new_empty([0]), 1, 2, 0.2, 1.4, -1.0)
    # the whole message: a static copy of libstdc++ in the library cut it at the first number (crashed on CUDA)
    with pytest.raises(ValueError, match=r'b must have shape \[4\] \(x.shape\[dim\]\), got \[5\]'):
        torch.ops.ganinv.bias_act_backward(gy, x, x.new_zeros([5]), 1, 2, 0.2, 1.4, -1.0)
