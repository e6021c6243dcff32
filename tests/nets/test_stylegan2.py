"""The generator against NVIDIA's own outputs (tests/fixtures/nvidia-tiny) and its structural invariants."""
import copy
import json
import math

import pytest
import torch

import ganinv_core.nets.synthesis as synthesis_module
from ganinv_core import ops
from ganinv_core.nets import Generator, modulated_conv2d
from ganinv_core.ops import bias_act, setup_filter

from _devices import DEVICES, gpu_only

def test_state_dict_names_and_order_match_nvidia(nvidia):
    G, _, names = nvidia  # the fixture lists NVIDIA's parameters, then its buffers, each in module order
    assert [n for n, _ in G.named_parameters()] + [n for n, _ in G.named_buffers()] == names
    keys = list(G.state_dict())
    assert sorted(keys) == sorted(names) and keys[0] == 'synthesis.b4.const'
    assert max(i for i, k in enumerate(keys) if k.startswith('synthesis.')) < keys.index('mapping.fc0.weight')
    assert G.num_ws == 8 and G.synthesis.num_ws == 8


def test_mapping_reproduces_nvidia(nvidia):
    G, ref, _ = nvidia
    assert (G.mapping(ref['z'], None) - ref['ws']).abs().max() <= 1e-4
    assert (G.mapping(ref['z'], None, truncation_psi=0.7) - ref['ws_trunc07']).abs().max() <= 1e-4


@pytest.mark.parametrize('fused', [True, False, None])
def test_synthesis_reproduces_nvidia(nvidia, fused):
    G, ref, _ = nvidia
    for ws, mode, key in ((ref['ws'], 'const', 'img_const'), (ref['ws'], 'none', 'img_none'),
                          (ref['ws_trunc07'], 'const', 'img_trunc07_const')):
        img = G.synthesis(ws, noise_mode=mode, fused_modconv=fused)
        assert img.dtype == torch.float32 and img.shape == ref[key].shape
        assert (img - ref[key]).abs().max() <= 1e-4, (key, fused)
    img = G(ref['z'], None, truncation_psi=0.7, noise_mode='const', fused_modconv=fused)
    assert (img - ref['img_trunc07_const']).abs().max() <= 1e-4


def test_nvidia_call_interface_and_attributes(nvidia):
    G, ref, _ = nvidia
    assert (G.z_dim, G.c_dim, G.w_dim, G.num_ws, G.img_resolution, G.img_channels) == (64, 0, 64, 8, 32, 3)
    assert (G.mapping.num_ws, G.synthesis.num_ws, G.synthesis.img_resolution) == (8, 8, 32)
    ws = G.mapping(ref['z'], None, truncation_psi=0.7, truncation_cutoff=None)
    assert (ws - ref['ws_trunc07']).abs().max() <= 1e-4
    img = G.synthesis(ws, noise_mode='const', force_fp32=False, fused_modconv=None)
    assert (img - ref['img_trunc07_const']).abs().max() <= 1e-4
    img = G(ref['z'], None, 0.7, None, noise_mode='const', force_fp32=True)  # positional, like NVIDIA's scripts
    assert (img - ref['img_trunc07_const']).abs().max() <= 1e-4


def test_truncation_cutoff(nvidia):
    G, ref, _ = nvidia
    ws = G.mapping(ref['z'], None, truncation_psi=0.5, truncation_cutoff=3)
    torch.testing.assert_close(ws[:, 3:], ref['ws'][:, 3:])
    torch.testing.assert_close(ws[:, :3], G.mapping.w_avg.lerp(ref['ws'][:, :3], 0.5))


def test_noise_override_and_modes(nvidia):
    G, ref, _ = nvidia
    layers = G.synthesis.noise_layers()
    assert layers[:3] == [('b4.conv1', 4), ('b8.conv0', 8), ('b8.conv1', 8)] and len(layers) == 7
    const = {name: G.synthesis.get_submodule(name).noise_const[None, None].expand(4, 1, r, r) for name, r in layers}
    torch.testing.assert_close(G.synthesis(ref['ws'], noise_mode='none', noise=const), ref['img_const'],
                               atol=1e-4, rtol=0)
    zeros = {name: torch.zeros(1, 1, r, r) for name, r in layers}
    torch.testing.assert_close(G.synthesis(ref['ws'], noise=zeros), ref['img_none'], atol=1e-4, rtol=0)
    a, b = (G.synthesis(ref['ws'][:1], noise_mode='random') for _ in range(2))
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match='b5.conv1'):
        G.synthesis(ref['ws'], noise={'b5.conv1': zeros['b4.conv1']})
    with pytest.raises(ValueError, match='ws must be'):
        G.synthesis(ref['ws'][:, :3])
    with pytest.raises(ValueError, match="noise_mode='Const' is unknown"):
        G.synthesis(ref['ws'], noise_mode='Const')


