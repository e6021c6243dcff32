"""Conformance checks a plugin's own tests (and ganinv's suite) run on any Degradation or Loss class.

    from ganinv_core.hooks.testing import check_degradation, check_loss
    def test_conforms(): check_degradation(MyBlur)

Each check builds the class with its ``test_params`` and raises AssertionError naming what failed. A class marked
``cuda_graph_safe`` is also run twice, forward and backward, on the ``meta`` device and on the CPU, the second time
with every dispatched op watched: on ``meta`` no host tensor may enter (a host-to-device copy cannot be captured in
a CUDA graph), and on either no tensor may be made from Python data (``torch.tensor``, ``new_tensor``) nor read
back to the host (``.item()``): a graph replays what was captured and never re-reads the host.
"""
from __future__ import annotations

import warnings

import torch
from torch.utils import _pytree
from torch.utils._python_dispatch import TorchDispatchMode

from ._base import Degradation, Loss, LossContext


_HOST_OPS = ('aten.lift_fresh', 'aten._local_scalar_dense')  # a tensor from Python data; a read to the host


class _HostDataSpy(TorchDispatchMode):
    """Records the ops of a step that make tensors from Python data, read tensors back to the host, or (on the
    ``meta`` device) receive a tensor from another device."""

    def __init__(self, device: str):
        super().__init__()
        self.device, self.seen = device, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func.overloadpacket) in _HOST_OPS:
            self.seen.append(f'{func} (a tensor made from, or read back to, the host)')
        for a in _pytree.tree_leaves((args, kwargs or {})):
            if self.device == 'meta' and isinstance(a, torch.Tensor) and a.device.type != 'meta':
                self.seen.append(f'{func} received a {a.device.type} tensor of shape {tuple(a.shape)}')
        return func(*args, **(kwargs or {}))


def _check_graph_safe(name: str, build) -> None:
    """``build(device)() `` is one step (forward and backward) on ``device``; run twice per device, the second call
    watched."""
    for device in ('meta', 'cpu'):
        step = build(device)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the ops' one-time notice that meta has no compiled kernels
            step()  # the first call may build per-device caches
            with _HostDataSpy(device) as spy:
                step()
        assert not spy.seen, f'{name}: marked cuda_graph_safe, but each step uses the host: {spy.seen[0]} ({device})'


def _rand(*shape, seed):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def check_degradation(cls: type[Degradation], size: int = 16, n: int = 2) -> None:
    """Shape = output_size, range [-1, 1], finite gradients, mask shape/values, per-image independence, a
    ``simulate`` that is ``forward`` without a key and repeatable with one, and affinity where the class (or its
    instance) says ``affine``."""
    d = cls(**cls.test_params)
    x = _rand(n, 3, size, size, seed=1).requires_grad_()
    y, out = d(x), d.output_size(size)
    assert y.shape == (n, 3, out, out), f'{cls.name}: output {tuple(y.shape)}, output_size says {out}'
    assert torch.isfinite(y).all() and y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5, f'{cls.name}: out of [-1, 1]'
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), f'{cls.name}: no finite gradient'
    assert cls.simulate_only or x.grad.abs().sum() > 0, f'{cls.name}: zero gradient'
    m = d.mask(x.detach())
    if m is not None:
        assert m.shape == (n, 1, out, out), f'{cls.name}: mask {tuple(m.shape)}'
        assert ((m == 0) | (m == 1)).all(), f'{cls.name}: mask not binary'
    x2 = x.detach().clone()
    x2[1:] = _rand(n - 1, 3, size, size, seed=2)
    assert torch.allclose(d(x2)[0], y[0].detach(), atol=1e-6), f'{cls.name}: images influence each other'
    if d.affine:   # A(a u + b v) - A(0) = a (A(u) - A(0)) + b (A(v) - A(0)), on inputs spanning [-1, 1]
        with torch.no_grad():
            u, v = _rand(n, 3, size, size, seed=3), _rand(n, 3, size, size, seed=4)
            zero = d(torch.zeros_like(u))
            mix, parts = d(0.4 * u + 0.6 * v) - zero, 0.4 * (d(u) - zero) + 0.6 * (d(v) - zero)
        assert torch.allclose(mix, parts, atol=1e-5), f'{cls.name}: marked affine, but is not ' \
                                                      f'(off by {(mix - parts).abs().max().item():.3g})'
    with torch.no_grad():   # simulate: forward without a key; with one, the same draw for the same key
        xs = x.detach()
        assert torch.equal(d.simulate(xs), d(xs)), f'{cls.name}: simulate(x) without a key is not forward(x)'
        assert torch.equal(d.simulate(xs, 7), d.simulate(xs, 7)), f'{cls.name}: simulate(x, key) is not repeatable'
    rebuilt = cls(**{k: v for k, v in d.config.items() if v is not None})
    assert rebuilt.config == d.config, f'{cls.name}: config does not round-trip'
    if cls.cuda_graph_safe:
        def build(device):
            dm = cls(**cls.test_params).to(device)
            xm = _rand(n, 3, size, size, seed=1).to(device).requires_grad_()
            return lambda: dm(xm).sum().backward()
        _check_graph_safe(cls.name, build)


