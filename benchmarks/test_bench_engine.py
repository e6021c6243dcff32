"""Generator forward+backward, VGG16 loss, one optimisation step and a short inversion, against the
NVIDIA-equivalent projector step timed in this process (issue 6).

Sizes (``GANINV_BENCH_SIZE``): ``cpu`` times random-64 (batch 1 and 4) and random-256 (config-f, batch 1);
``full`` times random-256 and random-1024 (config-f) at batch 1 and 8 in every precision, and bf16 + CUDA graph
at batch 32. Each group's baseline (``compare`` key, ``baseline=True``) is the NVIDIA-equivalent configuration
(reference ops, fp32, fused modconv, batch 1, host sync per step, Python-loop noise regulariser, VGG with weight
gradients), so the report's ratio is images·steps/s relative to it.
"""
import pytest
import torch
import torch.nn.functional as F

from _common import (DEVICE, SIZE, F32Losses, NoTF32, gen_flops_for, generator, record, session4_step,
                     session6_update, step_flops_for, sync, targets, timed, vgg_flops_for)
from _nvidia_equiv import NvidiaProjectorStep

from ganinv_core.engine import Inversion, invert
from ganinv_core.engine._precision import tf32_mode

FULL = SIZE == 'full'
CUDA = DEVICE.type == 'cuda'
LOSSES = ['vgg16:weights=random', 'latent-dist', 'noise-reg']     # the default set, offline weights
ROUNDS = dict(warmup=2, rounds=3) if FULL else dict(warmup=1, rounds=2)
NETS = ('random-256', 'random-1024') if FULL else ('random-64', 'random-256')
BIG = 8 if FULL else 4
HUGE = 32  # CUDA only: bf16 at ~1.5 GB/img or less fits an 80 GB card at 1024²


def _small(net):
    return net == NETS[0]


# (name, batch, options) of the engine's step; precision and cuda_graph are Inversion options.
def _step_cases():
    for net in NETS:
        yield net, 'ours-default', 1, {}
        yield net, 'ours-nonfused', 1, dict(modconv='nonfused')
        yield net, 'ours-fused', 1, dict(modconv='fused')
        if CUDA:
            for prec in ('tf32', 'bf16', 'fp16'):
                yield net, f'ours-{prec}', 1, dict(precision=prec, modconv='nonfused')
                yield net, f'ours-{prec}', BIG, dict(precision=prec, modconv='nonfused')
            yield net, 'ours-tf32-graph', 1, dict(precision='tf32', cuda_graph=True)
            yield net, 'ours-tf32-graph', BIG, dict(precision='tf32', cuda_graph=True)
            yield net, 'ours-bf16-graph', BIG, dict(precision='bf16', cuda_graph=True)
            # the same without TF32 in the float32 blocks (what bf16 ran before it), for the side-by-side ratio
            yield net, 'ours-bf16-notf32-graph', BIG, dict(precision='bf16', cuda_graph=True, tf32=False)
            yield net, 'ours-bf16-cl-graph', BIG, dict(precision='bf16', cuda_graph=True, channels_last=True)
            yield net, 'ours-bf16-cl-graph', 1, dict(precision='bf16', cuda_graph=True, channels_last=True)
            yield net, 'ours-bf16-graph', HUGE, dict(precision='bf16', cuda_graph=True)   # throughput at scale
            yield net, 'ours-bf16-graph', 2 * HUGE, dict(precision='bf16', cuda_graph=True)
            # fp16 (10 mantissa bits, loss scaling): the candidate for the accuracy target, at the same sizes
            yield net, 'ours-fp16-graph', BIG, dict(precision='fp16', cuda_graph=True)
            yield net, 'ours-fp16-graph', 2 * HUGE, dict(precision='fp16', cuda_graph=True)
            # side by side with bf16 + graph at BIG: VGG in NHWC memory, the losses in float32/TF32 instead of
            # bf16 autocast (accuracy: benchmarks/precision_check.py), cuDNN's autotuner on
            yield net, 'ours-bf16-vggnhwc-graph', BIG, dict(precision='bf16', cuda_graph=True, vgg_nhwc=True)
            yield net, 'ours-bf16-f32loss-graph', BIG, dict(precision='bf16', cuda_graph=True, f32_losses=True)
            yield net, 'ours-bf16-cudnnbench-graph', BIG, dict(precision='bf16', cuda_graph=True, cudnn_benchmark=True)
            # without the cross-block fold of the modulation (fourth session), for its side-by-side ratio
            yield net, 'ours-bf16-nofold-graph', BIG, dict(precision='bf16', cuda_graph=True, fold=False)
            # without the fifth session's fusions (lpips_distance, noise_autocorr, ToRGB in conv1's backward)
            yield net, 'ours-bf16-s4-graph', BIG, dict(precision='bf16', cuda_graph=True, s4=True)
            # the experimental register-blocked FIR kernel for upfirdn2d (GANINV_UPFIRDN_RB=1), sixth session
            yield net, 'ours-bf16-rb-graph', BIG, dict(precision='bf16', cuda_graph=True, rb=True)
            # the experimental channel-grouped epilogue backward (GANINV_EPILOGUE_GROUPED=1), ninth session; NCHW
            # (the default layout: tf32 at b1, the command line's default) and bf16
            yield net, 'ours-bf16-grouped-graph', BIG, dict(precision='bf16', cuda_graph=True, grouped=True)
            yield net, 'ours-tf32-grouped-graph', 1, dict(precision='tf32', cuda_graph=True, grouped=True)
            # the update without the seventh session's fused Adam
            yield net, 'ours-bf16-s6-graph', BIG, dict(precision='bf16', cuda_graph=True, s6=True)
            yield net, 'ours-fp32-fused', BIG, dict(precision='fp32', modconv='fused')
        elif _small(net):
            yield net, 'ours-nonfused', BIG, dict(modconv='nonfused')
            yield net, 'ours-nonfused-s4', BIG, dict(modconv='nonfused', s4=True)   # without the fifth session's fusions
            yield net, 'ours-nonfused-s6', BIG, dict(modconv='nonfused', s6=True)   # foreach Adam (sixth session)
            yield net, 'ours-static', 1, dict(cuda_graph=True)      # the graph-ready static step, run eagerly
            yield net, 'ours-bf16', 1, dict(precision='bf16')