def test_gradients_reach_noise_const_buffers(nvidia):
    """NVIDIA's projector style: the noise_const buffers themselves require grad."""
    G = copy.deepcopy(nvidia[0])
    bufs = {n: b.requires_grad_(True) for n, b in G.synthesis.named_buffers() if n.endswith('noise_const')}
    assert len(bufs) == 7
    ws = nvidia[1]['ws'][:1].clone().requires_grad_(True)
    G.synthesis(ws, noise_mode='const').square().sum().backward()
    assert ws.grad.abs().sum() > 0
    assert all(b.grad is not None and b.grad.abs().sum() > 0 for b in bufs.values())


@pytest.mark.parametrize('fused', [True, False])
def test_gradients_reach_ws_and_noise(nvidia, fused):
    G, ref, _ = nvidia
    ws = ref['ws'][:2].clone().requires_grad_(True)
    noise = {name: torch.randn(2, 1, r, r, requires_grad=True) for name, r in G.synthesis.noise_layers()}
    G.synthesis(ws, noise=noise, fused_modconv=fused).square().sum().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0
    assert all(n.grad is not None and n.grad.abs().sum() > 0 for n in noise.values())
    assert all(p.grad is None for p in G.parameters())
    # fused and non-fused modconv give the same gradient
    ws2 = ref['ws'][:2].clone().requires_grad_(True)
    G.synthesis(ws2, noise={k: v.detach() for k, v in noise.items()}, fused_modconv=not fused).square().sum().backward()
    torch.testing.assert_close(ws.grad, ws2.grad, atol=1e-3 * ws.grad.abs().max().item(), rtol=0)


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('up', [1, 2])
def test_modulated_conv2d_gradcheck(fused, up):
    x, w = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 3, 3, dtype=torch.float64)
    s = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    n = torch.randn(2, 1, 4 * up, 4 * up, dtype=torch.float64, requires_grad=True)
    f = setup_filter([1, 3, 3, 1]).double()
    fn = lambda s, n: modulated_conv2d(x, w, s, n, up=up, padding=1, resample_filter=f,  # noqa: E731
                                       flip_weight=(up == 1), fused_modconv=fused)
    assert torch.autograd.gradcheck(fn, (s, n), fast_mode=True)


@pytest.mark.parametrize('fused', [True, False])
def test_modulated_conv2d_float16_does_not_overflow(fused):
    """float16 input with weights and styles whose products pass float16's range (65504): the pre-scaling that
    NVIDIA applies for fp16 keeps the demodulated result finite and within float16 rounding of float64 (on the CPU
    too, where the generator itself never computes in float16)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 6, 6, generator=g)
    w, s = torch.randn(4, 8, 3, 3, generator=g) * 300, torch.randn(2, 8, generator=g) * 300
    want = modulated_conv2d(x.double(), w.double(), s.double(), padding=1, fused_modconv=fused)
    y = modulated_conv2d(x.half(), w, s, padding=1, fused_modconv=fused)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.double(), want, rtol=0, atol=2e-3 * want.abs().max().item())


@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last])
def test_torgb_per_sample_weight_equals_modulate_then_conv(layout):
    """The non-fused 1x1 no-demod conv (ToRGB) multiplies by [N,O,I] weights: same values and gradients as
    scaling x by s and convolving with the shared weight, in float64, for either input layout."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64, generator=g).to(memory_format=layout).requires_grad_(True)
    w = torch.randn(2, 5, 1, 1, dtype=torch.float64, generator=g)
    s = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    out = modulated_conv2d(x, w, s, demodulate=False, fused_modconv=False)
    ref = torch.nn.functional.conv2d(x * s[:, :, None, None], w)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert out.is_contiguous(memory_format=layout)
    gy = torch.randn(out.shape, dtype=torch.float64, generator=g)
    torch.testing.assert_close(torch.autograd.grad(out, (x, s), gy), torch.autograd.grad(ref, (x, s), gy),
                               rtol=1e-12, atol=1e-12)
    fn = lambda x_, s_: modulated_conv2d(x_, w, s_, demodulate=False, fused_modconv=False)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, s), fast_mode=True)


