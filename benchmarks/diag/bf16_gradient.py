"""How far a reduced-precision step's gradient departs from fp32's: per w-noise draw, reference and compiled ops.

    python benchmarks/diag/bf16_gradient.py --device cuda --network random-256

The gradient of one projection step (step 0) with respect to w, as tests/engine/test_perf_options.py's guard takes
it (the default terms; at step 0 only the perceptual one moves w), printed as the relative error
||g - g_fp32|| / ||g_fp32|| against fp32 with the reference ops, for each draw: tf32, bf16 and fp16 (scaled and
unscaled as the engine does; an overflowed first scale is not retried here), and bf16 with the compiled ops. One
draw far above the others means the mean the guard takes is one outlier; all of them high means the precision
itself. On an H200 bf16 ran 0.02-0.44 (CPU: 0.02); ``--deterministic`` (cuDNN's deterministic algorithms) and
``--no-reduced-reduction`` (cuBLAS keeps bf16 matmul sums in float32) say whether atomics or split reductions are
the cause; they are the next run owed.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from ganinv_core.engine import Inversion
from ganinv_core.io.images import render_seed, to_tensor
from ganinv_core.weights import load_generator

LOSSES = ['vgg16:weights=random', 'latent-dist', 'noise-reg']
CONFIGS = [('tf32', 'ref'), ('bf16', 'ref'), ('bf16', 'ext'), ('fp16', 'ref')]


def gradient(G, t, precision, ops, losses, seed):
    os.environ['GANINV_OPS'] = ops
    inv = Inversion(G, t, precision=precision, steps=10, seed=seed, cuda_graph=False, losses=losses)
    inv.opt.step = lambda lr, ok=None: None   # the gradient, not the update
    with inv.prec.mode():
        inv._body(0)
    os.environ.pop('GANINV_OPS')
    return inv.lat.params[0].grad.double().clone()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cuda')
    ap.add_argument('--network', default='random-256')
    ap.add_argument('--seeds', default='3,4,5,6')
    ap.add_argument('--deterministic', action='store_true', help="cuDNN's deterministic algorithms only")
    ap.add_argument('--no-reduced-reduction', action='store_true',
                    help='no reduced-precision reductions in bf16/fp16 matmuls')
    a = ap.parse_args()
    torch.backends.cudnn.deterministic = a.deterministic
    if a.no_reduced_reduction:
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    G = load_generator(a.network, device=a.device)
    t = to_tensor(np.stack([render_seed(G, s)[0] for s in (11, 12)])).to(a.device)
    for seed in map(int, a.seeds.split(',')):
        want = gradient(G, t, 'fp32', 'ref', LOSSES, seed)
        errs = [f'{p} {ops} {float((gradient(G, t, p, ops, LOSSES, seed) - want).norm() / want.norm()):.4f}'
                for p, ops in CONFIGS if a.device != 'cpu' or p != 'tf32']
        print(f'{a.device} {a.network} draw {seed}: |g| {float(want.norm()):.4g}; error {", ".join(errs)}', flush=True)


if __name__ == '__main__':
    main()