@pytest.mark.parametrize('net', NETS)
def test_nvidia_equivalent_step(benchmark, net):
    G = generator(net)
    nv = NvidiaProjectorStep(G, (targets(G, 1) + 1) * 127.5, DEVICE)
    fused = True
    # host-bound (a sync per step), so noisier than the graph-replayed cases: more rounds on the GPU
    mem = timed(benchmark, lambda: (nv.step(), sync()), **(dict(warmup=3, rounds=12) if FULL and CUDA else ROUNDS))
    record(benchmark, compare=f'step-{net}', images=1, flops=step_flops_for(G, fused, vgg_weight_grads=True),
           baseline=True, peak_mem=mem)


@pytest.mark.parametrize('net,case,n,opts', list(_step_cases()), ids=[f'{c[0]}-{c[1]}-b{c[2]}' for c in _step_cases()])
def test_step(benchmark, net, case, n, opts, monkeypatch):
    G = generator(net)
    opts = dict(opts)
    if opts.pop('rb', False):
        monkeypatch.setenv('GANINV_UPFIRDN_RB', '1')
    if opts.pop('grouped', False):
        monkeypatch.setenv('GANINV_EPILOGUE_GROUPED', '1')
    tf32, f32_losses, vgg_nhwc = opts.pop('tf32', None), opts.pop('f32_losses', False), opts.pop('vgg_nhwc', False)
    autotune, fold, s4 = opts.pop('cudnn_benchmark', False), opts.pop('fold', True), opts.pop('s4', False)
    s6 = opts.pop('s6', False)
    inv = Inversion(G, targets(G, n), losses=LOSSES, steps=1000, **opts)
    if tf32 is False:
        inv.prec = NoTF32(inv.prec.name, inv.prec.device)
    if f32_losses:
        inv.prec = F32Losses(inv.prec.name, inv.prec.device)
    # process-wide / shared settings of the case, set back afterwards (the VGG network is shared by every case)
    vggs = [t.vgg for t in inv.terms if getattr(t, 'vgg', None) is not None] if vgg_nhwc else []
    saved = torch.backends.cudnn.benchmark, type(G.synthesis).fold_modulation, [v.channels_last for v in vggs]
    torch.backends.cudnn.benchmark = autotune or saved[0]
    type(G.synthesis).fold_modulation = fold
    for v in vggs:
        v.channels_last = True
    try:
        with session4_step(s4), session6_update(inv, s6):
            mem = timed(benchmark, lambda: (inv.step(), sync()), **ROUNDS)
    finally:
        torch.backends.cudnn.benchmark, type(G.synthesis).fold_modulation = saved[:2]
        for v, cl in zip(vggs, saved[2]):
            v.channels_last = cl
    record(benchmark, compare=f'step-{net}', images=n, flops=step_flops_for(G, inv.fused) * n, peak_mem=mem)
    benchmark.extra_info.update(case=f'{case}-b{n}', modconv='fused' if inv.fused else 'nonfused',
                                graph=inv._graph is not None)