@pytest.mark.parametrize('up,k,groups', [(1, 3, 1), (1, 1, 1), (2, 3, 1), (1, 3, 2), (2, 3, 2), (2, 1, 1)])
def test_frozen_weight_conv_keeps_no_input_and_gives_autograds_gradient(up, k, groups):
    """A frozen weight: conv2d_resample saves no input-sized tensor, and x's gradient is autograd's own."""
    from ganinv_core.nets.layers import conv2d_resample
    g = torch.Generator().manual_seed(up * 10 + k + groups)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(6, 4 // groups, k, k, dtype=torch.float64, generator=g)
    f = setup_filter([1, 3, 3, 1]).double()
    run = lambda w_: conv2d_resample(x, w_, f, up=up, padding=k // 2, groups=groups, flip_weight=up == 1)  # noqa
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        y = run(w)
    assert tuple(x.shape) not in saved and saved  # the weight (and FIR filter) only
    gy = torch.randn(y.shape, dtype=torch.float64, generator=g)
    (gx,) = torch.autograd.grad(y, x, gy)
    y_ref = run(w.clone().requires_grad_(True))           # weight needs a gradient: autograd's convolution
    (gx_ref,) = torch.autograd.grad(y_ref, x, gy)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradgradcheck(lambda x_: conv2d_resample(x_, w, f, up=up, padding=k // 2, groups=groups,
                                                                   flip_weight=up == 1), (x,), fast_mode=True)


@pytest.mark.parametrize('up', [1, 2])
def test_frozen_weight_conv_under_autocast(up):
    """Under autocast the frozen-weight conv runs in bf16 and its backward matches autograd's own convolution."""
    from ganinv_core.nets.layers import conv2d_resample
    g = torch.Generator().manual_seed(up)
    x = torch.randn(2, 4, 5, 5, generator=g, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, generator=g)
    f = setup_filter([1, 3, 3, 1])
    grads = []
    for w_ in (w, w.clone().requires_grad_(True)):   # ours (frozen), autograd's (weight needs a gradient)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y = conv2d_resample(x, w_, f, up=up, padding=1, flip_weight=up == 1)
        assert y.dtype == torch.bfloat16
        grads.append(torch.autograd.grad(y.float().square().sum(), x)[0])
    assert grads[0].dtype == torch.float32
    torch.testing.assert_close(grads[0], grads[1], rtol=2e-2, atol=2e-2 * grads[1].abs().max().item())


@pytest.mark.parametrize('impl', ['ext', 'ref'])
@pytest.mark.parametrize('noise_batch', [None, 1, 2, 'hw', 'channels'])
@pytest.mark.parametrize('act,clamp', [('lrelu', 0.9), ('linear', None), ('swish', None)])
def test_demod_bias_act_epilogue_matches_autograd(act, clamp, noise_batch, impl, monkeypatch):
    """The fused epilogue (keeps c only) gives autograd's gradients for c, d, noise and b."""
    from ganinv_core.nets.layers import _DemodBiasAct
    monkeypatch.setenv('GANINV_OPS', impl)
    g = torch.Generator().manual_seed(7)
    rnd = lambda *s: torch.randn(*s, dtype=torch.float64, generator=g)  # noqa: E731
    c = rnd(2, 3, 4, 5).requires_grad_(True)
    d = (rnd(2, 3, 1, 1).abs() + 0.5).requires_grad_(True)           # demodulation coefficients are > 0
    shape = {None: None, 1: (1, 1, 4, 5), 2: (2, 1, 4, 5), 'hw': (4, 5), 'channels': (1, 3, 4, 5)}[noise_batch]
    n = None if shape is None else rnd(*shape).requires_grad_(True)
    b = rnd(3).requires_grad_(True)
    inputs = [t for t in (c, d, n, b) if t is not None]
    def ours(*t):
        return _DemodBiasAct.apply(t[0], t[1], t[2] if n is not None else None, t[-1], None, act, 1.3, clamp)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        y = ours(*inputs)
    assert saved.count((2, 3, 4, 5)) == 1                             # c only (s is never kept)
    s = c * d if n is None else torch.addcmul(n, c, d)
    y_ref = bias_act(s, b, act=act, gain=1.3, clamp=clamp, impl='ref')
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    gy = rnd(*y.shape)
    for a, r in zip(torch.autograd.grad(y, inputs, gy), torch.autograd.grad(y_ref, inputs, gy)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(ours, inputs, fast_mode=True)
    with pytest.raises(RuntimeError, match='once_differentiable'):
        gc, = torch.autograd.grad(ours(*inputs).square().sum(), c, create_graph=True)
        gc.sum().backward()


@pytest.mark.parametrize('frozen', [True, False])
def test_next_layers_modulation_folded_into_the_epilogue(frozen):
    """conv0 with post_scale = conv1's styles, then conv1 premodulated == the two layers as written (float64:
    values and the gradients of both styles, the noise and the input), with frozen or trainable weights."""
    g = torch.Generator().manual_seed(5)
    rnd = lambda *s: torch.randn(*s, dtype=torch.float64, generator=g)  # noqa: E731
    x = rnd(2, 4, 5, 5).requires_grad_(True)
    w0, w1 = rnd(6, 4, 3, 3).requires_grad_(not frozen), rnd(6, 6, 3, 3).requires_grad_(not frozen)
    s0, s1, n = rnd(2, 4).requires_grad_(True), rnd(2, 6).requires_grad_(True), rnd(2, 1, 10, 10).requires_grad_(True)
    f, b = setup_filter([1, 3, 3, 1]).double(), rnd(6)
    ep = dict(b=b, act='lrelu', gain=1.4, clamp=1.5)
    kw = dict(padding=1, fused_modconv=False, epilogue=ep)

    def two_layers(fold):
        h = modulated_conv2d(x, w0, s0, n, up=2, resample_filter=f, flip_weight=False, **kw,
                             post_scale=s1 if fold else None)
        return modulated_conv2d(h, w1, s1, **kw, premodulated=fold)
    a, r = two_layers(True), two_layers(False)
    torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)
    gy = rnd(*a.shape)
    live = [t for t in (x, s0, s1, n, w0, w1) if t.requires_grad]
    for ga, gr in zip(torch.autograd.grad(a, live, gy), torch.autograd.grad(r, live, gy)):
        torch.testing.assert_close(ga, gr, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match='non-fused'):
        modulated_conv2d(x, w0, s0, fused_modconv=True, premodulated=True)


def _close_to(a, r):
    torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5 * r.abs().max().item())


def _same_values_and_gradients(a, r, live):
    """Two syntheses a, r of the same inputs: equal images, and equal gradients of every tensor in `live` for one
    random upstream gradient (None for both, or for neither)."""
    _close_to(a, r)
    gy = torch.randn_like(a)
    for ga, gr in zip(torch.autograd.grad(a, live, gy, allow_unused=True),
                      torch.autograd.grad(r, live, gy, allow_unused=True)):
        assert (ga is None) == (gr is None)
        if gr is not None:
            _close_to(ga, gr)


@pytest.mark.parametrize('arch,frozen', [('skip', True), ('skip', False), ('orig', True), ('resnet', True)])
def test_next_blocks_modulation_folded_into_the_previous_block(arch, frozen, monkeypatch):
    """Each block's output arrives at the next block already modulated for its conv0 (ToRGB divides the styles
    out): the synthesis equals the unfolded one (float32: the blocks compute in float32 or lower), values and the
    gradients of ws, the noise buffers and (when trainable) the weights; a style of exactly 0 stays finite."""
    G = _small(architecture=arch).requires_grad_(not frozen)
    syn = G.synthesis
    ws = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(4)), None).detach().requires_grad_(True)
    noise = {k: torch.randn(2, 1, r, r, requires_grad=True) for k, r in syn.noise_layers()}
    conv0_inputs = []
    syn.b16.conv0.register_forward_pre_hook(lambda m, a: conv0_inputs.append(a[0]))

    def run(fold):
        monkeypatch.setattr(type(syn), 'fold_modulation', fold)
        return syn(ws, fused_modconv=False, noise=noise)

    a, r = run(True), run(False)
    _same_values_and_gradients(a, r, [ws, *noise.values()] + ([] if frozen else list(syn.parameters())))
    assert (arch == 'resnet') == torch.equal(conv0_inputs[0], conv0_inputs[1])   # the fold took place
    with torch.no_grad():       # b16.conv0's style 3 made exactly 0 (its affine row and bias zeroed)
        aff = syn.b16.conv0.affine
        aff.weight[3], aff.bias[3] = 0, 0
        assert (aff(ws[:, 2])[:, 3] == 0).all()
    a = run(True)
    assert torch.isfinite(a).all()
    _close_to(a, run(False))