def check_loss(cls: type[Loss], size: int = 16, n: int = 2, num_ws: int = 4, w_dim: int = 8) -> None:
    """Shape [N]; zero at the ideal (pred = target, w = w_avg = w_init, zero noise); positive, finite gradients
    and per-image independence otherwise."""
    loss = cls(**cls.test_params)
    assert any(p.name == 'weight' for p in cls.params), f'{cls.name}: no weight parameter'
    t = _rand(n, 3, size, size, seed=3)
    w_avg = _rand(w_dim, seed=4)
    res = [4, 8, size]

    def ctx(pred, w, noise):
        return LossContext(pred=pred, target=t, mask=None, image=pred, w=w, w_avg=w_avg, w_std=1.0, noise=noise,
                           w_init=w_avg.expand(n, num_ws, w_dim))
    loss.prepare(t, None)
    v0 = loss(ctx(t.clone(), w_avg.expand(n, num_ws, w_dim).clone(), [torch.zeros(n, 1, r, r) for r in res]))
    assert v0.shape == (n,), f'{cls.name}: returned {tuple(v0.shape)}, not [N]'
    assert torch.allclose(v0, torch.zeros(n), atol=1e-5), f'{cls.name}: {v0.tolist()} at the ideal, not 0'
    pred = (t + 0.3 * _rand(n, 3, size, size, seed=5)).clamp(-1, 1).requires_grad_()
    w = (w_avg + _rand(n, num_ws, w_dim, seed=6)).requires_grad_()
    noise = [_rand(n, 1, r, r, seed=7 + r).requires_grad_() for r in res]
    v = loss(ctx(pred, w, noise))
    assert torch.isfinite(v).all() and (v > 0).all(), f'{cls.name}: {v.tolist()} is not positive'
    v.sum().backward()
    grads = [g for g in (pred.grad, w.grad, *(z.grad for z in noise)) if g is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads), f'{cls.name}: no finite gradient'
    pred2, w2, noise2 = pred.detach().clone(), w.detach().clone(), [z.detach().clone() for z in noise]
    pred2[1:] = -pred2[1:]
    w2[1:] += 1
    for z in noise2:
        z[1:] = z[1:].flip(-1) + 0.5
    v2 = loss(ctx(pred2, w2, noise2))
    assert torch.allclose(v2[0], v[0].detach(), rtol=1e-5, atol=1e-7), f'{cls.name}: images influence each other'
    if cls.cuda_graph_safe:
        def build(device):
            lm = cls(**cls.test_params).to(device)
            tm = t.to(device)
            lm.prepare(tm, None)
            leaf = lambda x: x.detach().to(device).requires_grad_()  # noqa: E731
            cm = LossContext(pred=leaf(pred), target=tm, mask=None, image=None, w=leaf(w), w_avg=w_avg.to(device),
                             w_std=1.0, noise=[leaf(z) for z in noise],
                             w_init=w_avg.expand(n, num_ws, w_dim).to(device))
            cm.image = cm.pred
            return lambda: lm(cm).sum().backward()
        _check_graph_safe(cls.name, build)
