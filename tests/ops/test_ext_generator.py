"""The generator gives the same images and gradients with either backend (GANINV_OPS=ext vs ref),
on the tiny generator computed by NVIDIA's own code (tests/fixtures/nvidia-tiny)."""

import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from ganinv_core.ops import _ext

from _devices import DEVICES



@pytest.fixture(scope='module')
def tiny(nvidia):
    return nvidia[:2]


def _synth(G, ws, backend, monkeypatch, fused):
    monkeypatch.setenv('GANINV_OPS', backend)
    ws = ws.clone().requires_grad_()
    img = G.synthesis(ws, noise_mode='const', fused_modconv=fused)
    (grad,) = torch.autograd.grad((img * torch.linspace(-1, 1, img.numel(), device=img.device)
                                   .reshape(img.shape)).sum(), ws)
    return img.detach(), grad


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('fused', [True, False])
def test_generator_same_outputs_with_either_backend(tiny, device, fused, monkeypatch):
    assert _ext.available(device)[0]
    G, ref = tiny
    G = G.to(device)
    ws = ref['ws'].to(device)
    if device == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    calls = []
    for name in ('bias_act_ext', 'upfirdn2d_ext'):  # prove the ext run really used the kernels
        real = getattr(_ext, name)
        monkeypatch.setattr(_ext, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    img_ext, g_ext = _synth(G, ws, 'ext', monkeypatch, fused)
    assert {'bias_act_ext', 'upfirdn2d_ext'} <= set(calls)
    n = len(calls)
    img_ref, g_ref = _synth(G, ws, 'ref', monkeypatch, fused)
    assert len(calls) == n  # the ref run did not touch them
    assert (img_ext - img_ref).abs().max() <= 1e-4
    assert (img_ext.cpu() - ref['img_const']).abs().max() <= 1e-4
    assert (g_ext - g_ref).abs().max() <= 1e-4 * max(1.0, g_ref.abs().max().item())


def test_torch_compile_traces_the_generator_through_the_kernels(tiny, monkeypatch):
    """fullgraph=True: one graph, no breaks, with the ops traced through their fake kernels and autograd.

    The backend is aot_eager (no code generation, so the test stays fast); the traced graph must
    contain the compiled ops and reproduce NVIDIA's image and the eager gradient.
    """
    G, ref = tiny
    monkeypatch.setenv('GANINV_OPS', 'ext')
    monkeypatch.setattr(_ext, '_status', {})  # the first availability check happens while tracing
    seen = []

    def backend(gm, inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == 'call_function')
        return make_boxed_func(gm)

    def run(ws):
        return G.synthesis(ws, noise_mode='const', fused_modconv=True)

    torch._dynamo.reset()
    compiled = torch.compile(run, backend=aot_autograd(fw_compiler=backend),
                             fullgraph=True)
    ws = ref['ws'].clone().requires_grad_()
    img = compiled(ws)
    (grad,) = torch.autograd.grad(img.square().sum(), ws)
    assert any('ganinv.bias_act' in t for t in seen) and any('ganinv.upfirdn2d' in t for t in seen)
    assert (img.detach() - ref['img_const']).abs().max() <= 1e-4
    ws_eager = ref['ws'].clone().requires_grad_()
    (grad_eager,) = torch.autograd.grad(run(ws_eager).square().sum(), ws_eager)
    assert (grad - grad_eager).abs().max() <= 1e-4 * max(1.0, grad_eager.abs().max().item())


def test_torch_compile_traces_the_nonfused_frozen_synthesis(tiny, monkeypatch):
    """fullgraph=True through the non-fused, frozen-weight synthesis: the epilogue Functions (`_DemodBiasAct`, and
    `_DemodBiasActRGB` where conv1 computes ToRGB's projection) trace into one graph each way, with the compiled
    epilogue ops in them, and reproduce the eager image and gradient."""
    G, ref = tiny
    monkeypatch.setenv('GANINV_OPS', 'ext')
    seen = []

    def backend(gm, inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == 'call_function')
        return make_boxed_func(gm)

    def run(ws):
        return G.synthesis(ws, noise_mode='const', fused_modconv=False)

    frozen = [p.requires_grad for p in G.parameters()]
    G.requires_grad_(False)
    try:
        torch._dynamo.reset()
        compiled = torch.compile(run, backend=aot_autograd(fw_compiler=backend, bw_compiler=backend), fullgraph=True)
        ws = ref['ws'].clone().requires_grad_()
        img = compiled(ws)
        (grad,) = torch.autograd.grad(img.square().sum(), ws)
        ws_eager = ref['ws'].clone().requires_grad_()
        img_eager = run(ws_eager)
        (grad_eager,) = torch.autograd.grad(img_eager.square().sum(), ws_eager)
    finally:
        for p, r in zip(G.parameters(), frozen):
            p.requires_grad_(r)
    assert any('ganinv.modconv_epilogue.' in t for t in seen)
    assert any('ganinv.modconv_epilogue_backward' in t for t in seen)
    assert (img.detach() - img_eager.detach()).abs().max() <= 1e-5
    assert (grad - grad_eager).abs().max() <= 1e-4 * max(1.0, grad_eager.abs().max().item())
