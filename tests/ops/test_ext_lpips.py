"""Compiled lpips_distance (torch.ops.ganinv) against autograd through the plain float64 formula.

dist = sum_c (g_c f_c / (|f| + eps) - t_c)^2 per pixel, and its gradient with respect to f. Inputs are drawn fresh
each run (seed in the failure message) with a pixel whose features are all zero (|f| = 0: the norm's gradient is
taken as 0 there, as torch.linalg.vector_norm's); the target is a view into a wider [N, F] feature matrix, or one
image broadcast over the batch; outputs are NaN-poisoned.
"""
import pytest
import torch

from ganinv_core import ops
from ganinv_core.ops import OpArgumentError, _ext
from ganinv_core.ops.lpips import _lpips_ref

from _devices import DEVICES

pytestmark = pytest.mark.usefixtures('_poison')

# batch 1, one channel, 1x1 planes, odd sizes, more channels than the CUDA kernel's 8 lanes, planes larger than
# one CPU task (256 pixels) and one CUDA block (32)
SHAPES = [(1, 1, 1, 1), (2, 5, 7, 9), (3, 19, 33, 17), (2, 64, 20, 20)]
# (rtol, atol relative to the largest magnitude) of the distance (always computed in float32/64) and gradient
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 1e-5), torch.bfloat16: (1e-5, 1e-2),
       torch.float16: (1e-5, 2e-3)}


def draw(shape, dtype, device, gen, target='view'):
    """(f, t, g): ReLU-like features with one all-zero pixel, a target laid out as `target` says, weights >= 0."""
    n, c, h, w = shape
    f = torch.randn(shape, generator=gen, dtype=torch.float64).clamp_min(0) + 0.05
    f[0, :, h // 2, w // 2] = 0
    dt = torch.float64 if dtype == torch.float64 else torch.float32
    if target == 'view':    # each image a [C, H, W] block of a longer row, as VGG16Features.distance slices them
        wide = torch.randn(n, c * h * w + 7, generator=gen, dtype=torch.float64).to(device=device, dtype=dt)
        t = wide[:, 3:3 + c * h * w].view(n, c, h, w)
    elif target == 'broadcast':
        t = torch.randn((1, c, h, w), generator=gen, dtype=torch.float64).to(device=device, dtype=dt).expand(n, -1, -1, -1)
    else:
        t = torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dt)
    g = torch.rand(c, generator=gen, dtype=torch.float64).to(device=device, dtype=dt)
    return f.to(device=device, dtype=dtype), t, g


def reference(f, t, g, gd):
    """(dist, df) by autograd through the plain formula in float64, from the same (rounded) inputs."""
    x = f.detach().double().requires_grad_()
    d = _lpips_ref(x, t.double(), g.double(), 1e-10)
    return d.detach(), torch.autograd.grad(d, x, gd.double())[0]


def check(f, t, g, gen, what):
    x = f.detach().clone().requires_grad_()
    d = ops.lpips_distance(x, t, g, impl='ext')
    gd = torch.randn(d.shape, generator=gen, dtype=torch.float64).to(device=d.device, dtype=d.dtype)
    (df,) = torch.autograd.grad(d, x, gd)
    want_d, want_df = reference(f, t, g, gd)
    assert d.dtype == (torch.float64 if f.dtype == torch.float64 else torch.float32) and df.dtype == f.dtype, what
    rtol, atol = TOL[f.dtype]
    close(d, want_d, rtol, rtol, f'{what} dist', gen)
    # The gradient at an all-zero pixel is ~2 g t / eps (1e10; inf in float16): compared on its own, after the
    # same rounding, so that it does not set the scale of the other pixels' tolerance.
    live = (f != 0).any(1).unsqueeze(1).expand_as(f)
    close(df[live], want_df[live], rtol, atol, f'{what} df', gen)
    close(df[~live], want_df[~live].to(f.dtype).double(), atol, 0.0, f'{what} df at |f| = 0', gen)


def close(a, r, rtol, atol, what, gen):
    assert a.shape == r.shape, f'{what}: {a.shape} vs {r.shape}'
    finite = r[r.isfinite()].abs()
    scale = max(1.0, finite.max().item()) if finite.numel() else 1.0
    torch.testing.assert_close(a.double(), r, rtol=rtol, atol=atol * scale,
                               msg=lambda m: f'{what} (seed {gen.initial_seed()}): {m}')


