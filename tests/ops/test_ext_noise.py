"""Compiled noise_autocorr (torch.ops.ganinv) against autograd through the roll-and-mean formula in float64.

a = (mean_hw x x.roll(1, w), mean_hw x x.roll(1, h)) per plane, and its gradient. Inputs are drawn fresh each run
(seed in the failure message) over sizes where the wrap-around matters (1 and 2 wide, odd, non-square, planes
larger than one CUDA block); outputs are NaN-poisoned.
"""
import pytest
import torch

from ganinv_core import ops
from ganinv_core.ops import OpArgumentError, _ext
from ganinv_core.ops.noise import _autocorr_ref

from _devices import DEVICES

pytestmark = pytest.mark.usefixtures('_poison')

SHAPES = [(1, 1, 1, 1), (2, 3, 1, 5), (2, 1, 2, 2), (1, 2, 7, 3), (3, 4, 8, 8), (2, 3, 64, 48)]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def reference(x, ga):
    xd = x.detach().double().requires_grad_()
    a = _autocorr_ref(xd)
    return a.detach(), torch.autograd.grad(a, xd, ga.double())[0]


def close(a, r, tol, what, gen):
    assert a.shape == r.shape, f'{what}: {a.shape} vs {r.shape}'
    torch.testing.assert_close(a.double(), r, rtol=tol, atol=tol * max(1.0, r.abs().max().item()),
                               msg=lambda m: f'{what} (seed {gen.initial_seed()}): {m}')


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize('device', DEVICES)
def test_matches_the_reference(device, dtype, gen):
    for shape in SHAPES:
        x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
        xr = x.clone().requires_grad_()
        a = ops.noise_autocorr(xr, impl='ext')
        assert a.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        ga = torch.randn(a.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=a.dtype)
        (gx,) = torch.autograd.grad(a, xr, ga)
        assert gx.dtype == dtype
        want_a, want_gx = reference(x, ga)
        what = f'{device} {dtype} {shape}'
        close(a, want_a, TOL[torch.float32] if dtype != torch.float64 else TOL[dtype], f'{what} a', gen)
        close(gx, want_gx, TOL[dtype], f'{what} gx', gen)


@pytest.mark.parametrize('device', DEVICES)
def test_gradcheck_and_gradgradcheck_float64(device, gen):
    x = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    fn = lambda t: ops.noise_autocorr(t, impl='ext')  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize('device', DEVICES)
def test_kernel_used_and_layouts(device, gen, monkeypatch):
    """impl='ext' reaches the compiled pair; a channels_last or sliced x gives the contiguous x's numbers."""
    seen = []
    for name in ('noise_autocorr_ext', 'noise_autocorr_backward_ext'):
        real = getattr(_ext, name)
        monkeypatch.setattr(_ext, name, lambda *a, _r=real, _n=name: seen.append(_n) or _r(*a))
    x = torch.randn(2, 3, 9, 10, generator=gen).to(device)
    for v in (x.contiguous(memory_format=torch.channels_last), torch.cat([x, x], 3)[..., :10]):
        vr = v.clone().requires_grad_() if v.is_contiguous() else v.detach().requires_grad_()
        a = ops.noise_autocorr(vr, impl='ext')
        a.square().sum().backward()
        torch.testing.assert_close(a, _autocorr_ref(x))
    assert seen == ['noise_autocorr_ext', 'noise_autocorr_backward_ext'] * 2


@pytest.mark.parametrize('device', DEVICES)
def test_opcheck(device, gen):
    x = torch.randn(2, 3, 6, 5, generator=gen).to(device)
    torch.library.opcheck(torch.ops.ganinv.noise_autocorr.default, (x,))
    ga = torch.randn(2, 3, 2, generator=gen).to(device)
    torch.library.opcheck(torch.ops.ganinv.noise_autocorr_backward.default, (ga, x))


def test_bad_arguments_name_the_input():
    with pytest.raises(OpArgumentError, match=r'noise_autocorr: x must be a \[N, C, H, W\] tensor, got \(3, 4\)'):
        ops.noise_autocorr(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r'noise_autocorr_backward: ga must be \[N, C, 2\] = \[2, 3, 2\]'):
        torch.ops.ganinv.noise_autocorr_backward(torch.zeros(2, 3, 1), torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match='noise_autocorr: x must be \\[N, C, H, W\\]'):
        torch.ops.ganinv.noise_autocorr(torch.zeros(2, 3, 4))