@pytest.mark.parametrize('form', ['fused', 'foreach-s6'])
@pytest.mark.parametrize('n', [1, BIG])
@pytest.mark.parametrize('net', NETS)
def test_update(benchmark, net, n, form):
    """The step's update alone (Adam over w and every noise buffer, then the renormalisation): the fused Adam
    kernel against the sixth session's nine foreach passes."""
    G = generator(net)
    inv = Inversion(G, targets(G, n), losses=LOSSES, steps=1000, cuda_graph=False)
    inv.step()
    for p in inv.opt.params:                    # gradients to apply (the step clears its own; the update keeps them)
        p.grad = torch.randn_like(p) * 1e-3
    lr = torch.tensor(1e-3, device=DEVICE)
    with session6_update(inv, form != 'fused'):
        timed(benchmark, lambda: (inv.opt.step(lr), inv.lat.renormalise(), sync()), rounds=ROUNDS['rounds'] * 10,
              warmup=ROUNDS['warmup'])
    record(benchmark, compare=f'update-{net}-b{n}', images=n, baseline=form != 'fused')


def _gen_cases():
    for net in NETS:
        for n in (1, BIG) if (FULL or _small(net)) else (1,):
            for fused in (True, False):
                yield net, n, fused, 'fp32'
            if CUDA:
                yield net, n, False, 'fp16'
                yield net, n, False, 'bf16'


@pytest.mark.parametrize('net,n,fused,prec', list(_gen_cases()),
                         ids=[f'{c[0]}-b{c[1]}-{"fused" if c[2] else "nonfused"}-{c[3]}' for c in _gen_cases()])
def test_generator_fwd_bwd(benchmark, net, n, fused, prec):
    G = generator(net)
    ws = G.mapping(torch.randn(n, G.z_dim, device=DEVICE), None).detach().requires_grad_(True)

    def run():
        img = G.synthesis(ws, noise_mode='const', fused_modconv=fused, force_fp32=prec == 'fp32',
                          half_dtype=torch.bfloat16 if prec == 'bf16' else torch.float16)
        img.float().square().sum().backward()
        ws.grad = None
        sync()
    with tf32_mode(prec != 'fp32'):   # 'fp32' without TF32 convolutions (PyTorch's default has them on)
        mem = timed(benchmark, run, **ROUNDS)
    record(benchmark, compare=f'gen-{net}', images=n, flops=gen_flops_for(G, fused) * n,
           baseline=(n == 1 and fused and prec == 'fp32'), peak_mem=mem)


def _vgg_cases():
    res = (256, 1024) if FULL else (64, 256)
    for r in res:
        yield r, 1, 'nvidia', 'fp32'          # weights require grad, as the projector's VGG; its feature chain
        yield r, 1, 'frozen-chain', 'fp32'    # frozen, the same chain (normalise, weight, concatenate, subtract)
        yield r, 1, 'frozen', 'fp32'          # frozen, VGG16Features.distance (one lpips_distance op per level)
        yield r, BIG, 'frozen', 'fp32'
        if CUDA:
            yield r, BIG, 'frozen-chain', 'bf16'
            yield r, BIG, 'frozen', 'bf16'
            yield r, BIG, 'frozen-nhwc', 'bf16'   # NHWC memory vs NCHW (the default), side by side