@pytest.mark.parametrize('target', ['view', 'broadcast', 'contiguous'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize('device', DEVICES)
def test_matches_the_reference(device, dtype, target, gen):
    for shape in SHAPES:
        check(*draw(shape, dtype, device, gen, target), gen, f'{device} {dtype} {shape} target={target}')


@pytest.mark.parametrize('device', DEVICES)
def test_gradcheck_and_gradgradcheck_float64(device, gen):
    f, t, g = draw((2, 3, 4, 5), torch.float64, device, gen)
    f = f + 0.1   # no zero pixel: finite differences across |f| = 0 are meaningless
    f.requires_grad_()
    fn = lambda x: ops.lpips_distance(x, t, g, impl='ext')  # noqa: E731
    assert torch.autograd.gradcheck(fn, (f,))
    assert torch.autograd.gradgradcheck(fn, (f,))   # the backward's own gradient: the PyTorch formula


@pytest.mark.parametrize('device', DEVICES)
def test_the_kernel_runs_where_it_applies(device, gen, monkeypatch):
    """impl='ext' reaches the compiled pair; a target or weight that needs a gradient takes the reference."""
    seen = []
    for name in ('lpips_distance_ext', 'lpips_distance_backward_ext'):
        real = getattr(_ext, name)
        monkeypatch.setattr(_ext, name, lambda *a, _r=real, _n=name: seen.append(_n) or _r(*a))
    f, t, g = draw((2, 4, 6, 5), torch.float32, device, gen)
    x = f.clone().requires_grad_()
    ops.lpips_distance(x, t, g, impl='ext').sum().backward()
    assert seen == ['lpips_distance_ext', 'lpips_distance_backward_ext']
    seen.clear()
    tg = t.detach().clone().requires_grad_()
    d = ops.lpips_distance(x, tg, g, impl='ext')
    dt, = torch.autograd.grad(d.sum(), tg)
    assert seen == []
    torch.testing.assert_close(d, _lpips_ref(f, t, g, 1e-10))
    assert dt.abs().sum() > 0
    ops.lpips_distance(x, t, g, impl='ref').sum().backward()
    assert seen == []


@pytest.mark.parametrize('device', DEVICES)
def test_opcheck(device, gen):
    f, t, g = draw((2, 5, 4, 3), torch.float32, device, gen, target='contiguous')
    d, norm, s = torch.ops.ganinv.lpips_distance(f, t, g, 1e-10)
    torch.library.opcheck(torch.ops.ganinv.lpips_distance.default, (f, t, g, 1e-10))
    torch.library.opcheck(torch.ops.ganinv.lpips_distance_backward.default, (torch.ones_like(d), f, t, g, norm, s,
                                                                              1e-10))
    # the saved per-pixel norm is |f|, and s = sum_c g_c r_c f_c
    torch.testing.assert_close(norm, torch.linalg.vector_norm(f, dim=1))
    r = f * (g.view(1, -1, 1, 1) / (norm.unsqueeze(1) + 1e-10)) - t
    torch.testing.assert_close(s, (g.view(1, -1, 1, 1) * r * f).sum(1))


def test_bad_arguments_name_the_input():
    f, t, g = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), torch.ones(3)
    with pytest.raises(OpArgumentError, match=r'lpips_distance: t must match f \(2, 3, 4, 4\)'):
        ops.lpips_distance(f, t[:1], g)
    with pytest.raises(OpArgumentError, match=r'lpips_distance: g must be a \[3\] per-channel weight'):
        ops.lpips_distance(f, t, torch.ones(4))
    with pytest.raises(OpArgumentError, match='lpips_distance: f must be a'):
        ops.lpips_distance(torch.zeros(3, 4), t, g)
    with pytest.raises(ValueError, match='lpips_distance: t must be Float'):
        torch.ops.ganinv.lpips_distance(f, t.double(), g, 1e-10)
    with pytest.raises(ValueError, match=r'lpips_distance: each image of t must be contiguous \[C, H, W\]'):
        torch.ops.ganinv.lpips_distance(f, t.transpose(2, 3), g, 1e-10)
    # 1x1 planes: a channel slice (stride 2 between channels) is not a dense image either
    f1, t1 = torch.rand(2, 3, 1, 1), torch.rand(2, 6, 1, 1)[:, ::2]
    with pytest.raises(ValueError, match=r'lpips_distance: each image of t must be contiguous \[C, H, W\]'):
        torch.ops.ganinv.lpips_distance(f1, t1, g, 1e-10)
    torch.testing.assert_close(ops.lpips_distance(f1, t1, g, impl='ext'), _lpips_ref(f1, t1, g, 1e-10))
    with pytest.raises(ValueError, match='lpips_distance_backward: norm must be'):
        torch.ops.ganinv.lpips_distance_backward(torch.ones(2, 4, 4), f, t, g, torch.ones(2, 4), torch.ones(2, 4, 4),
                                                 1e-10)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
def test_empty_batch(device, layout):
    """A batch of no images (any layout: torch calls an empty tensor contiguous whatever its strides): empty distances
    and an empty gradient on both paths."""
    fmt = torch.channels_last if layout == 'channels_last' else torch.contiguous_format
    for impl in ('ref', 'ext'):
        f = torch.rand(0, 4, 3, 5, device=device).contiguous(memory_format=fmt).requires_grad_()
        t = torch.rand(0, 4, 3, 5, device=device).contiguous(memory_format=fmt)
        d = ops.lpips_distance(f, t, torch.rand(4, device=device), impl=impl)
        d.sum().backward()
        assert d.shape == (0, 3, 5) and f.grad.shape == f.shape, impl
