"""Shared helpers for the benchmark modules (imported as `_common`; conftest puts this folder on sys.path)."""
import contextlib
import gc
import os

import torch

from flops import step_flops, synthesis_macs, vgg16_macs
from ganinv_core.engine._precision import Precision

SIZE = os.environ.get('GANINV_BENCH_SIZE', 'cpu')
DEVICE = torch.device('cuda' if torch.cuda.is_available() and os.environ.get('GANINV_BENCH_DEVICE') != 'cpu' else 'cpu')


def sync():
    if DEVICE.type == 'cuda':
        torch.cuda.synchronize()


def measured_bf16_peak():
    """Dense bf16 matmul TFLOP/s on this GPU (the 'card peak' the benchmarks report a fraction of)."""
    if DEVICE.type != 'cuda':
        return None
    n = 8192
    a, b = (torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        a @ b
    end.record()
    sync()
    return 2 * n ** 3 * 20 / (start.elapsed_time(end) / 1e3) / 1e12


def record(benchmark, *, compare, images=1, steps=1, flops=None, baseline=False, peak_mem=None):
    """Attach what the report needs to one benchmark."""
    benchmark.extra_info.update(compare=compare, images=images, steps=steps, flops=flops, baseline=baseline)
    if peak_mem is not None:
        benchmark.extra_info['peak_mem_mb_per_image'] = peak_mem / 2 ** 20 / images


def _arch(G):
    sk = G.init_kwargs.get('synthesis_kwargs', {})
    return dict(channel_base=sk.get('channel_base', 32768), channel_max=sk.get('channel_max', 512))


def step_flops_for(G, fused, vgg_weight_grads=False):
    """FLOPs of one projection step of one image on generator ``G`` (its own channel counts)."""
    return step_flops(G.img_resolution, fused_modconv=fused, vgg_weight_grads=vgg_weight_grads, **_arch(G))


def gen_flops_for(G, fused):
    """FLOPs of one synthesis forward + backward (w.r.t. the latent) of one image."""
    return 2 * synthesis_macs(G.img_resolution, w_dim=G.w_dim, **_arch(G)) * (3 if fused else 2)


def vgg_flops_for(res):
    """FLOPs of one VGG16 forward + backward (w.r.t. the image, no weight gradients) at min(res, 256)."""
    return 2 * vgg16_macs(min(res, 256)) * 2


def timed(benchmark, fn, rounds, warmup=1):
    """Time ``fn`` (which must sync the device) with fixed rounds; returns the peak device memory in bytes."""
    if DEVICE.type == 'cuda':
        gc.collect()                 # earlier cases' CUDA graphs (and their private memory pools) sit in cycles
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)
    return torch.cuda.max_memory_allocated() if DEVICE.type == 'cuda' else None


_NETS = {}


def generator(name):
    """A cached built-in random generator on DEVICE (``random-64``, ``random-256``, ``random-1024``)."""
    if name not in _NETS:
        from ganinv_core.weights import load_generator
        _NETS[name] = load_generator(name, device=DEVICE)
    return _NETS[name]


def targets(G, n):
    """n generated faces [n,3,R,R] in [-1, 1] on DEVICE (seeds 1..n)."""
    import numpy as np
    from ganinv_core.io.images import render_seed, to_tensor
    return to_tensor(np.stack([render_seed(G, s)[0] for s in range(1, n + 1)])).to(DEVICE)


class NoTF32(Precision):
    """A precision whose float32 parts run without TF32 (a benchmark-only comparison)."""
    tf32 = property(lambda self: False)


class F32Losses(Precision):
    """A precision whose losses run without autocast (float32; TF32 as the precision says): a benchmark-only
    variant of bf16 / fp16, to weigh the losses' share of their speed and of their accuracy."""
    loss_dtype = property(lambda self: None)


@contextlib.contextmanager
def session4_step(on=True):
    """The step as the fourth session ran it (for side-by-side ratios): VGG16's LPIPS head as separate ops (no
    `lpips_distance`), the noise regulariser's rolls and means (no `noise_autocorr`), ToRGB's own backward."""
    if not on:
        yield
        return
    import ganinv_losses.noise_reg as noise_reg
    from ganinv_core.nets.synthesis import SynthesisBlock
    from ganinv_core.nets.vgg16 import VGG16Features
    from ganinv_core.ops.noise import _autocorr_ref
    saved = VGG16Features.distance, noise_reg.noise_autocorr, SynthesisBlock.fuse_torgb
    VGG16Features.distance = lambda self, img, tf: (tf - self(img)).square().sum(1)
    noise_reg.noise_autocorr = _autocorr_ref
    SynthesisBlock.fuse_torgb = False
    try:
        yield
    finally:
        VGG16Features.distance, noise_reg.noise_autocorr, SynthesisBlock.fuse_torgb = saved


@contextlib.contextmanager
def session6_update(inv, on=True):
    """The update as the sixth session ran it (for side-by-side ratios): Adam as nine ``torch._foreach_*`` passes
    instead of the fused kernel."""
    if not on:
        yield
        return
    fused, inv.opt.fused = inv.opt.fused, False
    try:
        yield
    finally:
        inv.opt.fused = fused