@pytest.mark.parametrize('arch,frozen', [('skip', True), ('skip', False), ('orig', True), ('resnet', True)])
def test_torgb_projected_inside_conv1(arch, frozen, monkeypatch):
    """conv1 computing ToRGB's projection (its backward inside the epilogue's: `_DemodBiasActRGB`, frozen weights)
    gives the synthesis of separate layers: values and the gradients of ws, the noise buffers and (when trainable)
    the weights; the last block's x, unused, sends no gradient (only ToRGB's reaches its epilogue)."""
    G = _small(architecture=arch).requires_grad_(not frozen)
    syn = G.synthesis
    ws = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(6)), None).detach().requires_grad_(True)
    noise = {k: torch.randn(2, 1, r, r, requires_grad=True) for k, r in syn.noise_layers()}
    names = []
    syn.b16.conv1.register_forward_hook(
        lambda m, a, out: names.append((out[1] if isinstance(out, tuple) else out).grad_fn.name()))

    def run(fuse):
        from ganinv_core.nets.synthesis import SynthesisBlock
        monkeypatch.setattr(SynthesisBlock, 'fuse_torgb', fuse)
        return syn(ws, fused_modconv=False, noise=noise)

    a, r = run(True), run(False)
    _same_values_and_gradients(a, r, [ws, *noise.values()] + ([] if frozen else list(syn.parameters())))
    fused = arch != 'resnet' and frozen
    assert ('DemodBiasActRGB' in names[0]) == fused and 'DemodBiasActRGB' not in names[1]


