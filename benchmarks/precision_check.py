"""Final PSNR of the fast precisions against fp32: the same targets, seed and steps, one batch (independent
inversions), so the per-target rounding noise (~0.1-0.2 dB either way) averages out in the mean.

    python benchmarks/precision_check.py --network random-1024 --steps 100 --targets 8 [--configs fp32,bf16,...]

A configuration ``NAME@R`` runs NAME with reduced precision only in the blocks of resolution >= R (``NAME@-R``:
only <= R), among those the network runs reduced (its top ``num_fp16_res``): which blocks cost the accuracy.

Prints one line per configuration (mean PSNR, mean and per-target delta vs fp32, steps/s) and whether bf16's mean
is within 0.1 dB of fp32's (issue 6). The first configuration is the reference.
"""
import argparse
import contextlib
import os
import re
import sys
import time
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEVICE, F32Losses  # noqa: E402

from ganinv_core.engine import _precision, invert  # noqa: E402
from ganinv_core.io.images import render_seed, to_tensor  # noqa: E402
from ganinv_core.nets.synthesis import SynthesisLayer  # noqa: E402
from ganinv_core.weights import load_generator  # noqa: E402

CONFIGS = {'fp32': dict(precision='fp32', modconv='fused'), 'bf16': dict(precision='bf16'),
           'bf16-graph': dict(precision='bf16', cuda_graph=True), 'tf32-graph': dict(precision='tf32', cuda_graph=True),
           'fp16': dict(precision='fp16'), 'fp16-graph': dict(precision='fp16', cuda_graph=True),
           # bf16 generator blocks, losses without autocast (float32 / TF32): is the accuracy lost in the losses?
           'bf16-f32loss': dict(precision='bf16', f32_losses=True),
           'bf16-f32loss-graph': dict(precision='bf16', cuda_graph=True, f32_losses=True),
           # bf16 blocks whose latent-dependent coefficients (modulation, demodulation, noise, ToRGB's weight) stay
           # float32 (`SynthesisLayer.coef_fp32`): is bf16's loss the staircase their rounding makes of the image?
           'bf16-hp': dict(precision='bf16', coef_fp32=True),
           'bf16-hp-graph': dict(precision='bf16', cuda_graph=True, coef_fp32=True),
           # the last 10 % (25 %) of the steps in full precision (`polish`): the falling learning rate settles w
           # there without the 16-bit blocks' rounding jitter; costs ~10 % (25 %) of a tf32 step per step
           'bf16-polish': dict(precision='bf16', polish=0.1), 'bf16-polish-graph': dict(precision='bf16', polish=0.1,
                                                                                        cuda_graph=True),
           'bf16-polish25': dict(precision='bf16', polish=0.25), 'fp16-polish': dict(precision='fp16', polish=0.1)}


@contextlib.contextmanager
def _reduced_blocks(G, at):
    """Keep reduced precision only in the blocks of resolution >= at (at < 0: <= -at); None: unchanged."""
    blocks = [getattr(G.synthesis, f'b{r}') for r in G.synthesis.block_resolutions]
    old = [b.use_fp16 for b in blocks]
    if at is not None:
        for b in blocks:
            b.use_fp16 = b.use_fp16 and (b.resolution >= at if at >= 0 else b.resolution <= -at)
    try:
        yield
    finally:
        for b, u in zip(blocks, old):
            b.use_fp16 = u


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--network', default='random-256')
    ap.add_argument('--steps', type=int, default=100)
    ap.add_argument('--targets', type=int, default=4, help='targets rendered from seeds 11, 12, ...')
    ap.add_argument('--configs', default='fp32,bf16,bf16-graph,tf32-graph,fp16')
    a = ap.parse_args(argv)
    names = a.configs.split(',')
    bad = [n for n in names if n.split('@')[0] not in CONFIGS or not re.fullmatch(r'[^@]+(@-?\d+)?', n)]
    if bad or not names:
        ap.error(f'--configs: unknown {bad}; choose from {",".join(CONFIGS)}')
    G = load_generator(a.network, device=DEVICE)
    t = to_tensor(np.stack([render_seed(G, 11 + i)[0] for i in range(a.targets)])).to(DEVICE)
    kw = dict(losses=['vgg16:weights=random', 'latent-dist', 'noise-reg'], steps=a.steps, seed=3, log_every=a.steps)
    rows = {}
    for name in names:
        t0 = time.perf_counter()
        base, _, at = name.partition('@')
        opts = dict(CONFIGS[base])
        variant = mock.patch.object(_precision, 'Precision', F32Losses) if opts.pop('f32_losses', False) else \
            contextlib.nullcontext()
        coefs = mock.patch.object(SynthesisLayer, 'coef_fp32', opts.pop('coef_fp32', False))
        with variant, coefs, _reduced_blocks(G, int(at) if at else None):
            r = invert(G, t, **opts, **kw)
        rows[name] = np.array([m['vs_target']['psnr'] for m in r.metrics])
        d = rows[name] - rows[names[0]]
        print(f'{a.network} {a.steps} steps b{len(t)} {name:11s} psnr mean {rows[name].mean():.3f} dB  delta vs '
              f'{names[0]}: mean {d.mean():+.3f} (sd {d.std():.3f}), per target {" ".join(f"{v:+.3f}" for v in d)}  '
              f'{r.steps_per_second:.1f} steps/s  wall {time.perf_counter() - t0:.1f}s', flush=True)
        if DEVICE.type == 'cuda':
            torch.cuda.empty_cache()
    for name in ('bf16', 'bf16-polish', 'bf16-polish-graph', 'bf16-polish25'):
        if name in rows:
            print(f'{name} mean within 0.1 dB of {names[0]}:', abs((rows[name] - rows[names[0]]).mean()) <= 0.1)


if __name__ == '__main__':
    main()