@pytest.mark.parametrize('res,n,kind,prec', list(_vgg_cases()), ids=[f'{c[0]}-b{c[1]}-{c[2]}-{c[3]}' for c in _vgg_cases()])
def test_vgg16_loss(benchmark, res, n, kind, prec):
    from ganinv_core.metrics import to_vgg_input
    from ganinv_core.nets.vgg16 import random_vgg16
    vgg = random_vgg16().to(DEVICE).eval().requires_grad_(kind == 'nvidia')
    vgg.channels_last = kind.endswith('nhwc')
    torch.manual_seed(0)
    x = (torch.rand(n, 3, res, res, device=DEVICE) * 2 - 1).requires_grad_(True)
    tf = vgg(to_vgg_input(x.detach())).detach()
    ac = torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=prec == 'bf16')

    def run():
        with ac:
            if kind in ('nvidia', 'frozen-chain'):
                loss = (tf - vgg(to_vgg_input(x))).float().square().sum()
            else:
                loss = vgg.distance(to_vgg_input(x), tf).sum()
        loss.backward()
        x.grad = None
        for p in vgg.parameters():
            p.grad = None
        sync()
    with tf32_mode(prec != 'fp32'):
        mem = timed(benchmark, run, **ROUNDS)
    record(benchmark, compare=f'vgg-{res}', images=n, flops=vgg_flops_for(res) * n * (1.5 if kind == 'nvidia' else 1),
           baseline=kind == 'nvidia', peak_mem=mem)


INV_STEPS = 30 if FULL else 20
INV_NET = NETS[-1] if FULL else NETS[0]


def _inv_cases():
    yield 'ours-default', 1, {}
    yield 'ours-nonfused', 1, dict(modconv='nonfused')
    yield 'ours-nonfused', BIG, dict(modconv='nonfused')
    yield 'ours-nonfused-search16', BIG, dict(modconv='nonfused', init_search=16)   # what the search adds to a run
    if CUDA:
        yield 'ours-tf32-graph', 1, dict(precision='tf32', cuda_graph=True)
        yield 'ours-bf16-graph', BIG, dict(precision='bf16', cuda_graph=True)


def test_nvidia_equivalent_inversion(benchmark):
    G = generator(INV_NET)
    t = (targets(G, 1) + 1) * 127.5

    def run():
        nv = NvidiaProjectorStep(G, t, DEVICE, num_steps=INV_STEPS)
        for _ in range(INV_STEPS):
            nv.step()
        sync()
    mem = timed(benchmark, run, warmup=1, rounds=2)
    record(benchmark, compare=f'invert-{INV_NET}', images=1, steps=INV_STEPS, baseline=True, peak_mem=mem,
           flops=step_flops_for(G, True, vgg_weight_grads=True))


@pytest.mark.parametrize('case,n,opts', list(_inv_cases()), ids=[f'{INV_NET}-{c[0]}-b{c[1]}' for c in _inv_cases()])
def test_inversion(benchmark, case, n, opts):
    G = generator(INV_NET)
    t = targets(G, n)

    def run():
        invert(G, t, losses=LOSSES, steps=INV_STEPS, log_every=INV_STEPS, **opts)
        sync()
    mem = timed(benchmark, run, warmup=1, rounds=2)
    fused = opts.get('modconv', 'auto') == 'fused' or (opts.get('modconv', 'auto') == 'auto' and not CUDA)
    record(benchmark, compare=f'invert-{INV_NET}', images=n, steps=INV_STEPS, peak_mem=mem,
           flops=step_flops_for(G, fused) * n)
    benchmark.extra_info.update(case=f'{case}-b{n}')


DEG_RES = (256, 1024) if FULL else (256,)
DEGRADATIONS = ('grayscale', 'inpaint:mode=strokes', 'blur:sigma=2', 'downsample:factor=4', 'jpeg:quality=30')


@pytest.mark.parametrize('res', DEG_RES)
@pytest.mark.parametrize('spec', DEGRADATIONS)
def test_degradation(benchmark, spec, res):
    """Each built-in degradation forward + backward on BIG images, side by side with grayscale (the cheapest) and
    the generator's step at the same size (test_generator_fwd_bwd): what a degradation adds to a step."""
    from ganinv_core.hooks import get_registry
    d = get_registry().build_degradation(spec).to(DEVICE)
    x = (torch.rand(BIG, 3, res, res, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(0)) * 2 - 1)
    x.requires_grad_(True)

    def run():
        d(x).square().sum().backward()
        x.grad = None
        sync()
    mem = timed(benchmark, run, **ROUNDS)
    record(benchmark, compare=f'degradation-{res}', images=BIG, baseline=spec == 'grayscale', peak_mem=mem)


COMPOSITES = ('inpaint:mode=strokes', 'grayscale', 'blur:sigma=2', 'downsample:factor=8', 'blur:sigma=1+downsample:factor=4')