def test_synthesis_layers_use_the_epilogue_when_frozen(nvidia):
    """Frozen weights + non-fused modconv: the layers end in the fused epilogue; gradients as with trainable weights."""
    G, ref, _ = nvidia
    ws = ref['ws'][:2].clone().requires_grad_(True)
    seen = []
    G.synthesis.b8.conv1.register_forward_hook(   # (x, ToRGB's projection) where conv1 computes it
        lambda m, a, out: seen.append((out[0] if isinstance(out, tuple) else out).grad_fn.name()))
    G.requires_grad_(False)
    (gw,) = torch.autograd.grad(G.synthesis(ws, fused_modconv=False).square().sum(), ws)
    G.requires_grad_(True)                                            # autograd's own path
    (gw_ref,) = torch.autograd.grad(G.synthesis(ws, fused_modconv=False).square().sum(), ws)
    G.requires_grad_(False)
    assert 'DemodBiasAct' in seen[0] and 'DemodBiasAct' not in seen[1]
    torch.testing.assert_close(gw, gw_ref, rtol=1e-4, atol=1e-5 * gw_ref.abs().max().item())


def _small(**synthesis_kwargs):
    torch.manual_seed(0)
    return Generator(16, 0, 16, 16, 3, mapping_kwargs=dict(num_layers=2),
                     synthesis_kwargs=dict(channel_base=128, channel_max=16, **synthesis_kwargs)).eval()


@pytest.mark.parametrize('arch', ['skip', 'resnet', 'orig'])
def test_architectures(arch):
    G = _small(architecture=arch)
    names = G.state_dict().keys()
    assert ('synthesis.b8.skip.weight' in names) == (arch == 'resnet')
    assert ('synthesis.b8.torgb.weight' in names) == (arch == 'skip')
    assert 'synthesis.b16.torgb.weight' in names and G.num_ws == 6
    ws = G.mapping(torch.randn(2, 16), None)
    a = G.synthesis(ws, fused_modconv=True)
    assert a.shape == (2, 3, 16, 16) and torch.isfinite(a).all()
    torch.testing.assert_close(G.synthesis(ws, fused_modconv=False), a, atol=1e-4, rtol=1e-4)
    assert json.loads(json.dumps(G.init_kwargs))['synthesis_kwargs']['architecture'] == arch
    assert list(Generator(**G.init_kwargs).state_dict()) == list(names)


def test_conv_clamp_bounds_layer_outputs():
    G = _small(conv_clamp=0.05)
    seen = []
    for m in G.synthesis.modules():
        if type(m).__name__ in ('SynthesisLayer', 'ToRGBLayer'):
            m.register_forward_hook(lambda mod, inp, out: seen.append(out.abs().max().item()))
    G(torch.randn(2, 16), None)
    assert len(seen) == 8 and max(seen) <= 0.05 + 1e-7 and max(seen) > 0.04


def test_fp16_blocks_stay_fp32_on_cpu():
    a, b = _small(num_fp16_res=2), _small(num_fp16_res=0)
    assert a.synthesis.b16.use_fp16 and a.synthesis.b8.use_fp16 and not b.synthesis.b16.use_fp16
    b.load_state_dict(a.state_dict())
    ws = a.mapping(torch.randn(2, 16), None)
    out = a.synthesis(ws)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, b.synthesis(ws))


def _block_dtypes(G):
    """{resolution: dtype of the block's x output} recorded by hooks on every synthesis block."""
    seen = {}
    for r in G.synthesis.block_resolutions:
        getattr(G.synthesis, f'b{r}').register_forward_hook(lambda m, a, out, r=r: seen.update({r: out[0].dtype}))
    return seen


