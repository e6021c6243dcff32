
import pytest
import torch

from ganinv_core.engine import _schedule as S
from ganinv_core.engine._adam import Adam

from _devices import DEVICES


@pytest.mark.parametrize('t, want', [(0.0, 0.0), (0.025, 0.05), (0.05, 0.1), (0.5, 0.1), (0.75, 0.1),
                                     (0.875, 0.05), (1.0, 0.0)])
def test_lr_ramp_matches_projector(t, want):
    assert S.lr_at(t) == pytest.approx(want, abs=1e-12)


def test_w_noise_ramp():
    assert S.w_noise_at(0.0, 2.0) == pytest.approx(0.1)
    assert S.w_noise_at(0.375, 2.0) == pytest.approx(0.1 * 0.25)
    assert S.w_noise_at(0.75, 2.0) == 0.0 and S.w_noise_at(0.9, 2.0) == 0.0


def test_schedule_tensors():
    lrs, noise = S.schedule(200, 3.0, lr=0.2)
    assert lrs.shape == noise.shape == (200,)
    for s in (0, 7, 10, 150, 199):
        assert float(lrs[s]) == pytest.approx(S.lr_at(s / 200, 0.2), rel=1e-6)
        assert float(noise[s]) == pytest.approx(3.0 * 0.05 * max(0, 1 - s / 200 / 0.75) ** 2, rel=1e-6)




@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('fused', [True, False])
def test_adam_equals_torch_adam(fused, device):
    torch.manual_seed(0)
    a = torch.randn(3, 4, device=device, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    # against torch's own kernel of the same kind (fused or foreach: they round differently, ~1 ulp a step)
    ours, ref = Adam([a], fused=fused), torch.optim.Adam([b], betas=(0.9, 0.999), fused=fused or None)
    assert ours.fused is fused
    for step, lr in enumerate([0.0, 0.05, 0.1, 0.1, 0.02]):
        target = torch.full((3, 4), float(step), device=device)
        for p in (a, b):
            (p - target).square().sum().backward()
        ours.step(torch.tensor(lr, device=device))
        ref.param_groups[0]['lr'] = lr
        ref.step()
        ours.zero_grad()
        ref.zero_grad()
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('fused', [True, False])
def test_adam_skips_on_flag(fused):
    p = torch.ones(3, requires_grad=True)
    opt = Adam([p], fused=fused)
    p.grad = torch.ones(3)
    opt.step(torch.tensor(0.1), ok=torch.tensor(False))
    assert torch.equal(p.detach(), torch.ones(3)) and torch.equal(opt.m[0], torch.zeros(3))
    assert float(opt.t) == 0   # a skipped step is not counted


def test_fused_adam_equals_the_foreach_form():
    """Mixed dtypes (one fused call each), a tensor without a gradient, and a skipped step in between."""
    torch.manual_seed(1)
    init = [torch.randn(3, 4), torch.randn(5, dtype=torch.float64), torch.randn(2, 2)]
    runs = {}
    for fused in (True, False):
        ps = [x.clone().requires_grad_(True) for x in init]
        opt = Adam(ps, fused=fused)
        for k in range(5):
            for j, p in enumerate(ps):
                p.grad = None if (j == 2 and k % 2) else torch.sin(p.detach() * (k + 1)) + 0.1 * j
            opt.step(torch.tensor(0.05), ok=torch.tensor(k != 2))
        runs[fused] = ps + opt.m + opt.v
        assert float(opt.t) == 4   # five steps, one skipped
    for a, b in zip(runs[True], runs[False]):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)


def test_fused_adam_needs_one_cpu_or_cuda_device():
    with pytest.raises(ValueError, match='Adam: fused=True needs every tensor on one CPU or CUDA device, got meta'):
        Adam([torch.zeros(2, device='meta', requires_grad=True)], fused=True)
    assert Adam([torch.zeros(2, device='meta', requires_grad=True)]).fused is False