@pytest.mark.parametrize('res', DEG_RES)
@pytest.mark.parametrize('specs', COMPOSITES)
def test_composite(benchmark, specs, res):
    """composite.png's projection (engine.consistent, defaults) of BIG restorations, side by side with the paste of
    holes (one step): the cost per batch after its optimisation, set against test_inversion's."""
    from ganinv_core.engine import consistent
    from ganinv_core.hooks import Pipeline, get_registry
    pipe = Pipeline([get_registry().build_degradation(s) for s in specs.split('+')]).to(DEVICE)
    g = torch.Generator(DEVICE).manual_seed(0)
    clean = F.interpolate(torch.rand(BIG, 3, 16, 16, device=DEVICE, generator=g) * 1.6 - 0.8, size=res,
                          mode='bilinear')
    rest = clean + 0.1 * F.interpolate(torch.randn(BIG, 3, 32, 32, device=DEVICE, generator=g), size=res,
                                       mode='bilinear')
    y, m = pipe(clean), pipe.mask(clean)

    def run():
        consistent(pipe, rest, y, m)
        sync()
    mem = timed(benchmark, run, **ROUNDS)
    record(benchmark, compare=f'composite-{res}', images=BIG, baseline=specs.startswith('inpaint'), peak_mem=mem)


@pytest.mark.parametrize('res', DEG_RES)
@pytest.mark.parametrize('loss', ['vgg16', 'vgg16-fill', 'identity-r50', 'identity-r100'])
def test_perceptual_loss(benchmark, loss, res):
    """Forward + backward on BIG images of the vgg16 loss, side by side with what can be added to it or replace it:
    vgg16 with ``holes=fill`` (a centred hole; one more VGG forward per step), and the identity loss's ArcFace at
    the depths insightface publishes (r50, r100; random weights)."""
    from ganinv_core.hooks import LossContext, get_registry
    from ganinv_core.nets.arcface import DEPTHS, IResNet
    g = torch.Generator(DEVICE).manual_seed(0)
    x = (torch.rand(BIG, 3, res, res, device=DEVICE, generator=g) * 2 - 1).requires_grad_(True)
    t = torch.rand(BIG, 3, res, res, device=DEVICE, generator=g) * 2 - 1
    if loss.startswith('vgg16'):
        m = torch.ones(1, 1, res, res, device=DEVICE)
        m[..., res // 4:3 * res // 4, res // 4:3 * res // 4] = 0
        m = m if loss.endswith('fill') else None
        t = t if m is None else m * (t + 1) - 1
        lm = get_registry().build_loss(f'vgg16:weights=random,holes={"fill" if m is not None else "black"}')
        lm.to(DEVICE).prepare(t, m)
        fn = lambda: lm(LossContext(pred=x if m is None else m * (x + 1) - 1, target=t, mask=m, image=x))  # noqa
    else:
        net = IResNet(DEPTHS[int(loss.rpartition('-r')[2])]).to(DEVICE).eval().requires_grad_(False)
        anchor = net.embed(t).detach()
        fn = lambda: 1 - (net.embed(x) * anchor).sum(1)   # noqa: E731

    def run():
        fn().sum().backward()
        x.grad = None
        sync()
    mem = timed(benchmark, run, **ROUNDS)
    record(benchmark, compare=f'loss-{res}', images=BIG, baseline=loss == 'vgg16', peak_mem=mem)


@pytest.mark.parametrize('net', NETS)
@pytest.mark.parametrize('kind', ['latent', 'tune'])
def test_tuning_step(benchmark, net, kind):
    """One photo's latent step (eager, the default losses) side by side with one step of pivotal tuning (``--tune``:
    the same losses, backward into the synthesis weights of G's copy, Adam over them): what a tuning step costs."""
    from ganinv_core.engine import _tune
    G = generator(net)
    t = targets(G, 1)
    if kind == 'latent':
        inv = Inversion(G, t, losses=LOSSES, steps=1000, precision='auto')
        fn = inv.step
    else:
        spec = dict(losses=LOSSES, seed=303, w_stats=None, modconv='auto')
        ws = torch.zeros(1, G.num_ws, G.w_dim, device=DEVICE) + G.mapping.w_avg.to(DEVICE)
        one, opt = _tune.pivot(G, t, ws, None, [0], DEVICE, 3e-4, **spec)
        fn = lambda: _tune.step(one, opt)   # noqa: E731

    def run():
        fn()
        sync()
    mem = timed(benchmark, run, **ROUNDS)
    record(benchmark, compare=f'tune-{net}', baseline=kind == 'latent', peak_mem=mem)