@pytest.mark.parametrize('fused', [True, False])
def test_bf16_blocks_run_in_bf16_on_cpu_and_stay_close_to_fp32(fused):
    """half_dtype=bfloat16 runs the fp16 blocks (top num_fp16_res resolutions) in bf16 on any device."""
    G = _small(num_fp16_res=2, conv_clamp=256)
    seen = _block_dtypes(G)
    ws = G.mapping(torch.randn(3, 16, generator=torch.Generator().manual_seed(1)), None)
    ref = G.synthesis(ws, force_fp32=True, fused_modconv=fused)
    assert set(seen.values()) == {torch.float32}
    out = G.synthesis(ws, force_fp32=False, half_dtype=torch.bfloat16, fused_modconv=fused)
    assert seen == {4: torch.float32, 8: torch.bfloat16, 16: torch.bfloat16}
    assert out.dtype == torch.float32 and out.isfinite().all()
    err = (out - ref).abs().max().item()
    assert 0 < err < 0.05 * ref.abs().max().item(), err  # rounded (not fp32) yet close: bf16 has an 8-bit mantissa
    out.sum().backward()  # gradients flow back through the bf16 blocks into the fp32 ones
    assert G.synthesis.b4.conv1.weight.grad.isfinite().all()


def test_channels_last_lays_out_the_reduced_precision_blocks_only():
    G = _small(num_fp16_res=2, conv_clamp=256)
    layout = {}
    for r in G.synthesis.block_resolutions:
        getattr(G.synthesis, f'b{r}').register_forward_hook(
            lambda m, a, out, r=r: layout.update({r: out[0].is_contiguous(memory_format=torch.channels_last)
                                                  and not out[0].is_contiguous()}))
    ws = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(2)), None)
    kw = dict(force_fp32=False, half_dtype=torch.bfloat16, fused_modconv=False)
    plain = G.synthesis(ws, **kw)
    assert layout == {4: False, 8: False, 16: False}
    cl = G.synthesis(ws, channels_last=True, **kw)
    assert layout == {4: False, 8: True, 16: True}
    assert cl.is_contiguous()  # the image leaves in the standard layout
    torch.testing.assert_close(cl, plain, rtol=0, atol=2e-2 * plain.abs().max().item())  # same math, bf16 rounding
    G.synthesis(ws, channels_last=True, force_fp32=True)
    assert layout == {4: False, 8: False, 16: False}  # fp32: no effect


@pytest.mark.parametrize('device', DEVICES)
def test_channels_last_blocks_run_the_epilogue_kernel_in_nhwc(device, monkeypatch):
    """The reduced-precision blocks laid out channels-last reach the compiled epilogue in that layout (forward and
    backward, ToRGB's projection fused) and give the NCHW run's image and gradients within bf16 rounding (on CUDA
    also through the packed channels-last upfirdn2d: 8 and 16 channels)."""
    from ganinv_core.ops import _ext
    if not _ext.available(device)[0]:
        pytest.skip(f'compiled kernels not built for {device}')
    seen = []
    for name in ('modconv_epilogue_ext', 'modconv_epilogue_backward_ext'):
        real = getattr(_ext, name)
        monkeypatch.setattr(_ext, name, lambda *a, _r=real, _n=name: seen.append(
            (_n, a[1 if 'backward' in _n else 0].is_contiguous(memory_format=torch.channels_last))) or _r(*a))
    G = _small(num_fp16_res=2, conv_clamp=256).requires_grad_(False).to(device)   # frozen, as in an inversion
    kw = dict(force_fp32=False, half_dtype=torch.bfloat16, fused_modconv=False)
    out = {}
    for cl in (False, True):
        z = torch.randn(2, 16, generator=torch.Generator().manual_seed(2)).to(device)
        ws = G.mapping(z, None).detach().requires_grad_()
        seen.clear()
        img = G.synthesis(ws, channels_last=cl, **kw)
        img.square().sum().backward()
        out[cl] = img.detach(), ws.grad
        assert {n for n, _ in seen} == {'modconv_epilogue_ext', 'modconv_epilogue_backward_ext'}
        assert any(layout for _, layout in seen) == cl
    torch.testing.assert_close(out[True][0], out[False][0], rtol=0, atol=2e-2 * out[False][0].abs().max().item())
    torch.testing.assert_close(out[True][1], out[False][1], rtol=0, atol=5e-2 * out[False][1].abs().max().item())


def test_half_dtype_is_checked_and_fp16_ignored_on_cpu():
    G = _small(num_fp16_res=2)
    ws = G.mapping(torch.randn(2, 16), None)
    torch.testing.assert_close(G.synthesis(ws, half_dtype=torch.float16), G.synthesis(ws, force_fp32=True),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match='half_dtype must be torch.float16 or torch.bfloat16'):
        G.synthesis(ws, half_dtype=torch.float64)


@pytest.mark.parametrize('arch', ['resnet', 'orig'])
def test_resnet_and_orig_blocks_compose_like_nvidia(arch):
    """The last block rebuilt from its layers: resnet = sqrt(.5) * (1x1 skip upsampled + conv path), orig = no skips."""
    G = _small(architecture=arch)
    seen = {}
    G.synthesis.b16.register_forward_hook(lambda m, args, out: seen.update(args=args, out=out))
    ws = G.mapping(torch.randn(2, 16), None)
    img = G.synthesis(ws, noise_mode='const', fused_modconv=True)
    x, img_in, bws = seen['args']
    b, lk = G.synthesis.b16, dict(noise_mode='const', fused_modconv=True)
    assert img_in is None  # neither architecture accumulates an image below the last block
    h = b.conv1(b.conv0(x, bws[:, 0], **lk), bws[:, 1], **lk)
    if arch == 'resnet':
        skip = ops.upsample2d(torch.nn.functional.conv2d(x, b.skip.weight / math.sqrt(x.shape[1])), b.resample_filter)
        h = (skip + h) * math.sqrt(0.5)  # lrelu is positively homogeneous: gain sqrt(.5) = scaling the output
    torch.testing.assert_close(seen['out'][0], h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(img, b.torgb(h, bws[:, 2]), atol=1e-5, rtol=1e-5)


def test_fused_modconv_default_rule(monkeypatch):
    seen = []

    def spy(*args, fused_modconv, **kwargs):
        seen.append(fused_modconv)
        return modulated_conv2d(*args, fused_modconv=fused_modconv, **kwargs)
    monkeypatch.setattr(synthesis_module, 'modulated_conv2d', spy)
    monkeypatch.setattr(synthesis_module.SynthesisBlock, 'fuse_torgb', False)   # ToRGB calls its own conv, counted

    def fused(G, n, **kw):
        seen.clear()
        G.synthesis(torch.zeros(n, G.num_ws, 16), **kw)
        assert len(set(seen)) == 1 and len(seen) == 8
        return seen[0]
    G = _small()  # ADA: fused iff eval and (fp32 or batch 1)
    assert fused(G.eval(), 2) and not fused(G.train(), 2) and not fused(G.train(), 1)
    assert fused(G.train(), 2, fused_modconv=True) and not fused(G.eval(), 1, fused_modconv=False)
    G = _small(fused_modconv_default='inference_only')  # the stylegan3 repository's StyleGAN2
    assert fused(G.eval(), 2) and not fused(G.train(), 1)
    assert not fused(_small(fused_modconv_default=False), 1)


def test_w_avg_update_and_truncation_errors():
    G = _small().train()
    before = G.mapping.w_avg.clone()
    G.mapping(torch.randn(4, 16), None, skip_w_avg_update=True)
    G.eval().mapping(torch.randn(4, 16), None)
    assert torch.equal(before, G.mapping.w_avg)
    G.train().mapping(torch.randn(4, 16), None)
    assert not torch.equal(before, G.mapping.w_avg)
    G = Generator(16, 0, 16, 16, 3, mapping_kwargs=dict(num_layers=2, w_avg_beta=None),
                  synthesis_kwargs=dict(channel_base=128, channel_max=16))
    with pytest.raises(ValueError, match='truncation_psi=0.5 needs w_avg'):
        G.mapping(torch.randn(1, 16), None, truncation_psi=0.5)
    with pytest.raises(ValueError, match=r'z must be \[N, 16\], got \(1, 3\)'):
        G.mapping(torch.randn(1, 3), None)


@gpu_only
def test_fp16_on_cuda_close_to_fp32(nvidia):
    G = _small(num_fp16_res=2, conv_clamp=256).cuda()
    ws = G.mapping(torch.randn(2, 16, device='cuda'), None)
    a, b = G.synthesis(ws), G.synthesis(ws, force_fp32=True)
    assert a.dtype == torch.float32 and (a - b).abs().max() < 0.05


@gpu_only
@pytest.mark.parametrize('half', [None, torch.bfloat16])
def test_torgb_projected_inside_conv1_on_cuda(half, monkeypatch):
    """ToRGB's backward inside conv1's epilogue through the CUDA kernel (float32 and bf16 blocks): the image and the
    gradient of ws match separate layers within the precision's rounding."""
    from ganinv_core.nets.synthesis import SynthesisBlock
    G = _small(num_fp16_res=1).cuda().requires_grad_(False)
    ws = G.mapping(torch.randn(4, 16, device='cuda', generator=torch.Generator('cuda').manual_seed(3)), None)
    ws = ws.detach().requires_grad_(True)
    kw = dict(fused_modconv=False, force_fp32=half is None, half_dtype=half or torch.float16)
    out = {}
    for fuse in (True, False):
        monkeypatch.setattr(SynthesisBlock, 'fuse_torgb', fuse)
        img = G.synthesis(ws, **kw)
        out[fuse] = img.detach(), torch.autograd.grad(img.square().sum(), ws)[0]
    tol = 2e-2 if half else 2e-3
    for a, r in zip(out[True], out[False]):
        torch.testing.assert_close(a, r, rtol=tol, atol=tol * r.abs().max().item())


@gpu_only
@pytest.mark.parametrize('half', [None, torch.bfloat16])
def test_cross_block_fold_on_cuda(half, monkeypatch):
    """The cross-block fold through the CUDA kernels (the epilogue's output scale) and, with bf16 blocks, across a
    float32 -> bf16 boundary: the image and the gradient of ws match the unfolded synthesis within the precision's
    rounding (a missing division or a wrong scale is off by O(1))."""
    G = _small(num_fp16_res=1).cuda().requires_grad_(False)
    syn = G.synthesis
    ws = G.mapping(torch.randn(4, 16, device='cuda', generator=torch.Generator('cuda').manual_seed(2)), None)
    ws = ws.detach().requires_grad_(True)
    kw = dict(fused_modconv=False, force_fp32=half is None, half_dtype=half or torch.float16)
    out = {}
    for fold in (True, False):
        monkeypatch.setattr(type(syn), 'fold_modulation', fold)
        img = syn(ws, **kw)
        out[fold] = img.detach(), torch.autograd.grad(img.square().sum(), ws)[0]
    tol = 2e-2 if half else 2e-3        # TF32 convolutions (cuDNN's default) / bf16 blocks
    for a, r in zip(out[True], out[False]):
        torch.testing.assert_close(a, r, rtol=tol, atol=tol * r.abs().max().item())


def test_float32_coefficients_in_bf16_blocks(monkeypatch):
    """`SynthesisLayer.coef_fp32` (experimental): in bf16 blocks the latent-dependent coefficients reach the epilogue
    in float32 (d, the next layer's modulation, the noise) and ToRGB's weight is applied as two bf16 halves; the
    image and the gradient of ws stay within bf16's rounding of the float32 synthesis."""
    from ganinv_core.nets.layers import _project
    from ganinv_core.nets.synthesis import SynthesisLayer
    from ganinv_core.ops import epilogue
    G = _small(num_fp16_res=2).requires_grad_(False)
    ws = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(8)), None).detach().requires_grad_(True)
    seen = []
    real = epilogue.modconv_epilogue
    monkeypatch.setattr(epilogue, 'modconv_epilogue', lambda c, d, *a, **k: seen.append((c.dtype, d.dtype)) or
                        real(c, d, *a, **k))
    monkeypatch.setattr('ganinv_core.nets.layers.modconv_epilogue', epilogue.modconv_epilogue)
    monkeypatch.setattr(SynthesisLayer, 'coef_fp32', True)
    kw = dict(fused_modconv=False, force_fp32=False, half_dtype=torch.bfloat16)
    img = G.synthesis(ws, **kw)
    assert (torch.bfloat16, torch.float32) in seen and (torch.bfloat16, torch.bfloat16) not in seen
    (g,) = torch.autograd.grad(img.square().sum(), ws)
    monkeypatch.setattr(SynthesisLayer, 'coef_fp32', False)
    ref = G.synthesis(ws, fused_modconv=False, force_fp32=True)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), ws)
    torch.testing.assert_close(img, ref, rtol=0.05, atol=0.05 * ref.abs().max().item())
    torch.testing.assert_close(g, g_ref, rtol=0.05, atol=0.05 * g_ref.abs().max().item())
    # the two-halves projection: closer to the float32 product than with the weight rounded to bf16
    gen = torch.Generator().manual_seed(1)
    y, w = torch.randn(2, 8, 5, 5, generator=gen).bfloat16(), torch.randn(2, 3, 8, generator=gen)
    exact = torch.einsum('nkc,nchw->nkhw', w.double(), y.double())
    err = lambda r: (r.double() - exact).abs().mean().item()  # noqa: E731
    assert _project(y, w).dtype == torch.bfloat16
    assert err(_project(y, w)) < 0.8 * err(_project(y, w.bfloat16()))
